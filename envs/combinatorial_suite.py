"""A suite of combinatorial-action tasks that differ in the *structure* of their reward.

:mod:`envs.combinatorial`'s ring rewards pairs of neighbouring factors. A critic form or a default
chosen on it alone may rest on that one structure, so this module adds six more, each registered
as ``reparl/<Name>-v0`` when ``envs`` is imported:

================================  ======  ===============================================  =======  ======
id (``reparl/...``)               action  structure                                        optimal  random
================================  ======  ===============================================  =======  ======
``CombinatorialChain-v0``         8 x 5   open chain: factor f's target is an observed     16       3.2
                                          offset from factor f-1's choice
``CombinatorialTriples-v0``       8 x 3   ring of triples, each a sum mod 3: no one- or    16       5.33
                                          two-factor effect at all
``CombinatorialAssign-v0``        4 x 12  4 slots pick among 12 items; a slot pays for a   16       4.11
                                          good item no other slot took (all-different)
``CombinatorialPairs-v0``         24 x 3  12 long-range pairs (f, f + 12), a shift each    16       5.33
``CombinatorialPlan-v0``          6 x 4   every 4th step a plan (a ring of shifts) that    12       0.75
                                          unlocks factors for the next 3 steps
``CombinatorialAssignMasked-v0``  5 x 10  Assign with 4 allowed items per slot, state-     16       5.91
                                          dependent masks (sb3-contrib's action_masks())
================================  ======  ===============================================  =======  ======

"random" is the expected return of the uniform policy (over the allowed choices where there are
masks); each class's docstring derives both figures and ``tests/test_combinatorial_suite.py``
proves them (enumeration, linearity, seeded tests). Every task pays at most 1 per step, episodes
last 16 steps and then terminate (t / 16 is the last observation entry), observations are
``Box(0, 1)`` float32, and all randomness goes through ``reset(seed=...)``. The state of a step
is drawn afresh each step (only Plan carries one across steps), so a task's difficulty is its
structure, not exploration.

What each structure asks of a critic Q(s, a_1..a_F) (:class:`agents.heads.GumbelHead`):

* Chain, Pairs, Plan's plan step: pairwise with no main effect except the chain's first factor;
  a factorized ("heads") critic's best fit under uniform actions is nearly flat, a pairwise critic
  represents r exactly at rank K per interacting pair (Chain 7 x 5 = 35, Pairs 12 x 3 = 36).
* Triples: E[r | any two factors] is constant, so a pairwise critic's best fit under uniform
  actions is flat too; only a joint critic represents it.
* Assign(Masked): main effects (take a good item) plus interactions of every order (a slot pays
  only if *no* other slot took its item); a pairwise critic is exact up to collisions of 3+ slots.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


def one_hot(values: np.ndarray, n: int) -> np.ndarray:
    """Flat one-hots of integer ``values`` in ``{0..n-1}``."""
    out = np.zeros((len(values), n), dtype=np.float32)
    out[np.arange(len(values)), values] = 1.0
    return out.reshape(-1)


class StructuredTask(gym.Env):
    """The skeleton every task shares: a MultiDiscrete action, observation = features + t / horizon,
    ``horizon`` steps then termination. A task defines ``_draw`` (the state of step ``self.t``),
    ``_features``, ``rewards`` (a pure function of the state and a batch of actions ``(..., F)``, so
    tests can enumerate every joint action), ``optimal_action``, and the returns its docstring
    derives; ``_carry`` keeps what an action leaves for later steps (Plan's unlocked factors)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, nvec: list[int], features: int, horizon: int) -> None:
        if horizon < 1:
            raise ValueError(f"horizon={horizon}: an episode needs at least 1 step")
        self.horizon = horizon
        self.action_space = spaces.MultiDiscrete(nvec)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(features + 1,), dtype=np.float32)
        self.t = 0

    def _draw(self) -> None:
        raise NotImplementedError

    def _features(self) -> np.ndarray:
        raise NotImplementedError

    def rewards(self, actions: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reward(self, action: np.ndarray) -> float:
        return float(self.rewards(np.asarray(action)[None])[0])

    def optimal_action(self) -> np.ndarray:
        raise NotImplementedError

    def optimal_return(self) -> float:
        """The best expected episode return."""
        raise NotImplementedError

    def random_return(self) -> float:
        """The uniform policy's expected episode return (over the allowed choices where masked)."""
        raise NotImplementedError

    def _carry(self, action: np.ndarray) -> None:
        """What the action leaves for later steps; nothing unless a task says so."""

    def _info(self) -> dict[str, Any]:
        return {}

    def _obs(self) -> np.ndarray:
        return np.append(self._features(), np.float32(self.t / self.horizon)).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self._draw()
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.asarray(action, dtype=np.int64).reshape(-1)
        if not self.action_space.contains(a):
            raise ValueError(f"action {a.tolist()} is not in {self.action_space}: pass one choice per factor, "
                             f"each in 0..n-1")
        reward = self.reward(a)
        self.t += 1
        self._carry(a)
        self._draw()
        return self._obs(), reward, self.t >= self.horizon, False, self._info()


class CombinatorialChain(StructuredTask):
    """An open chain with observed, neighbour-relative targets.

    Each step draws targets c_f uniform in {0..K-1} (observed one-hot) and pays

        r = (1/F) * #{f : a_f = c_f + a_{f-1} (mod K)},   a_{-1} := 0.

    Factor 0's target is c_0; every later factor's target moves with its neighbour's choice.

    * optimal: 1 per step, 16 per episode: a_f = c_0 + ... + c_f (mod K) satisfies every factor and
      is the only action that does (each a_f is forced by a_{f-1}).
    * uniform random: each term holds with probability 1/K whatever a_{f-1} is, so 16 / K = 3.2.
    * copying the targets (a_f = c_f, blind to the neighbour): factor 0 holds, factor f > 0 only
      when c_{f-1} = 0, so 16 (1 + (F-1)/K) / F = 4.8.

    Only factor 0 has a main effect; under uniform actions the others' terms are flat in each
    single factor, so a factorized critic sees 1/F of the reward.
    """

    def __init__(self, factors: int = 8, choices: int = 5, horizon: int = 16) -> None:
        if factors < 2 or choices < 2:
            raise ValueError(f"need factors >= 2 and choices >= 2; got factors={factors}, choices={choices}")
        self.factors, self.choices = factors, choices
        super().__init__([choices] * factors, factors * choices, horizon)
        self.targets = np.zeros(factors, dtype=np.int64)

    def _draw(self) -> None:
        self.targets = self.np_random.integers(self.choices, size=self.factors)

    def _features(self) -> np.ndarray:
        return one_hot(self.targets, self.choices)

    def rewards(self, actions: np.ndarray) -> np.ndarray:
        previous = np.concatenate([np.zeros_like(actions[..., :1]), actions[..., :-1]], axis=-1)
        return (actions == (self.targets + previous) % self.choices).mean(-1)

    def optimal_action(self) -> np.ndarray:
        return np.cumsum(self.targets) % self.choices

    def optimal_return(self) -> float:
        return float(self.horizon)

    def random_return(self) -> float:
        return self.horizon / self.choices


class CombinatorialTriples(StructuredTask):
    """A ring of three-way interactions with nothing below order three.

    Each step draws a hidden a* uniform in {0..K-1}^F and shows the sums
    s_k = a*_k + a*_{k+1} + a*_{k+2} (mod K), k = 0..F-1 (indices mod F), one-hot; it pays

        r = (1/F) * #{k : a_k + a_{k+1} + a_{k+2} = s_k (mod K)}.

    * optimal: 1 per step, 16 per episode; a* satisfies every triple. (For F = 8, K = 3 the
      solutions are a* + c for the 3 constants c: the ring's differences force a period dividing
      both 3 and 8.)
    * uniform random: a triple's sum is uniform mod K (one free uniform term suffices), so 16 / K = 5.33.
    * constant action 0: a triple holds when s_k = 0, which is uniform, so also 16 / K.

    E[r | a_i, a_j] = 1/K for *any* two factors (each triple keeps a free uniform factor), so under
    uniform actions both a factorized and a pairwise critic fit a constant; only a critic of the
    joint action (or of triples) represents r.
    """

    def __init__(self, factors: int = 8, choices: int = 3, horizon: int = 16) -> None:
        if factors < 3 or choices < 2:
            raise ValueError(f"need factors >= 3 and choices >= 2; got factors={factors}, choices={choices}")
        self.factors, self.choices = factors, choices
        super().__init__([choices] * factors, factors * choices, horizon)
        self.hidden = np.zeros(factors, dtype=np.int64)
        self.sums = np.zeros(factors, dtype=np.int64)

    def triple_sums(self, action: np.ndarray) -> np.ndarray:
        return (action + np.roll(action, -1, axis=-1) + np.roll(action, -2, axis=-1)) % self.choices

    def _draw(self) -> None:
        self.hidden = self.np_random.integers(self.choices, size=self.factors)
        self.sums = self.triple_sums(self.hidden)

    def _features(self) -> np.ndarray:
        return one_hot(self.sums, self.choices)

    def rewards(self, actions: np.ndarray) -> np.ndarray:
        return (self.triple_sums(actions) == self.sums).mean(-1)

    def optimal_action(self) -> np.ndarray:
        return self.hidden.copy()

    def optimal_return(self) -> float:
        return float(self.horizon)

    def random_return(self) -> float:
        return self.horizon / self.choices


class CombinatorialAssign(StructuredTask):
    """Slots pick items from a catalogue; a slot pays for a good item that no other slot took.

    Each step marks ``slots`` of the ``items`` as good (a uniform subset, observed as one bit per
    item) and pays

        r = (1/F) * #{f : a_f is good and a_g != a_f for every g != f}.

    * optimal: 1 per step, 16 per episode: the good items to the slots one each (slot f takes the
      f-th good item; any of the F! assignments).
    * uniform random: slot f pays with probability (F/K) ((K-1)/K)^(F-1) (its item is good, and
      each other slot misses it independently); F = 4, K = 12: 16 * 0.2567 = 4.11.
    * every slot the first good item: all collide, 0. Every slot a uniform good item (the best a
      policy blind to the other slots can do): ((F-1)/F)^(F-1) per step, 16 * 0.4219 = 6.75.

    A main effect (take a good item) and interactions of every order: a slot's payment is a
    product over the other slots, pairwise up to collisions of three or more.
    """

    def __init__(self, slots: int = 4, items: int = 12, horizon: int = 16) -> None:
        if slots < 2 or items < slots:
            raise ValueError(f"need 2 <= slots <= items; got slots={slots}, items={items}")
        self.slots, self.items = slots, items
        super().__init__([items] * slots, self._feature_size(), horizon)
        self.good = np.zeros(items, dtype=bool)

    def _feature_size(self) -> int:
        return self.items

    def _draw(self) -> None:
        self.good = np.zeros(self.items, dtype=bool)
        self.good[self.np_random.choice(self.items, self.slots, replace=False)] = True

    def _features(self) -> np.ndarray:
        return self.good.astype(np.float32)

    def paying_slots(self, actions: np.ndarray) -> np.ndarray:
        alone = (actions[..., :, None] == actions[..., None, :]).sum(-1) == 1  # only itself took its item
        return self.good[actions] & alone

    def rewards(self, actions: np.ndarray) -> np.ndarray:
        return self.paying_slots(actions).mean(-1)

    def optimal_action(self) -> np.ndarray:
        return np.flatnonzero(self.good)

    def optimal_return(self) -> float:
        return float(self.horizon)

    def random_return(self) -> float:
        f, k = self.slots, self.items
        return self.horizon * (f / k) * ((k - 1) / k) ** (f - 1)


class CombinatorialPairs(StructuredTask):
    """Many factors, each in one long-range pair: factor i with factor i + F/2.

    Each step draws shifts s_i uniform in {0..K-1}, i < F/2 (observed one-hot), and pays

        r = (2/F) * #{i < F/2 : a_{i+F/2} - a_i = s_i (mod K)}.

    * optimal: 1 per step, 16 per episode: a_i = 0, a_{i+F/2} = s_i (K^(F/2) optima).
    * uniform random: a difference of independent uniforms is uniform mod K: 16 / K = 5.33.
    * constant action 0: a pair holds when s_i = 0, probability 1/K: also 5.33.

    No main effects, and the pairs sit half the action vector apart, so nothing in the factor
    order hints which factors interact. A pairwise critic needs rank K per pair (36 at the default
    size, against a default of 16).
    """

    def __init__(self, factors: int = 24, choices: int = 3, horizon: int = 16) -> None:
        if factors < 2 or factors % 2 or choices < 2:
            raise ValueError(f"need an even factors >= 2 and choices >= 2; got factors={factors}, choices={choices}")
        self.factors, self.choices = factors, choices
        super().__init__([choices] * factors, factors // 2 * choices, horizon)
        self.shifts = np.zeros(factors // 2, dtype=np.int64)

    def _draw(self) -> None:
        self.shifts = self.np_random.integers(self.choices, size=self.factors // 2)

    def _features(self) -> np.ndarray:
        return one_hot(self.shifts, self.choices)

    def rewards(self, actions: np.ndarray) -> np.ndarray:
        half = self.factors // 2
        return ((actions[..., half:] - actions[..., :half]) % self.choices == self.shifts).mean(-1)

    def optimal_action(self) -> np.ndarray:
        return np.concatenate([np.zeros(self.factors // 2, dtype=np.int64), self.shifts])

    def optimal_return(self) -> float:
        return float(self.horizon)

    def random_return(self) -> float:
        return self.horizon / self.choices


class CombinatorialPlan(StructuredTask):
    """A joint plan now decides what later steps can earn.

    Steps with t = 0 (mod ``period``) are plan steps: they pay 0 and show ring shifts c_f =
    a*_{f+1} - a*_f (mod K) of a hidden uniform a* (so the ring is always consistent). The plan
    unlocks factor f when a_{f+1} - a_f = c_f (mod K). Each later step of the period shows the
    unlocked factors (bits) and fresh targets d_f (one-hot) and pays

        r = (1/F) * #{f : f unlocked and a_f = d_f}.

    Observation: phase one-hot, plan shifts (zero off plan steps), unlocked bits and targets (zero
    on plan steps), t / horizon.

    * optimal: (horizon - ceil(horizon / period)) = 12 for 16 steps and period 4: a* (or a* + c) on
      plan steps unlocks every factor, then a = d pays 1 on each of the 12 other steps.
    * uniform random: a factor is unlocked with probability 1/K and matched with probability 1/K,
      independently: 12 / K^2 = 0.75.
    * myopic (uniform on plan steps, a = d after): 12 / K = 3; the plan is worth a factor K.

    The plan step's value is a pairwise function of its action without main effects, reached only
    through bootstrapping (the plan step itself pays nothing); the later steps are unary.
    """

    def __init__(self, factors: int = 6, choices: int = 4, horizon: int = 16, period: int = 4) -> None:
        if factors < 2 or choices < 2 or period < 2:
            raise ValueError(f"need factors >= 2, choices >= 2, period >= 2; got factors={factors}, "
                             f"choices={choices}, period={period}")
        self.factors, self.choices, self.period = factors, choices, period
        size = period + 2 * factors * choices + factors
        super().__init__([choices] * factors, size, horizon)
        self.hidden = np.zeros(factors, dtype=np.int64)
        self.shifts = np.zeros(factors, dtype=np.int64)
        self.targets = np.zeros(factors, dtype=np.int64)
        self.unlocked = np.zeros(factors, dtype=bool)

    @property
    def planning(self) -> bool:
        return self.t % self.period == 0

    def plan_holds(self, action: np.ndarray) -> np.ndarray:
        return (np.roll(action, -1, axis=-1) - action) % self.choices == self.shifts

    def _draw(self) -> None:
        if self.planning:
            self.hidden = self.np_random.integers(self.choices, size=self.factors)
            self.shifts = (np.roll(self.hidden, -1) - self.hidden) % self.choices
            self.unlocked = np.zeros(self.factors, dtype=bool)
        else:
            self.targets = self.np_random.integers(self.choices, size=self.factors)

    def _carry(self, action: np.ndarray) -> None:
        if (self.t - 1) % self.period == 0:  # the step just taken was a plan step
            self.unlocked = self.plan_holds(action)

    def _features(self) -> np.ndarray:
        k, f = self.choices, self.factors
        phase = np.zeros(self.period, dtype=np.float32)
        phase[self.t % self.period] = 1.0
        zeros = np.zeros(f * k, dtype=np.float32)
        if self.planning:
            return np.concatenate([phase, one_hot(self.shifts, k), np.zeros(f, dtype=np.float32), zeros])
        return np.concatenate([phase, zeros, self.unlocked.astype(np.float32), one_hot(self.targets, k)])

    def rewards(self, actions: np.ndarray) -> np.ndarray:
        if self.planning:
            return np.zeros(actions.shape[:-1])
        return (self.unlocked & (actions == self.targets)).mean(-1)

    def optimal_action(self) -> np.ndarray:
        return self.hidden.copy() if self.planning else self.targets.copy()

    def paying_steps(self) -> int:
        return self.horizon - math.ceil(self.horizon / self.period)

    def optimal_return(self) -> float:
        return float(self.paying_steps())

    def random_return(self) -> float:
        return self.paying_steps() / self.choices ** 2


class CombinatorialAssignMasked(CombinatorialAssign):
    """:class:`CombinatorialAssign` where each slot may take only some items: a bipartite matching.

    Each step draws the good items G and a uniform one-to-one sigma from slots to G; slot f's
    allowed set A_f is sigma(f) plus a uniform ``allowed - 1`` of the other items. The masks are
    observed (one bit per slot and item, after the good bits), returned by ``action_masks()`` in
    sb3-contrib's MultiDiscrete layout (flat, one block of ``items`` per slot, True = allowed) and
    in ``info["action_mask"]`` (so a vector env's ``final_info`` keeps the final state's). A step
    with any forbidden choice pays 0; otherwise it pays as Assign.

    * optimal: 1 per step, 16 per episode: sigma is allowed and gives every slot its own good item.
    * uniform over the allowed choices (m = allowed, q = (m-1)/(K-1), the chance that another
      slot's good item is among slot f's extra items): slot f pays with probability
      (1/m) [(1 - q/m)^(F-1) + (F-1) q (1 - 1/m) (1 - q/m)^(F-2)] (its own good item, and each of
      the F-1 others', each untaken by the rest). F = 5, K = 10, m = 4: 16 * 0.3691 = 5.91.
    * uniform over all choices: that times P(no forbidden choice) = (m/K)^F: 5.91 * 0.01024 = 0.06.
    """

    def __init__(self, slots: int = 5, items: int = 10, allowed: int = 4, horizon: int = 16) -> None:
        if not 1 <= allowed <= items:
            raise ValueError(f"need 1 <= allowed <= items; got allowed={allowed}, items={items}")
        self.allowed = allowed
        self.mask = np.ones((slots, items), dtype=bool)
        self.assignment = np.zeros(slots, dtype=np.int64)
        super().__init__(slots, items, horizon)

    def _feature_size(self) -> int:
        return self.items + self.slots * self.items

    def _draw(self) -> None:
        f, k = self.slots, self.items
        good = self.np_random.choice(k, f, replace=False)  # in a uniform order: sigma(f) = good[f]
        self.good = np.zeros(k, dtype=bool)
        self.good[good] = True
        self.assignment = good
        self.mask = np.zeros((f, k), dtype=bool)
        for slot, item in enumerate(good):
            others = np.delete(np.arange(k), item)
            self.mask[slot, item] = True
            self.mask[slot, self.np_random.choice(others, self.allowed - 1, replace=False)] = True

    def _features(self) -> np.ndarray:
        return np.concatenate([self.good.astype(np.float32), self.mask.reshape(-1).astype(np.float32)])

    def action_masks(self) -> np.ndarray:
        """sb3-contrib's MultiDiscrete layout: flat, one block of ``items`` per slot, True = allowed."""
        return self.mask.reshape(-1).copy()

    def _info(self) -> dict[str, Any]:
        return {"action_mask": self.action_masks()}

    def rewards(self, actions: np.ndarray) -> np.ndarray:
        allowed = self.mask[np.arange(self.slots), actions].all(-1)
        return np.where(allowed, super().rewards(actions), 0.0)  # a forbidden choice voids the step

    def optimal_action(self) -> np.ndarray:
        return self.assignment.copy()

    def random_return(self) -> float:
        """Uniform over each slot's allowed items (the docstring's formula)."""
        f, k, m = self.slots, self.items, self.allowed
        q = (m - 1) / (k - 1)
        pay = (1 / m) * ((1 - q / m) ** (f - 1) + (f - 1) * q * (1 - 1 / m) * (1 - q / m) ** (f - 2))
        return self.horizon * pay

    def uniform_return(self) -> float:
        """Uniform over all items, forbidden ones included."""
        return self.random_return() * (self.allowed / self.items) ** self.slots


SUITE: dict[str, type[StructuredTask]] = {
    "CombinatorialChain": CombinatorialChain,
    "CombinatorialTriples": CombinatorialTriples,
    "CombinatorialAssign": CombinatorialAssign,
    "CombinatorialPairs": CombinatorialPairs,
    "CombinatorialPlan": CombinatorialPlan,
    "CombinatorialAssignMasked": CombinatorialAssignMasked,
}
"""Name -> class; each is registered as ``reparl/<name>-v0`` with its default sizes."""

for _name, _cls in SUITE.items():
    if f"reparl/{_name}-v0" not in gym.registry:
        gym.register(f"reparl/{_name}-v0", entry_point=_cls)

__all__ = ["SUITE", "CombinatorialAssign", "CombinatorialAssignMasked", "CombinatorialChain", "CombinatorialPairs",
           "CombinatorialPlan", "CombinatorialTriples", "StructuredTask", "one_hot"]
