"""``run.py check-env ID``: gymnasium's env checker, then what reparl needs of the env's spaces."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import env_checker

from experiments.config import ConfigError


def check_env(env_id: str) -> str:
    """A report of the checks, one line each; ConfigError naming the first thing reparl cannot use."""
    from agents import AGENTS, agent_for
    from agents.collect import vector_env_masks
    from agents.encoders import make_encoder
    from envs import IdSpec, make_env

    try:
        env = make_env(IdSpec(env_id))
    except (gym.error.Error, ModuleNotFoundError, ValueError) as e:
        raise ConfigError(f"cannot make env {env_id!r}: {str(e)[:200]}") from e
    lines = [f"{env_id}: observation {env.observation_space}, action {env.action_space}"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            env_checker.check_env(env.unwrapped, skip_render_check=True)
        except Exception as e:  # noqa: BLE001 - the checker raises assertion and type errors alike
            raise ConfigError(f"{env_id}: gymnasium's env checker failed: {str(e)[:300]}") from e
    lines.append("gymnasium's checker: passed" + (f", {len(caught)} warning(s):" if caught else ""))
    lines += [f"  - {str(w.message).splitlines()[0][:200]}" for w in caught]
    try:
        with torch.device("meta"):
            encoder = make_encoder(env.observation_space)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{env_id}: {e}") from e
    kind = type(getattr(encoder, "core", encoder)).__name__
    lines.append(f"observation: encoder {kind} (encoder: auto), {encoder.features_dim} features for the networks")
    space = env.action_space
    agents = [name for name, cls in AGENTS.items() if cls.handles(space)]
    if not agents:
        raise ConfigError(f"{env_id}: action space {space}: {agent_for(space)}")
    if isinstance(space, spaces.Box) and not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        raise ConfigError(f"{env_id}: GaussianSAC needs finite Box bounds; wrap the env with "
                          "gymnasium.wrappers.RescaleAction or ClipAction")
    venv = gym.vector.SyncVectorEnv([lambda: make_env(IdSpec(env_id))])
    venv.reset(seed=0)
    masks = vector_env_masks(venv)
    lines.append(f"agent: {' or '.join(agents)}" + (f"; action masks: yes ({masks.shape[1]} flags)"
                                                      if masks is not None else ""))
    env.close()
    venv.close()
    return "\n".join(lines)
