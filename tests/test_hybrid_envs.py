"""The hybrid action convention (envs/hybrid.py) and the one-step target env's closed-form optimum,
Gymnasium's env checker on every id."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from scipy import integrate, stats

import envs  # noqa: F401  (registers the ids)
from envs import hybrid_target
from envs.hybrid import hybrid_parts

IDS = ["reparl/HybridTarget-v0"]
BOX = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)


# ------------------------------------------------------------------------------ the convention
def test_both_forms_are_taken_apart() -> None:
    per_action = spaces.Tuple((spaces.Discrete(3, start=1), spaces.Tuple((BOX, spaces.Box(0.0, 5.0, (2,)), BOX))))
    parts = hybrid_parts(per_action)
    assert (parts.n, parts.start, parts.dims, parts.shared, parts.env_width) == (3, 1, (1, 2, 1), False, 4)
    shared = hybrid_parts(spaces.Tuple((spaces.Discrete(4), spaces.Box(-2.0, 2.0, (3,)))))
    assert (shared.n, shared.dims, shared.shared, shared.env_width) == (4, (3, 3, 3, 3), True, 3)


@pytest.mark.parametrize(("space", "message"), [
    (spaces.Dict({"k": spaces.Discrete(2), "x": BOX}), "accepted forms"),
    (spaces.Tuple((BOX, spaces.Discrete(2))), "accepted forms"),
    (spaces.Tuple((spaces.Discrete(3), spaces.Tuple((BOX, BOX)))), "2 parameter Boxes for 3 discrete actions"),
    (spaces.Tuple((spaces.Discrete(2), spaces.Tuple((BOX, spaces.Discrete(2))))), "parameter Box 1 is Discrete"),
    (spaces.Tuple((spaces.Discrete(2), spaces.Box(-1.0, 1.0, (2, 3)))), "must be 1-D"),
    (spaces.Tuple((spaces.Discrete(2), spaces.Box(-np.inf, 1.0, (1,)))), "must be finite"),
    (spaces.Tuple((spaces.Discrete(2), spaces.Box(0, 3, (1,), dtype=np.int64))), "use a float Box"),
])
def test_other_spaces_are_refused_with_the_fix(space: spaces.Space, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        hybrid_parts(space)


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_env_checker_passes(env_id: str) -> None:
    check_env(gym.make(env_id).unwrapped, skip_render_check=True)


def test_the_envs_import_nothing_from_reparl_agents() -> None:
    for module in (hybrid_target,):
        assert "agents" not in module.__dict__ and not any(
            getattr(v, "__module__", "").startswith("agents") for v in vars(module).values())


# ------------------------------------------------------------------------------ the one-step target env
def test_the_stated_optimum_is_the_best_action() -> None:
    grid = np.linspace(-2, 2, 4001)
    for s in np.linspace(-1, 1, 41):
        k, x, r = hybrid_target.optimum(s)
        best = max(hybrid_target.reward(s, j, float(v)) for j in range(3) for v in grid)
        assert r == hybrid_target.reward(s, k, x) == pytest.approx(max(abs(s), 0.25))
        assert best <= r + 1e-12


def test_the_optimal_and_random_returns_are_as_stated() -> None:
    optimal, _ = integrate.quad(lambda s: hybrid_target.optimum(s)[2] / 2, -1, 1, points=[-0.25, 0.25])
    assert optimal == pytest.approx(hybrid_target.OPTIMAL_RETURN, abs=1e-12)
    env = gym.make("reparl/HybridTarget-v0")
    env.action_space.seed(0)
    returns = []
    for ep in range(4000):
        obs, _ = env.reset(seed=ep)
        _, reward, done, _, _ = env.step(env.action_space.sample())
        assert done
        returns.append(reward)
    # A one-sample t-test of the stated mean, two-sided at the 1% level.
    assert stats.ttest_1samp(returns, hybrid_target.RANDOM_RETURN).pvalue > 0.01


def test_the_shared_form_reads_one_box() -> None:
    env = gym.make("reparl/HybridTarget-v0", shared=True)
    obs, _ = env.reset(seed=0)
    s = float(obs[0])
    k, x, r = hybrid_target.optimum(s)
    _, reward, _, _, _ = env.step((k, np.array([x], dtype=np.float64)))
    assert reward == pytest.approx(r, abs=1e-9)
