"""SB3 callbacks on our agents: ``learn(callback=...)`` takes a plain function of the agent, an SB3
``BaseCallback`` (``CheckpointCallback``, ``EvalCallback``, ``StopTrainingOnRewardThreshold`` via
``EvalCallback(callback_on_new_best=...)``, ``CallbackList``, your own subclass) or a list of either.

The agent offers what those callbacks read of an SB3 model: ``num_timesteps``, ``get_env()``,
``get_vec_normalize_env()`` (None: observation normalization lives in the runner's Gymnasium
wrapper), ``logger`` (an SB3 ``Logger``; it prints nothing unless you configure it) and ``save``. An
``EvalCallback`` wants its own eval env, as in SB3: a ``gymnasium.Env`` (SB3 wraps it in a
``DummyVecEnv``). Our ``save`` writes safetensors, so ``CheckpointCallback``'s ``*.zip`` files are
written as ``*.safetensors``; its ``save_replay_buffer`` and ``save_vecnormalize`` (pickles) are
refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.sac import SoftActorCritic

Callback = Any  # a function of the agent, an SB3 BaseCallback, or a list of these


class _FunctionCallback:
    """A plain ``callback(agent) -> bool | None`` in the SB3 callback protocol (False stops learning)."""

    def __init__(self, fn: Callable[[SoftActorCritic], bool | None]) -> None:
        self.fn = fn

    def init_callback(self, model: SoftActorCritic) -> None:
        self.model = model

    def on_training_start(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        pass

    def on_rollout_start(self) -> None:
        pass

    def update_locals(self, locals_: dict[str, Any]) -> None:
        pass

    def on_step(self) -> bool:
        return self.fn(self.model) is not False

    def on_rollout_end(self) -> None:
        pass

    def on_training_end(self) -> None:
        pass


def as_callback(callback: Callback, agent: SoftActorCritic) -> Any:
    """One object with SB3's callback methods, initialised on ``agent``; None stays None."""
    if callback is None:
        return None
    if isinstance(callback, Sequence) and not isinstance(callback, str):
        from stable_baselines3.common.callbacks import CallbackList

        callback = CallbackList([c if _is_sb3(c) else _FunctionCallback(c) for c in callback])
    elif not _is_sb3(callback):
        if not callable(callback):
            raise TypeError(f"callback must be a function of the agent, an SB3 BaseCallback or a list of them; "
                            f"got {type(callback).__name__}")
        callback = _FunctionCallback(callback)
    _refuse_pickles(callback)
    callback.init_callback(agent)
    return callback


def _is_sb3(callback: Any) -> bool:
    try:
        from stable_baselines3.common.callbacks import BaseCallback
    except ImportError:  # pragma: no cover - SB3 is a dependency of the project, not of agents/
        return False
    return isinstance(callback, BaseCallback)


def _refuse_pickles(callback: Any) -> None:
    for c in getattr(callback, "callbacks", [callback]):
        for flag in ("save_replay_buffer", "save_vecnormalize"):
            if getattr(c, flag, False):
                raise ValueError(f"{type(c).__name__}({flag}=True) writes a pickle, which reparl never does; set "
                                 f"{flag}=False (agent.checkpoint(path) saves the buffer with the agent, safely)")
