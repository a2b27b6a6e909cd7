"""Run configuration: a typed schema, YAML loading, ``--set`` overrides and validation.

Precedence is dataclass defaults < the YAML file < ``--set KEY=VALUE`` < dedicated CLI flags
(``--seed``, ``--wandb``, ``--device``). Agent hyperparameters are validated against the agent
class itself (``defaults`` of our agents, the constructor signature of SB3's), so their
defaults live in one place: a config lists only what differs.

Every error names the key, where the value came from and what is allowed, and suggests the
nearest valid name (``difflib``). Values are parsed with ``yaml.safe_load`` only: no ``eval``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SB3_ALGOS = ("DQN", "PPO", "A2C", "SAC", "TD3")
OUR_AGENTS = ("GumbelSAC", "GaussianSAC", "HybridSAC")
# Keys of our agents' constructors that the runner sets from other sections.
RESERVED = {"n_envs": "env.n_envs", "seed": "train.seed", "device": "train.device"}
# SB3 constructor arguments the runner owns, or that take Python objects YAML cannot spell.
SB3_RESERVED = {"policy": "it is always MlpPolicy", "env": "set env.id", "seed": "set train.seed",
                "device": "set train.device", "verbose": "the runner logs for you",
                "tensorboard_log": "metrics go to metrics.jsonl and W&B", "_init_setup_model": "internal",
                "action_noise": "set agent.action_noise_std", "replay_buffer_class": "not configurable",
                "rollout_buffer_class": "not configurable"}
# SB3 arguments whose default's type is narrower than what they accept.
SB3_TYPES: dict[str, tuple[type, ...]] = {
    "ent_coef": (str, float, int), "target_entropy": (str, float, int), "train_freq": (int, list),
    "learning_rate": (float, int), "clip_range": (float, int), "max_grad_norm": (float, int),
}
# Runner-level extras for SB3 off-policy algorithms (YAML cannot spell a NoiseClass object).
SB3_EXTRAS: dict[str, tuple[type, ...]] = {"action_noise_std": (float, int, type(None))}
# Our hyperparameters whose default's type does not say what they take (a word besides a number,
# or a number where the default is null); the agent checks the values.
OUR_TYPES: dict[str, tuple[type, ...]] = {"alpha": (float, int, str), "alpha_learning_rate": (float, int, type(None)),
                                          "target_entropy": (float, int, type(None))}
# Action spaces each SB3 algorithm accepts (SB3 asserts this itself, with a traceback).
SB3_ACTION_SPACES = {"DQN": ("Discrete",), "SAC": ("Box",), "TD3": ("Box",),
                     "PPO": ("Box", "Discrete", "MultiDiscrete", "MultiBinary"),
                     "A2C": ("Box", "Discrete", "MultiDiscrete", "MultiBinary")}


class ConfigError(ValueError):
    """A config problem the user can fix; the CLI prints it without a traceback."""


MAX_CONFIG_BYTES = 2**20
"""Configs are refused above this size, before they are parsed (the shipped ones are under 2 KiB)."""
_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 60, 60, 6, 6, 3


def short(value: Any, n: int = 80) -> str:
    """A value from a config in an error message: its repr, cut (reprlib stops early on big values)."""
    r = _REPR.repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."


def one_line(e: BaseException, n: int = 200) -> str:
    return " ".join(str(e).split())[:n]


class _NoAlias(Exception):
    def __init__(self, mark: Any) -> None:
        self.line = mark.line + 1


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases: a config never needs them, and nested aliases expand
    exponentially (a 649-byte "billion laughs" document is 10^9 values once anything walks it)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _NoAlias(event.start_mark)
        return super().compose_node(parent, index)


class _PlainDumper(yaml.SafeDumper):
    """Never writes an anchor for a value that appears twice: configs are read without them."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def parse_yaml(text: str, where: str) -> Any:
    """YAML's safe subset without anchors or aliases; ConfigError (one line, naming ``where``) otherwise."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader subclass)
    except _NoAlias as e:
        raise ConfigError(f"{where}: line {e.line}: YAML anchors and aliases (&name, *name) are not allowed in "
                          "configs; write the value out") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML (plain values, lists and mappings only; no tags such as "
                          f"!!python/object): {one_line(e)}") from None


@dataclass
class AgentConfig:
    name: str = "GumbelSAC"
    """Algorithm: GumbelSAC, GaussianSAC or HybridSAC (ours), or an SB3 baseline DQN, PPO, A2C, SAC, TD3."""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments that differ from the agent's defaults; in YAML they sit directly
    under ``agent:`` beside ``name`` (``agent.temperature``)."""

    @property
    def is_sb3(self) -> bool:
        return self.name in SB3_ALGOS


@dataclass
class EnvConfig:
    id: str = "CartPole-v1"
    """Gymnasium id; ``mypkg.module:MyEnv-v0`` imports ``mypkg.module`` first (it registers the id)."""
    n_envs: int = 1
    """Env copies stepped together; one env step of the budget counts each copy."""
    vectorization: Literal["sync", "async"] = "sync"
    """``sync`` steps copies in this process; ``async`` runs one subprocess per copy."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for ``gymnasium.make`` (e.g. ``{continuous: true}``)."""
    max_episode_steps: int | None = None
    """Override the id's time limit; ``null`` keeps the registered one."""
    normalize_obs: bool = False
    """Running mean/std normalization of observations (our agents only); the statistics are
    saved as ``obs_rms.json`` in the run folder and applied, frozen, at evaluation."""
    atari_preprocessing: bool = True
    """An ``ale-py`` id (``ALE/Breakout-v5``) gets the DQN preprocessing: no-op starts, frame skip 4,
    84 x 84 grayscale, the last 4 frames stacked (``envs``' module docstring); ``false`` gives the raw
    ALE env. Other ids ignore it."""


@dataclass
class TrainConfig:
    total_timesteps: int = 100_000
    """Env steps to collect, summed over env copies."""
    seed: int = 0
    """Seeds torch, numpy, the envs and the warm-up actions."""
    device: Literal["cpu", "cuda", "auto"] = "auto"
    """Torch device; ``auto`` is CUDA when present, else CPU."""
    torch_threads: int | None = 1
    """Intra-op CPU threads for torch; ``null`` keeps torch's default (one per core). One, because
    small MLPs gain little from more (109 vs 91 steps/s, measured on this project's 2-core machines) and
    lose 40x per update when the cores are shared with other processes (measured: 180 ms vs 4 ms)."""
    eval_freq: int = 10_000
    """Evaluate every this many env steps (and at the end); 0 disables evaluation."""
    eval_episodes: int = 10
    """Whole episodes per evaluation, on separately seeded env copies."""
    eval_deterministic: bool = True
    """Evaluate the policy's mode instead of sampling from it."""
    checkpoint_freq: int = 0
    """Save a checkpoint every this many env steps into ``checkpoints/``; 0 saves only the final model.
    Our agents also checkpoint on SIGINT/SIGTERM and on an error; ``run.py train --resume RUN_DIR``
    continues from the latest good one."""
    checkpoint_buffer: bool = True
    """Include the replay buffer in checkpoints (our agents): needed for a resume identical to an
    uninterrupted run; without it a resumed run refills the buffer from scratch."""
    log_interval: int = 1000
    """Log train/, grad/, rollout/ and time/ metrics every this many env steps."""
    tensorboard: bool = False
    """Also write every metric as TensorBoard event files in ``<run>/tensorboard/`` (``tensorboard
    --logdir runs``), beside metrics.jsonl and W&B."""


@dataclass
class WandbConfig:
    mode: Literal["offline", "online", "disabled"] = "offline"
    """``offline`` writes the run into the run folder (``wandb sync`` uploads it later)."""
    project: str = "reparl"
    """W&B project."""
    entity: str | None = None
    """W&B team or user; ``null`` uses your default."""
    group: str | None = None
    """Run group; ``null`` groups by env id."""
    tags: list[str] = field(default_factory=list)
    """Extra tags; the agent, env id and (GumbelSAC, HybridSAC) estimator are always added."""
    job_type: str = "train"
    """W&B job type."""


@dataclass
class Config:
    agent: AgentConfig = field(default_factory=AgentConfig)
    """What learns."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """What it learns on."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Budget, seed, evaluation, checkpoints and logging cadence."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Experiment tracking."""
    source: str = field(default="<defaults>", repr=False, compare=False)
    """Where the config came from (not part of the config itself)."""

    def to_dict(self) -> dict[str, Any]:
        """The YAML form: agent hyperparameters flattened under ``agent:``."""
        d = {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}
        d["agent"] = {"name": self.agent.name, **self.agent.hyperparameters}
        return d


SECTIONS = {"agent": AgentConfig, "env": EnvConfig, "train": TrainConfig, "wandb": WandbConfig}
RANGES: dict[str, tuple[str, Any]] = {
    "env.n_envs": (">=", 1), "env.max_episode_steps": (">=", 1), "train.total_timesteps": (">=", 1),
    "train.eval_freq": (">=", 0), "train.eval_episodes": (">=", 1), "train.checkpoint_freq": (">=", 0),
    "train.log_interval": (">=", 1), "train.torch_threads": (">=", 1),
}


# ------------------------------------------------------------------------------ type checks


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, value) for a YAML value against a field annotation; ints are accepted as floats, and so
    are numeric strings, because YAML 1.1 reads ``1e-3`` (no dot) as a string."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return value in typing.get_args(tp), value
    if isinstance(tp, types.UnionType) or origin is typing.Union:
        for arg in typing.get_args(tp):
            ok, v = _coerce(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is Any:
        return True, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            return False, value
        out = []
        for v in value:
            ok, v = _coerce(v, item)
            if not ok:
                return False, value
            out.append(v)
        return True, out
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    return isinstance(value, tp), value


def _where(key: str, sources: dict[str, str], default: str) -> str:
    return sources.get(key, default)


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    key = str(key)
    close = difflib.get_close_matches(key[:100], known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "known keys: " + ", ".join(sorted(known))
    return ConfigError(f"{key if len(key) <= 60 else key[:57] + '...'}: unknown key in {where}; {hint}")


# ------------------------------------------------------------------------------ agent hyperparameters


def agent_class(name: str) -> type:
    if name in OUR_AGENTS:
        from agents import AGENTS

        return AGENTS[name]
    import stable_baselines3 as sb3

    return getattr(sb3, name)


def agent_defaults(name: str) -> dict[str, Any]:
    """The agent's own defaults for the keys a config may set (the single source of truth)."""
    cls = agent_class(name)
    if name in OUR_AGENTS:
        return {k: v for k, v in cls.defaults.items() if k not in RESERVED}
    params = inspect.signature(cls.__init__).parameters
    d = {k: p.default for k, p in params.items()
         if k not in ("self", *SB3_RESERVED) and p.default is not inspect.Parameter.empty}
    if name in ("SAC", "TD3"):
        d.update({k: None for k in SB3_EXTRAS})
    return d


def _check_hyperparameter(agent: str, key: str, value: Any, default: Any, where: str) -> Any:
    allowed: tuple[type, ...]
    if agent in SB3_ALGOS and key in SB3_TYPES:
        allowed = SB3_TYPES[key]
    elif key in SB3_EXTRAS:
        allowed = SB3_EXTRAS[key]
    elif agent in OUR_AGENTS and key in OUR_TYPES:
        allowed = OUR_TYPES[key]
    elif default is None:
        return value  # no type to check against (e.g. policy_kwargs); the agent checks
    elif isinstance(default, bool):
        allowed = (bool,)
    elif isinstance(default, int):
        allowed = (int,)
    elif isinstance(default, float):
        allowed = (float, int)
    else:
        allowed = (type(default),)
    if isinstance(value, bool) and bool not in allowed:
        ok = False
    elif float in allowed and isinstance(value, str):
        try:
            value, ok = float(value), True
        except ValueError:
            ok = str in allowed
    else:
        ok = isinstance(value, allowed)
    if not ok:
        names = " | ".join(t.__name__ for t in allowed)
        raise ConfigError(f"agent.{key}: expected {names}, got {type(value).__name__} {short(value)} in {where}")
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value


def _validate_agent(raw: dict[str, Any], sources: dict[str, str], default_where: str) -> AgentConfig:
    raw = dict(raw)
    name = raw.pop("name", AgentConfig.name)
    if name not in OUR_AGENTS + SB3_ALGOS:
        where = _where("agent.name", sources, default_where)
        close = difflib.get_close_matches(str(name)[:100], OUR_AGENTS + SB3_ALGOS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"agent.name: unknown agent {short(name)} in {where}; {hint}"
                          f"allowed: {', '.join(OUR_AGENTS + SB3_ALGOS)}")
    defaults = agent_defaults(name)
    hp: dict[str, Any] = {}
    for key, value in raw.items():
        where = _where(f"agent.{key}", sources, default_where)
        if name in OUR_AGENTS and key in RESERVED:
            raise ConfigError(f"agent.{key}: set {RESERVED[key]} instead (in {where})")
        if name in SB3_ALGOS and key in SB3_RESERVED:
            raise ConfigError(f"agent.{key}: not settable for SB3 baselines: {SB3_RESERVED[key]} (in {where})")
        if key not in defaults:
            raise _unknown(f"agent.{key}", ["agent.name"] + [f"agent.{k}" for k in defaults], where)
        hp[key] = _check_hyperparameter(name, key, value, defaults[key], where)
    if name in SB3_ALGOS and hp.get("policy_kwargs") is not None:
        from experiments.sb3_extractors import resolve_policy_kwargs  # SB3 classes named in the config

        try:
            resolve_policy_kwargs(hp["policy_kwargs"])
        except ValueError as e:
            raise ConfigError(f"{e} (in {_where('agent.policy_kwargs', sources, default_where)})") from None
    if name in OUR_AGENTS:
        # The agent's own range checks, run now so a bad value fails before any env is built.
        cls = agent_class(name)
        merged = {**cls.defaults, **hp}
        merged["net_arch"] = list(merged["net_arch"])
        try:
            cls.validate_hyperparameters(merged)
        except (ValueError, TypeError) as e:
            keys = [k for k in hp if f"{k}=" in str(e) or k in str(e)]
            where = ", ".join(sorted({_where(f"agent.{k}", sources, default_where) for k in keys})) or default_where
            raise ConfigError(f"agent: {one_line(e, 300)} (in {where})") from None
    return AgentConfig(name=name, hyperparameters=hp)


# ------------------------------------------------------------------------------ env checks


def check_env_id(env_id: str, where: str) -> None:
    """Import ``module:`` prefixes and look the id up in Gymnasium's registry."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers reparl's own ids, reparl/Combinatorial-v0 and the like)

    name = env_id
    if ":" in env_id:
        module, name = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"env.id: cannot import module {short(module)} for {short(env_id)} in {where}: "
                              f"{one_line(e)}") from None
    if name not in gym.registry:
        close = difflib.get_close_matches(name[:100], list(gym.registry), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else "see gymnasium.pprint_registry() for the ids"
        raise ConfigError(f"env.id: unknown environment {short(env_id)} in {where}; {hint}")


def check_compatibility(cfg: Config) -> None:
    """Build one env to compare its action space with what the agent handles."""
    from envs import make_env

    where = cfg.source
    if cfg.env.normalize_obs and cfg.agent.is_sb3:
        raise ConfigError(f"env.normalize_obs: not supported for SB3 baselines (in {where}); "
                          "set it to false (SB3's VecNormalize is not wired into the runner)")
    n_step = cfg.agent.hyperparameters.get("n_step", 1)
    if cfg.env.normalize_obs and not cfg.agent.is_sb3 and n_step > 1:
        # Observation normalization runs the vector env with NEXT_STEP autoreset (envs.make_vec_env),
        # whose reset steps store nothing, so one copy's transitions no longer sit n_envs rows apart.
        raise ConfigError(f"env.normalize_obs with agent.n_step={n_step}: n-step targets need the vector env's "
                          f"SAME_STEP autoreset, which normalized observations do not use (in {where}); "
                          "set env.normalize_obs: false or agent.n_step: 1")
    try:
        env = make_env(cfg.env)
    except Exception as e:  # a user's env may raise anything from its constructor
        raise ConfigError(f"env: cannot build {short(cfg.env.id)} with kwargs {short(cfg.env.kwargs, 200)} "
                          f"(in {where}): {one_line(e)}") from None
    space = env.action_space
    env.close()
    if cfg.agent.is_sb3:
        ok = type(space).__name__ in SB3_ACTION_SPACES[cfg.agent.name]
        other = ("use DQN, PPO or A2C" if type(space).__name__ == "Discrete" else
                 "use HybridSAC, or an SB3 algorithm on the env's hybrid action relaxed into a Box (the "
                 "reparl/...Relaxed-v0 ids, envs/hybrid.py)" if type(space).__name__ == "Tuple" else
                 "use SAC, TD3, PPO or A2C")
        handles = "/".join(SB3_ACTION_SPACES[cfg.agent.name])
    else:
        from agents import agent_for

        cls = agent_class(cfg.agent.name)
        ok = cls.handles(space)
        other = "" if ok else agent_for(space)
        handles = "/".join(s.__name__ for s in cls.supported_action_spaces)
    if not ok:
        raise ConfigError(f"agent.name: {cfg.agent.name} handles {handles} action spaces, but {cfg.env.id} has "
                          f"{space} (in {where}); {other}")


# ------------------------------------------------------------------------------ loading


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["agent.temperature=0.5", ...]`` -> ``{"agent.temperature": 0.5}`` (values via yaml.safe_load)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or "." not in key:
            raise ConfigError(f"--set {short(item)}: expected SECTION.KEY=VALUE, e.g. agent.temperature=0.5")
        out[key.strip()] = parse_yaml(value, f"--set {short(item)}") if value.strip() else None
    return out


def _config_files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.yaml")) if root.is_dir() else []


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        candidates = _config_files(Path("configs")) + _config_files(Path(__file__).resolve().parents[1] / "configs")
        close = difflib.get_close_matches(str(path), candidates, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]}?" if close else "configs live in configs/<agent>/<env>.yaml"
        raise ConfigError(f"{path}: no such config file; {hint}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:  # checked before reading: a config is a page of settings, not data
        raise ConfigError(f"{path}: {size:,} bytes, more than a config may have ({MAX_CONFIG_BYTES:,}); "
                          "is this the right file?")
    data = parse_yaml(path.read_text(), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with sections {', '.join(SECTIONS)}; got {type(data).__name__}")
    return data


def build_config(raw: dict[str, Any], source: str = "<defaults>", overrides: dict[str, Any] | None = None,
                 check_env: bool = True) -> Config:
    """Validate a raw nested dict (plus dotted overrides) into a :class:`Config`."""
    sources: dict[str, str] = {}
    merged: dict[str, dict[str, Any]] = {}
    for section, values in raw.items():
        if section not in SECTIONS:
            raise _unknown(section, list(SECTIONS), source)
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a mapping, got {type(values).__name__} in {source}")
        merged[section] = dict(values)
        sources.update({f"{section}.{k}": source for k in values})
    for key, value in (overrides or {}).items():
        section, _, rest = key.partition(".")
        if section not in SECTIONS:
            raise _unknown(key, [f"{s}.{f.name}" for s, c in SECTIONS.items() for f in dataclasses.fields(c)],
                           "--set")
        if "." in rest:
            raise ConfigError(f"{key}: nested keys are not supported in --set; give the whole value, "
                              f"e.g. {section}.{rest.split('.')[0]}={{...}}")
        merged.setdefault(section, {})[rest] = value
        sources[key] = "--set"

    agent = _validate_agent(merged.get("agent", {}), sources, source)
    sections: dict[str, Any] = {"agent": agent}
    for section, cls in SECTIONS.items():
        if section == "agent":
            continue
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, Any] = {}
        for key, value in merged.get(section, {}).items():
            dotted = f"{section}.{key}"
            where = _where(dotted, sources, source)
            if key not in names:
                raise _unknown(dotted, [f"{section}.{n}" for n in names], where)
            ok, value = _coerce(value, hints[key])
            if not ok:
                raise ConfigError(f"{dotted}: expected {_type_name(hints[key])}, got {type(value).__name__} "
                                  f"{short(value)} in {where}")
            if dotted in RANGES and value is not None:
                op, bound = RANGES[dotted]
                if not value >= bound:
                    raise ConfigError(f"{dotted}: must be {op} {bound}, got {short(value)} in {where}")
            values[key] = value
        sections[section] = cls(**values)
    cfg = Config(**sections, source=source)
    if check_env:
        check_env_id(cfg.env.id, _where("env.id", sources, source))
        check_compatibility(cfg)
    return cfg


def load_config(path: str | Path, overrides: dict[str, Any] | None = None, check_env: bool = True) -> Config:
    """Read ``path``, apply dotted ``overrides`` and validate; raises :class:`ConfigError`."""
    return build_config(read_yaml(path), str(path), overrides, check_env)


def dump_config(cfg: Config, path: str | Path, full_hyperparameters: bool = True) -> None:
    """Write the resolved config. With ``full_hyperparameters`` the agent section also holds the
    defaults in force, so the run records what it ran with even after the defaults change."""
    d = cfg.to_dict()
    if full_hyperparameters:
        d["agent"] = {"name": cfg.agent.name, **resolved_hyperparameters(cfg)}
    Path(path).write_text(yaml.dump(d, Dumper=_PlainDumper, sort_keys=False))


def resolved_hyperparameters(cfg: Config) -> dict[str, Any]:
    """The agent's defaults overlaid with the config's values (what the agent runs with)."""
    defaults = agent_defaults(cfg.agent.name)
    if cfg.agent.is_sb3:
        # Only plain values: SB3 defaults such as schedules are fine, classes are not YAML.
        defaults = {k: v for k, v in defaults.items() if v is None or isinstance(v, int | float | str | list | dict)}
    return {**defaults, **cfg.agent.hyperparameters}
