"""Hybrid (parameterized) action spaces: a discrete choice k with continuous parameters for it.

Masson et al. (2016) call these parameterized actions: pick one of K actions and the continuous
parameters x_k of that action (run *how far*, kick *where*). reparl writes them in Gymnasium's own
spaces, so an env needs nothing from reparl to offer one. Two forms are accepted:

* ``Tuple((Discrete(K), Tuple((Box_1, ..., Box_K))))``: one parameter Box per discrete action, the
  form of the published Platform and Goal envs (and of MP-DQN's wrappers of them). An action is
  ``(k, (x_1, ..., x_K))``; the env reads ``x_k`` and ignores the others, which must still lie in
  their Boxes (``action_space.contains`` holds for every action an agent sends).
* ``Tuple((Discrete(K), Box(d)))``: one Box whose parameters every discrete action reads. An action
  is ``(k, x)``.

Each Box is 1-D with finite bounds (the policies squash into them). ``Discrete(K, start=s)`` is
fine: k then runs over s..s+K-1. Anything else, a ``Dict``, nested Tuples, a Box of shape (2, 3),
is refused with a one-line error saying which form to use (:func:`hybrid_parts`).

:class:`RelaxedHybridAction` turns either form into one ``Box(-1, 1, (K + width,))`` for agents that
know only Boxes (SB3's SAC and PPO, GaussianSAC): the first K entries are scores whose argmax picks
k, the rest are every Box's parameters rescaled to [-1, 1], as PA-DDPG (Hausknecht and Stone 2016)
relaxes a parameterized action for DDPG.

Importing this module registers reparl's hybrid envs (entry points are strings, so an env's module
is imported only when it is made):

* ``reparl/Platform-v0`` (:mod:`envs.platform`) and ``reparl/Goal-v0`` (:mod:`envs.goal`),
* ``reparl/PlatformRelaxed-v0`` and ``reparl/GoalRelaxed-v0``: the same envs behind
  :class:`RelaxedHybridAction`, for the Box baselines (the runner's config names an id, not a wrapper),
* ``reparl/HybridTarget-v0`` (:mod:`envs.hybrid_target`): a one-step env with a closed-form optimum,
  for unit tests, and ``reparl/HybridTargetRelaxed-v0``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["HybridParts", "RelaxedHybridAction", "hybrid_parts", "relax"]

FORMS = ("Tuple((Discrete(K), Tuple((Box_1, ..., Box_K)))) with one 1-D Box per discrete action, "
         "or Tuple((Discrete(K), Box(d))) with one Box shared by all K")


@dataclass(frozen=True)
class HybridParts:
    """A hybrid action space taken apart: K choices from ``start``, and the Box each choice reads
    (the same Box K times in the shared form)."""

    n: int
    start: int
    boxes: tuple[spaces.Box, ...]
    shared: bool

    @property
    def dims(self) -> tuple[int, ...]:
        """Parameters of each discrete action."""
        return tuple(int(b.shape[0]) for b in self.boxes)

    @property
    def env_width(self) -> int:
        """Parameters the env's action carries: d in the shared form, sum_k d_k otherwise."""
        return self.dims[0] if self.shared else sum(self.dims)


def _check_box(box: Any, where: str, space: spaces.Space) -> spaces.Box:
    if not isinstance(box, spaces.Box):
        raise TypeError(f"hybrid action space {space}: {where} is {box}, not a Box; accepted forms: {FORMS}")
    if len(box.shape) != 1 or box.shape[0] < 1:
        raise TypeError(f"hybrid action space {space}: {where} has shape {box.shape}; each Box must be 1-D and "
                        "non-empty (flatten it, e.g. Box(low.ravel(), high.ravel()))")
    if not (np.all(np.isfinite(box.low)) and np.all(np.isfinite(box.high))):
        raise TypeError(f"hybrid action space {space}: {where} has bounds low={box.low}, high={box.high}; "
                        "parameters are squashed into their Box, so its bounds must be finite")
    if not np.issubdtype(box.dtype, np.floating):
        raise TypeError(f"hybrid action space {space}: {where} has dtype {box.dtype}; parameters are "
                        "continuous, so use a float Box")
    return box


def hybrid_parts(space: spaces.Space) -> HybridParts:
    """Take a hybrid action space apart, or raise TypeError naming what does not fit the convention."""
    if not (isinstance(space, spaces.Tuple) and len(space.spaces) == 2
            and isinstance(space.spaces[0], spaces.Discrete)):
        raise TypeError(f"{space} is not a hybrid action space; accepted forms: {FORMS}")
    choice, params = space.spaces
    n = int(choice.n)
    if isinstance(params, spaces.Tuple):
        if len(params.spaces) != n:
            raise TypeError(f"hybrid action space {space}: {len(params.spaces)} parameter Boxes for {n} discrete "
                            "actions; give one Box per action (an action without parameters still needs one, e.g. "
                            "Box(0, 1, (1,))), or one Box shared by all")
        boxes = tuple(_check_box(b, f"parameter Box {i}", space) for i, b in enumerate(params.spaces))
        return HybridParts(n, int(choice.start), boxes, shared=False)
    box = _check_box(params, "the parameter space", space)
    return HybridParts(n, int(choice.start), (box,) * n, shared=True)


class RelaxedHybridAction(gym.ActionWrapper):
    """A hybrid action as one ``Box(-1, 1, (K + width,))`` (PA-DDPG's relaxation, Hausknecht and
    Stone 2016): k = argmax of the first K entries, then the parameters, each Box's in [-1, 1]
    mapped affinely onto its bounds. ``width`` is the env's parameter count (d shared, else sum d_k),
    so an agent sets every Box's parameters and the env reads the chosen one's, as with the Tuple."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.parts = hybrid_parts(env.action_space)
        self._boxes = self.parts.boxes[:1] if self.parts.shared else self.parts.boxes
        self._splits = np.cumsum([b.shape[0] for b in self._boxes])[:-1]
        self.action_space = spaces.Box(-1.0, 1.0, (self.parts.n + self.parts.env_width,), dtype=np.float32)

    def action(self, action: np.ndarray) -> tuple[int, Any]:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        k = int(np.argmax(a[: self.parts.n]))
        # Rounding can step a hair past a bound; the env's Box must still contain the parameters.
        params = [np.clip(b.low + (c + 1) * (b.high.astype(np.float64) - b.low) / 2, b.low, b.high).astype(b.dtype)
                  for c, b in zip(np.split(a[self.parts.n:], self._splits), self._boxes, strict=True)]
        return self.parts.start + k, (params[0] if self.parts.shared else tuple(params))


def relax(entry_point: str, **kwargs: Any) -> RelaxedHybridAction:
    """The env class ``module:Class`` built with ``kwargs``, behind :class:`RelaxedHybridAction`."""
    module, name = entry_point.split(":")
    return RelaxedHybridAction(getattr(importlib.import_module(module), name)(**kwargs))


# Platform: MP-DQN's training loop caps an episode at 250 actions; the env itself has no limit
# (a player standing still on the last platform meets no enemy).
_IDS = {"Platform": ("envs.platform:Platform", 250), "Goal": ("envs.goal:Goal", None),
        "HybridTarget": ("envs.hybrid_target:HybridTarget", None)}
for _name, (_entry, _limit) in _IDS.items():
    if f"reparl/{_name}-v0" not in gym.registry:
        gym.register(f"reparl/{_name}-v0", entry_point=_entry, max_episode_steps=_limit)
    if f"reparl/{_name}Relaxed-v0" not in gym.registry:
        gym.register(f"reparl/{_name}Relaxed-v0", entry_point=relax, kwargs={"entry_point": _entry},
                     max_episode_steps=_limit)
