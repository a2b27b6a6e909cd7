"""What happens around the learning loop, shared by our agents and SB3's: progress bar,
periodic deterministic evaluation, checkpoints and throughput.

Both learners call :meth:`RunLoop.on_step` after every (vector) env step; everything there is
a couple of integer comparisons unless a boundary was crossed, so the hot loop pays nothing.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from envs import make_vec_env, obs_normalization, set_obs_normalization
from experiments.config import Config
from experiments.evaluation import EvalResult, evaluate
from experiments.tracking import Tracker

EVAL_SEED = 10_000  # eval episodes are seeded apart from training's seed stream
OnEval = Callable[[int, EvalResult], None]
"""Called after each evaluation with the env step and the result (a sweep reports it to Ray Tune)."""


def make_eval_env(cfg: Config, n_episodes: int, copy_wrapper: Callable[[gym.Env, int], gym.Env] | None = None,
                  render_mode: str | None = None) -> gym.vector.VectorEnv:
    """At most 10 sync copies (evaluate() spreads the episodes over them)."""
    env_cfg = dataclasses.replace(cfg.env, vectorization="sync")
    return make_vec_env(env_cfg, n_envs=min(n_episodes, 10), copy_wrapper=copy_wrapper, render_mode=render_mode)


def evaluate_at(cfg: Config, model: Any, eval_env: gym.vector.VectorEnv, step: int,
                train_env: gym.vector.VectorEnv | None = None) -> EvalResult:
    """A run's evaluation at env step ``step``: its episodes, mode and seeds, with the training
    env's observation normalization frozen in (``experiments.research.replay`` evaluates through this too)."""
    if train_env is not None and (state := obs_normalization(train_env)) is not None:
        set_obs_normalization(eval_env, state, frozen=True)
    return evaluate(model, eval_env, cfg.train.eval_episodes, deterministic=cfg.train.eval_deterministic,
                    seed=EVAL_SEED + step)


PLAIN_EVERY_S = 30.0
"""Seconds between plain progress lines when there is no progress bar (output not a terminal)."""


class RunLoop:
    """Progress bar, evaluation every ``eval_freq`` and checkpoints every ``checkpoint_freq`` env steps."""

    def __init__(self, cfg: Config, run_dir: Path, tracker: Tracker, model: Any,
                 save: Callable[[Path], Path], checkpoint_suffix: str,
                 train_env: gym.vector.VectorEnv | None = None, progress_bar: bool = True, start_step: int = 0,
                 on_eval: OnEval | None = None) -> None:
        self.cfg, self.run_dir, self.tracker, self.model = cfg, run_dir, tracker, model
        self.save, self.suffix, self.train_env, self.on_eval = save, checkpoint_suffix, train_env, on_eval
        t = cfg.train
        # A resumed run continues the same schedule: the first boundaries after ``start_step``.
        self.next_eval = (start_step // t.eval_freq + 1) * t.eval_freq if t.eval_freq > 0 else None
        self.next_ckpt = (start_step // t.checkpoint_freq + 1) * t.checkpoint_freq if t.checkpoint_freq > 0 else None
        self.last_eval_step: int | None = None
        self.last_eval: EvalResult | None = None
        self.eval_env = make_eval_env(cfg, t.eval_episodes) if t.eval_freq > 0 else None
        self.paused_s = 0.0  # time in evaluation and checkpoints, kept out of steps/s
        self.steps = start_step
        self.bar = None
        self.started, self.start_step = time.monotonic(), start_step
        self.next_line = self.started + PLAIN_EVERY_S
        print(f"{cfg.agent.name} on {cfg.env.id}, {t.total_timesteps:,} env steps: run folder {run_dir}", flush=True)
        # A bar only on a terminal: redirected to a file, tqdm's carriage returns become thousands of lines.
        if progress_bar and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=t.total_timesteps, initial=start_step, unit="step", dynamic_ncols=True,
                            desc=f"{cfg.agent.name} {cfg.env.id}")
        self.plain = self.bar is None

    def on_step(self, num_timesteps: int, ep_return: float | None) -> None:
        if self.bar is not None:
            self.bar.update(num_timesteps - self.steps)
            if ep_return is not None and num_timesteps // 500 != self.steps // 500:
                post = {"ep_return": f"{ep_return:.1f}"}
                if self.last_eval is not None:
                    post["eval"] = f"{self.last_eval.mean:.1f}"
                self.bar.set_postfix(post, refresh=False)
        self.steps = num_timesteps
        if self.plain and time.monotonic() >= self.next_line:
            self.print_line(num_timesteps, ep_return)
        if self.next_eval is not None and num_timesteps >= self.next_eval:
            self.evaluate(num_timesteps)
            while self.next_eval <= num_timesteps:
                self.next_eval += self.cfg.train.eval_freq
        if self.next_ckpt is not None and num_timesteps >= self.next_ckpt:
            self.checkpoint(num_timesteps)
            while self.next_ckpt <= num_timesteps:
                self.next_ckpt += self.cfg.train.checkpoint_freq

    def print_line(self, step: int, ep_return: float | None) -> None:
        """One plain progress line (logs, CI, pipes): where the run is, how fast, how it does."""
        now = time.monotonic()
        self.next_line = now + PLAIN_EVERY_S
        total = self.cfg.train.total_timesteps
        rate = (step - self.start_step) / max(now - self.started, 1e-9)
        parts = [f"step {step:,}/{total:,} ({100 * step / total:.0f}%)", f"{rate:.0f} steps/s"]
        if rate > 0:
            parts.append(f"eta {(total - step) / rate / 60:.1f} min")
        if ep_return is not None:
            parts.append(f"ep_return {ep_return:.1f}")
        if self.last_eval is not None:
            parts.append(f"eval {self.last_eval.mean:.1f} at {self.last_eval_step:,}")
        print(" | ".join(parts), flush=True)

    def checkpoint(self, step: int) -> Path:
        t0 = time.perf_counter()
        path = self.save(self.run_dir / "checkpoints" / f"step_{step}{self.suffix}")
        self.paused_s += time.perf_counter() - t0
        return path

    def evaluate(self, step: int) -> EvalResult | None:
        if self.eval_env is None:
            return None
        t0 = time.perf_counter()
        result = evaluate_at(self.cfg, self.model, self.eval_env, step, self.train_env)
        metrics = {**result.summary(), "eval/episodes": len(result.returns)}
        self.tracker.log(metrics, step)
        self.last_eval, self.last_eval_step = result, step
        if self.bar is not None:
            self.bar.set_postfix(eval=f"{result.mean:.1f}", refresh=False)
        else:
            print(f"eval at step {step:,}: {result.mean:.2f} +- {result.returns.std():.2f} "
                  f"({len(result.returns)} episodes)", flush=True)
        self.paused_s += time.perf_counter() - t0
        if self.on_eval is not None:
            self.on_eval(step, result)
        return result

    def close(self, final_step: int) -> None:
        """Evaluate the final policy unless that step was just evaluated."""
        if self.eval_env is not None and self.last_eval_step != final_step:
            self.evaluate(final_step)
        if self.bar is not None:
            self.bar.close()
        if self.eval_env is not None:
            self.eval_env.close()


class Throughput:
    """Env steps and updates per second between two log events, excluding eval/checkpoint time."""

    def __init__(self, loop: RunLoop, steps: int = 0, updates: int = 0) -> None:
        self.loop = loop
        self.t, self.steps, self.updates, self.paused = time.perf_counter(), steps, updates, 0.0

    def __call__(self, steps: int, updates: int | None) -> dict[str, float]:
        now, paused = time.perf_counter(), self.loop.paused_s
        dt = max(now - self.t - (paused - self.paused), 1e-9)
        out = {"time/steps_per_s": (steps - self.steps) / dt}
        if updates is not None:
            out["time/updates_per_s"] = (updates - self.updates) / dt
            self.updates = updates
        self.t, self.steps, self.paused = now, steps, paused
        return out


def window_mean(values: Sequence[float], window: int = 100) -> float | None:
    """Mean of the last ``window`` values: SB3's ``ep_rew_mean`` convention, so ours and SB3's match."""
    return float(np.mean(list(values)[-window:])) if values else None
