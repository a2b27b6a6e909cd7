"""Tiny Gymnasium environments whose correct behaviour is known exactly, for the agent tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CounterEnv(gym.Env):
    """obs = [steps taken in this episode]; never terminates (wrap in TimeLimit to truncate).

    Terminates instead when ``terminate_at`` is reached, so a test can tell the two apart.
    """

    def __init__(self, terminate_at: int | None = None, box_actions: bool = False) -> None:
        self.observation_space = spaces.Box(0.0, 1000.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32) if box_actions else spaces.Discrete(2)
        self.terminate_at = terminate_at
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.array([float(self.t)], dtype=np.float32), 1.0, terminated, False, {}


def counter_env(max_steps: int = 5, terminate_at: int | None = None, box_actions: bool = False) -> gym.Env:
    return gym.wrappers.TimeLimit(CounterEnv(terminate_at, box_actions), max_episode_steps=max_steps)


class DiscreteIdentity(gym.Env):
    """One-step contextual bandit: obs is the one-hot of a random class, reward 1 for naming it.

    The action space may start anywhere (``start``), so the correct env action is ``class + start``.
    """

    def __init__(self, n: int = 4, start: int = 0) -> None:
        self.n, self.start = n, start
        self.observation_space = spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32)
        self.action_space = spaces.Discrete(n, start=start)
        self.k = 0

    def _obs(self) -> np.ndarray:
        o = np.zeros(self.n, dtype=np.float32)
        o[self.k] = 1.0
        return o

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.k = int(self.np_random.integers(self.n))
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(int(action) == self.k + self.start)
        return self._obs(), reward, True, False, {}


class ContinuousIdentity(gym.Env):
    """One-step bandit: obs x ~ U[-1, 1], action a in [-2, 2], reward -(a - x)^2 (best: a = x)."""

    def __init__(self, dim: int = 1) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(dim,), dtype=np.float32)
        self.action_space = spaces.Box(-2.0, 2.0, shape=(dim,), dtype=np.float32)
        self.x = np.zeros(dim, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, size=self.x.shape).astype(np.float32)
        return self.x.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = -float(np.sum((np.asarray(action, dtype=np.float64) - self.x) ** 2))
        return self.x.copy(), reward, True, False, {}


class MultiDiscreteTarget(gym.Env):
    """Ragged MultiDiscrete([2, 3, 4]) actions; reward counts factors equal to a target read from obs.

    obs is the concatenated one-hot of the target (2 + 3 + 4 = 9 entries); episodes last 8 steps.
    """

    nvec = (2, 3, 4)

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, shape=(sum(self.nvec),), dtype=np.float32)
        self.action_space = spaces.MultiDiscrete(list(self.nvec))
        self.target = np.zeros(3, dtype=np.int64)
        self.t = 0

    def _obs(self) -> np.ndarray:
        o = np.zeros(sum(self.nvec), dtype=np.float32)
        offsets = np.cumsum((0, *self.nvec[:-1]))
        o[offsets + self.target] = 1.0
        return o

    def _draw(self) -> None:
        self.target = np.array([self.np_random.integers(n) for n in self.nvec])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self._draw()
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.asarray(action)
        assert a.shape == (3,) and all(0 <= a[i] < n for i, n in enumerate(self.nvec)), a
        reward = float((a == self.target).sum())
        self.t += 1
        self._draw()
        return self._obs(), reward, False, self.t >= 8, {}


class NaNAfter(gym.Wrapper):
    """Returns a NaN observation (``what="obs"``) or reward (``"reward"``), or raises (``"raise"``),
    from the ``at``-th step on, counted across episodes: a broken simulator, for the runner's checks.
    ``"interrupt"`` raises KeyboardInterrupt there, as a second SIGINT does wherever it lands."""

    def __init__(self, env: gym.Env, at: int = 250, what: str = "obs") -> None:
        super().__init__(env)
        self.at, self.what, self.steps = at, what, 0

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps >= self.at:
            if self.what == "raise":
                raise RuntimeError(f"simulator crashed at step {self.steps}")
            if self.what == "interrupt":
                raise KeyboardInterrupt
            if self.what == "obs":
                obs = np.full_like(obs, np.nan)
            else:
                reward = float("inf")
        return obs, reward, terminated, truncated, info


def _nan_cartpole(at: int = 250, what: str = "obs") -> gym.Env:
    return NaNAfter(gym.make("CartPole-v1"), at, what)


if "NaNCartPole-v0" not in gym.registry:  # importable as `tests.envs_for_tests:NaNCartPole-v0` from the CLI
    gym.register("NaNCartPole-v0", entry_point=_nan_cartpole)


class PickleExploit:
    """Unpickling this touches ``marker``: a file that must never appear if loading is safe."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


class PixelSide(gym.Env):
    """One-step task from pixels: a bright 2x2 spot in the left or right half of a 12x12 uint8 image
    (channels last, 3 channels, dim noise elsewhere); action 0 (left) or 1 (right) earns 1 when it
    names the spot's half, else 0. Optimal return 1, random 0.5. ``dict_obs``: the image under "image"
    and a vector "flip" in {0, 1} that swaps which action is right, so both keys matter (optimal 1)."""

    def __init__(self, dict_obs: bool = False, channels_first: bool = False) -> None:
        self.dict_obs, self.channels_first = dict_obs, channels_first
        shape = (3, 12, 12) if channels_first else (12, 12, 3)
        image = spaces.Box(0, 255, shape, dtype=np.uint8)
        self.observation_space = spaces.Dict({"image": image, "flip": spaces.Box(0.0, 1.0, (1,), np.float32)}) \
            if dict_obs else image
        self.action_space = spaces.Discrete(2)
        self.answer = 0

    def _obs(self) -> Any:
        img = self.np_random.integers(0, 40, (12, 12, 3), dtype=np.uint8)
        side = int(self.np_random.integers(2))
        row, col = int(self.np_random.integers(0, 10)), int(self.np_random.integers(0, 4)) + 6 * side
        img[row:row + 2, col:col + 2] = 255
        if self.channels_first:
            img = np.ascontiguousarray(img.transpose(2, 0, 1))
        if not self.dict_obs:
            self.answer = side
            return img
        flip = int(self.np_random.integers(2))
        self.answer = side ^ flip
        return {"image": img, "flip": np.array([float(flip)], dtype=np.float32)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        reward = float(int(action) == self.answer)
        return self._obs(), reward, True, False, {}
