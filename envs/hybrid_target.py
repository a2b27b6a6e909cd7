"""A one-step hybrid-action env whose optimum is known in closed form, for unit tests.

``reparl/HybridTarget-v0``. The state is one number s ~ U(-1, 1). The agent picks k in {0, 1, 2} and
a parameter x_k in [-2, 2]; the episode ends with reward

    r_k(s, x) = c_k(s) - (x - t_k(s))^2,    c(s) = (s, -s, 1/4),    t(s) = (s, -s, 2s).

So the best parameter of each k is its target t_k(s), worth c_k(s), and the best action is

    k*(s) = 0 if s > 1/4,   1 if s < -1/4,   2 otherwise;   x* = t_{k*}(s);   r*(s) = max(|s|, 1/4).

Both the choice and the parameter depend on the state, and the choice's boundaries (|s| = 1/4) do
not coincide with any parameter's. The optimal expected return is
E[max(|s|, 1/4)] = 1/4 * 1/4 + (1 - 1/16) / 2 = 17/32 = 0.53125. The uniform random policy gets
E[c_k] - E[(x - t_k)^2] = 1/12 - (4/3 + 2/3) = -23/12 (x uniform on [-2, 2] has variance 4/3,
and E[t_k(s)^2] averages 1/3, 1/3, 4/3 over k).

``shared=True`` gives the same task in the shared form, ``Tuple((Discrete(3), Box(-2, 2, (1,))))``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

BOUND = 2.0
OPTIMAL_RETURN = 17 / 32
RANDOM_RETURN = -23 / 12


def values(s: float) -> tuple[np.ndarray, np.ndarray]:
    """(c(s), t(s)): each action's best reward and the parameter that earns it."""
    return np.array([s, -s, 0.25]), np.array([s, -s, 2 * s])


def reward(s: float, k: int, x: float) -> float:
    c, t = values(s)
    return float(c[k] - (x - t[k]) ** 2)


def optimum(s: float) -> tuple[int, float, float]:
    """(k*, x*, r*) at state s."""
    c, t = values(s)
    k = int(np.argmax(c))
    return k, float(t[k]), float(c[k])


class HybridTarget(gym.Env):
    """The one-step task above; ``shared`` picks the shared-Box form of the action space."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, shared: bool = False) -> None:
        box = spaces.Box(-BOUND, BOUND, (1,), dtype=np.float32)
        self.shared = bool(shared)
        self.action_space = spaces.Tuple((spaces.Discrete(3), box if shared else spaces.Tuple((box,) * 3)))
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
        self.s = 0.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        # A float32 state, so the observation is the state exactly.
        self.s = float(np.float32(self.np_random.uniform(-1.0, 1.0)))
        return np.array([self.s], dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        k, params = action
        k = int(k)
        x = float(np.clip(np.asarray(params if self.shared else params[k]).reshape(-1)[0], -BOUND, BOUND))
        return np.array([self.s], dtype=np.float32), reward(self.s, k, x), True, False, {}
