"""``eval``: load a run's model (ours or SB3's) and report returns, optionally with videos."""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.header import short
from envs import load_obs_normalization, make_env, set_obs_normalization
from experiments.config import OUR_AGENTS, SB3_ALGOS, Config, ConfigError, build_config, load_config
from experiments.evaluation import EvalResult, evaluate
from experiments.extras import require
from experiments.loop import EVAL_SEED, make_eval_env
from experiments.rundir import find_model
from experiments.tracking import Tracker


@dataclass
class EvalReport:
    result: EvalResult
    run_dir: Path | None
    model_path: Path
    videos: list[Path]
    wandb_sync_hint: str | None


def registered_env_id(env_id: str, model: Path) -> str:
    """An env id read from a model file, if Gymnasium's registry holds it. A file is data: its id is
    never imported (``module:EnvId`` runs that module's code), only looked up; ``--env`` may import."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers reparl's own ids)

    if ":" in env_id or env_id not in gym.registry:
        why = "names a module to import" if ":" in env_id else "is not a registered Gymnasium id"
        raise ConfigError(f"{model}: header field env_id {short(env_id)} {why}; an env named in a model file is "
                          "only looked up, never imported: pass --env ENV_ID explicitly (module:EnvId there if you "
                          "trust that module)")
    return env_id


def resolve_target(target: Path, env_id: str | None = None,
                   agent: str | None = None) -> tuple[Config, Path, Path | None]:
    """A run folder or a model file -> (config, model path, run folder or None).

    A bare SB3 zip outside a run folder needs ``env_id`` and ``agent`` (its algorithm is not named in
    a form we read without unpickling); our safetensors files name both.
    """
    target = Path(target)
    if target.is_dir():
        run_dir, model = target, find_model(target)
    elif target.is_file():
        run_dir, model = (target.parent, target) if (target.parent / "config.yaml").is_file() else (None, target)
    else:
        raise ConfigError(f"{target}: no such run folder or model file")
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        overrides = {"env.id": env_id} if env_id else None
        return load_config(run_dir / "config.yaml", overrides), model, run_dir
    if model.suffix == ".safetensors":
        from agents.checkpoint import read_model_file

        try:
            _, meta = read_model_file(model)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        agent = meta["agent"]
        if env_id is None and meta.get("env_id") is not None:  # our model files name the env they were trained on
            env_id = registered_env_id(meta["env_id"], model)
    if env_id is None:
        raise ConfigError(f"{target} is not inside a run folder (no config.yaml beside it) and does not name "
                          "its env; pass --env ENV_ID")
    if agent is None:
        raise ConfigError(f"{target}: an SB3 zip outside a run folder needs --agent ({', '.join(SB3_ALGOS)})")
    cfg = build_config({"agent": {"name": agent}, "env": {"id": env_id}}, source="--env/--agent")
    return cfg, model, None


def load_model(cfg: Config, path: Path, device: str) -> Any:
    """The model, or a ConfigError (one line, no traceback) for a file that is not one."""
    if cfg.agent.name in OUR_AGENTS:
        from agents import AGENTS

        try:
            return AGENTS[cfg.agent.name].load(path, device=device)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    from experiments.baselines import load_sb3

    try:
        return load_sb3(cfg.agent.name, path, device)
    except Exception as e:  # SB3 raises anything from zipfile, pickle or torch on a file that is not its zip
        raise ConfigError(f"{path}: not a readable SB3 {cfg.agent.name} model ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:150]})") from None


def _video_wrapper(folder: Path, n_episodes: int, n_copies: int) -> Any:
    stamp = time.strftime("%Y%m%d-%H%M%S")  # a later eval adds videos instead of overwriting these

    def wrap(env: gym.Env, i: int) -> gym.Env:
        # Copy i owes episodes i, i + n, ... (evaluate()'s split); record only those, not the
        # extra ones it plays while other copies finish.
        owed = len(range(i, n_episodes, n_copies))
        with warnings.catch_warnings():
            # Every copy shares videos/; the files differ by prefix, so "overwriting" is a false alarm.
            warnings.filterwarnings("ignore", message=".*Overwriting existing videos.*")
            return gym.wrappers.RecordVideo(env, str(folder), name_prefix=f"eval-{stamp}-copy{i}",
                                           episode_trigger=lambda ep: ep < owed, disable_logger=True)
    return wrap


def run_eval(target: Path, episodes: int | None = None, deterministic: bool = True, video: bool = False,
             seed: int = EVAL_SEED, device: str = "auto", env_id: str | None = None, agent: str | None = None,
             wandb_mode: str | None = None) -> EvalReport:
    if video:  # before the model loads: gymnasium's RecordVideo needs moviepy to encode the mp4s
        require("video", "run.py eval --video", "moviepy")
    cfg, model_path, run_dir = resolve_target(target, env_id, agent)
    n = episodes or cfg.train.eval_episodes
    if n < 1:
        raise ConfigError(f"--episodes must be >= 1; got {n}")
    if video:
        probe = make_env(cfg.env)
        modes = list(probe.metadata.get("render_modes", []))
        probe.close()
        if "rgb_array" not in modes:
            raise ConfigError(f"--video: env {cfg.env.id} cannot draw frames (its render modes are {modes}, "
                              "not 'rgb_array'); evaluate without --video")
    if cfg.train.torch_threads is not None:
        import torch

        torch.set_num_threads(cfg.train.torch_threads)
    model = load_model(cfg, model_path, device)
    out_dir = run_dir if run_dir is not None else model_path.parent
    video_dir = out_dir / "videos"
    if video:
        # pygame renders off-screen; without a display SDL only prints "XDG_RUNTIME_DIR is invalid".
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        video_dir.mkdir(parents=True, exist_ok=True)
        before = set(video_dir.glob("*.mp4"))
        venv = make_eval_env(cfg, n, copy_wrapper=_video_wrapper(video_dir, n, min(n, 10)), render_mode="rgb_array")
    else:
        venv = make_eval_env(cfg, n)
    if cfg.env.normalize_obs:
        state = load_obs_normalization(out_dir / "obs_rms.json")
        if state is None:
            raise ConfigError(f"{out_dir}: env.normalize_obs is set but obs_rms.json is missing")
        set_obs_normalization(venv, state, frozen=True)
    try:
        result = evaluate(model, venv, n, deterministic=deterministic, seed=seed)
    finally:
        venv.close()  # RecordVideo writes its last file on close
    videos = sorted(set(video_dir.glob("*.mp4")) - before) if video else []
    step = int(getattr(model, "num_timesteps", 0))
    (out_dir / "eval.json").write_text(json.dumps({
        "model": str(model_path), "episodes": n, "deterministic": deterministic, "seed": seed, "global_step": step,
        "returns": result.returns.tolist(), "lengths": result.lengths.tolist(), "mean_return": result.mean,
        "std_return": result.std, "videos": [str(v) for v in videos]}, indent=1))

    hint = None
    # W&B only when there is media to show (or when asked): an eval without it adds nothing to the train run.
    mode = wandb_mode or (cfg.wandb.mode if video else "disabled")
    if mode != "disabled":
        cfg.wandb.mode = mode  # type: ignore[assignment]
        tracker = Tracker(out_dir, cfg, job_type="eval", metrics_file="eval_metrics.jsonl",
                          name=f"{out_dir.name}-eval")
        tracker.log({**result.summary(), "eval/episodes": n}, step)
        for v in videos:
            tracker.log_video(v, step)
        hint = tracker.finish()
    return EvalReport(result, run_dir, model_path, videos, hint)


def format_report(r: EvalReport, deterministic: bool) -> str:
    res = r.result
    lengths = res.lengths
    lines = [
        f"model: {r.model_path}",
        f"episodes: {len(res.returns)} ({'deterministic' if deterministic else 'stochastic'} policy)",
        f"return: {res.mean:.2f} ± {res.std:.2f} (min {np.min(res.returns):.2f}, max {np.max(res.returns):.2f})",
        f"episode lengths: mean {np.mean(lengths):.1f} (min {np.min(lengths)}, max {np.max(lengths)}): "
        f"{' '.join(str(x) for x in lengths)}",
    ]
    if r.videos:
        lines.append(f"videos: {len(r.videos)} in {r.videos[0].parent}")
    if r.wandb_sync_hint:
        lines.append(f"W&B (offline): upload with `{r.wandb_sync_hint}`")
    return "\n".join(lines)
