"""SB3 baselines (DQN, PPO, A2C, SAC, TD3) behind the same ``train``/``eval`` and metric names.

SB3's logger is forwarded by a :class:`MetricsWriter` (an SB3 ``KVWriter``) that renames SB3's
keys onto our namespaces, so a dashboard overlays ``rollout/ep_return`` of a baseline and of
our agents without translation. This is lighter than ``WandbCallback``, which reaches W&B only
through tensorboard syncing. Evaluation uses the same
:func:`experiments.evaluation.evaluate` on the same eval envs as our agents.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger

from envs import make_env
from experiments.config import Config, agent_class
from experiments.loop import OnEval, RunLoop, Throughput
from experiments.tracking import Tracker

# SB3 key -> ours; None drops a key whose content we compute ourselves or that global_step carries.
KEY_MAP: dict[str, str | None] = {
    "rollout/ep_rew_mean": "rollout/ep_return",
    "rollout/ep_len_mean": "rollout/ep_length",
    "time/episodes": "rollout/episodes",
    "train/ent_coef": "train/alpha",  # SAC's entropy weight is `alpha` in ours
    "train/ent_coef_loss": "train/alpha_loss",
    "time/fps": None,  # SB3's is a mean since the start; ours is over the last log interval
    "time/total_timesteps": None,
    "time/time_elapsed": None,
    "time/iterations": None,
}


def map_sb3_metrics(key_values: dict[str, Any]) -> dict[str, float]:
    """Rename SB3's scalar metrics onto reparl's namespaces; strings and other objects are dropped."""
    out: dict[str, float] = {}
    for key, value in key_values.items():
        new = KEY_MAP.get(key, key)
        if new is None:
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[new] = value
    return out


class MetricsWriter(KVWriter):
    """Forwards SB3 ``logger.dump`` events to the tracker, at most once per ``log_interval`` env steps.

    SB3 dumps after every episode (off-policy, ``log_interval=1``) or rollout (on-policy); the
    throttle gives the same cadence as our agents' logs.
    """

    def __init__(self, tracker: Tracker, log_interval: int, throughput: Throughput) -> None:
        self.tracker, self.log_interval, self.throughput = tracker, log_interval, throughput
        self.next_log = log_interval

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        if step < self.next_log:
            return
        while self.next_log <= step:
            self.next_log += self.log_interval
        metrics = map_sb3_metrics(key_values)
        updates = metrics.get("train/n_updates")
        metrics.update(self.throughput(step, int(updates) if updates is not None else None))
        self.tracker.log(metrics, step)

    def close(self) -> None:
        pass


class LoopCallback(BaseCallback):
    """Drives the shared :class:`RunLoop` (progress bar, evaluation, checkpoints) from SB3's loop."""

    def __init__(self, loop: RunLoop) -> None:
        super().__init__()
        self.loop = loop

    def _on_step(self) -> bool:
        buf = self.model.ep_info_buffer
        self.loop.on_step(self.num_timesteps, float(buf[-1]["r"]) if buf else None)
        return True


def build_sb3(cfg: Config) -> Any:
    """The SB3 model with the config's hyperparameters on an SB3 VecEnv (Monitor-wrapped copies)."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from experiments.sb3_extractors import resolve_policy_kwargs

    hp = dict(cfg.agent.hyperparameters)
    noise_std = hp.pop("action_noise_std", None)
    if hp.get("policy_kwargs") is not None:
        hp["policy_kwargs"] = resolve_policy_kwargs(hp["policy_kwargs"])
    vec_cls = SubprocVecEnv if cfg.env.vectorization == "async" else DummyVecEnv
    # Our factory builds each copy, so SB3 trains on exactly the env our agents see (Atari preprocessing included).
    env = make_vec_env(partial(make_env, cfg.env), n_envs=cfg.env.n_envs, seed=cfg.train.seed, vec_env_cls=vec_cls)
    if noise_std is not None:
        d = int(np.prod(env.action_space.shape))
        hp["action_noise"] = NormalActionNoise(np.zeros(d), noise_std * np.ones(d))
    return agent_class(cfg.agent.name)("MlpPolicy", env, seed=cfg.train.seed, device=cfg.train.device,
                                       verbose=0, **hp)


def train_sb3(cfg: Config, run_dir: Path, tracker: Tracker, progress_bar: bool,
              on_eval: OnEval | None = None) -> tuple[Path, float | None]:
    model = build_sb3(cfg)

    def save(path: Path) -> Path:
        model.save(path)
        return path

    loop = RunLoop(cfg, run_dir, tracker, model, save=save, checkpoint_suffix=".zip", progress_bar=progress_bar,
                   on_eval=on_eval)
    writer = MetricsWriter(tracker, cfg.train.log_interval, Throughput(loop))
    model.set_logger(Logger(folder=None, output_formats=[writer]))
    try:
        model.learn(cfg.train.total_timesteps, callback=LoopCallback(loop), log_interval=1, progress_bar=False)
        model_path = save(run_dir / "model.zip")
        loop.close(model.num_timesteps)
    finally:
        model.get_env().close()
    return model_path, loop.last_eval.mean if loop.last_eval is not None else None


def load_sb3(name: str, path: Path, device: str) -> Any:
    """SB3's own zip format (it unpickles: load only models you trust, as SB3 documents)."""
    return agent_class(name).load(path, device=device)
