"""``train``: one config -> one run folder (and one W&B run), for our agents and SB3's alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs import make_vec_env, save_obs_normalization
from experiments.config import Config, agent_class
from experiments.loop import RunLoop, Throughput, window_mean
from experiments.rundir import create_run_dir, write_run_files
from experiments.tracking import Tracker


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    final_eval: float | None
    wandb_sync_hint: str | None
    wandb_error: str | None


def train_ours(cfg: Config, run_dir: Path, tracker: Tracker, progress_bar: bool) -> tuple[Path, float | None]:
    """GumbelSAC / GaussianSAC: the agent's own loop, with the runner's work in its callback."""
    venv = make_vec_env(cfg.env)
    agent = agent_class(cfg.agent.name)(venv, seed=cfg.train.seed, device=cfg.train.device,
                                        **cfg.agent.hyperparameters)
    loop = RunLoop(cfg, run_dir, tracker, agent, save=agent.save, checkpoint_suffix=".safetensors",
                   train_env=venv, progress_bar=progress_bar)
    rate = Throughput(loop)
    log_every = cfg.train.log_interval
    state = {"next_log": log_every, "last_log": -1}

    def log_now(a: Any) -> None:
        # pop_train_info() is the one host sync of the update metrics (they accumulate on-device).
        metrics: dict[str, Any] = dict(a.pop_train_info())
        if a.episode_returns:
            metrics["rollout/ep_return"] = window_mean(a.episode_returns)
            metrics["rollout/ep_length"] = window_mean(a.episode_lengths)
            metrics["rollout/episodes"] = a.num_episodes
        metrics.update(rate(a.num_timesteps, a.num_updates))
        tracker.log(metrics, a.num_timesteps)
        state["last_log"] = a.num_timesteps

    def callback(a: Any) -> None:
        n = a.num_timesteps
        if n >= state["next_log"]:
            log_now(a)
            while state["next_log"] <= n:
                state["next_log"] += log_every
        loop.on_step(n, a.episode_returns[-1] if a.episode_returns else None)

    try:
        agent.learn(cfg.train.total_timesteps, callback=callback, progress_bar=False)
        if agent.num_timesteps != state["last_log"]:  # flush the tail since the last log
            log_now(agent)
        model_path = agent.save(run_dir / "model.safetensors")
        save_obs_normalization(venv, run_dir / "obs_rms.json")
        loop.close(agent.num_timesteps)
    finally:
        venv.close()
    return model_path, loop.last_eval.mean if loop.last_eval is not None else None


def run_training(cfg: Config, runs_root: Path, name: str, command: list[str], run_dir: Path | None = None,
                 progress_bar: bool = True) -> TrainResult:
    """Create the run folder, train, save, and close the trackers (also on failure)."""
    run_dir = create_run_dir(runs_root, name) if run_dir is None else run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_files(run_dir, cfg, command)
    if cfg.train.torch_threads is not None:
        import torch

        torch.set_num_threads(cfg.train.torch_threads)
    tracker = Tracker(run_dir, cfg)
    hint = None
    try:
        if cfg.agent.is_sb3:
            from experiments.baselines import train_sb3

            model_path, final = train_sb3(cfg, run_dir, tracker, progress_bar)
        else:
            model_path, final = train_ours(cfg, run_dir, tracker, progress_bar)
        tracker.summary({"eval/final_mean_return": final} if final is not None else {})
        tracker.log_model(model_path)
    finally:
        hint = tracker.finish()
    return TrainResult(run_dir, model_path, final, hint, tracker.wandb_error)
