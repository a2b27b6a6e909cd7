"""The JSON header of a model file or checkpoint, checked as data before anything is built from it.

The digest proves a file is what some writer wrote, not that the writer was reparl: anyone can
recompute a SHA-256. So every header field is checked for its type and size here, and the network
shapes the header implies (``net_arch``, ``n_critics``, the spaces) are compared with the tensors the
file actually holds, before an agent, a network or a buffer is allocated from it. A header names
data only: an agent from a fixed table, spaces of three known types, numbers and short strings.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agents.hyperparameters import CUSTOM_ENCODER, saved_critic_form

MAX_ELEMENTS = 10**6
"""Elements of a Box, and choices of a Discrete or one MultiDiscrete factor: far beyond any env
reparl's networks can learn on, and small enough that a header cannot ask for gigabytes."""
MAX_WIDTH = 2**20
MAX_LAYERS = 64
MAX_STR = 200
MAX_COUNTER = 2**62
MAX_KEYS = 32
"""Keys of a Dict observation space."""
MAX_CHOICES = 1024
"""Discrete actions of a hybrid action space, each with a parameter Box (the policy has a Gaussian per
parameter of every choice, so K is bounded far tighter than a Discrete's choices)."""
OPTIMIZERS = ("actor", "critic", "alpha")
"""The names :meth:`agents.sac.SoftActorCritic.optimizers` returns."""
BOX_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
              "uint64", "bool"}
ENV_DTYPE_KINDS = "biuf"  # what agents.env_state._plain writes
_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel, _REPR.maxlong = 60, 60, 6, 4, 3, 40
FIX = "the file was not written by reparl or was edited; use the model or checkpoint its run wrote"


def short(x: Any, n: int = 40) -> str:
    """``repr`` of a value from a file, cut to ``n`` characters: a message never echoes a whole field
    (reprlib stops early, so a 50 MB string or a million-element list costs nothing to describe)."""
    r = _REPR.repr(x)
    return r if len(r) <= n else r[: n - 3] + "..."


class HeaderError(ValueError):
    """A header field of the wrong type or size; the message is one line naming the file and field."""

    def __init__(self, path: str | Path, field: str, problem: str) -> None:
        super().__init__(" ".join(f"{path}: header field {field}: {problem}; {FIX}".split()))


def _one_of(x: Any, options: Any) -> bool:
    return isinstance(x, str) and x in options  # a list or dict from a file is unhashable: never look it up


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _scalar(x: Any) -> bool:
    return x is None or isinstance(x, bool | int | float) or (isinstance(x, str) and len(x) <= MAX_STR)


def _count(x: Any, cap: int) -> int:
    """Leaves of a nested list, stopping past ``cap`` (a hostile list is never walked to its end)."""
    stack, n = [x], 0
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        else:
            n += 1
            if n > cap:
                break
    return n


def _hparam_types(default: Any, key: str) -> tuple[type, ...]:
    # Keys whose default does not show every type they take (as experiments.config's OUR_TYPES).
    special: dict[str, tuple[type, ...]] = {"alpha": (int, float, str), "alpha_learning_rate": (int, float, type(None)),
                                            "target_entropy": (int, float, type(None)), "seed": (int, type(None))}
    if key in special:
        return special[key]
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, float):
        return (int, float)
    return (type(default),)


def check_hparams(path: str | Path, cls: type, hp: Any) -> dict[str, Any]:
    """Known keys of sane types, then the agent's own range checks; returns them over the defaults."""
    if not isinstance(hp, dict):
        raise HeaderError(path, "hparams", f"expected an object, got {type(hp).__name__}")
    unknown = sorted(k for k in hp if k not in cls.defaults)
    if unknown:
        raise HeaderError(path, "hparams", f"unknown hyperparameter {short(unknown[0])} for {cls.__name__}")
    for k, v in hp.items():
        types = _hparam_types(cls.defaults[k], k)
        if k == "encoder_kwargs":
            ok = v is None or (isinstance(v, dict) and len(v) <= 16 and all(
                isinstance(a, str) and len(a) <= 64 and (_scalar(b) or (isinstance(b, list) and len(b) <= 16
                                                                        and all(_scalar(x) for x in b)))
                for a, b in v.items()))
            if not ok:
                raise HeaderError(path, "hparams.encoder_kwargs", f"expected null or an object of at most 16 plain "
                                  f"values or short lists, got {short(v)}")
            continue
        if k == "net_arch":
            ok = isinstance(v, list) and 1 <= len(v) <= MAX_LAYERS and all(_int(w) and 1 <= w <= MAX_WIDTH for w in v)
            if not ok:
                raise HeaderError(path, "hparams.net_arch", f"expected 1 to {MAX_LAYERS} integer widths in "
                                  f"[1, {MAX_WIDTH}], got {short(v)}")
            continue
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types) and _scalar(v)
        if not ok:
            names = " | ".join("null" if t is type(None) else t.__name__ for t in types)
            raise HeaderError(path, f"hparams.{k}", f"expected {names}, got {type(v).__name__} {short(v)}")
    merged = {**cls.defaults, **hp}
    custom = isinstance(merged["encoder"], str) and merged["encoder"].startswith(CUSTOM_ENCODER)
    if custom and not merged["encoder"][len(CUSTOM_ENCODER):].isidentifier():
        raise HeaderError(path, "hparams.encoder", f"expected a class name after {CUSTOM_ENCODER!r}, got "
                          f"{short(merged['encoder'])}")
    try:
        # A user's encoder class is checked when load receives it; the rest as the agent checks them.
        cls.validate_hyperparameters({**merged, "encoder": "auto"} if custom else merged)
    except (ValueError, TypeError) as e:
        raise HeaderError(path, "hparams", str(e)[:300]) from None
    return merged


def check_space(path: str | Path, field: str, d: Any) -> None:
    if not isinstance(d, dict):
        raise HeaderError(path, field, f"expected an object, got {type(d).__name__}")
    kind = d.get("type")
    if kind == "Dict" and "." not in field:
        subs = d.get("spaces")
        if not (isinstance(subs, dict) and 1 <= len(subs) <= MAX_KEYS):
            raise HeaderError(path, f"{field}.spaces", f"expected 1 to {MAX_KEYS} named spaces, got {short(subs)}")
        for key, sub in subs.items():
            if not (isinstance(key, str) and 0 < len(key) <= 64 and key.isprintable() and "." not in key):
                raise HeaderError(path, f"{field}.spaces", f"key {short(key)} is not a short printable name")
            check_space(path, f"{field}.{key}", sub)
        return
    if kind == "Tuple" and field == "action_space":
        _check_hybrid(path, field, d)
        return
    if kind == "Discrete":
        if not (_int(d.get("n")) and 1 <= d["n"] <= MAX_ELEMENTS):
            raise HeaderError(path, f"{field}.n",
                              f"expected an integer in [1, {MAX_ELEMENTS}], got {short(d.get('n'))}")
        if not (_int(d.get("start")) and abs(d["start"]) < MAX_COUNTER):
            raise HeaderError(path, f"{field}.start", f"expected an integer, got {short(d.get('start'))}")
    elif kind == "MultiDiscrete":
        nvec, start = d.get("nvec"), d.get("start")
        if not (isinstance(nvec, list) and 1 <= len(nvec) <= MAX_ELEMENTS
                and all(_int(n) and 1 <= n <= MAX_ELEMENTS for n in nvec)):
            raise HeaderError(path, f"{field}.nvec", f"expected a flat list of 1 to {MAX_ELEMENTS} integers in "
                              f"[1, {MAX_ELEMENTS}], got {short(nvec)}")
        if not (isinstance(start, list) and len(start) == len(nvec) and all(_int(s) and abs(s) < MAX_COUNTER
                                                                          for s in start)):
            raise HeaderError(path, f"{field}.start", f"expected {len(nvec)} integers, got {short(start)}")
    elif kind == "Box":
        shape = d.get("shape")
        if not (isinstance(shape, list) and len(shape) <= 32 and all(_int(n) and 0 <= n <= MAX_ELEMENTS for n in shape)
                and math.prod(shape) <= MAX_ELEMENTS):
            raise HeaderError(path, f"{field}.shape", f"expected a list of sizes with at most {MAX_ELEMENTS} "
                              f"elements in all, got {short(shape)}")
        if not _one_of(d.get("dtype"), BOX_DTYPES):
            raise HeaderError(path, f"{field}.dtype",
                              f"expected one of {sorted(BOX_DTYPES)}, got {short(d.get('dtype'))}")
        for bound in ("low", "high"):
            v = d.get(bound)
            if _count(v, MAX_ELEMENTS + 1) > MAX_ELEMENTS:
                raise HeaderError(path, f"{field}.{bound}", f"more than {MAX_ELEMENTS} elements")
            try:
                a = np.asarray(v, dtype=np.float64)
            except (ValueError, TypeError):
                a = None
            if a is None or a.shape != tuple(shape):
                raise HeaderError(path, f"{field}.{bound}", f"expected numbers of shape {tuple(shape)}, got {short(v)}")
    else:
        raise HeaderError(path, f"{field}.type", f"expected Discrete, MultiDiscrete or Box, got {short(kind)}")


def _check_hybrid(path: str | Path, field: str, d: dict[str, Any]) -> None:
    """A hybrid action space (envs.hybrid's convention): a Discrete of at most MAX_CHOICES, then one 1-D
    Box per choice or one shared; at most MAX_ELEMENTS parameters in all."""
    parts = d.get("spaces")
    if not (isinstance(parts, list) and len(parts) == 2 and isinstance(parts[0], dict)
            and parts[0].get("type") == "Discrete" and isinstance(parts[1], dict)):
        raise HeaderError(path, f"{field}.spaces", f"expected [Discrete, Box or Tuple of Boxes], got {short(parts)}")
    check_space(path, f"{field}.spaces[0]", parts[0])
    n = parts[0]["n"]
    if n > MAX_CHOICES:
        raise HeaderError(path, f"{field}.spaces[0].n", f"expected at most {MAX_CHOICES} choices, got {n}")
    boxes = parts[1].get("spaces") if parts[1].get("type") == "Tuple" else [parts[1]]
    if not (isinstance(boxes, list) and len(boxes) == (n if parts[1].get("type") == "Tuple" else 1)
            and all(isinstance(b, dict) and b.get("type") == "Box" for b in boxes)):
        raise HeaderError(path, f"{field}.spaces[1]", f"expected a Box or a Tuple of {n} Boxes, got {short(parts[1])}")
    total = 0
    for i, box in enumerate(boxes):
        check_space(path, f"{field}.spaces[1][{i}]", box)
        if len(box["shape"]) != 1 or box["shape"][0] < 1:
            raise HeaderError(path, f"{field}.spaces[1][{i}].shape",
                              f"expected one dimension of at least 1, got {short(box['shape'])}")
        total += box["shape"][0] * (n if len(boxes) == 1 else 1)
    if total > MAX_ELEMENTS:
        raise HeaderError(path, f"{field}.spaces[1]", f"{total} parameters in all, more than {MAX_ELEMENTS}")


def _hybrid_widths(act: dict[str, Any]) -> tuple[int, int]:
    """(K, D) of a checked hybrid action space: choices, and parameters over every choice."""
    n, params = act["spaces"][0]["n"], act["spaces"][1]
    dims = [b["shape"][0] for b in params["spaces"]] if params["type"] == "Tuple" else [params["shape"][0]] * n
    return n, sum(dims)


def _encoder(path: str | Path, hp: dict[str, Any], obs: dict[str, Any],
             features: int | None) -> tuple[int, dict[str, tuple] | None]:
    """(features_dim, the encoder's parameter shapes): a built-in encoder built on the meta device
    (no memory; the space's sizes are bounded above), or a user's class, whose width the file records
    and whose tensors load() matches against the class it is given (None: not known here)."""
    from agents.encoders import encoder_shapes
    from agents.spaces import space_from_json

    if isinstance(hp["encoder"], str) and hp["encoder"].startswith(CUSTOM_ENCODER):
        if features is None:
            raise HeaderError(path, "features_dim", "a model with a custom encoder must record its features_dim")
        return features, None
    try:
        return encoder_shapes(space_from_json(obs), hp["encoder"], hp["encoder_kwargs"])
    except (ValueError, TypeError) as e:
        raise HeaderError(path, "hparams.encoder_kwargs", str(e)[:200]) from None


def expected_shapes(agent: str, hp: dict[str, Any], obs: dict[str, Any], act: dict[str, Any],
                    path: str | Path = "", features: int | None = None) -> dict[str, tuple | None]:
    """The parameter shapes the agent would build from these hyperparameters and spaces, without
    allocating it (the arithmetic of agents.networks and the heads' ``critic_dims``; encoders on the
    meta device). A value None: any tensors under that prefix (a user's encoder)."""
    obs_dim, enc = _encoder(path, hp, obs, features)
    arch, n = list(hp["net_arch"]), hp["n_critics"]
    if agent == "GaussianSAC":
        act_dim = act["shape"][0] if act["type"] == "Box" and len(act["shape"]) == 1 else -1
        policy_out, critic_in, critic_out = 2 * act_dim, obs_dim + act_dim, 1
    elif agent == "HybridSAC":
        k, width = _hybrid_widths(act) if act["type"] == "Tuple" else (-1, -1)
        policy_out, critic_in, critic_out = k + 2 * width, obs_dim + k + width, 1
    else:
        nvec = [act["n"]] if act["type"] == "Discrete" else list(act.get("nvec") or [-1])
        total = sum(nvec)
        form = saved_critic_form(hp["critic"], act["type"])
        policy_out = len(nvec) * max(nvec)
        critic_in, critic_out = {"heads": (obs_dim, total), "joint": (obs_dim + total, 1),
                                 "pairwise": (obs_dim, total * (1 + hp["pairwise_rank"]))}[form]
    shapes: dict[str, tuple | None] = {}
    for name in ("policy", "critic", "critic_target"):
        if enc is None:
            shapes[f"{name}.encoder."] = None
        else:
            shapes.update({f"{name}.encoder.{k}": v for k, v in enc.items()})
    dims = [obs_dim, *arch, policy_out]
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        shapes[f"policy.net.{2 * i}.weight"], shapes[f"policy.net.{2 * i}.bias"] = (b, a), (b,)
    dims = [critic_in, *arch, critic_out]
    for name in ("critic", "critic_target"):
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            shapes[f"{name}.layers.{i}.weight"], shapes[f"{name}.layers.{i}.bias"] = (n, a, b), (n, 1, b)
    shapes["log_alpha"] = (2,) if agent == "HybridSAC" else (1,)  # a weight per entropy part (HybridHead)
    return shapes


def _check_optimizers(path: str | Path, opt: Any) -> None:
    if not (isinstance(opt, dict) and sorted(opt) == sorted(OPTIMIZERS)):
        raise HeaderError(path, "optimizers", f"expected an object with keys {list(OPTIMIZERS)}, got "
                          f"{short(sorted(opt) if isinstance(opt, dict) else opt)}")
    for name, groups in opt.items():
        field = f"optimizers.{name}"
        if not (isinstance(groups, list) and 1 <= len(groups) <= 8 and all(isinstance(g, dict) for g in groups)):
            raise HeaderError(path, field, f"expected a list of parameter groups, got {short(groups)}")
        for g in groups:
            if len(g) > 64:
                raise HeaderError(path, field, f"{len(g)} keys in a parameter group")
            if not (_number(g.get("lr")) and math.isfinite(g["lr"]) and g["lr"] >= 0):
                raise HeaderError(path, f"{field}.lr", f"expected a finite number >= 0, got {short(g.get('lr'))}")
            params = g.get("params")
            if not (isinstance(params, list) and len(params) <= 4 * MAX_LAYERS + 4 and all(_int(p) and p >= 0
                                                                                           for p in params)):
                raise HeaderError(path, f"{field}.params", f"expected parameter indices, got {short(params)}")
            for k, v in g.items():
                ok = isinstance(k, str) and len(k) <= 64 and (
                    _scalar(v) or (isinstance(v, list) and len(v) <= 4 * MAX_LAYERS + 4 and all(_number(x) for x in v)))
                if not ok:
                    raise HeaderError(path, f"{field}.{short(k, 30)}", f"expected a number, bool, null, short string "
                                      f"or list of numbers, got {short(v)}")


_OPTIM_TENSOR = re.compile(r"optim\.(actor|critic|alpha)\.(\d{1,4})\.(step|exp_avg|exp_avg_sq|max_exp_avg_sq)")


def _check_tensors(path: str | Path, expected: dict[str, tuple | None], shapes: Mapping[str, tuple]) -> None:
    """Every network tensor the header implies, present with that shape, and no other: the agent
    built from this header allocates exactly what the file holds."""
    anything = tuple(k for k, shape in expected.items() if shape is None)  # a user's encoder: load() checks it
    for k, shape in expected.items():
        if shape is None:
            continue
        if k not in shapes:
            raise HeaderError(path, "hparams.net_arch/spaces", f"imply a tensor {short(k, 60)} the file lacks")
        if tuple(shapes[k]) != tuple(shape):
            raise HeaderError(path, "hparams.net_arch/spaces", f"imply {k} of shape {short(tuple(shape))}, but the "
                              f"file's is {short(tuple(shapes[k]))}")
    extra = sorted(k for k in shapes if k.split(".")[0] in ("policy", "critic", "critic_target") and k not in expected
                   and not k.startswith(anything))
    if extra:
        raise HeaderError(path, "hparams.net_arch/spaces", f"do not imply the file's tensor {short(extra[0], 60)}")
    bad = sorted(k for k in shapes if k.startswith("optim.") and not _OPTIM_TENSOR.fullmatch(k))
    if bad:
        raise HeaderError(path, "optimizers", f"unexpected optimizer tensor {short(bad[0], 60)}")


def _check_env_entry(path: str | Path, field: str, d: Any, depth: int = 0) -> None:
    from agents.env_state import BIT_GENERATORS

    if not isinstance(d, dict):
        raise HeaderError(path, field, f"expected an object, got {type(d).__name__}")
    if "v" in d:
        ok = _scalar(d["v"])
    elif "a" in d:
        try:
            kind_ok = np.dtype(d.get("dtype")).kind in ENV_DTYPE_KINDS and isinstance(d.get("dtype"), str)
        except TypeError:
            kind_ok = False
        ok = kind_ok and isinstance(d.get("scalar"), bool) and _count(d["a"], MAX_ELEMENTS + 1) <= MAX_ELEMENTS
    elif "record" in d and depth == 0:
        ok = isinstance(d["record"], dict)
        if ok:
            for f, x in d["record"].items():
                _check_env_entry(path, f"{field}.{short(f, 30)}", x, depth + 1)
    elif "rng" in d:
        ok = isinstance(d["rng"], dict) and _one_of(d["rng"].get("bit_generator"), BIT_GENERATORS)
    else:
        ok = False
    if not ok:
        raise HeaderError(path, field, f"expected a plain value, numeric array, record or bit generator state, "
                          f"got {short(d)}")


def _check_resume(path: str | Path, c: Any) -> None:
    from agents.env_state import BIT_GENERATORS

    if not isinstance(c, dict):
        raise HeaderError(path, "checkpoint", f"expected an object, got {type(c).__name__}")
    groups = c.get("info_groups")
    if not (isinstance(groups, list) and len(groups) <= 64 and all(
            isinstance(g, list) and len(g) == 2 and isinstance(g[0], list) and len(g[0]) <= 256
            and all(isinstance(s, str) and len(s) <= MAX_STR for s in g[0]) and _int(g[1]) and g[1] >= 0
            for g in groups)):
        raise HeaderError(path, "checkpoint.info_groups",
                          f"expected [[metric names], count] pairs, got {short(groups)}")
    if not (_int(c.get("num_episodes")) and 0 <= c["num_episodes"] < MAX_COUNTER):
        raise HeaderError(path, "checkpoint.num_episodes",
                          f"expected an integer >= 0, got {short(c.get('num_episodes'))}")
    for key, test in (("episode_returns", _number), ("episode_lengths", _int)):
        v = c.get(key)
        if not (isinstance(v, list) and len(v) <= MAX_ELEMENTS and all(test(x) for x in v)):
            raise HeaderError(path, f"checkpoint.{key}", f"expected a list of numbers, got {short(v)}")
    py = c.get("python_random")
    if not (isinstance(py, list) and len(py) == 3 and _int(py[0]) and isinstance(py[1], list) and len(py[1]) <= 1000
            and all(_int(x) for x in py[1]) and (py[2] is None or _number(py[2]))):
        raise HeaderError(path, "checkpoint.python_random", f"expected Python's random state, got {short(py)}")
    npr = c.get("numpy_random")
    if not (isinstance(npr, dict) and _one_of(npr.get("bit_generator"), BIT_GENERATORS)
            and isinstance(npr.get("state"), dict)):
        raise HeaderError(path, "checkpoint.numpy_random", f"expected a numpy bit generator state of "
                          f"{sorted(BIT_GENERATORS)}, got {short(npr)}")
    if "env" not in c:
        return
    env = c["env"]
    if not (isinstance(env, dict) and isinstance(env.get("exact"), bool) and isinstance(env.get("classes"), list)
            and isinstance(env.get("layers"), list) and len(env["classes"]) == len(env["layers"]) <= 1024
            and all(isinstance(s, str) and len(s) <= MAX_STR for s in env["classes"])
            and all(isinstance(layer, dict) and len(layer) <= 256 for layer in env["layers"])):
        raise HeaderError(path, "checkpoint.env", f"expected classes, layers and exact, got {short(env)}")
    for i, layer in enumerate(env["layers"]):
        for k, d in layer.items():
            if not (isinstance(k, str) and k.isidentifier() and not k.startswith("__")):
                raise HeaderError(path, f"checkpoint.env.layers[{i}]", f"attribute name {short(k)} is not a plain name")
            _check_env_entry(path, f"checkpoint.env.layers[{i}].{k}", d)
    rng = env.get("action_space_rng")
    if not (rng is None or (isinstance(rng, dict) and _one_of(rng.get("bit_generator"), BIT_GENERATORS))):
        raise HeaderError(path, "checkpoint.env.action_space_rng", f"expected a bit generator state, got {short(rng)}")


def check_header(meta: dict[str, Any], path: str | Path, shapes: Mapping[str, tuple] | None = None) -> None:
    """Raise :class:`HeaderError` (one line, naming ``path`` and the field) unless every field of a
    model file's or checkpoint's header has its type and a bounded size, and (given the file's
    tensor ``shapes``) the networks the header implies are exactly the ones the file holds."""
    from agents import AGENTS

    name = meta.get("agent")
    if not _one_of(name, AGENTS):
        raise HeaderError(path, "agent", f"expected one of {sorted(AGENTS)}, got {short(name)}")
    hp = check_hparams(path, AGENTS[name], meta.get("hparams"))
    for field in ("observation_space", "action_space"):
        check_space(path, field, meta.get(field))
    if meta["observation_space"]["type"] not in ("Box", "Discrete", "Dict"):
        raise HeaderError(path, "observation_space.type", "expected Box, Discrete or Dict")
    features = meta.get("features_dim")
    if not (features is None or (_int(features) and 1 <= features <= MAX_ELEMENTS)):
        raise HeaderError(path, "features_dim", f"expected an integer in [1, {MAX_ELEMENTS}], got {short(features)}")
    for field in ("num_timesteps", "num_updates"):
        v = meta.get(field, 0 if field == "num_updates" else None)
        if not (_int(v) and 0 <= v < MAX_COUNTER):
            raise HeaderError(path, field, f"expected an integer >= 0, got {short(v)}")
    _check_optimizers(path, meta.get("optimizers"))
    extra = meta.get("extra", {})
    if not (isinstance(extra, dict) and len(extra) <= 64 and all(_scalar(v) for v in extra.values())):
        raise HeaderError(path, "extra", f"expected an object of plain values, got {short(extra)}")
    env_id = meta.get("env_id")
    if not (env_id is None or (isinstance(env_id, str) and 0 < len(env_id) <= MAX_STR and env_id.isprintable())):
        raise HeaderError(path, "env_id", f"expected null or a printable string of at most {MAX_STR} characters, "
                          f"got {short(env_id)}")
    if "checkpoint" in meta:
        _check_resume(path, meta["checkpoint"])
    if shapes is not None:
        _check_tensors(path, expected_shapes(name, hp, meta["observation_space"], meta["action_space"], path,
                                             features), shapes)
