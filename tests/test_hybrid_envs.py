"""The hybrid action convention (envs/hybrid.py), its envs and the Box relaxation: the physics of
Platform and Goal against hand-worked cases, the one-step target env's closed-form optimum,
Gymnasium's env checker on every id."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from scipy import integrate, stats

import envs  # noqa: F401  (registers the ids)
from envs import goal, hybrid_target, platform
from envs.hybrid import RelaxedHybridAction, hybrid_parts

IDS = ["reparl/Platform-v0", "reparl/Goal-v0", "reparl/HybridTarget-v0", "reparl/PlatformRelaxed-v0",
       "reparl/GoalRelaxed-v0", "reparl/HybridTargetRelaxed-v0"]
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
    for module in (platform, goal, hybrid_target):
        assert "agents" not in module.__dict__ and not any(
            getattr(v, "__module__", "").startswith("agents") for v in vars(module).values())


# ------------------------------------------------------------------------------ Platform
def act(k: int, param: float) -> tuple[int, tuple[np.ndarray, ...]]:
    """A Platform action; the unchosen parameters sit at their lower bound, 0."""
    params = [np.zeros(1, dtype=np.float32) for _ in range(3)]
    params[k][0] = param
    return k, tuple(params)


def quiet_platform() -> platform.Platform:
    env = platform.Platform(noise=0.0)
    env.reset(seed=0)
    return env


def test_a_run_moves_the_closed_form_distance() -> None:
    """run(p) from rest: the speed after substep n is u_n = p (1 - 0.99^n) / 0.01 while below the
    ground limit 70 (each substep adds p, then decays by 0.99), so 20 substeps of dt cover
    dt * sum_n u_n = 5 p (20 - 99 (1 - 0.99^20))."""
    env = quiet_platform()
    _, reward, done, _, info = env.step(act(0, 1.0))
    expected = 5 * (20 - 99 * (1 - 0.99**20))
    assert info["substeps"] == 20 and not done
    assert env.x == pytest.approx(expected, rel=1e-12) and env.y == platform.PLATFORM_HEIGHT
    assert env.vx == pytest.approx(0.99 * 100 * (1 - 0.99**20), rel=1e-12)  # u_20, decayed once more
    assert reward == pytest.approx(expected / 1035, rel=1e-12)


def test_a_fast_run_is_capped_at_the_ground_speed() -> None:
    """run(30): u = 30, 0.99 * 30 + 30 = 59.7, then min(70, 0.99 * 59.7 + 30) = 70 for the 18
    substeps left: dt * (30 + 59.7 + 18 * 70) = 67.485."""
    env = quiet_platform()
    env.step(act(0, 30.0))
    assert env.x == pytest.approx(0.05 * (30 + 59.7 + 18 * 70), rel=1e-12)


def test_a_leap_lands_where_worked_by_hand() -> None:
    """leap(L) from rest: the take-off speed is L / T, T = 2 * 25 / 9.8 + 1 (below the cap of 30);
    vertically y_m = 40 + dt * sum_{j<m} (25 - 0.49 j), first below 40 at m = 104 (25 - 0.245 (m - 1)
    < 0), when the player lands and stops; horizontally x_104 = (L / T) dt (1 - 0.99^104) / 0.01."""
    leap = np.float32(10 * (2 * 25 / 9.8 + 1))  # take-off speed 10 (the env receives float32)
    env = quiet_platform()
    _, reward, done, _, info = env.step(act(2, float(leap)))
    speed = float(leap) / (2 * 25 / 9.8 + 1)
    landing = speed * 0.05 * (1 - 0.99**104) / 0.01
    assert info["substeps"] == 104 and not done
    assert env.x == pytest.approx(landing, rel=1e-12)
    assert (env.y, env.vx, env.vy) == (platform.PLATFORM_HEIGHT, 0.0, 0.0) and env.on_platform()
    assert reward == pytest.approx(landing / 1035, rel=1e-12)


def test_an_enemy_collision_ends_the_episode() -> None:
    """Standing still at x = 0: the enemy starts at the right end of platform 1 (x = 230), turns
    on the spot for one substep, then walks left 1.5 per substep: after n substeps it is at
    230 - 1.5 (n - 1), touching the player (x < 20) first at n = 142, the 2nd substep of the 8th run."""
    env = quiet_platform()
    for i in range(8):
        _, reward, done, _, info = env.step(act(0, 0.0))
        assert reward == 0.0 and done == (i == 7)
    assert info["substeps"] == 2 and env.enemy_x[0] == pytest.approx(230 - 1.5 * 141)


def test_running_off_the_edge_ends_the_episode() -> None:
    """From x = 240 at rest (enemy moved away), run(30): x = 241.5, 244.485, 247.985, 251.485;
    off the platform (x > 250) the 5th substep falls (y = 40 - 0.49 dt < 40) at x + 69.3 dt."""
    env = quiet_platform()
    env.x, env.enemy_x[0], env.enemy_dx[0] = 240.0, 0.0, -30.0
    _, reward, done, _, info = env.step(act(0, 30.0))
    assert done and info["substeps"] == 5
    assert env.x == pytest.approx(251.485 + 69.3 * 0.05, rel=1e-12) and env.y < platform.PLATFORM_HEIGHT
    assert reward == pytest.approx((env.x - 240) / 1035, rel=1e-12)


OPTIMAL_ISH = [(0, 4), (2, 250), (0, 4), (1, 580), (1, 260), (1, 240), (0, 4), (1, 580), (0, 4)]
"""Found by a beam search over a grid of actions on the noise-free dynamics: two short runs past
the first enemy, hops over the second gap, its enemy and onto the last platform, then a run off
its right edge."""


def test_a_known_sequence_reaches_the_end_with_return_1() -> None:
    env = quiet_platform()
    total = 0.0
    for i, (k, p) in enumerate(OPTIMAL_ISH):
        x_before = env.x
        _, reward, done, _, _ = env.step(act(k, p))
        assert reward == pytest.approx((env.x - x_before) / 1035) and done == (i == len(OPTIMAL_ISH) - 1)
        total += reward
    assert env.x == 1035 and total == pytest.approx(1.0, abs=1e-12)


def test_the_return_is_the_final_x_over_the_width() -> None:
    """Rewards telescope: each is the progress during its action over 1035."""
    env = gym.make("reparl/Platform-v0")
    env.action_space.seed(0)
    for ep in range(30):
        env.reset(seed=ep)
        total, done, truncated = 0.0, False, False
        while not (done or truncated):
            _, reward, done, truncated, info = env.step(env.action_space.sample())
            total += reward
        assert total == pytest.approx(info["x"] / 1035, abs=1e-12) and 0 <= total <= 1


# ------------------------------------------------------------------------------ Goal
def cross(u: np.ndarray, v: np.ndarray) -> float:
    """z of the cross product: 0 when u and v are collinear."""
    return float(u[0] * v[1] - u[1] * v[0])


def quiet_goal(seed: int = 0) -> goal.Goal:
    env = goal.Goal(noise=0.0)
    env.reset(seed=seed)
    return env


def test_the_kickoff_is_laid_out_as_published() -> None:
    """The ball just inside kicking range toward the goal's centre; the keeper at the front of the
    goal area (x = 14.5) on the line from the ball to the goal's centre."""
    for seed in range(5):
        env = quiet_goal(seed)
        s, b, k = env.striker.pos, env.ball.pos, env.keeper.pos
        assert s[0] == 0 and -15 <= s[1] <= 15
        assert np.hypot(*(b - s)) == pytest.approx(goal.KICKABLE, abs=1e-9) and env._can_kick()
        assert cross(b - s, np.array([20.0, 0.0]) - s) == pytest.approx(0, abs=1e-9)
        assert k[0] == 14.5 and cross(k - b, np.array([20.0, 0.0]) - b) == pytest.approx(0, abs=1e-9)


def test_one_kick_substep_moves_the_ball_by_the_closed_form() -> None:
    """A shot at (20.4, y) with the ball at rest: the kick's acceleration is 0.06 (target - striker)
    (below the maximum, so exact); the ball moves by it, then its speed decays by 0.94."""
    env = quiet_goal(3)
    ball, striker = env.ball.pos.copy(), env.striker.pos.copy()
    accel = 0.06 * (np.array([20.4, 2.0]) - striker)
    assert np.hypot(*accel) < 100 * env._kick_power() * 0.027
    env._substep(1, np.array([2.0]))
    np.testing.assert_allclose(env.ball.pos, ball + accel, rtol=0, atol=1e-12)
    np.testing.assert_allclose(env.ball.vel, 0.94 * accel, rtol=0, atol=1e-12)


def test_kick_to_aims_at_x_x_as_published_or_at_x_y() -> None:
    for xy, target in ((False, (10.0, 10.0)), (True, (10.0, -5.0))):
        env = goal.Goal(noise=0.0, kick_to_xy=xy)
        env.reset(seed=3)
        striker = env.striker.pos.copy()
        env._substep(0, np.array([10.0, -5.0]))
        direction = env.ball.vel / np.hypot(*env.ball.vel)
        want = (np.array(target) - striker) / np.hypot(*(np.array(target) - striker))
        np.testing.assert_allclose(direction, want, atol=1e-12)


def test_a_ball_rolling_into_the_net_scores_50() -> None:
    env = quiet_goal()
    env.striker.pos, env.keeper.pos = np.array([5.0, 0.0]), np.array([15.0, 12.0])
    env.ball.pos, env.ball.vel = np.array([19.5, 1.0]), np.array([1.0, 0.0])
    _, reward, done, _, info = env.step((1, (np.zeros(2), np.zeros(1), np.zeros(1))))
    assert (reward, done, info["is_success"], info["substeps"]) == (50.0, True, True, 1)


def test_a_ball_leaving_the_pitch_costs_its_distance_to_the_goal() -> None:
    """Out at the top (y = 15.9 > 15) at x = 10: the nearest goal point is the post (20, 7.01)."""
    env = quiet_goal()
    env.striker.pos, env.keeper.pos = np.array([2.0, 0.0]), np.array([15.0, 0.0])
    env.ball.pos, env.ball.vel = np.array([10.0, 14.9]), np.array([0.0, 1.0])
    _, reward, done, _, info = env.step((1, (np.zeros(2), np.zeros(1), np.zeros(1))))
    assert done and not info["is_success"]
    assert reward == pytest.approx(-math.hypot(20 - 10, 15.9 - 7.01), abs=1e-9)


def test_the_keeper_catches_a_ball_within_2() -> None:
    env = quiet_goal()
    env.striker.pos, env.keeper.pos = np.array([2.0, 0.0]), np.array([15.0, 0.0])
    env.ball.pos = np.array([13.5, 0.0])  # 1.5 from the keeper, at rest
    _, reward, done, _, info = env.step((1, (np.zeros(2), np.zeros(1), np.zeros(1))))
    assert done and not info["is_success"] and info["substeps"] == 1
    assert reward == pytest.approx(-(20 - env.ball.pos[0]), abs=1e-9)


def test_the_100th_action_ends_the_episode_unsimulated() -> None:
    env = quiet_goal()
    env.actions_taken = 99
    ball = env.ball.pos.copy()
    _, reward, done, _, info = env.step((0, (np.zeros(2), np.zeros(1), np.zeros(1))))
    assert done and info["substeps"] == 0 and (env.ball.pos == ball).all()
    assert reward == -env.goal_distance()


def test_the_return_is_50_exactly_when_it_scores() -> None:
    env = gym.make("reparl/Goal-v0")
    env.action_space.seed(0)
    for ep in range(40):
        env.reset(seed=ep)
        total, done = 0.0, False
        while not done:
            _, reward, done, _, info = env.step(env.action_space.sample())
            total += reward
            assert done or reward == 0.0
        assert (total == 50.0) == info["is_success"] and (total == 50.0 or total <= 0.0)


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


# ------------------------------------------------------------------------------ the Box relaxation
def test_the_relaxation_picks_the_argmax_and_rescales_each_box() -> None:
    env = RelaxedHybridAction(platform.Platform())
    assert env.action_space == spaces.Box(-1.0, 1.0, (6,), dtype=np.float32)
    k, params = env.action(np.array([0.1, 0.9, -0.3, -1.0, 0.0, 1.0]))
    assert k == 1 and [float(p[0]) for p in params] == [0.0, 360.0, 430.0]
    assert env.env.action_space.contains((k, params))


def test_the_relaxation_of_the_shared_form_has_one_set_of_parameters() -> None:
    env = RelaxedHybridAction(hybrid_target.HybridTarget(shared=True))
    assert env.action_space.shape == (3 + 1,)
    k, x = env.action(np.array([-1.0, -0.5, 0.2, 0.5]))
    assert k == 2 and x.shape == (1,) and float(x[0]) == pytest.approx(1.0)


def test_sb3_checks_and_learns_on_a_relaxed_id() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    sb3_check_env(gym.make("reparl/PlatformRelaxed-v0"), warn=False)
    PPO("MlpPolicy", "reparl/HybridTargetRelaxed-v0", n_steps=64, batch_size=64, seed=0).learn(128)


@pytest.mark.parametrize(("env_id", "cls", "shape"), [("reparl/Platform-v0", platform.Platform, (120, 625, 3)),
                                                      ("reparl/Goal-v0", goal.Goal, (360, 281, 3))])
def test_rgb_array_frames_show_the_bodies(env_id: str, cls: type, shape: tuple[int, ...]) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == shape and frame.dtype == np.uint8
    for colour in ((40, 80, 200), (200, 40, 40)):  # the player (striker) and an enemy (the keeper)
        assert (frame == colour).all(-1).any()
    with pytest.raises(ValueError, match="rgb_array"):
        cls(render_mode="human")
