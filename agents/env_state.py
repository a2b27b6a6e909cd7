"""The vector env's state as plain data (no pickle), for exact resume from a checkpoint."""

from __future__ import annotations

import random
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# Env state without pickle: every layer of the vector env (its wrappers, the vector env, and
# each copy's wrapper chain down to the base env) contributes its plain attributes (numbers,
# strings, None, numeric numpy arrays, and small records of those such as RunningMeanStd) and
# the state of every numpy Generator it holds (text arrays, lists and dicts are taken as static,
# like FrozenLake's map). That is the whole state of the classic-control and toy-text envs, the
# TimeLimit counter, the episode statistics and observation normalization. An env holding
# anything else (a MuJoCo or Box2D simulator) is "opaque": on restore its copies start new
# episodes instead, with a warning.

BIT_GENERATORS = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM, "MT19937": np.random.MT19937,
                   "Philox": np.random.Philox, "SFC64": np.random.SFC64}
_SKIP_ATTRS = {"env", "envs", "spec", "metadata", "action_space", "observation_space", "single_action_space",
               "single_observation_space", "render_mode", "_cached_spec", "closed"}


def jsonify(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {k: jsonify(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonify(v) for v in x]
    return x


def tuplify(x: Any) -> Any:
    return tuple(tuplify(v) for v in x) if isinstance(x, list) else x


def numpy_state(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    d["state"] = {**d["state"], "key": np.asarray(d["state"]["key"], dtype=np.uint32)}
    return d


def _plain(v: Any) -> dict[str, Any] | None:
    """A JSON encoding of a plain value, or None when ``v`` is not plain data."""
    if v is None or isinstance(v, bool | int | float | str):
        return {"v": v}
    if isinstance(v, np.ndarray | np.generic) and v.dtype.kind in "biuf":
        return {"a": np.asarray(v).tolist(), "dtype": str(v.dtype), "scalar": isinstance(v, np.generic)}
    return None


def _unplain(d: dict[str, Any]) -> Any:
    if "v" in d:
        return d["v"]
    a = np.asarray(d["a"], dtype=d["dtype"])
    return a[()] if d["scalar"] else a


def _env_layers(venv: gym.vector.VectorEnv) -> tuple[list[Any], bool]:
    """Every object of a vector env that can hold state, outermost first; False if copies are out of reach."""
    layers: list[Any] = []
    obj: Any = venv
    while obj is not None:
        layers.append(obj)
        obj = getattr(obj, "env", None)
    base = layers[-1]
    if not hasattr(base, "envs"):  # AsyncVectorEnv: the copies live in other processes
        return layers, False
    for sub in base.envs:
        obj = sub
        while obj is not None:
            layers.append(obj)
            obj = obj.__dict__.get("env")
    return layers, True


def _layer_state(layer: Any) -> tuple[dict[str, Any], bool]:
    state: dict[str, Any] = {}
    opaque = False
    for k, v in vars(layer).items():
        if k in _SKIP_ATTRS or callable(v):
            continue
        if isinstance(v, np.random.Generator):
            state[k] = {"rng": jsonify(v.bit_generator.state)}
        elif (p := _plain(v)) is not None:
            state[k] = p
        elif hasattr(v, "__dict__") and type(v).__module__.startswith("gymnasium") and not isinstance(
                v, spaces.Space | gym.Env | gym.vector.VectorEnv):
            fields = {f: _plain(x) for f, x in vars(v).items()}
            if all(x is not None for x in fields.values()):
                state[k] = {"record": fields}
        elif not isinstance(v, spaces.Space | np.ndarray | list | tuple | dict | set | type(random)) and \
                not type(v).__module__.startswith(("gymnasium", "collections", "builtins")):
            opaque = True  # e.g. a simulator handle: not plain data, so not restorable
    return state, opaque


def env_state(venv: gym.vector.VectorEnv) -> dict[str, Any]:
    """The vector env's state as JSON (see the comment above); ``exact`` says whether it is complete."""
    layers, reachable = _env_layers(venv)
    states, opaque = zip(*(_layer_state(layer) for layer in layers), strict=True)
    space = getattr(venv, "action_space", None)
    rng = getattr(space, "_np_random", None)
    return {"classes": [type(layer).__name__ for layer in layers], "layers": list(states),
            "exact": reachable and not any(opaque),
            "action_space_rng": jsonify(rng.bit_generator.state) if rng is not None else None}


def set_env_state(venv: gym.vector.VectorEnv, state: dict[str, Any]) -> bool:
    """Put :func:`env_state` back; returns whether the state was complete (else only RNGs are set)."""
    layers, _ = _env_layers(venv)
    classes = [type(layer).__name__ for layer in layers]
    if classes != state["classes"]:
        raise ValueError(f"the checkpoint's env is built of {state['classes']}; this one of {classes}")
    for layer, saved in zip(layers, state["layers"], strict=True):
        for k, d in saved.items():
            if "rng" in d:
                name = d["rng"].get("bit_generator")
                # A file names data, never a callable to look up (and a list from a file is unhashable).
                if not isinstance(name, str) or name not in BIT_GENERATORS:
                    raise ValueError(f"env state names bit generator {str(name)[:40]!r}; "
                                     f"expected one of {sorted(BIT_GENERATORS)}")
                gen = np.random.Generator(BIT_GENERATORS[name]())
                gen.bit_generator.state = d["rng"]
                setattr(layer, k, gen)
            elif not state["exact"]:
                continue
            elif k not in vars(layer):  # a file restores attributes env_state read, never adds new ones
                raise ValueError(f"env state sets {str(k)[:40]!r}, which {type(layer).__name__} does not have")
            elif "record" in d:
                record = getattr(layer, k)
                for f, x in d["record"].items():
                    if f not in vars(record):
                        raise ValueError(f"env state sets {str(k)[:40]}.{str(f)[:40]}, which "
                                         f"{type(record).__name__} does not have")
                    setattr(record, f, _unplain(x))
            else:
                setattr(layer, k, _unplain(d))
    if state["action_space_rng"] is not None:
        venv.action_space.np_random.bit_generator.state = state["action_space_rng"]
    return bool(state["exact"])
