"""Spaces and devices: what the networks see of an observation, the spaces as plain JSON for model files,
the torch device and its CPU threads."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from agents.encoders import is_image


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A JSON description of the spaces reparl supports (no pickle anywhere)."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist()}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": space.low.tolist(), "high": space.high.tolist()}
    if isinstance(space, spaces.Tuple):  # a hybrid action space (envs.hybrid); agents.header bounds it
        return {"type": "Tuple", "spaces": [space_to_json(s) for s in space.spaces]}
    raise TypeError(f"cannot describe space {space}")


def space_from_json(d: dict[str, Any]) -> spaces.Space:
    kind = d.get("type")
    if kind == "Discrete":
        return spaces.Discrete(int(d["n"]), start=int(d["start"]))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.array(d["nvec"], dtype=np.int64), start=np.array(d["start"], dtype=np.int64))
    if kind == "Box":
        return spaces.Box(np.array(d["low"], dtype=d["dtype"]), np.array(d["high"], dtype=d["dtype"]),
                          shape=tuple(d["shape"]), dtype=d["dtype"])
    if kind == "Dict":
        return spaces.Dict({k: space_from_json(v) for k, v in d["spaces"].items()})
    if kind == "Tuple":
        return spaces.Tuple(tuple(space_from_json(v) for v in d["spaces"]))
    raise ValueError(f"unknown space type {kind!r} in saved metadata")


def obs_tensor(space: spaces.Space, obs: Any, device: torch.device) -> Tensor | dict[str, Tensor]:
    """Batched env observations -> what the buffer stores and the encoders read, on the device: a
    Discrete as its one-hot, an image in its own dtype (uint8, bool), any other Box as float, a Dict
    as a dict of these."""
    if isinstance(space, spaces.Dict):
        return {k: obs_tensor(s, obs[k], device) for k, s in space.spaces.items()}
    t = torch.as_tensor(np.asarray(obs), device=device)
    if isinstance(space, spaces.Discrete):
        return nn.functional.one_hot(t.long().reshape(-1) - int(space.start), int(space.n)).float()
    if is_image(space):
        return t
    return t.reshape(t.shape[0], -1).float()


def stored_layout(space: spaces.Space) -> tuple[Any, Any]:
    """(shape, torch dtype) of one stored observation; a Dict gives dicts of them per key."""
    if isinstance(space, spaces.Dict):
        layouts = {k: stored_layout(s) for k, s in space.spaces.items()}
        return {k: v[0] for k, v in layouts.items()}, {k: v[1] for k, v in layouts.items()}
    if isinstance(space, spaces.Discrete):
        return (int(space.n),), torch.float32
    if is_image(space):
        return tuple(space.shape), torch.bool if space.dtype == np.bool_ else torch.uint8
    return (int(np.prod(space.shape)),), torch.float32


def stored_obs(space: spaces.Space, obs: Any) -> Any:
    """The buffer keeps what :func:`obs_tensor` gives (a Discrete observation as its one-hot)."""
    if isinstance(space, spaces.Dict):
        return {k: stored_obs(s, obs[k]) for k, s in space.spaces.items()}
    if isinstance(space, spaces.Discrete):
        return obs_tensor(space, obs, torch.device("cpu")).numpy()
    return obs


def batch_of(space: spaces.Space, obs: Any) -> tuple[Any, bool]:
    """``obs`` as a batch, and whether it was a single observation (``predict`` takes either)."""
    if isinstance(space, spaces.Dict):
        if not isinstance(obs, dict) or set(obs) != set(space.spaces):
            keys = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
            raise ValueError(f"a Dict observation needs the keys {sorted(space.spaces)}; got {keys}")
        parts = {k: batch_of(s, obs[k]) for k, s in space.spaces.items()}
        singles = {single for _, single in parts.values()}
        if len(singles) != 1:
            raise ValueError("a Dict observation's values must all be single observations or all batches")
        return {k: v for k, (v, _) in parts.items()}, singles.pop()
    obs = np.asarray(obs)
    if isinstance(space, spaces.Discrete):
        single = obs.ndim == 0
    else:
        single = obs.shape == space.shape
        if not single and obs.shape[1:] != space.shape:
            raise ValueError(f"observation shape {obs.shape} fits neither {space.shape} nor a batch of it")
    return (obs[None] if single else obs), single


def same_spaces(agent: Any, observation_space: spaces.Space, action_space: spaces.Space, who: str,
                reverse: bool = False) -> None:
    """Refuse an env whose spaces are not the agent's: ``{who} {what} space X; this env has Y``."""
    for what, mine, theirs in (("observation", agent.observation_space, observation_space),
                               ("action", agent.action_space, action_space)):
        if mine != theirs:
            first, other = (theirs, mine) if reverse else (mine, theirs)
            raise ValueError(f"{who} {what} space {first}; this env has {other}")


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device; use device='cpu' or 'auto'")
    return device


_THREADS_WARNED = False


def warn_threads_once(device: torch.device) -> None:
    """Say once per process how many CPU threads torch will use: the runner sets one
    (``train.torch_threads: 1``), which for these network sizes on a shared machine was up to 8x faster
    than torch's default of one per core; a Python user otherwise never hears of the choice."""
    global _THREADS_WARNED
    if device.type == "cpu" and torch.get_num_threads() > 1 and not _THREADS_WARNED:
        _THREADS_WARNED = True
        warnings.warn(f"torch uses {torch.get_num_threads()} CPU threads (one per core). On a machine shared with "
                      "other jobs, torch.set_num_threads(1) is often much faster for networks of this size; "
                      "`run.py train` uses 1 (train.torch_threads). Compare with `run.py bench --threads N`.",
                      UserWarning, stacklevel=3)
