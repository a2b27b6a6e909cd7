"""The combinatorial suite (envs/combinatorial_suite.py): every optimal and random return its
docstrings state, proved by enumerating joint actions (and, for the masked task, every state of a
small instance) and checked on the registered envs by seeded t-tests; policies that are wrong in
the obvious way score what the docstrings say, below the optimum; Gymnasium's env checker; masks."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from scipy import stats

import envs  # noqa: F401  (registers the ids)
from envs import combinatorial_suite
from envs.combinatorial_suite import (
    SUITE,
    CombinatorialAssign,
    CombinatorialAssignMasked,
    CombinatorialChain,
    CombinatorialPairs,
    CombinatorialPlan,
    CombinatorialTriples,
    StructuredTask,
)

IDS = [f"reparl/{name}-v0" for name in SUITE]
P_MIN = 1e-3  # a seeded t-test fails below this p-value: a stated mean off by ~3.3 standard errors
Policy = Callable[[Any, np.random.Generator], np.ndarray]


def every_action(nvec: list[int]) -> np.ndarray:
    """All joint actions, ``(prod(nvec), F)``."""
    return np.indices(nvec).reshape(len(nvec), -1).T


def episode_returns(env_id: str, policy: Policy, episodes: int, seed: int = 0, **kwargs: Any) -> np.ndarray:
    env = gym.make(env_id, **kwargs)
    rng = np.random.default_rng(seed)
    out = []
    for ep in range(episodes):
        env.reset(seed=seed * 100_000 + ep)
        total, done, steps = 0.0, False, 0
        while not done:
            _, reward, done, truncated, _ = env.step(policy(env.unwrapped, rng))
            assert not truncated and 0.0 <= reward <= 1.0
            total, steps = total + reward, steps + 1
        assert steps == env.unwrapped.horizon
        out.append(total)
    return np.array(out)


def assert_mean(returns: np.ndarray, expected: float) -> None:
    """A seeded two-sided one-sample t-test: the tolerance comes from the sample's own spread."""
    p = stats.ttest_1samp(returns, expected).pvalue
    assert p > P_MIN, (returns.mean(), expected, p)


def uniform(env: StructuredTask, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(env.action_space.nvec)


def uniform_allowed(env: CombinatorialAssignMasked, rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.choice(np.flatnonzero(row)) for row in env.mask])


def optimal(env: StructuredTask, rng: np.random.Generator) -> np.ndarray:
    return env.optimal_action()


def states(env: StructuredTask, n: int, seed: int = 0) -> Iterator[StructuredTask]:
    """The env in ``n`` successive states (each step's state is a fresh draw)."""
    env.reset(seed=seed)
    for _ in range(n):
        yield env
        env.step(env.optimal_action())
        if env.t >= env.horizon:
            env.reset()


# ------------------------------------------------------------------------------- the stated figures


@pytest.mark.parametrize("name", list(SUITE))
def test_docstring_table_matches_each_class(name: str) -> None:
    """The module docstring's row for each task states what the class computes; the tests below
    prove what the class computes."""
    row = next(line for line in combinatorial_suite.__doc__.splitlines() if line.startswith(f"``{name}-v0``"))
    optimum, random = (float(x) for x in row.split()[-2:])
    env = SUITE[name]()
    assert env.optimal_return() == optimum and round(env.random_return(), 2) == random


@pytest.mark.parametrize("env_id", IDS)
def test_optimal_policy_earns_the_optimum_every_episode(env_id: str) -> None:
    returns = episode_returns(env_id, optimal, 10)
    assert (returns == gym.make(env_id).unwrapped.optimal_return()).all()


@pytest.mark.parametrize("cls", [CombinatorialChain, CombinatorialTriples, CombinatorialAssign])
def test_no_action_beats_the_optimal_one_and_random_is_exact(cls: type[StructuredTask]) -> None:
    """Every joint action in 5 states: the maximum reward is 1 and the optimal action reaches it,
    and the mean over all actions (the uniform policy's expected reward) is random_return / 16 in
    every state, not only on average."""
    env = cls()
    actions = every_action(list(env.action_space.nvec))
    for state in states(env, 5):
        r = state.rewards(actions)
        assert r.max() == 1.0 == state.reward(state.optimal_action())
        assert math.isclose(r.mean(), state.random_return() / state.horizon, rel_tol=1e-12)
        if cls is CombinatorialChain:
            assert (r == 1.0).sum() == 1  # the optimum is unique
        if cls is CombinatorialTriples:
            assert (r == 1.0).sum() == 3  # a* + c for the three constants c
            assert all(r[((actions - state.optimal_action()) % 3 == c).all(1)] == 1.0 for c in range(3))
        if cls is CombinatorialAssign:
            assert (r == 1.0).sum() == math.factorial(state.slots)  # the good items in any order


def test_pairs_closed_form_on_a_small_instance() -> None:
    """24 factors are 3^24 actions, so the closed form (max 1 at a_i = 0, a_{i+F/2} = s_i; mean
    1/K; K^(F/2) optima) is checked by enumeration on 6 factors, and the full size by linearity:
    each of its 12 pairs, alone, over its 9 joint values."""
    small = CombinatorialPairs(factors=6)
    actions = every_action([3] * 6)
    for state in states(small, 5):
        r = state.rewards(actions)
        assert r.max() == 1.0 == state.reward(state.optimal_action()) and (r == 1.0).sum() == 3 ** 3
        assert math.isclose(r.mean(), 1 / 3, rel_tol=1e-12)
    full = CombinatorialPairs()
    full.reset(seed=1)
    pair = every_action([3, 3])
    for s in full.shifts:
        assert ((pair[:, 1] - pair[:, 0]) % 3 == s).mean() == 1 / 3
    assert full.reward(full.optimal_action()) == 1.0


def test_plan_optimum_and_random_by_enumeration() -> None:
    """The plan step: over its 4^6 actions, the unlocked fraction is at most 1 (reached by a*) and
    averages 1/K; a later step pays at most the unlocked fraction (reached by a = d) and averages
    it / K. So the optimum is 12 steps x 1 and the random return 12 / K^2."""
    env = CombinatorialPlan()
    env.reset(seed=2)
    rng = np.random.default_rng(0)
    actions = every_action([4] * 6)
    for _ in range(env.horizon):
        if env.planning:
            unlocked = env.plan_holds(actions).mean(-1)
            assert unlocked.max() == 1.0 == env.plan_holds(env.optimal_action()).mean()
            assert math.isclose(unlocked.mean(), 1 / 4, rel_tol=1e-12)
            assert (env.rewards(actions) == 0).all()
            action = actions[rng.integers(len(actions))]  # unlock some factors, not all
        else:
            r = env.rewards(actions)
            assert r.max() == env.unlocked.mean() == env.reward(env.optimal_action())
            assert math.isclose(r.mean(), env.unlocked.mean() / 4, rel_tol=1e-12)
            action = env.optimal_action()
        env.step(action)
    assert env.paying_steps() == 12 and env.random_return() == 12 / 16


def test_masked_assign_random_return_over_every_state_of_a_small_instance() -> None:
    """The closed form for uniform-over-allowed play, against an exact average over the whole state
    distribution of 2 slots, 4 items, 2 allowed (every good set, order and extra allowed item),
    each state's expectation taken over its allowed actions; and the optimum is 1 in every state."""
    env = CombinatorialAssignMasked(slots=2, items=4, allowed=2, horizon=1)
    values, uniform_values = [], []
    actions = every_action([4, 4])
    for good in itertools.permutations(range(4), 2):  # sigma(slot) = good[slot]
        extras = [[i for i in range(4) if i != g] for g in good]
        for extra in itertools.product(*extras):  # each slot's one extra allowed item
            env.good = np.isin(np.arange(4), good)
            env.assignment = np.array(good)
            env.mask = np.zeros((2, 4), dtype=bool)
            env.mask[[0, 1], list(good)] = True
            env.mask[[0, 1], list(extra)] = True
            r = env.rewards(actions)
            allowed = env.mask[np.arange(2), actions].all(1)
            assert r.max() == 1.0 == env.reward(env.optimal_action())
            values.append(r[allowed].mean())
            uniform_values.append(r.mean())
    assert math.isclose(np.mean(values), env.random_return(), rel_tol=1e-12)
    assert math.isclose(np.mean(uniform_values), env.uniform_return(), rel_tol=1e-12)


def test_masked_assign_full_size_optimum_by_enumeration() -> None:
    env = CombinatorialAssignMasked()
    actions = every_action([10] * 5)
    for state in states(env, 3):
        r = state.rewards(actions)
        assert r.max() == 1.0 == state.reward(state.optimal_action())
        assert (r[~state.mask[np.arange(5), actions].all(1)] == 0).all()


@pytest.mark.parametrize("env_id", IDS)
def test_uniform_policy_returns_the_stated_random_return(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    policy = uniform_allowed if isinstance(env, CombinatorialAssignMasked) else uniform
    assert_mean(episode_returns(env_id, policy, 300), env.random_return())


def test_masked_assign_uniform_over_all_items() -> None:
    env = CombinatorialAssignMasked()
    assert_mean(episode_returns("reparl/CombinatorialAssignMasked-v0", uniform, 2000), env.uniform_return())


# ------------------------------------------------------------------------------- wrong policies


def copy_targets(env: CombinatorialChain, rng: np.random.Generator) -> np.ndarray:
    return env.targets.copy()


def all_first_good(env: CombinatorialAssign, rng: np.random.Generator) -> np.ndarray:
    return np.full(env.slots, np.flatnonzero(env.good)[0])


def any_good(env: CombinatorialAssign, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(np.flatnonzero(env.good), env.slots)


def constant(env: StructuredTask, rng: np.random.Generator) -> np.ndarray:
    return np.zeros(len(env.action_space.nvec), dtype=np.int64)


def myopic_plan(env: CombinatorialPlan, rng: np.random.Generator) -> np.ndarray:
    return uniform(env, rng) if env.planning else env.targets.copy()


def greedy_masked(env: CombinatorialAssignMasked, rng: np.random.Generator) -> np.ndarray:
    """Each slot its lowest allowed good item, blind to the others."""
    return np.array([np.flatnonzero(row & env.good)[0] for row in env.mask])


@pytest.mark.parametrize("env_id, policy, expected", [
    ("reparl/CombinatorialChain-v0", copy_targets, 16 * (1 + 7 / 5) / 8),
    ("reparl/CombinatorialTriples-v0", constant, 16 / 3),
    ("reparl/CombinatorialAssign-v0", all_first_good, 0.0),
    ("reparl/CombinatorialAssign-v0", any_good, 16 * (3 / 4) ** 3),
    ("reparl/CombinatorialPairs-v0", constant, 16 / 3),
    ("reparl/CombinatorialPlan-v0", myopic_plan, 12 / 4),
    ("reparl/CombinatorialAssignMasked-v0", greedy_masked, None),
])
def test_obviously_wrong_policies_score_below_the_optimum(env_id: str, policy: Policy, expected: float | None) -> None:
    returns = episode_returns(env_id, policy, 300)
    optimum = gym.make(env_id).unwrapped.optimal_return()
    if expected is None:  # no closed form: significantly below the optimum is the claim
        assert stats.ttest_1samp(returns, optimum, alternative="less").pvalue < 1e-6
    elif returns.std() == 0:
        assert (returns == expected).all()
    else:
        assert_mean(returns, expected)
    assert returns.mean() < optimum


# ------------------------------------------------------------------------------- structure


def test_triples_have_no_effect_of_any_one_or_two_factors() -> None:
    """E[r | a_i, a_j] = 1/K for every pair of factors, by enumeration of all 6,561 joint
    actions: the best pairwise (and additive) fit under uniform actions is a constant."""
    env = CombinatorialTriples()
    env.reset(seed=4)
    actions = every_action([3] * 8)
    r = env.rewards(actions)
    assert r.min() == 0.0 and r.max() == 1.0
    for i, j in itertools.combinations(range(8), 2):
        cell = np.zeros((3, 3))
        np.add.at(cell, (actions[:, i], actions[:, j]), r)
        assert np.allclose(cell / (len(actions) / 9), 1 / 3), (i, j)


@pytest.mark.parametrize("cls, factors_with_main_effect", [(CombinatorialChain, {0}), (CombinatorialPairs, set())])
def test_main_effects(cls: type[StructuredTask], factors_with_main_effect: set[int]) -> None:
    """E[r | a_f = v] under uniform other factors: flat except where the docstring says."""
    env = cls(factors=6) if cls is CombinatorialPairs else cls()
    env.reset(seed=5)
    nvec = list(env.action_space.nvec)
    actions = every_action(nvec)
    r = env.rewards(actions)
    for f, k in enumerate(nvec):
        effect = np.array([r[actions[:, f] == v].mean() for v in range(k)])
        assert (np.ptp(effect) > 0.01) == (f in factors_with_main_effect), (f, effect)


# ------------------------------------------------------------------------------- Gymnasium, seeding, masks


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_env_checker(env_id: str) -> None:
    check_env(gym.make(env_id).unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_episode(env_id: str) -> None:
    def trajectory() -> list[np.ndarray]:
        env = gym.make(env_id)
        out = [env.reset(seed=3)[0]]
        for t in range(env.unwrapped.horizon):
            out.append(env.step(np.full(len(env.action_space.nvec), t % 2))[0])
        return out

    assert all(np.array_equal(a, b) for a, b in zip(trajectory(), trajectory(), strict=True))


def test_masked_assign_masks_follow_sb3_contrib() -> None:
    env = gym.make("reparl/CombinatorialAssignMasked-v0")
    obs, info = env.reset(seed=0)
    inner = env.unwrapped
    for _ in range(40):
        mask = inner.action_masks()
        assert mask.shape == (50,) and mask.dtype == bool  # flat, one block of 10 per slot
        blocks = mask.reshape(5, 10)
        assert (blocks.sum(1) == 4).all() and blocks[np.arange(5), inner.optimal_action()].all()
        assert inner.good[inner.optimal_action()].all() and len(set(inner.optimal_action())) == 5
        assert np.array_equal(info["action_mask"], mask) and np.array_equal(obs[10:60] > 0.5, mask)
        assert np.array_equal(obs[:10] > 0.5, inner.good)
        forbidden = inner.optimal_action()
        forbidden[2] = np.flatnonzero(~blocks[2])[0]
        assert inner.reward(forbidden) == 0.0  # one forbidden choice voids the step
        obs, reward, done, _, info = env.step(inner.optimal_action())
        assert reward == 1.0
        if done:
            obs, info = env.reset()


class AssertAllowed(gym.Wrapper):
    """Fails the test at the first forbidden choice the env receives."""

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        inner = self.env.unwrapped
        assert inner.mask[np.arange(inner.slots), np.asarray(action)].all(), (action, inner.mask.astype(int))
        return self.env.step(action)


def test_gumbel_sac_never_takes_a_masked_item() -> None:
    """The agent reads action_masks() through the vector env, in the warm-up and from its policy."""
    from agents import GumbelSAC
    from experiments.evaluation import evaluate, make_eval_env

    env_id = "reparl/CombinatorialAssignMasked-v0"
    agent = GumbelSAC(make_eval_env(env_id, 2, wrappers=[AssertAllowed]), net_arch=[32, 32], batch_size=32,
                      learning_starts=100, buffer_size=1_000, seed=0, device="cpu", critic="pairwise",
                      pairwise_rank=4).learn(300)
    assert agent.num_updates > 0
    result = evaluate(agent, make_eval_env(env_id, 2, wrappers=[AssertAllowed]), n_episodes=2, seed=1)
    assert (result.returns > 0).all()


def test_plan_observation_shows_the_unlocked_factors() -> None:
    env = CombinatorialPlan()
    obs, _ = env.reset(seed=0)
    f, k, p = 6, 4, 4
    assert obs[0] == 1.0 and np.array_equal(obs[p:p + f * k].reshape(f, k).argmax(1), env.shifts)
    action = env.optimal_action()
    action[3] = (action[3] + 1) % k  # breaks the pairs (2, 3) and (3, 4): factors 2 and 3 stay locked
    obs, reward, *_ = env.step(action)
    assert reward == 0.0 and obs[1] == 1.0
    assert np.array_equal(obs[p + f * k:p + f * k + f], [1, 1, 0, 0, 1, 1])
    assert obs[-1] == 1 / 16
    _, reward, *_ = env.step(env.optimal_action())
    assert reward == 4 / 6


def test_bad_input_is_refused_with_the_fix() -> None:
    env = CombinatorialChain()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action \[5, 0, 0, 0, 0, 0, 0, 0\] is not in MultiDiscrete"):
        env.step([5, 0, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="is not in"):
        env.step([0, 0])
    with pytest.raises(ValueError, match="slots <= items"):
        CombinatorialAssign(slots=5, items=4)
    with pytest.raises(ValueError, match="even factors"):
        CombinatorialPairs(factors=5)
    with pytest.raises(ValueError, match="allowed <= items"):
        CombinatorialAssignMasked(allowed=11)
    with pytest.raises(ValueError, match="horizon=0"):
        CombinatorialTriples(horizon=0)
