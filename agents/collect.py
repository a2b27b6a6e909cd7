"""Collection: the vector env, warm-up actions, action masks, the replay writes, episode statistics.

The agent's ``learn`` alternates :meth:`Collector.step` with updates; everything that touches the
env lives here, and everything here is plain numpy state that a checkpoint saves (:meth:`state`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agents.buffer import ReplayBuffer
from agents.spaces import stored_obs


class NonFiniteError(ValueError):
    """NaN or inf in env data, a loss or the weights: the run cannot continue meaningfully."""


def as_vector_env(env: str | gym.Env | gym.vector.VectorEnv, n_envs: int = 1) -> gym.vector.VectorEnv:
    """An env id, an env or a vector env -> a Gymnasium vector env.

    Ids and env instances get ``SAME_STEP`` autoreset, so the final observation of an episode
    arrives with the step that ended it (in ``info["final_obs"]``) and no step is spent on a reset.
    """
    if isinstance(env, gym.vector.VectorEnv):
        return env
    if isinstance(env, str):
        from envs import make_vec_env  # the one env factory (it registers reparl's own ids too)

        try:
            return make_vec_env(env, n_envs)
        except gym.error.Error as e:
            raise ValueError(f"cannot make env {env!r}: {e}") from e
    if isinstance(env, gym.Env):
        if n_envs != 1:
            raise ValueError(f"an env instance gives one copy; got n_envs={n_envs}. Pass the env id instead.")
        return gym.vector.SyncVectorEnv([lambda: env], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    raise TypeError(f"env must be a Gymnasium id, Env or VectorEnv; got {type(env).__name__}. "
                    "For an SB3 VecEnv, pass the env id instead.")


def vector_actions(space: spaces.Space, actions: Any) -> Any:
    """Actions for a Gymnasium vector env whose copies take ``space``. A list holds one action per copy
    (SB3's layout, what ``predict`` gives for a Tuple space, whose batch is not one array); Gymnasium's
    vector env wants its batched layout, one array per part. Anything else passes through."""
    if not isinstance(actions, list):
        return actions
    return gym.vector.utils.concatenate(space, actions, gym.vector.utils.create_empty_array(space, len(actions)))


def vector_env_masks(venv: Any) -> np.ndarray | None:
    """Every copy's action mask in sb3-contrib's flat layout, ``(n_envs, sum(nvec))`` bool, from the
    envs' ``action_masks()``; None when the env has no such method. Gymnasium's vector wrappers
    (RecordEpisodeStatistics, NormalizeObservation) do not forward ``call``, so it goes to the
    unwrapped vector env."""
    try:
        masks = getattr(venv, "unwrapped", venv).call("action_masks")
    except (AttributeError, NotImplementedError):
        return None
    return np.stack([np.asarray(m, dtype=bool).reshape(-1) for m in masks])


def has_action_masks(env: gym.Env) -> bool:
    """Whether one env gives action masks: an ``action_masks()`` on it or any of its wrappers, where
    :func:`vector_env_masks` finds it through a vector env's ``call``."""
    try:
        return callable(env.get_wrapper_attr("action_masks"))
    except AttributeError:
        return False


def final_masks(next_masks: np.ndarray | None, info: dict[str, Any], done: np.ndarray) -> np.ndarray | None:
    """The masks of the stored next observations. With SAME_STEP autoreset a finished copy already
    shows its reset state; the final state's mask comes from ``info["final_info"]["action_mask"]``
    (Gymnasium's convention, as Taxi's ``info["action_mask"]``), all-True where the env does not
    report it. A terminated transition never bootstraps, so that matters only for truncations."""
    if next_masks is None or not done.any():
        return next_masks
    final = info.get("final_info", {})
    reported = final.get("_action_mask", np.zeros(len(done), dtype=bool))
    out = next_masks.copy()
    for i in np.flatnonzero(done):
        out[i] = np.asarray(final["action_mask"][i], dtype=bool).reshape(-1) if reported[i] else True
    return out


def _arrays(obs: Any) -> list[np.ndarray]:
    """The arrays of an observation batch: itself, or a Dict observation's, key by key."""
    return [np.asarray(v) for v in obs.values()] if isinstance(obs, dict) else [np.asarray(obs)]


def _rows(x: Any, keep: np.ndarray) -> Any:
    return {k: np.asarray(v)[keep] for k, v in x.items()} if isinstance(x, dict) else np.asarray(x)[keep]


def _with_final(next_obs: Any, final: Any, done: np.ndarray) -> Any:
    """``next_obs`` with each finished copy's row replaced by its final observation (SAME_STEP
    autoreset). ``final`` holds one observation per copy (a Dict observation's as a dict each)."""
    out = {k: np.array(v, copy=True) for k, v in next_obs.items()} if isinstance(next_obs, dict) \
        else np.array(next_obs, copy=True)
    for i in np.flatnonzero(done):
        if isinstance(out, dict):
            for k, v in out.items():
                v[i] = final[i][k]
        else:
            out[i] = final[i]
    return out


class Collector:
    """Steps a vector env and writes each transition to the replay buffer.

    ``NEXT_STEP`` autoreset (what observation normalization needs) spends a step on each reset:
    that step stores nothing. ``SAME_STEP`` stores every step, with the final observation of an
    episode from ``info["final_obs"]``.
    """

    def __init__(self, env: gym.vector.VectorEnv, observation_space: spaces.Space, maskable: bool,
                 store_action: Callable[[np.ndarray], np.ndarray]) -> None:
        """``maskable``: the action space can take sb3-contrib masks (the env's are then used if it has
        ``action_masks()``); ``store_action``: env actions -> the buffer's layout (the head's ``from_env``)."""
        self.env, self.observation_space, self.store_action = env, observation_space, store_action
        self.use_masks = maskable and vector_env_masks(env) is not None
        autoreset = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        self.next_step_mode = autoreset in (gym.vector.AutoresetMode.NEXT_STEP, "NextStep")
        n = env.num_envs
        self.last_obs: np.ndarray | None = None
        self.returns, self.lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
        self.prev_done = np.zeros(n, dtype=bool)
        self.masks: np.ndarray | None = None
        # The last 100 episodes, as SB3's ep_info_buffer; num_episodes counts them all.
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self.num_episodes = 0

    def check_n_step(self, n_step: int) -> None:
        """n-step sampling needs one copy's transitions a fixed number of rows apart, which the reset
        steps of NEXT_STEP autoreset (they store nothing) break."""
        if self.next_step_mode and n_step > 1:
            raise ValueError(f"n_step={n_step} needs a vector env with SAME_STEP autoreset (what env ids get "
                             "here); this one resets on the next step. Pass the env id, build the vector env "
                             "with autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, or set n_step=1.")

    def reset(self, seed: int | None) -> None:
        self.last_obs, _ = self.env.reset(seed=seed)
        self.env.action_space.seed(seed)
        n = self.env.num_envs
        self.returns, self.lengths, self.prev_done = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)

    def env_masks(self) -> np.ndarray | None:
        return vector_env_masks(self.env) if self.use_masks else None

    def step(self, act: Callable[[np.ndarray, np.ndarray | None], np.ndarray] | None,
             random_act: Callable[[np.ndarray], np.ndarray], buffer: ReplayBuffer, label: str, step: int) -> None:
        """One vector step: ``act(obs, masks)`` picks env actions (None: warm-up, uniform over the
        allowed actions), the env steps, the transitions go to ``buffer``."""
        env, obs, masks = self.env, self.last_obs, self.masks
        if act is None:
            env_action = env.action_space.sample() if masks is None else random_act(masks)
        else:
            env_action = vector_actions(env.single_action_space, act(obs, masks))
        next_obs, rewards, terminated, truncated, info = env.step(env_action)
        done = np.logical_or(terminated, truncated)
        real_next = next_obs
        if not self.next_step_mode and done.any():
            real_next = _with_final(next_obs, info["final_obs"], done)
        # Small arrays: microseconds, and a NaN never reaches the buffer or the critics.
        for what, values in (("reward", rewards), *(("observation", x) for x in (*_arrays(real_next),
                                                                                  *_arrays(next_obs)))):
            if not np.isfinite(values).all():
                raise NonFiniteError(f"env {label} returned a non-finite {what} at env step "
                                     f"{step + env.num_envs}: {what}s={np.asarray(values)!r}")
        next_masks = self.env_masks()
        fields = (stored_obs(self.observation_space, obs), self.store_action(env_action), rewards,
                  stored_obs(self.observation_space, real_next), terminated, truncated)
        if self.next_step_mode:  # the step after a done only resets: nothing to store
            keep = ~self.prev_done
            if keep.any():
                buffer.add(*(_rows(x, keep) for x in fields),
                           *(m[keep] if m is not None else None for m in (masks, next_masks)),
                           copies=np.flatnonzero(keep))
            self.prev_done = done
        else:
            keep = None
            buffer.add(*fields, masks, final_masks(next_masks, info, done))
        self._track_episodes(rewards, done, keep)
        self.last_obs, self.masks = next_obs, next_masks

    def _track_episodes(self, rewards: np.ndarray, done: np.ndarray, counted: np.ndarray | None) -> None:
        """``counted``: copies whose step belongs to an episode (False on a NEXT_STEP reset step)."""
        self.returns += rewards
        self.lengths += 1 if counted is None else counted
        for i in np.flatnonzero(done):
            self.episode_returns.append(float(self.returns[i]))
            self.episode_lengths.append(int(self.lengths[i]))
            self.num_episodes += 1
            self.returns[i] = 0.0
            self.lengths[i] = 0
