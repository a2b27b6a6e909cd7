"""Policy evaluation: n whole episodes, run side by side in a vector env.

Episodes are spread over ``min(n, 10)`` env copies; each copy is seeded once, so an evaluation
is reproducible, and each copy's episodes after the first continue its own RNG stream. Works
for any object with SB3's ``predict`` (our agents and SB3's models alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from agents.collect import vector_actions


@dataclass
class EvalResult:
    returns: np.ndarray
    lengths: np.ndarray
    successes: np.ndarray | None = None
    """Each episode's ``info["is_success"]`` at its end (SB3's convention), when the env reports it
    for every episode (reparl/Goal-v0: a goal scored)."""

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    def summary(self) -> dict[str, float]:
        out = {"eval/mean_return": self.mean, "eval/std_return": self.std,
               "eval/mean_length": float(np.mean(self.lengths))}
        if self.successes is not None:
            out["eval/success_rate"] = float(np.mean(self.successes))
        return out


def make_eval_env(env_id: str, n: int, env_kwargs: dict[str, Any] | None = None,
                  wrappers: list | None = None) -> gym.vector.VectorEnv:
    return gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", wrappers=wrappers,
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}, **(env_kwargs or {}))


def evaluate(model: Any, env: str | gym.vector.VectorEnv, n_episodes: int = 10, deterministic: bool = True,
             seed: int | None = 0, max_steps: int = 1_000_000) -> EvalResult:
    """Run exactly ``n_episodes`` episodes and return their returns and lengths."""
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1; got {n_episodes}")
    own = isinstance(env, str)
    venv = make_eval_env(env, min(n_episodes, 10)) if own else env
    n = venv.num_envs
    # Copy i runs episodes i, i + n, ...: every copy is told how many it owes, so the set of
    # episodes does not depend on which copies happen to finish first.
    owed = np.array([len(range(i, n_episodes, n)) for i in range(n)])
    returns: list[float] = []
    lengths: list[int] = []
    successes: list[bool | None] = []
    obs, _ = venv.reset(seed=seed)
    ep_ret, ep_len = np.zeros(n), np.zeros(n, dtype=np.int64)
    masks_fn = getattr(model, "_eval_masks", None)
    try:
        for _ in range(max_steps):
            kwargs = {}
            if masks_fn is not None and (m := masks_fn(venv)) is not None:
                kwargs["action_masks"] = m
            action, _ = model.predict(obs, deterministic=deterministic, **kwargs)
            obs, reward, term, trunc, info = venv.step(vector_actions(venv.single_action_space, action))
            ep_ret += reward
            ep_len += 1
            final = info.get("final_info", info)  # the ending step's info (SAME_STEP autoreset), or the step's
            reported = final.get("_is_success", np.zeros(n, dtype=bool))
            for i in np.flatnonzero(np.logical_or(term, trunc)):
                if owed[i] > 0:
                    returns.append(float(ep_ret[i]))
                    lengths.append(int(ep_len[i]))
                    successes.append(bool(final["is_success"][i]) if reported[i] else None)
                    owed[i] -= 1
                ep_ret[i], ep_len[i] = 0.0, 0
            if owed.sum() == 0:
                break
        else:
            raise RuntimeError(f"evaluation did not finish {n_episodes} episodes in {max_steps} steps")
    finally:
        if own:
            venv.close()
    reported_all = all(x is not None for x in successes)
    return EvalResult(np.array(returns), np.array(lengths), np.array(successes, dtype=bool) if reported_all else None)
