"""MinAtar (Young and Tian 2019, "MinAtar: An Atari-Inspired Testbed for Thorough and Reproducible
Reinforcement Learning Experiments") as standard Gymnasium envs: the CPU-sized Atari.

Ids ``reparl/MinAtar-<Game>-v0`` for Asterix, Breakout, Freeway, Seaquest and SpaceInvaders. Each
wraps the ``minatar`` package's game as the paper runs it: sticky actions with probability 0.1,
difficulty ramping on, all six actions (no-op, left, up, right, down, fire), no time limit of its
own (``env.max_episode_steps`` in a config adds one).

Observation: ``Box(0, 1, (10, 10, C), bool)``, channels last as the package emits it, one channel
per kind of object (Breakout 4, SpaceInvaders 6, Asterix 4, Freeway 7, Seaquest 10). The values are
already 0/1: an encoder must not divide them by 255 as it would an 8-bit image. Seaquest's
(10, 10, 10) cannot tell its channel axis by shape; the axis is the last one for every game.

``minatar`` itself registers envs with Gymnasium only through an entry-point plugin that Gymnasium
1.x no longer loads, and its env does not seed through ``reset(seed=...)`` and renders float
frames; this adapter seeds the game from Gymnasium's ``np_random`` (so a seed fixes the episode,
sticky actions included) and renders uint8 RGB frames for ``RecordVideo``.

Keyword arguments (``env.kwargs``): ``sticky_action_prob`` (0.1), ``difficulty_ramping`` (true),
``minimal_action_set`` (false; true keeps only the game's distinct actions, e.g. Breakout's
no-op/left/right, as ``minatar``'s own ``-v1`` ids do).
"""

from __future__ import annotations

import colorsys
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

GAMES = {"Asterix": "asterix", "Breakout": "breakout", "Freeway": "freeway", "Seaquest": "seaquest",
         "SpaceInvaders": "space_invaders"}
"""Id name -> the ``minatar`` package's game module."""
CELL_PIXELS = 16
"""A rendered frame draws each of the 10 x 10 cells as a 16 x 16 block: 160 x 160, a whole number
of the 16-pixel macroblocks video codecs work in."""


def _palette(n_channels: int) -> np.ndarray:
    """Black background, then one saturated colour per channel, evenly spaced in hue."""
    colours = [(0.0, 0.0, 0.0)] + [colorsys.hsv_to_rgb(c / n_channels, 0.65, 1.0) for c in range(n_channels)]
    return np.round(np.array(colours) * 255).astype(np.uint8)


class MinAtarEnv(gym.Env[np.ndarray, np.int64]):
    """One MinAtar game; see the module docstring for the spaces and the keyword arguments."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, game: str, sticky_action_prob: float = 0.1, difficulty_ramping: bool = True,
                 minimal_action_set: bool = False, render_mode: str | None = None) -> None:
        if game not in GAMES.values():
            raise ValueError(f"game={game!r} is not a MinAtar game; use one of {sorted(GAMES.values())}")
        if not 0.0 <= sticky_action_prob <= 1.0:
            raise ValueError(f"sticky_action_prob={sticky_action_prob!r} must be in [0, 1]")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; use 'rgb_array' or None")
        # Imported here: minatar imports matplotlib's pyplot and seaborn (about a second), which only
        # a process that builds a MinAtar env should pay for.
        from minatar import Environment

        self._game = Environment(game, sticky_action_prob=sticky_action_prob, difficulty_ramping=difficulty_ramping)
        self._actions = (list(self._game.minimal_action_set()) if minimal_action_set
                         else list(range(self._game.num_actions())))
        shape = tuple(int(d) for d in self._game.state_shape())
        self.observation_space = spaces.Box(0, 1, shape=shape, dtype=bool)
        self.action_space = spaces.Discrete(len(self._actions))
        self.render_mode = render_mode
        self._colours = _palette(shape[-1])
        self._seeded = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None or not self._seeded:
            # The game and its sticky actions share one RandomState; drawing its seed from np_random
            # makes reset(seed=s) fix everything that follows.
            self._game.seed(int(self.np_random.integers(2**31 - 1)))
            self._seeded = True
        # The package keeps the last action across resets; an episode starts with none to repeat.
        self._game.last_action = 0
        self._game.reset()
        return self._game.state(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward, terminated = self._game.act(self._actions[int(action)])
        return self._game.state(), float(reward), bool(terminated), False, {}

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        state = self._game.state()
        # Each cell shows its highest-numbered object channel (MinAtar's own display rule), 0 = empty.
        top = state.shape[-1] - np.argmax(state[..., ::-1], axis=-1)
        frame = self._colours[np.where(state.any(axis=-1), top, 0)]
        return np.repeat(np.repeat(frame, CELL_PIXELS, axis=0), CELL_PIXELS, axis=1)


def register() -> None:
    for name, game in GAMES.items():
        env_id = f"reparl/MinAtar-{name}-v0"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="envs.minatar:MinAtarEnv", kwargs={"game": game})


register()
