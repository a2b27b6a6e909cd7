"""Model files and exact-resume checkpoints, without pickle.

Both are one safetensors file: the tensors, and in the header metadata JSON with the agent name,
hyperparameters, spaces, counters (and, for a checkpoint, RNG and env state). One SHA-256 covers
the header's JSON and every tensor, so a damaged file of either kind is refused, not half-loaded.
Writes are atomic (temp file, fsync, rename): a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from agents.env_state import env_state, jsonify, numpy_state, set_env_state, tuplify
from agents.header import HeaderError, check_header, short
from agents.hyperparameters import custom_encoder, hparams_json
from agents.spaces import same_spaces, space_from_json, space_to_json

if TYPE_CHECKING:
    from agents.sac import SoftActorCritic

FORMAT = "reparl/2"
"""reparl/2: the digest covers the header as well as the tensors, in model files too."""


# ------------------------------------------------------------------------------- the file format
def digest(tensors: dict[str, Tensor], meta: dict[str, Any]) -> str:
    """SHA-256 of the header's JSON (without the digest itself) and of every tensor's name and bytes."""
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_safetensors(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """The tensors on the CPU, the digest into the header, then temp file, fsync, rename."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {**meta, "sha256": digest(tensors, meta)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata={"reparl": json.dumps(meta)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates 0600; a model file is as readable as the run's others
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_model_file(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and metadata of a reparl file, verified against its digest. Only safetensors is
    parsed: no pickle, ever. ValueError naming the file."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("reparl")
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable reparl model file (corrupt, truncated or not "
                         f"safetensors): {str(e)[:200]}") from e
    if raw is None:
        raise ValueError(f"{path} is a safetensors file without reparl metadata")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: JSON nested thousands deep
        raise ValueError(f"{path}: reparl metadata is not valid JSON: {str(e)[:100]}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: format {short(found)}, expected {FORMAT!r} (files of reparl/1 predate "
                         "the digest over their header; train again or convert with that version)")
    if meta.get("sha256") != digest(tensors, meta):
        raise ValueError(f"{path} is corrupt: its header or tensors do not match the SHA-256 recorded when it "
                         "was written")
    # After the digest (a damaged file is reported as damaged), before anything is built from the header.
    check_header(meta, path, {k: tuple(v.shape) for k, v in tensors.items()})
    return tensors, meta


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors, meta = read_model_file(path)
    if "checkpoint" not in meta:
        raise ValueError(f"{path} is a reparl model file, not a checkpoint (it has no resume state)")
    return tensors, meta


def _safetensors_path(path: str | Path) -> Path:
    """``path`` with the .safetensors suffix; SB3's .zip (CheckpointCallback's names) becomes .safetensors."""
    path = Path(path)
    if path.suffix == ".zip":
        return path.with_suffix(".safetensors")
    return path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")


# ------------------------------------------------------------------------------- model files
def state_tensors(agent: SoftActorCritic) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Every tensor of the agent (flat names) and the JSON-able rest: the model file's content."""
    tensors = {f"{name}.{k}": v for name, module in agent.modules().items() for k, v in module.state_dict().items()}
    tensors["log_alpha"] = agent.log_alpha.reshape(-1)
    optim_meta = {}
    for name, opt in agent.optimizers().items():
        sd = opt.state_dict()
        optim_meta[name] = sd["param_groups"]
        for idx, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"optim.{name}.{idx}.{k}"] = v.reshape(-1) if v.dim() == 0 else v
    meta = {"format": FORMAT, "agent": type(agent).__name__, "hparams": hparams_json(agent.hparams),
            "features_dim": agent.obs_dim,
            "observation_space": space_to_json(agent.observation_space),
            "action_space": space_to_json(agent.action_space), "num_timesteps": agent.num_timesteps,
            "num_updates": agent.num_updates, "optimizers": optim_meta, "extra": agent._extra_state(),
            "env_id": agent.env_id}
    return tensors, meta


def save_model(agent: SoftActorCritic, path: str | Path) -> Path:
    return write_safetensors(_safetensors_path(path), *state_tensors(agent))


@contextmanager
def _one_line_errors(path: str | Path) -> Iterator[None]:
    """What the header checks did not foresee still ends as one line naming the file, not a traceback
    from deep inside torch or numpy."""
    try:
        yield
    except ValueError as e:
        if str(path) in str(e) and "\n" not in str(e):
            raise
        raise ValueError(f"{path}: cannot be loaded: {' '.join(str(e).split())[:200]}") from None
    except (TypeError, KeyError, AttributeError, IndexError, RuntimeError, OverflowError) as e:
        raise ValueError(f"{path}: cannot be loaded ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                         f"the file does not match what reparl writes") from None


def load_model(cls: type[SoftActorCritic], path: str | Path, env: Any, device: str,
               overrides: dict[str, Any]) -> SoftActorCritic:
    tensors, meta = read_model_file(path)
    if meta.get("agent") != cls.__name__:
        raise ValueError(f"{path} holds a {str(meta.get('agent'))[:40]} model; load it with that agent's load")
    with _one_line_errors(path):
        return _build(cls, path, tensors, meta, env, device, overrides)


def _build(cls: type[SoftActorCritic], path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any],
           env: Any, device: str, overrides: dict[str, Any]) -> SoftActorCritic:
    obs_space, act_space = space_from_json(meta["observation_space"]), space_from_json(meta["action_space"])
    hp = {**cls.hparams_from_file(meta["hparams"], act_space), "device": device, **overrides}
    hp["encoder"] = custom_encoder(meta["hparams"], overrides.get("encoder"), str(path))
    if env is not None:
        agent = cls(env, **hp)
        same_spaces(agent, obs_space, act_space, f"{path} was trained with", reverse=True)
    else:
        agent = cls(None, observation_space=obs_space, action_space=act_space, **hp)
    load_state_tensors(agent, tensors, meta, source=str(path))
    return agent


def load_state_tensors(agent: SoftActorCritic, tensors: dict[str, Tensor], meta: dict[str, Any],
                       source: str = "state") -> None:
    for name, module in agent.modules().items():
        prefix = f"{name}."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        own = module.state_dict()
        missing, extra = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
        wrong = [f"{k}: file {tuple(sd[k].shape)}/{sd[k].dtype}, agent {tuple(own[k].shape)}/{own[k].dtype}"
                 for k in set(own) & set(sd) if sd[k].shape != own[k].shape or sd[k].dtype != own[k].dtype]
        if missing or extra or wrong:
            raise ValueError(f"{source} does not match this {type(agent).__name__} ({name}): "
                             f"missing {missing[:5]}, unexpected {extra[:5]}, mismatched {sorted(wrong)[:5]}")
        module.load_state_dict(sd)
    with torch.no_grad():
        agent.log_alpha.copy_(tensors["log_alpha"].reshape(agent.log_alpha.shape))
    for name, opt in agent.optimizers().items():
        state: dict[int, dict[str, Tensor]] = {}
        params = [p for g in opt.param_groups for p in g["params"]]  # state_dict's index order
        for k, v in tensors.items():
            if k.startswith(f"optim.{name}."):
                _, _, idx, key = k.split(".", 3)
                # state_tensors widened 0-d state to (1,): 'step', and Adam's moments of the 0-d log_alpha
                state.setdefault(int(idx), {})[key] = v.reshape(() if key == "step" else params[int(idx)].shape)
        opt.load_state_dict({"state": state, "param_groups": meta["optimizers"][name]})
    agent.num_timesteps = int(meta["num_timesteps"])
    agent.num_updates = int(meta.get("num_updates", 0))
    agent._update = None  # the optimizers hold new state tensors: the update's aliases are rebuilt


# ------------------------------------------------------------------------------- checkpoints
def write_checkpoint(agent: SoftActorCritic, path: str | Path, include_buffer: bool = True) -> Path:
    tensors, meta = state_tensors(agent)
    for i, v in enumerate(agent.metrics.sums.values()):
        tensors[f"info.{i}"] = v
    if include_buffer and agent.buffer is not None:
        tensors.update({f"buffer.{k}": v for k, v in agent.buffer.state_dict().items()})
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = st
    c = agent.collector
    resume: dict[str, Any] = {
        "info_groups": [[list(keys), n] for keys, n in agent.metrics.counts.items()],
        "num_episodes": c.num_episodes if c is not None else 0,
        "episode_returns": list(c.episode_returns) if c is not None else [],
        "episode_lengths": list(c.episode_lengths) if c is not None else [],
        "python_random": jsonify(random.getstate()),
        "numpy_random": jsonify(np.random.get_state(legacy=False)),
    }
    if c is not None and c.last_obs is not None:
        tensors["env.last_obs"] = torch.as_tensor(np.ascontiguousarray(c.last_obs))
        for name in ("returns", "lengths", "prev_done"):
            tensors[f"env.{name}"] = torch.as_tensor(np.asarray(getattr(c, name)))
        resume["env"] = env_state(agent.env)
    meta["checkpoint"] = resume
    return write_safetensors(_safetensors_path(path), tensors, meta)


def restore_checkpoint(agent: SoftActorCritic, path: str | Path, changed: Collection[str] = ()) -> None:
    """:meth:`SoftActorCritic.restore`: the model state, then the buffer, the env and the RNGs."""
    tensors, meta = read_checkpoint(path)
    if meta.get("agent") != type(agent).__name__:
        raise ValueError(f"{path} is a {str(meta.get('agent'))[:40]} checkpoint, not {type(agent).__name__}")
    with _one_line_errors(path):
        _restore(agent, path, tensors, meta, changed)


def _restore(agent: SoftActorCritic, path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any],
             changed: Collection[str]) -> None:
    # A key the checkpoint predates ran with its behaviour_before value, or else today's default.
    file_hp = agent.hparams_from_file(meta["hparams"], agent.action_space)
    saved = {k: file_hp.get(k, agent.behaviour_before.get(k, agent.defaults[k])) for k in agent.hparams}
    mine = hparams_json(agent.hparams)
    differ = sorted(k for k in mine if k not in {"device", "compile", *changed} and saved[k] != mine[k])
    if differ:
        raise ValueError(f"{path} was written with other hyperparameters: "
                         + ", ".join(f"{k}={saved[k]!r} (here {mine[k]!r})" for k in differ))
    load_state_tensors(agent, tensors, meta, source=str(path))
    if changed:  # the optimizers' saved groups carry the old rates
        for name, lr in agent._learning_rates().items():
            agent.optimizers()[name].param_groups[0]["lr"] = lr
    resume = meta["checkpoint"]
    groups = [tuple(keys) for keys, _ in resume["info_groups"]]
    agent.metrics.sums = {keys: tensors[f"info.{i}"].to(agent.device) for i, keys in enumerate(groups)}
    agent.metrics.counts = {keys: int(n) for keys, (_, n) in zip(groups, resume["info_groups"], strict=True)}
    if "buffer.pos_size" in tensors:
        agent._ensure_buffer().load_state_dict({k[len("buffer."):]: v for k, v in tensors.items()
                                                if k.startswith("buffer.")})
    c = agent.collector
    if c is not None:
        c.num_episodes = int(resume["num_episodes"])
        c.episode_returns.clear()
        c.episode_returns.extend(resume["episode_returns"])
        c.episode_lengths.clear()
        c.episode_lengths.extend(resume["episode_lengths"])
    if c is not None and "env" in resume:
        n = agent.env.num_envs
        if tensors["env.returns"].shape[0] != n:
            raise ValueError(f"{path} was written with {tensors['env.returns'].shape[0]} env copies; this env has {n}")
        agent.env.reset(seed=agent.hparams["seed"])  # builds the vector env's buffers; then its state
        if set_env_state(agent.env, resume["env"]):
            c.last_obs = tensors["env.last_obs"].numpy().copy()
            c.returns = tensors["env.returns"].numpy().copy()
            c.lengths = tensors["env.lengths"].numpy().copy()
            c.prev_done = tensors["env.prev_done"].numpy().copy()
        else:  # opaque simulator state: start fresh episodes from the restored RNGs
            warnings.warn(f"{agent.env_id}: the env's state is not plain data, so its episodes restart on "
                          "resume (the interrupted episodes are lost)", RuntimeWarning, stacklevel=3)
            c.last_obs, _ = agent.env.reset()
            c.returns, c.lengths, c.prev_done = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
            buffer = agent.buffer
            if buffer is not None and len(buffer) >= n:
                # Each copy's last stored step now ends its episode (a truncation: it still bootstraps
                # from its own next observation), so n-step windows stop there instead of running on
                # into the fresh episode.
                buffer.truncated[(buffer.pos - n + torch.arange(n)) % buffer.capacity] = 1.0
    # RNGs last: nothing above may consume them after they are set.
    random.setstate(tuplify(resume["python_random"]))
    np.random.set_state(numpy_state(resume["numpy_random"]))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(len(tensors)) if f"rng.cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


__all__ = ["FORMAT", "HeaderError", "check_header", "digest", "load_model", "read_checkpoint", "read_model_file",
           "restore_checkpoint", "save_model", "write_checkpoint"]
