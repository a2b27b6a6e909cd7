"""Robot Soccer Goal (Masson, Ranchod and Konidaris 2016; after Hausknecht and Stone's RoboCup tasks).

``reparl/Goal-v0``. A striker starts with the ball on the halfway line of a 40 x 30 half-pitch, at a
random height; a keeper guards a goal 14.02 wide. Three parameterized actions (published bounds):

* kick-to(x, y), x in [0, 40], y in [-15, 15]: kick the ball toward a point, then follow it until it
  is kickable and nearly still (speed <= 0.1);
* shoot-goal-left(y) and shoot-goal-right(y), y in [-7.01, 7.01]: shoot at height y of the goal
  line, following the ball until the episode ends. The two are the same action in the published
  simulator; the names are the hand-made initial policies' (aim left or right of the keeper).

The episode ends with reward 50 when the ball enters the goal, and with minus the ball's distance to
the goal when the keeper catches it (within 2 of the keeper), when it leaves the half-pitch, or at
the 100th action; every other step pays 0. So an episode's return is 50 exactly when it scores and
at most 0 otherwise, and the scoring probability is the fraction of returns equal to 50 (also
``info["is_success"]`` at an episode's end, SB3's convention). MP-DQN (Bester et al. 2019) reports
a scoring probability of 0.789.

Dynamics and constants are the published simulator's (the authors' ``aaai-goal`` code as ported to
Gym by Bester, ``cycraig/gym-goal``; constants from the RoboCup soccer server manual), written here
from them. Per substep the striker acts, the keeper moves to intercept the ball's projected path
(or toward where the ball will stop), every body moves and decays its speed (player 0.4, ball
0.94), overlapping bodies are pushed apart with their velocities reversed, and the end conditions
are checked. Noise: an acceleration's direction is scaled by 1 + U(-r, r) and it gains U(-r |v|, r |v|)
per axis, r = 0.1 for players and 0.05 for the ball; ``noise=0`` removes both.

A quirk of the published simulator, kept by default so that results compare with the published
figures: kick-to passes only the parameter x to the kick, which aims at the point (x, x).
``kick_to_xy=True`` aims at (x, y) as the paper describes.

Observation (17 entries): the 14 of the published state (striker position, velocity, orientation;
keeper position, velocity, orientation; ball position, velocity) plus MP-DQN's three features (the
unit vector from keeper to ball, and where the keeper-ball line crosses the goal line, within the
goal's width), each scaled to [-1, 1] by its published bounds. Orientations are wrapped to [-pi, pi]
(the simulator's striker orientation accumulates turns). Positions can leave the published bounds
slightly (a ball in the net lies past the goal line), so the space is unbounded.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

PITCH_LENGTH, PITCH_WIDTH = 40.0, 30.0
GOAL_WIDTH, GOAL_DEPTH = 14.02, 2.44
GOAL_AREA_LENGTH, GOAL_AREA_WIDTH = 5.5, 18.32
GOAL_X = PITCH_LENGTH / 2  # the goal line: the simulated half-pitch is x in [0, 20]
KICKABLE = 0.9 + 0.7  # player size plus the kickable margin
CATCHABLE = 2.0
INERTIA_MOMENT = 5.0
MIN_POWER, MAX_POWER = -100.0, 100.0
MAX_ACTIONS = 100
MAX_SUBSTEPS = 10_000
"""A safety bound the published simulator lacks: substeps of one action before it is cut short
(an action ends in a few hundred at most; none of the hand-worked cases comes near)."""
SCORE = 50.0
# (power rate, size, noise r, maximum acceleration, maximum speed, decay), from the soccer server manual
PLAYER = (0.006, 0.9, 0.1, 1.0, 1.0, 0.4)
BALL = (0.027, 0.4, 0.05, 2.7, 2.7, 0.94)
PARAM_LOW = (np.array([0.0, -PITCH_WIDTH / 2]), np.array([-GOAL_WIDTH / 2]), np.array([-GOAL_WIDTH / 2]))
PARAM_HIGH = (np.array([PITCH_LENGTH, PITCH_WIDTH / 2]), np.array([GOAL_WIDTH / 2]), np.array([GOAL_WIDTH / 2]))
ACTIONS = ("kick-to", "shoot-goal-left", "shoot-goal-right")
# Published bounds of the state (striker, keeper, ball) and of MP-DQN's three features.
_LOW = np.array([0.0, -15.0, -1.0, -1.0, -math.pi] * 2 + [0.0, -15.0, -3.0, -3.0] + [-1.0, -1.0, -GOAL_WIDTH / 2])
_HIGH = np.array([20.0, 15.0, 1.0, 1.0, math.pi] * 2 + [20.0, 15.0, 3.0, 3.0] + [1.0, 1.0, GOAL_WIDTH / 2])


def wrap(angle: float) -> float:
    """An angle in [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


def heading(src: np.ndarray, dst: np.ndarray) -> float:
    return math.atan2(dst[1] - src[1], dst[0] - src[0])


def unit(theta: float) -> np.ndarray:
    return np.array([math.cos(theta), math.sin(theta)])


def close_angles(a: float, b: float) -> bool:
    return abs(wrap(a - b)) < math.pi / 8


class Body:
    """A disc with a position, a velocity and, for players, an orientation."""

    def __init__(self, kind: tuple[float, ...], position: np.ndarray, orientation: float = 0.0) -> None:
        self.power_rate, self.size, self.rand, self.accel_max, self.speed_max, self.decay = kind
        self.pos, self.vel, self.orientation = np.asarray(position, dtype=np.float64), np.zeros(2), orientation

    def distance(self, other: Body) -> float:
        return float(np.hypot(*(self.pos - other.pos)))

    def accelerate(self, power: float, theta: float, rng: np.random.Generator, noise: float) -> None:
        # The published noise: the direction is scaled (not shifted) by 1 + U(-r, r), and each axis
        # gains uniform noise proportional to the current speed.
        theta *= 1 + rng.uniform(-self.rand, self.rand) * noise
        spread = self.rand * float(np.hypot(*self.vel))
        jitter = rng.uniform(-spread, spread, size=2) * noise
        accel = np.clip(power * self.power_rate * unit(theta) + jitter, -self.accel_max, self.accel_max)
        self.vel = np.clip(self.vel + accel, -self.speed_max, self.speed_max)


class Goal(gym.Env):
    """The Robot Soccer Goal domain. ``noise`` scales every random perturbation (0: deterministic
    dynamics; the striker's starting height stays random); ``kick_to_xy`` see the module docstring."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, noise: float = 1.0, kick_to_xy: bool = False, render_mode: str | None = None) -> None:
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0 (a scale of the published noise); got {noise}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"Goal renders only render_mode='rgb_array' (or None); got {render_mode!r}")
        self.noise, self.kick_to_xy, self.render_mode = float(noise), bool(kick_to_xy), render_mode
        self.action_space = spaces.Tuple((
            spaces.Discrete(3),
            spaces.Tuple(tuple(spaces.Box(lo.astype(np.float32), hi.astype(np.float32), dtype=np.float32)
                               for lo, hi in zip(PARAM_LOW, PARAM_HIGH, strict=True)))))
        self.observation_space = spaces.Box(-np.inf, np.inf, (17,), dtype=np.float32)
        self.striker = Body(PLAYER, np.zeros(2))
        self.keeper = Body(PLAYER, np.zeros(2))
        self.ball = Body(BALL, np.zeros(2))
        self.actions_taken = 0

    # ------------------------------------------------------------------ state
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        start = np.array([0.0, self.np_random.uniform(-PITCH_WIDTH / 2, PITCH_WIDTH / 2)])
        facing = heading(start, np.array([GOAL_X, 0.0]))
        self.striker = Body(PLAYER, start, facing)
        # Just inside kicking range (the published 1e-12 margin keeps the first state kickable on
        # every machine despite the rounding of cos and sin).
        self.ball = Body(BALL, start + (KICKABLE - 1e-12) * unit(facing))
        keeper = self._keeper_start(self.ball.pos)
        self.keeper = Body(PLAYER, keeper, heading(keeper, self.ball.pos))
        self.actions_taken = 0
        return self._obs(), {}

    @staticmethod
    def _keeper_start(ball: np.ndarray) -> np.ndarray:
        """On the line from the ball to the goal's centre, at the front of the goal area."""
        grad = -ball[1] / (GOAL_X - ball[0])
        yint = ball[1] - grad * ball[0]
        if ball[0] < GOAL_X - GOAL_AREA_LENGTH:
            x = ball[0]
        else:
            edge = -GOAL_AREA_WIDTH / 2 if ball[1] < -GOAL_AREA_WIDTH / 2 else GOAL_AREA_WIDTH / 2
            x = (edge - yint) / grad
        x = float(np.clip(x, GOAL_X - GOAL_AREA_LENGTH, GOAL_X))
        return np.array([x, float(np.clip(grad * x + yint, -GOAL_AREA_WIDTH / 2, GOAL_AREA_WIDTH / 2))])

    def _obs(self) -> np.ndarray:
        s, k, b = self.striker, self.keeper, self.ball
        diff = b.pos - k.pos
        norm = float(np.hypot(*diff))
        direction = diff / norm if norm > 0 else np.zeros(2)
        if k.pos[0] == b.pos[0]:  # a vertical keeper-ball line meets the goal line at infinity
            crossing = -GOAL_WIDTH / 2 if k.pos[1] < b.pos[1] else GOAL_WIDTH / 2
        else:
            grad = diff[1] / diff[0]
            crossing = b.pos[1] + grad * (GOAL_X - b.pos[0])
        raw = np.concatenate([s.pos, s.vel, [wrap(s.orientation)], k.pos, k.vel, [wrap(k.orientation)], b.pos, b.vel,
                              direction, [np.clip(crossing, -GOAL_WIDTH / 2, GOAL_WIDTH / 2)]])
        return (2 * (raw - _LOW) / (_HIGH - _LOW) - 1).astype(np.float32)

    def goal_distance(self) -> float:
        """The ball's distance to the goal mouth (the segment x = 20, |y| <= 7.01), as published: past
        the goal line and below the goal it is 7.01 - y, not -7.01 - y (kept, so returns compare)."""
        x, y = self.ball.pos
        half = GOAL_WIDTH / 2
        if x < GOAL_X:
            return float(np.hypot(GOAL_X - x, abs(y) - half)) if abs(y) > half else GOAL_X - x
        return half - y if y < -half else y - half if y > half else 0.0

    # ------------------------------------------------------------------ the striker's skills
    def _accelerate(self, body: Body, power: float, theta: float) -> None:
        body.accelerate(power, theta, self.np_random, self.noise)

    def _turn(self, angle: float) -> None:
        # Turning is harder the faster the striker moves (the soccer server's inertia moment).
        self.striker.orientation += wrap(angle) / (1 + INERTIA_MOMENT * float(np.hypot(*self.striker.vel)))

    def _can_kick(self) -> bool:
        return self.striker.distance(self.ball) <= KICKABLE

    def _kick_power(self) -> float:
        """The soccer server's kick efficiency: lower for a ball off to the side or far away."""
        off = abs(wrap(heading(self.striker.pos, self.ball.pos) - self.striker.orientation))
        return 1 - 0.25 * off / math.pi - 0.25 * self.striker.distance(self.ball) / KICKABLE

    def _to_ball(self) -> None:
        """Face the ball, then dash at power 10 until it is kickable."""
        toward = heading(self.striker.pos, self.ball.pos)
        if not close_angles(self.striker.orientation, toward):
            self._turn(toward - self.striker.orientation)
        elif not self._can_kick():
            self._accelerate(self.striker, 10.0, self.striker.orientation)

    def _kick_to(self, target: np.ndarray) -> None:
        """Kick so that the ball, decaying at 0.94, comes to rest (target - striker) further on."""
        if not self._can_kick():
            self._to_ball()
            return
        accel = (1 - self.ball.decay) * (target - self.striker.pos) - self.ball.vel
        efficiency = self._kick_power()
        power = float(np.clip(np.hypot(*accel) / (efficiency * self.ball.power_rate), MIN_POWER, MAX_POWER))
        self._accelerate(self.ball, power * efficiency, math.atan2(accel[1], accel[0]))

    def _keeper_move(self) -> None:
        """Intercept the ball's path if it is heading into the goal (power 20), else move toward
        where the ball will stop (power 8)."""
        k, b = self.keeper, self.ball
        stop = b.pos + b.vel / (1 - b.decay)
        diff = stop - b.pos
        grad = diff[1] / diff[0] if diff[0] != 0 else 0.0
        yint = b.pos[1] - grad * b.pos[0]
        at_goal = grad * GOAL_X + yint
        if stop[0] > GOAL_X and abs(at_goal) <= GOAL_WIDTH / 2 + CATCHABLE and grad != 0:
            # The foot of the perpendicular from the keeper to the ball's path.
            grad2 = -1 / grad
            yint2 = k.pos[1] - grad2 * k.pos[0]
            x = (yint2 - yint) / (grad - grad2)
            target, power = np.array([x, grad * x + yint]), 20.0
        else:
            target, power = stop, 8.0
        k.orientation = heading(k.pos, target)
        self._accelerate(k, power, heading(k.pos, target))

    # ------------------------------------------------------------------ simulation
    def _substep(self, action: int, param: np.ndarray) -> tuple[float, bool]:
        if action == 0:
            self._kick_to(np.array([param[0], param[1] if self.kick_to_xy else param[0]]))
        else:
            y = float(np.clip(param[0], -GOAL_WIDTH / 2, GOAL_WIDTH / 2))
            self._kick_to(np.array([GOAL_X + self.ball.size, y]))
        self._keeper_move()
        bodies = (self.striker, self.keeper, self.ball)
        for body in bodies:
            body.pos = body.pos + body.vel
            body.vel = body.vel * body.decay
        for i, a in enumerate(bodies):  # one pass over the pairs, in the published order
            for b in bodies[i + 1:]:
                dist = a.distance(b)
                if dist < a.size + b.size:
                    shift = (a.size + b.size - dist) / 2
                    away = heading(b.pos, a.pos)
                    a.pos, b.pos = a.pos + shift * unit(away), b.pos - shift * unit(away)
                    a.vel, b.vel = -a.vel, -b.vel
        x, y = self.ball.pos
        if GOAL_X <= x <= GOAL_X + GOAL_DEPTH and abs(y) <= GOAL_WIDTH / 2:
            return SCORE, True
        if self.keeper.distance(self.ball) < CATCHABLE or not (0 <= x <= GOAL_X and abs(y) <= PITCH_WIDTH / 2):
            return -self.goal_distance(), True
        return 0.0, False

    def render(self) -> np.ndarray | None:
        """The pitch after the last action (its substeps are not drawn): the goal and its area in
        white, the striker blue, the keeper red (its catching range pale), the ball black; 12 pixels
        per unit."""
        if self.render_mode != "rgb_array":
            return None
        scale = 12
        width, height = int((GOAL_X + GOAL_DEPTH + 1) * scale), int(PITCH_WIDTH * scale)
        frame = np.empty((height, width, 3), dtype=np.uint8)
        frame[:] = (40, 130, 40)
        rows, cols = np.ogrid[:height, :width]
        x, y = (cols + 0.5) / scale, PITCH_WIDTH / 2 - (rows + 0.5) / scale  # each pixel's centre

        def paint(mask: np.ndarray, colour: tuple[int, int, int]) -> None:
            frame[np.broadcast_to(mask, (height, width))] = colour

        line = 1.0 / scale
        paint((abs(x - GOAL_X) < line) & (abs(y) <= PITCH_WIDTH / 2), (255, 255, 255))
        box = GOAL_X - GOAL_AREA_LENGTH
        paint((abs(x - box) < line) & (abs(y) <= GOAL_AREA_WIDTH / 2), (255, 255, 255))
        paint((x >= box) & (x <= GOAL_X) & (abs(abs(y) - GOAL_AREA_WIDTH / 2) < line), (255, 255, 255))
        paint((x > GOAL_X) & (x <= GOAL_X + GOAL_DEPTH) & (abs(y) <= GOAL_WIDTH / 2), (220, 220, 220))
        for body, radius, colour in ((self.keeper, CATCHABLE, (120, 170, 120)), (self.striker, self.striker.size,
                                     (40, 80, 200)), (self.keeper, self.keeper.size, (200, 40, 40)),
                                     (self.ball, self.ball.size, (10, 10, 10))):
            paint((x - body.pos[0]) ** 2 + (y - body.pos[1]) ** 2 <= radius**2, colour)
        return frame

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        k, params = action
        k = int(k)
        if k not in (0, 1, 2):
            raise ValueError(f"Goal's discrete action is 0 (kick-to), 1 or 2 (shoot-goal); got {k}")
        param = np.clip(np.asarray(params[k], dtype=np.float64).reshape(-1), PARAM_LOW[k], PARAM_HIGH[k])
        self.actions_taken += 1
        if self.actions_taken == MAX_ACTIONS:
            reward = -self.goal_distance()
            return self._obs(), reward, True, False, {"is_success": False, "substeps": 0}
        reward, done, substeps = 0.0, False, 0
        while substeps < MAX_SUBSTEPS:
            substeps += 1
            reward, done = self._substep(k, param)
            if done:
                break
            # kick-to follows the ball until it is kickable and nearly still; a shot, until the end.
            if k == 0 and self._can_kick() and float(np.hypot(*self.ball.vel)) <= 0.1:
                break
        else:
            done, reward = True, -self.goal_distance()
        info: dict[str, Any] = {"substeps": substeps}
        if done:
            info["is_success"] = reward == SCORE
        return self._obs(), float(reward), done, False, info
