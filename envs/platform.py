"""Platform (Masson, Ranchod and Konidaris 2016, "Reinforcement learning with parameterized actions").

``reparl/Platform-v0``. A player crosses three platforms separated by two gaps, jumping over an
enemy that patrols each of the first two platforms. Three parameterized actions, each with one
continuous parameter (the published bounds):

* run(p), p in [0, 30]: accelerate along the ground for 20 substeps (one unit of time);
* hop(dx), dx in [0, 720]: a high jump (initial vertical speed 35) aimed dx ahead;
* leap(dx), dx in [0, 430]: a long, low jump (vertical speed 25) aimed dx ahead.

A hop or leap lasts until the player lands. The episode ends when the player reaches the right
edge of the last platform, falls into a gap, or touches an enemy. The reward of an action is the
player's progress to the right during it over the total width (1035), so the return is the
final x over 1035: in [0, 1], 1 exactly when the player reaches the end. MP-DQN (Bester et al.
2019) reports 0.987 after training, P-DQN less.

The dynamics and constants are those of the published domain (the authors' simulator as ported
to Gym by Bester, ``cycraig/gym-platform``), written here from them: a substep of dt = 0.05
applies the action's acceleration (or gravity 9.8 in the air), bounds the ground speed to 70,
moves every body, decays horizontal speed by 0.99, pushes the player out of any platform it
overlaps (stopping its horizontal motion, landings included), and checks the end conditions.
Noise: each acceleration loses |N(0, 0.5 dt)| of horizontal speed, a jump's take-off speeds lose
|N(0, 1)| each, and an enemy's speed takes N(0, 0.5 dt) per substep. ``noise=0`` makes every
step deterministic, for the hand-worked tests (``tests/test_hybrid_envs.py``).

Observation (9 entries in [0, 1], the published scaling): player x, player speed, the x and speed of
the enemy on the player's current platform, then the widths of the current and next platform,
the gap between them, the current platform's x and the next one's height difference (always 0).
The published observation also carries the substeps of the last action; MP-DQN drops it, so does
this one.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

DT = 0.05
GRAVITY = 9.8
MAX_DX, MAX_DY, MAX_DX_ON_GROUND = 100.0, 200.0, 70.0
MAX_DDX, MAX_DDY = (MAX_DX - MAX_DX_ON_GROUND) / DT, MAX_DY / DT
SPEED_DECAY = 0.99
NOISE = 0.5  # the std of the per-substep speed noise of the player and the enemies, times dt
JUMP_DEV = 1.0
ENEMY_SPEED = 30.0
WIDTH, HEIGHT = 20.0, 30.0  # of the player and of each enemy
PLATFORM_HEIGHT = 40.0
PLATFORMS = ((0.0, 250.0), (475.0, 275.0), (985.0, 50.0))
"""(x, width) of each platform: widths 250, 275, 50 with gaps of 225 and 235; every top at y = 40."""
RIGHT_EDGE = PLATFORMS[-1][0] + PLATFORMS[-1][1]  # 1035
RUN_SUBSTEPS = 20  # one unit of time
HOP_DY, LEAP_DY = 35.0, 25.0
PARAM_HIGH = (30.0, 720.0, 430.0)
ACTIONS = ("run", "hop", "leap")
_MAX_WIDTH, _MAX_GAP = 275.0, 235.0
_OBS_SHIFT = np.array([WIDTH, 0.0, 0.0, ENEMY_SPEED, 0.0, 0.0, 0.0, 0.0, 0.0])
_OBS_SCALE = np.array([RIGHT_EDGE + WIDTH, MAX_DX, RIGHT_EDGE, 2 * ENEMY_SPEED, _MAX_WIDTH, _MAX_WIDTH, _MAX_GAP,
                       RIGHT_EDGE, 1.0])


def clip(v: float, low: float, high: float) -> float:
    return low if v < low else high if v > high else v


def overlapping(ax: float, ay: float, aw: float, ah: float, bx: float, by: float, bw: float, bh: float) -> bool:
    """Open rectangles (lower-left corner, width, height) overlap: touching edges do not count, so a
    player standing on a platform (its bottom at the platform's top) is not inside it."""
    return bx - aw < ax < bx + bw and by - ah < ay < by + bh


class Platform(gym.Env):
    """The Platform domain. ``noise`` scales every random perturbation (0: deterministic)."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, noise: float = 1.0, render_mode: str | None = None) -> None:
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0 (a scale of the published noise); got {noise}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"Platform renders only render_mode='rgb_array' (or None); got {render_mode!r}")
        self.noise, self.render_mode = float(noise), render_mode
        self.action_space = spaces.Tuple((
            spaces.Discrete(3),
            spaces.Tuple(tuple(spaces.Box(0.0, high, (1,), dtype=np.float32) for high in PARAM_HIGH))))
        self.observation_space = spaces.Box(0.0, 1.0, (9,), dtype=np.float32)
        # Plain floats, not arrays: an action runs up to a few hundred substeps of scalar arithmetic,
        # where numpy's per-call overhead would dominate.
        self.x, self.y, self.vx, self.vy = 0.0, PLATFORM_HEIGHT, 0.0, 0.0
        self.enemy_x, self.enemy_dx = [0.0, 0.0], [0.0, 0.0]
        self.substeps = 0

    # ------------------------------------------------------------------ state
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.x, self.y, self.vx, self.vy = 0.0, PLATFORM_HEIGHT, 0.0, 0.0
        # Each enemy starts at the right end of its platform, walking left.
        self.enemy_x = [x + w - WIDTH for x, w in PLATFORMS[:2]]
        self.enemy_dx = [-ENEMY_SPEED, -ENEMY_SPEED]
        self.substeps = 0
        return self._obs(), {}

    def _enemy_index(self) -> int:
        """The enemy on the player's platform: the second once the player is past platform 2's left edge."""
        return 1 if self.x > PLATFORMS[1][0] else 0

    def _obs(self) -> np.ndarray:
        x = self.x
        if x < PLATFORMS[1][0]:
            here, width_next, gap = PLATFORMS[0], PLATFORMS[1][1], PLATFORMS[1][0] - sum(PLATFORMS[0])
        elif x < PLATFORMS[2][0]:
            here, width_next, gap = PLATFORMS[1], PLATFORMS[2][1], PLATFORMS[2][0] - sum(PLATFORMS[1])
        else:
            here, width_next, gap = PLATFORMS[2], 0.0, 0.0
        e = self._enemy_index()
        raw = np.array([x, self.vx, self.enemy_x[e], self.enemy_dx[e], here[1], width_next, gap, here[0], 0.0])
        return ((raw + _OBS_SHIFT) / _OBS_SCALE).astype(np.float32)

    def on_platform(self) -> bool:
        """Standing on a platform: feet exactly at its top and not wholly past either end."""
        return self.y == PLATFORM_HEIGHT and any(-WIDTH <= self.x - x <= w for x, w in PLATFORMS)

    # ------------------------------------------------------------------ physics
    def _accelerate(self, ax: float, ay: float) -> None:
        """Acceleration over one substep, bounded; friction-like noise only ever slows the player."""
        self.vx += clip(ax, -MAX_DDX, MAX_DDX) * DT
        self.vy += clip(ay, -MAX_DDY, MAX_DDY) * DT
        self.vx -= abs(self.np_random.normal(0.0, NOISE * DT)) * self.noise
        self.vx = max(clip(self.vx, -MAX_DX, MAX_DX), 0.0)
        self.vy = clip(self.vy, -MAX_DY, MAX_DY)

    def _jump(self, dx: float, dy: float) -> None:
        """Take off aiming ``dx`` ahead: the horizontal speed that covers dx in the jump's nominal time
        2 dy / g + 1, less the current speed, each take-off speed reduced by |N(0, 1)|."""
        ddx = clip(dx / (2.0 * dy / GRAVITY + 1.0) - self.vx, -MAX_DDX, MAX_DY - dy)
        dev_x, dev_y = (-abs(float(v)) * self.noise for v in self.np_random.normal(0.0, JUMP_DEV, 2))
        self._accelerate((ddx + dev_x) / DT, (dy + dev_y) / DT)

    def _move_enemy(self, e: int) -> None:
        x0, w = PLATFORMS[e]
        right = x0 + w - WIDTH
        if not x0 < self.enemy_x[e] < right:  # at an end (or started there): turn around
            self.enemy_dx[e] *= -1
        dx = self.enemy_dx[e] + self.np_random.normal(0.0, NOISE * DT) * self.noise
        self.enemy_dx[e] = clip(dx, -ENEMY_SPEED, ENEMY_SPEED)
        self.enemy_x[e] = clip(self.enemy_x[e] + self.enemy_dx[e] * DT, x0, right)

    def _push_out(self, x0: float, width: float) -> None:
        """Move the player out of a platform it overlaps, along the axis needing the smaller shift
        (the published rule), and stop its motion along that axis."""
        x, y = self.x, self.y
        new_x = x0 - WIDTH if x < x0 else x0 + width if x > x0 + width - WIDTH else x
        new_y = -HEIGHT if y < 0.0 else PLATFORM_HEIGHT if y > PLATFORM_HEIGHT - HEIGHT else y
        if new_x == x or (new_y != y and abs(x - new_x) >= abs(y - new_y)):
            self.y, self.vy = new_y, 0.0
        else:
            self.x, self.vx = new_x, 0.0

    def _substep(self, action: int, param: float) -> bool:
        """One dt of the published simulation; True when the episode ends."""
        if self.on_platform():
            if action == 0:
                self._accelerate(param / DT, 0.0)
            else:
                self._jump(param, HOP_DY if action == 1 else LEAP_DY)
            self.vx = min(self.vx, MAX_DX_ON_GROUND)
        else:
            self._accelerate(0.0, -GRAVITY)
        e = self._enemy_index()  # only the enemy on the player's platform moves
        self.x = clip(self.x + self.vx * DT, 0.0, RIGHT_EDGE)
        self.y += self.vy * DT
        self.vx *= SPEED_DECAY
        self._move_enemy(e)
        for x0, w in PLATFORMS:
            if overlapping(self.x, self.y, WIDTH, HEIGHT, x0, 0.0, w, PLATFORM_HEIGHT):
                self._push_out(x0, w)
                self.vx = 0.0  # any contact with a platform, a landing too, stops the player
        self.substeps += 1
        hit = any(overlapping(self.x, self.y, WIDTH, HEIGHT, ex, PLATFORM_HEIGHT, WIDTH, HEIGHT) for ex in self.enemy_x)
        return self.y < PLATFORM_HEIGHT or hit or self.x >= RIGHT_EDGE

    def render(self) -> np.ndarray | None:
        """The scene after the last action (its substeps are not drawn): platforms grey, enemies red,
        the player blue, 0.6 pixels per unit."""
        if self.render_mode != "rgb_array":
            return None
        scale, height = 0.6, 120
        frame = np.full((height, int(RIGHT_EDGE * scale) + 4, 3), 235, dtype=np.uint8)

        def fill(x: float, y: float, w: float, h: float, colour: tuple[int, int, int]) -> None:
            top, bottom = height - 10 - int((y + h) * scale), height - 10 - int(y * scale)
            frame[max(top, 0):max(bottom, 0), max(int(x * scale) + 2, 0):int((x + w) * scale) + 2] = colour

        for x0, w in PLATFORMS:
            fill(x0, 0.0, w, PLATFORM_HEIGHT, (120, 120, 120))
        for ex in self.enemy_x:
            fill(ex, PLATFORM_HEIGHT, WIDTH, HEIGHT, (200, 40, 40))
        fill(self.x, self.y, WIDTH, HEIGHT, (40, 80, 200))
        return frame

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        k, params = action
        k = int(k)
        if k not in (0, 1, 2):
            raise ValueError(f"Platform's discrete action is 0 (run), 1 (hop) or 2 (leap); got {k}")
        param = float(np.clip(np.asarray(params[k], dtype=np.float64).reshape(-1)[0], 0.0, PARAM_HIGH[k]))
        start = self.x
        self.substeps = 0
        done = False
        if k == 0:
            for _ in range(RUN_SUBSTEPS):
                if done := self._substep(k, param):
                    break
        else:
            # Until the player lands or the episode ends; it always does, as gravity brings every jump
            # below the platforms' top within 2 * 200 / (9.8 * dt) substeps.
            while not done:
                done = self._substep(k, param)
                if self.on_platform():
                    break
        return self._obs(), (self.x - start) / RIGHT_EDGE, done, False, {"substeps": self.substeps, "x": self.x}
