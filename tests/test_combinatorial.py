"""reparl/Combinatorial-v0 and its masked variant: the returns the docstring states, a reward with
no additive part, determinism, and masks in sb3-contrib's layout."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from envs.combinatorial import Combinatorial, CombinatorialMasked

Z = 4.0
Policy = Callable[[Combinatorial, np.random.Generator], np.ndarray]


def returns(env_id: str, policy: Policy, episodes: int, seed: int = 0) -> np.ndarray:
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    out = []
    for ep in range(episodes):
        env.reset(seed=seed * 10_000 + ep)
        total, done = 0.0, False
        while not done:
            _, reward, done, truncated, _ = env.step(policy(env.unwrapped, rng))
            assert not truncated and 0.0 <= reward <= 1.0
            total += reward
        out.append(total)
    return np.array(out)


def optimal(env: Combinatorial, rng: np.random.Generator) -> np.ndarray:
    return env.reference_action()


def uniform(env: Combinatorial, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(4, size=8)


def myopic(env: Combinatorial, rng: np.random.Generator) -> np.ndarray:
    """Every pair satisfied, but a random global offset: a_0 = key only by chance."""
    return (env.reference_action() + rng.integers(4)) % 4


def uniform_allowed(env: Combinatorial, rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.choice(np.flatnonzero(row)) for row in env.mask])


def assert_mean(x: np.ndarray, expected: float, slack: float = 0.0) -> None:
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert abs(x.mean() - expected) <= Z * se + slack, (x.mean(), expected, se)


@pytest.mark.parametrize("env_id", ["reparl/Combinatorial-v0", "reparl/CombinatorialMasked-v0"])
def test_optimal_return_is_16(env_id: str) -> None:
    assert (returns(env_id, optimal, 20) == 16.0).all()


def test_random_and_myopic_returns() -> None:
    assert_mean(returns("reparl/Combinatorial-v0", uniform, 400), 4.0)  # each pair holds w.p. 1/4
    assert_mean(returns("reparl/Combinatorial-v0", myopic, 200), 1 + 15 * (1 / 4 + 3 / 4 * 7 / 8))  # 14.59
    # Masked: Monte Carlo values from the docstring (2,000 episodes, se 0.015), hence the slack.
    assert_mean(returns("reparl/CombinatorialMasked-v0", uniform_allowed, 300), 4.15, slack=0.06)
    assert_mean(returns("reparl/CombinatorialMasked-v0", uniform, 300), 0.42, slack=0.06)


def test_reward_has_no_additive_part_under_uniform_actions() -> None:
    """The docstring's argument, by enumerating all 65,536 joint actions in one state: every
    factor's main effect E[r | a_i = v] is 1/4 for every v, so the best factorized fit is flat,
    while the reward itself spans 0 to 1."""
    env = Combinatorial()
    env.reset(seed=7)
    actions = np.array(list(itertools.product(range(4), repeat=8)))
    r = ((np.roll(actions, -1, axis=1) - actions) % 4 == env.shifts).mean(1)
    assert r.min() == 0.0 and r.max() == 1.0 and (r == 1.0).sum() == 4  # a_0 picks one of four optima
    for i in range(8):
        effects = [r[actions[:, i] == v].mean() for v in range(4)]
        assert np.allclose(effects, 0.25), (i, effects)


def test_the_action_moves_the_state() -> None:
    """The next state is consistent (can pay 1) exactly when a_0 = key: the action matters later."""
    env = Combinatorial()
    env.reset(seed=1)
    for a0 in range(4):
        env.reset(seed=1)
        key, action = env.key, env.reference_action()
        action = (action - action[0] + a0) % 4  # every pair still satisfied
        assert env.step(action)[1] == 1.0
        assert (env.shifts.sum() % 4 == 0) == (a0 == key)


def test_same_seed_same_episode() -> None:
    def trajectory() -> list[np.ndarray]:
        env = CombinatorialMasked()
        obs, _ = env.reset(seed=3)
        out = [obs]
        for t in range(16):
            out.append(env.step(np.full(8, t % 4))[0])
        return out

    assert all(np.array_equal(a, b) for a, b in zip(trajectory(), trajectory(), strict=True))


def test_masks_follow_sb3_contrib_and_are_enforced() -> None:
    env = gym.make("reparl/CombinatorialMasked-v0")
    obs, info = env.reset(seed=0)
    inner = env.unwrapped
    for _ in range(40):
        mask = inner.action_masks()
        assert mask.shape == (32,) and mask.dtype == bool  # flat, one block of 4 per factor
        blocks = mask.reshape(8, 4)
        assert (blocks.sum(1) == 3).all() and blocks[np.arange(8), inner.reference_action()].all()
        assert np.array_equal(info["action_mask"], mask) and np.array_equal(obs[37:] > 0.5, mask)
        forbidden = inner.reference_action().copy()
        forbidden[5] = np.flatnonzero(~blocks[5])[0]
        saved = (inner.shifts.copy(), inner.key, inner.mask.copy(), inner.t, inner.np_random.bit_generator.state)
        assert env.step(forbidden)[1] == 0.0  # one forbidden choice voids the step
        inner.shifts, inner.key, inner.mask, inner.t = saved[:4]
        inner.np_random.bit_generator.state = saved[4]
        obs, reward, done, _, info = env.step(inner.reference_action())
        assert reward >= 7 / 8
        if done:
            obs, info = env.reset()
