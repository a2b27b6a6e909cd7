"""A combinatorial-action MDP whose reward lives entirely in interactions between action factors.

``reparl/Combinatorial-v0``: ``MultiDiscrete([4] * 8)`` actions, 4^8 = 65,536 joint actions.
The factors sit on a ring; pair k links factor k to factor k+1 (mod 8). The state holds a shift
s_k in {0..3} per pair and a key in {0..3}. Each step pays

    r(s, a) = (1/8) * #{k : a_{k+1} - a_k = s_k (mod 4)}      in [0, 1]

and moves to fresh shifts s' drawn uniformly at random, except that their sum is fixed by the
action: sum_k s'_k = a_0 - key (mod 4). Summing the ring's constraints shows all eight can hold
only if sum_k s_k = 0 (mod 4) (a "consistent" state); then exactly four joint actions satisfy
them (pick a_0, propagate), one for each value of a_0. So a step is worth 1 now *and* keeps the
next state consistent only if it satisfies every pair with a_0 = key; an inconsistent state caps
the step at 7/8. Episodes last ``horizon`` (16) steps and then terminate (time is observed).
Observation: one-hot shifts (32), one-hot key (4), t / horizon (1).

Returns (``horizon = 16``; asserted in ``tests/test_combinatorial.py``):

* optimal: 16. The initial state is consistent and the policy "satisfy every pair, a_0 = key"
  keeps it so, earning 1 per step.
* myopic (every pair satisfied, a_0 at random): 1 + 15 * (1/4 * 1 + 3/4 * 7/8) = 14.59.
* uniform random: 16 / 4 = 4, since each pair holds with probability 1/4 under independent
  uniform factors, whatever the state.

Why a factorized critic fails. Q(s, a) = sum_i q_i(s, a_i) can only represent the additive part
of r. Under independent uniform factors, E[1{a_{k+1} - a_k = s_k} | a_i] = 1/4 for every value of
a_i (the other factor is uniform), so each pair term has no main effect: its best additive fit is
the constant 1/4, and so is the best fit of the whole reward (the key's effect on the future runs
through a_0 alone and is additive, but is worth nothing while the pairs are random). After the
uniform warm-up a factorized critic is therefore flat in the pair structure, the actor's
pathwise gradient through it is zero, SAC's entropy term keeps the policy uniform, and the data
stay uniform: the random policy is a fixed point. A joint critic Q(s, a_1..a_8) represents r
exactly. (The same orthogonality of interaction terms to additive functions is why value
decomposition breaks on non-monotonic games; Rashid et al. 2018, QMIX, sec. 4.)

``reparl/CombinatorialMasked-v0`` adds state-dependent action masks, in sb3-contrib's
``action_masks()`` convention for MultiDiscrete: a flat bool array of length sum(nvec) = 32, one
block of 4 per factor, True = allowed. Each factor forbids one choice, drawn at random among those
off the reference assignment a*_0 = key, a*_{k+1} = a*_k + s_k, so a* (perfect in a consistent
state, 7/8 otherwise, and with a_0 = key) stays allowed and the optimal return is still 16; the
mask is part of the observation (32 more entries) so the state stays Markov. A step with any
forbidden choice pays 0. The uniform policy over the allowed choices returns about 4.15 (Monte
Carlo, 20,000 episodes, +- 0.01); uniform over all choices (ignoring the masks) about 0.40.
``info["action_mask"]`` carries the mask too, so a vector env's ``final_info`` keeps the final
state's mask after an autoreset.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Combinatorial(gym.Env):
    """The ring-of-pairs MDP above. ``factors`` >= 2 action factors of ``choices`` each."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, factors: int = 8, choices: int = 4, horizon: int = 16) -> None:
        if factors < 2 or choices < 2 or horizon < 1:
            raise ValueError(f"need factors >= 2, choices >= 2, horizon >= 1; got {factors}, {choices}, {horizon}")
        self.factors, self.choices, self.horizon = factors, choices, horizon
        self.action_space = spaces.MultiDiscrete([choices] * factors)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(self._obs_size(),), dtype=np.float32)
        self.shifts = np.zeros(factors, dtype=np.int64)
        self.key = 0
        self.t = 0

    def _obs_size(self) -> int:
        return self.factors * self.choices + self.choices + 1

    def _obs(self) -> np.ndarray:
        o = np.zeros(self._obs_size(), dtype=np.float32)
        o[np.arange(self.factors) * self.choices + self.shifts] = 1.0
        o[self.factors * self.choices + self.key] = 1.0
        o[-1] = self.t / self.horizon
        return o

    def _new_state(self, closing_sum: int) -> None:
        """Uniform shifts whose sum is ``closing_sum`` (mod choices), and a uniform key."""
        s = self.np_random.integers(self.choices, size=self.factors)
        s[-1] = (closing_sum - s[:-1].sum()) % self.choices
        self.shifts = s
        self.key = int(self.np_random.integers(self.choices))

    def reference_action(self) -> np.ndarray:
        """a*_0 = key, a*_{k+1} = a*_k + s_k: every pair but the closing one holds; all hold in a
        consistent state. An optimal action."""
        return (self.key + np.concatenate([[0], np.cumsum(self.shifts[:-1])])) % self.choices

    def pair_score(self, action: np.ndarray) -> float:
        a = np.asarray(action, dtype=np.int64)
        return float(((np.roll(a, -1) - a) % self.choices == self.shifts).mean())

    def _info(self) -> dict[str, Any]:
        return {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self._new_state(0)
        return self._obs(), self._info()

    def _reward(self, action: np.ndarray) -> float:
        return self.pair_score(action)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.asarray(action, dtype=np.int64).reshape(self.factors)
        reward = self._reward(a)
        self.t += 1
        self._new_state(int(a[0]) - self.key)
        return self._obs(), reward, self.t >= self.horizon, False, self._info()


class CombinatorialMasked(Combinatorial):
    """:class:`Combinatorial` with one forbidden choice per factor, in sb3-contrib's convention."""

    def __init__(self, factors: int = 8, choices: int = 4, horizon: int = 16) -> None:
        super().__init__(factors, choices, horizon)
        self.mask = np.ones((factors, choices), dtype=bool)

    def _obs_size(self) -> int:
        return super()._obs_size() + self.factors * self.choices

    def _obs(self) -> np.ndarray:
        o = super()._obs()
        o[super()._obs_size():] = self.mask.reshape(-1)
        return o

    def _new_state(self, closing_sum: int) -> None:
        super()._new_state(closing_sum)
        ref = self.reference_action()
        # A uniform choice among the (choices - 1) values other than a*_i: a* + 1 + U{0..choices-2}.
        off = (ref + 1 + self.np_random.integers(self.choices - 1, size=self.factors)) % self.choices
        self.mask = np.ones((self.factors, self.choices), dtype=bool)
        self.mask[np.arange(self.factors), off] = False

    def action_masks(self) -> np.ndarray:
        """sb3-contrib's MultiDiscrete layout: flat, one block of ``choices`` per factor, True = allowed."""
        return self.mask.reshape(-1).copy()

    def _info(self) -> dict[str, Any]:
        return {"action_mask": self.action_masks()}

    def _reward(self, action: np.ndarray) -> float:
        if not self.mask[np.arange(self.factors), action].all():
            return 0.0  # a forbidden choice voids the step
        return self.pair_score(action)


for _name, _cls in (("Combinatorial", Combinatorial), ("CombinatorialMasked", CombinatorialMasked)):
    if f"reparl/{_name}-v0" not in gym.registry:
        gym.register(f"reparl/{_name}-v0", entry_point=_cls)
