"""Environment factory: single envs and Gymnasium vector envs, as the runner and the agents need them.

* ``make_env(cfg)`` builds one env (to inspect spaces, or for a video).
* ``make_vec_env(cfg, n_envs)`` builds a sync or async vector env with episode statistics and,
  optionally, running observation normalization.

Autoreset: ``SAME_STEP`` by default, so an episode's final observation arrives in
``info["final_obs"]`` with the step that ended it (what ``agents.collect`` stores). Observation
normalization uses ``NEXT_STEP`` instead, because Gymnasium's vector ``NormalizeObservation``
would leave ``final_obs`` unnormalized otherwise (it refuses ``SAME_STEP``); the agents' core
skips the reset step in that mode.

Importing ``envs`` registers reparl's own envs: ``reparl/Combinatorial-v0`` and
``reparl/CombinatorialMasked-v0`` (:mod:`envs.combinatorial`), the suite of combinatorial structures
``reparl/CombinatorialChain-v0`` ... (:mod:`envs.combinatorial_suite`), ``reparl/MinAtar-<Game>-v0``
(:mod:`envs.minatar`), the hybrid-action envs ``reparl/Platform-v0``, ``reparl/Goal-v0`` and their
relaxed Box ids (:mod:`envs.hybrid`), and ``ale-py``'s Atari games (``ALE/Breakout-v5`` and the rest).

Atari: an id registered by ``ale-py`` gets the standard DQN preprocessing (Mnih et al. 2015) with
Machado et al. 2018's protocol (sticky actions, v5's default 0.25; a life lost is not an episode's
end): the ALE env without its own frame skip, then Gymnasium's ``AtariPreprocessing`` (up to 30
no-ops at reset, each action repeated for 4 frames with the max over the last two, 84 x 84
grayscale) and ``FrameStackObservation`` of the last 4 frames: ``Box(0, 255, (4, 84, 84), uint8)``,
channels first. The rewards are the game's own (not clipped), so episode returns are game scores.
``env.kwargs`` go to the ALE env (``repeat_action_probability``, ``full_action_space``), and
``max_episode_steps`` counts agent steps. ``env.atari_preprocessing: false`` gives the raw ALE env.

An id ``mypkg.module:MyEnv-v0`` imports ``mypkg.module`` first, which must register ``MyEnv-v0``
(Gymnasium's own ``module:EnvId`` convention).

The factory takes any object with the attributes of :class:`EnvSpec` / :class:`VecEnvSpec` (the
runner's env config is one; so is a ``SimpleNamespace``), so this package imports nothing above it.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import ale_py  # noqa: F401  (registers ALE/... ids; the package ships the ROMs)
import gymnasium as gym
import numpy as np
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, TimeLimit
from gymnasium.wrappers.vector import NormalizeObservation, RecordEpisodeStatistics

from envs import combinatorial, combinatorial_suite, hybrid, minatar  # noqa: F401  (register the reparl/ envs)

__all__ = ["EnvSpec", "IdSpec", "VecEnvSpec", "env_kwargs", "is_atari", "load_obs_normalization", "make_env",
           "make_vec_env", "obs_normalization", "resolve_id", "save_obs_normalization", "set_obs_normalization"]

ATARI_ENTRY_POINT = "ale_py.env:AtariEnv"
ATARI_FRAME_SKIP = 4
ATARI_FRAME_STACK = 4
ATARI_SCREEN = 84
ATARI_NOOP_MAX = 30


class EnvSpec(Protocol):
    """What :func:`make_env` reads: the id, ``gymnasium.make`` kwargs and an optional time limit."""

    # Read-only properties, so a frozen dataclass or a plain mutable one both satisfy it.
    @property
    def id(self) -> str: ...
    @property
    def kwargs(self) -> Mapping[str, Any]: ...
    @property
    def max_episode_steps(self) -> int | None: ...
    @property
    def atari_preprocessing(self) -> bool:
        """Whether an ``ale-py`` id gets the DQN preprocessing; an object without it means true."""
        ...


class VecEnvSpec(EnvSpec, Protocol):
    """What :func:`make_vec_env` reads besides :class:`EnvSpec`: copies, how they run, normalization."""

    @property
    def n_envs(self) -> int: ...
    @property
    def vectorization(self) -> Literal["sync", "async"]: ...
    @property
    def normalize_obs(self) -> bool: ...


@dataclass(frozen=True)
class IdSpec:
    """What a bare env id implies: one sync copy, the registered kwargs and time limit, no normalization."""

    id: str
    n_envs: int = 1
    vectorization: Literal["sync", "async"] = "sync"
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None
    normalize_obs: bool = False
    atari_preprocessing: bool = True


def resolve_id(env_id: str) -> str:
    """Import the ``module:`` part of an id (it registers the env) and return the bare id."""
    if ":" not in env_id:
        return env_id
    module, name = env_id.split(":", 1)
    importlib.import_module(module)
    return name


def env_kwargs(cfg: EnvSpec) -> dict[str, Any]:
    kwargs = dict(cfg.kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    return kwargs


def is_atari(env_id: str) -> bool:
    """Whether a (bare, registered) id is one of ``ale-py``'s Atari games."""
    spec = gym.registry.get(env_id)
    return spec is not None and spec.entry_point == ATARI_ENTRY_POINT


def _preprocessed(cfg: EnvSpec, env_id: str) -> bool:
    return bool(getattr(cfg, "atari_preprocessing", True)) and is_atari(env_id)


def make_env(cfg: EnvSpec, render_mode: str | None = None) -> gym.Env:
    """One env with the config's kwargs and time limit (an Atari id: preprocessed, see the module doc)."""
    env_id = resolve_id(cfg.id)
    kwargs = env_kwargs(cfg)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    if not _preprocessed(cfg, env_id):
        return gym.make(env_id, **kwargs)
    if "frameskip" in kwargs:
        raise ValueError(f"env.kwargs.frameskip={kwargs['frameskip']!r}: the Atari preprocessing repeats each action "
                         f"for {ATARI_FRAME_SKIP} frames itself; remove frameskip, or set env.atari_preprocessing: "
                         "false for the raw ALE env")
    # The limit goes outside the frame skip, so that it counts agent steps rather than frames.
    limit = kwargs.pop("max_episode_steps", None)
    env = gym.make(env_id, frameskip=1, **kwargs)
    env = AtariPreprocessing(env, noop_max=ATARI_NOOP_MAX, frame_skip=ATARI_FRAME_SKIP, screen_size=ATARI_SCREEN,
                             terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)
    env = FrameStackObservation(env, ATARI_FRAME_STACK)
    return TimeLimit(env, limit) if limit is not None else env


def make_vec_env(cfg: VecEnvSpec | str, n_envs: int | None = None, normalize: bool | None = None,
                 copy_wrapper: Callable[[gym.Env, int], gym.Env] | None = None,
                 render_mode: str | None = None) -> gym.vector.VectorEnv:
    """A vector env of ``n_envs`` copies (default ``cfg.n_envs``) with episode statistics.

    ``cfg`` is a run config's env section or a bare id (:class:`IdSpec`). ``normalize`` defaults to
    ``cfg.normalize_obs``; the running statistics are read and written with :func:`obs_normalization` /
    :func:`set_obs_normalization`. ``copy_wrapper(env, i)`` wraps
    copy ``i`` (e.g. a ``RecordVideo`` with a per-copy file prefix).
    """
    if isinstance(cfg, str):
        cfg = IdSpec(cfg)
    n = cfg.n_envs if n_envs is None else n_envs
    normalize = cfg.normalize_obs if normalize is None else normalize
    mode = gym.vector.AutoresetMode.NEXT_STEP if normalize else gym.vector.AutoresetMode.SAME_STEP
    if copy_wrapper is None and render_mode is None and not _preprocessed(cfg, resolve_id(cfg.id)):
        venv = gym.make_vec(resolve_id(cfg.id), num_envs=n, vectorization_mode=cfg.vectorization,
                            vector_kwargs={"autoreset_mode": mode}, **env_kwargs(cfg))
    else:
        def thunk(i: int) -> Callable[[], gym.Env]:
            def make() -> gym.Env:
                env = make_env(cfg, render_mode=render_mode)
                return copy_wrapper(env, i) if copy_wrapper is not None else env
            return make

        vec_cls = gym.vector.AsyncVectorEnv if cfg.vectorization == "async" else gym.vector.SyncVectorEnv
        venv = vec_cls([thunk(i) for i in range(n)], autoreset_mode=mode)
    venv = RecordEpisodeStatistics(venv)
    if normalize:
        venv = NormalizeObservation(venv)
    return venv


def _find_normalizer(venv: gym.vector.VectorEnv) -> NormalizeObservation | None:
    env: Any = venv
    while env is not None:
        if isinstance(env, NormalizeObservation):
            return env
        env = getattr(env, "env", None)
    return None


def obs_normalization(venv: gym.vector.VectorEnv) -> dict[str, Any] | None:
    """The running mean/var/count of a normalized vector env, JSON-able; ``None`` if it has none."""
    norm = _find_normalizer(venv)
    if norm is None:
        return None
    rms = norm.obs_rms
    return {"mean": np.asarray(rms.mean).tolist(), "var": np.asarray(rms.var).tolist(), "count": float(rms.count),
            "epsilon": float(norm.epsilon)}


def set_obs_normalization(venv: gym.vector.VectorEnv, state: dict[str, Any], frozen: bool = True) -> None:
    """Copy statistics into a normalized vector env; ``frozen`` stops evaluation from updating them."""
    norm = _find_normalizer(venv)
    if norm is None:
        raise ValueError("this vector env has no NormalizeObservation wrapper; build it with normalize=True")
    norm.obs_rms.mean = np.asarray(state["mean"], dtype=np.float64)
    norm.obs_rms.var = np.asarray(state["var"], dtype=np.float64)
    norm.obs_rms.count = float(state["count"])
    norm.update_running_mean = not frozen


def save_obs_normalization(venv: gym.vector.VectorEnv, path: str | Path) -> Path | None:
    state = obs_normalization(venv)
    if state is None:
        return None
    Path(path).write_text(json.dumps(state))
    return Path(path)


def load_obs_normalization(path: str | Path) -> dict[str, Any] | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None
