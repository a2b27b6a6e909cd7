"""Spaces and devices: what the networks see of an observation, the spaces as plain JSON for model files,
the torch device and its CPU threads."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A JSON description of the spaces reparl supports (no pickle anywhere)."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist()}
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": space.low.tolist(), "high": space.high.tolist()}
    raise TypeError(f"cannot describe space {space}")


def space_from_json(d: dict[str, Any]) -> spaces.Space:
    kind = d.get("type")
    if kind == "Discrete":
        return spaces.Discrete(int(d["n"]), start=int(d["start"]))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.array(d["nvec"], dtype=np.int64), start=np.array(d["start"], dtype=np.int64))
    if kind == "Box":
        return spaces.Box(np.array(d["low"], dtype=d["dtype"]), np.array(d["high"], dtype=d["dtype"]),
                          shape=tuple(d["shape"]), dtype=d["dtype"])
    raise ValueError(f"unknown space type {kind!r} in saved metadata")


def obs_dim(space: spaces.Space) -> int:
    """Width of the flat float vector the networks see."""
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    raise TypeError(f"observation space {space} is not supported: use a Box or Discrete space, "
                    "or flatten it with gymnasium.wrappers.FlattenObservation")


def obs_tensor(space: spaces.Space, obs: np.ndarray, device: torch.device) -> Tensor:
    """Batched env observations -> (B, obs_dim) float tensor on the device (Discrete: one-hot)."""
    t = torch.as_tensor(np.asarray(obs), device=device)
    if isinstance(space, spaces.Discrete):
        return nn.functional.one_hot(t.long().reshape(-1) - int(space.start), int(space.n)).float()
    return t.reshape(t.shape[0], -1).float()


def stored_obs(space: spaces.Space, obs: np.ndarray) -> np.ndarray:
    """The buffer keeps the network's flat float input (a Discrete observation as its one-hot)."""
    if isinstance(space, spaces.Discrete):
        return obs_tensor(space, obs, torch.device("cpu")).numpy()
    return obs


def batch_of(space: spaces.Space, obs: np.ndarray) -> tuple[np.ndarray, bool]:
    """``obs`` as a batch, and whether it was a single observation (``predict`` takes either)."""
    obs = np.asarray(obs)
    if isinstance(space, spaces.Discrete):
        single = obs.ndim == 0
    else:
        single = obs.shape == space.shape
        if not single and obs.shape[1:] != space.shape:
            raise ValueError(f"observation shape {obs.shape} fits neither {space.shape} nor a batch of it")
    return (obs[None] if single else obs), single


def same_spaces(agent: Any, observation_space: spaces.Space, action_space: spaces.Space, who: str,
                reverse: bool = False) -> None:
    """Refuse an env whose spaces are not the agent's: ``{who} {what} space X; this env has Y``."""
    for what, mine, theirs in (("observation", agent.observation_space, observation_space),
                               ("action", agent.action_space, action_space)):
        if mine != theirs:
            first, other = (theirs, mine) if reverse else (mine, theirs)
            raise ValueError(f"{who} {what} space {first}; this env has {other}")


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device; use device='cpu' or 'auto'")
    return device


_THREADS_WARNED = False


def warn_threads_once(device: torch.device) -> None:
    """Say once per process how many CPU threads torch will use: the runner sets one
    (``train.torch_threads: 1``), which for these network sizes on a shared machine was up to 8x faster
    than torch's default of one per core; a Python user otherwise never hears of the choice."""
    global _THREADS_WARNED
    if device.type == "cpu" and torch.get_num_threads() > 1 and not _THREADS_WARNED:
        _THREADS_WARNED = True
        warnings.warn(f"torch uses {torch.get_num_threads()} CPU threads (one per core). On a machine shared with "
                      "other jobs, torch.set_num_threads(1) is often much faster for networks of this size; "
                      "`run.py train` uses 1 (train.torch_threads). Compare with `run.py bench --threads N`.",
                      UserWarning, stacklevel=3)
