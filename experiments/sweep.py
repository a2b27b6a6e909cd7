"""``sweep``: many ``train`` runs (configs x overrides x seeds) as Ray Tune trials.

A sweep file (``configs/sweeps/*.yaml``)::

    name: discrete_estimators        # folder runs/sweeps/<name>/ and the W&B group (default: file stem)
    seeds: [0, 1, 2, 3, 4]
    threads: 1                       # torch threads (and Ray CPUs) per trial
    set: {train.eval_freq: 1000}     # overrides for every trial, dotted keys as `train --set`
    grid: {}                         # key: [values]; the cartesian product, for every config
    thresholds: {CartPole-v1: 475}   # for "steps to threshold" (default: gymnasium's reward_threshold)
    configs:
      - configs/baselines/dqn_cartpole.yaml
      - config: configs/gumbel_sac/cartpole.yaml
        set: {train.total_timesteps: 30000}         # per config, on top of the sweep's
        grid: {agent.estimator: [st, soft, exact]}
        # also: name (trial-name prefix), seeds
    search:                          # optional, instead of a grid: Optuna through Ray Tune
      metric: eval/mean_return
      mode: max
      num_samples: 20
      space: {agent.actor_lr: {loguniform: [1.0e-4, 1.0e-2]}}

Each trial is ``run_training`` exactly as ``run.py train`` calls it, into
``runs/sweeps/<name>/<trial>/`` with the W&B group set to the sweep's name; every evaluation is
reported to Tune as it happens. A trial's name is ``<config folder>-<config stem>`` (or the
entry's ``name``), its grid values and ``s<seed>``: the same sweep file always gives the same
names. **Resume rule**: a trial is finished when its folder holds ``done.json``, written after
training returned; its ``digest`` (of the config file's text, the overrides and the seed) must
match, so an edited sweep is refused instead of silently mixing old and new runs. A trial folder
without ``done.json`` (killed, crashed) is moved to ``_incomplete/`` and the trial runs again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.config import SECTIONS, ConfigError, _unknown, read_yaml
from experiments.extras import require
from experiments.rundir import REPO, slug

DONE_FILE = "done.json"
INCOMPLETE = "_incomplete"
SWEEP_KEYS = ("name", "configs", "seeds", "threads", "set", "grid", "thresholds", "search")
ENTRY_KEYS = ("config", "name", "set", "grid", "seeds")
SEARCH_KEYS = ("metric", "mode", "num_samples", "space", "seed")
# Ray Tune distributions a search space may name, with what each takes.
DISTRIBUTIONS = {"uniform": "[low, high]", "loguniform": "[low, high]", "randint": "[low, high) integers",
                 "choice": "[value, ...]"}
# Set by the sweep itself for every trial; a sweep file setting them would break its own accounting.
OWNED = {"train.seed": "use seeds:", "train.torch_threads": "use threads:", "wandb.group": "it is the sweep's name"}


@dataclass
class Entry:
    """One base config of a sweep, with its own overrides and grid on top of the sweep's."""

    config: Path
    name: str
    set: dict[str, Any]
    grid: dict[str, list[Any]]
    seeds: list[int]


@dataclass
class Search:
    metric: str
    mode: str
    num_samples: int
    space: dict[str, dict[str, Any]]
    seed: int = 0


@dataclass
class SweepSpec:
    name: str
    source: Path
    entries: list[Entry]
    threads: int = 1
    thresholds: dict[str, float] = field(default_factory=dict)
    search: Search | None = None


@dataclass
class Trial:
    """One ``train`` run of the sweep (plain data: it travels to a Ray worker as the trial's config)."""

    name: str
    config: str
    overrides: dict[str, Any]
    seed: int
    sweep: str
    sweep_dir: str
    threads: int


@dataclass
class SweepResult:
    sweep_dir: Path
    trained: list[str]
    skipped: list[str]
    failed: dict[str, str]
    """Trial name -> its error (the last line of the exception)."""
    rows: list[dict[str, Any]]
    table: Path | None


# ------------------------------------------------------------------------------ the sweep file


def _expect(value: Any, types: type | tuple[type, ...], key: str, source: Path, what: str) -> Any:
    if not isinstance(value, types) or isinstance(value, bool) and bool not in (
            types if isinstance(types, tuple) else (types,)):
        raise ConfigError(f"{key}: expected {what}, got {type(value).__name__} {value!r} in {source}")
    return value


def _dotted(d: Any, key: str, source: Path, lists: bool = False) -> dict[str, Any]:
    """A mapping of ``section.key`` -> value (or -> list of values, for a grid)."""
    _expect(d, dict, key, source, "a mapping of SECTION.KEY: value" + (" list" if lists else ""))
    for k, v in d.items():
        section, _, rest = str(k).partition(".")
        if section not in SECTIONS or not rest:
            raise ConfigError(f"{key}.{k}: not a SECTION.KEY override in {source}; "
                              f"sections: {', '.join(SECTIONS)} (e.g. agent.temperature)")
        if k in OWNED:
            raise ConfigError(f"{key}.{k}: set by the sweep for every trial ({OWNED[k]}) in {source}")
        if lists and (not isinstance(v, list) or not v):
            raise ConfigError(f"{key}.{k}: expected a non-empty list of values, got {v!r} in {source}")
    return dict(d)


def _seeds(value: Any, key: str, source: Path) -> list[int]:
    ok = isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    if not ok or len(set(value)) != len(value):
        raise ConfigError(f"{key}: expected a non-empty list of distinct integers, got {value!r} in {source}")
    return list(value)


def _config_path(value: str, key: str, source: Path) -> Path:
    """As written (relative to the working directory), else relative to the repository."""
    path = Path(value)
    if not path.is_file() and not path.is_absolute() and (REPO / path).is_file():
        path = REPO / path
    read_yaml(path)  # a missing or malformed config stops the sweep now, with did-you-mean
    return path.resolve()


def _search(raw: Any, source: Path) -> Search:
    _expect(raw, dict, "search", source, "a mapping")
    for k in raw:
        if k not in SEARCH_KEYS:
            raise _unknown(f"search.{k}", [f"search.{s}" for s in SEARCH_KEYS], str(source))
    metric = _expect(raw.get("metric", "eval/mean_return"), str, "search.metric", source, "a metric name")
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        raise ConfigError(f"search.mode: expected 'max' | 'min', got {mode!r} in {source}")
    n = _expect(raw.get("num_samples"), int, "search.num_samples", source, "the number of trials (an int >= 1)")
    if n < 1:
        raise ConfigError(f"search.num_samples: must be >= 1, got {n} in {source}")
    space = _dotted(raw.get("space"), "search.space", source)
    if not space:
        raise ConfigError(f"search.space: expected at least one SECTION.KEY to search in {source}")
    for k, dist in space.items():
        ok = isinstance(dist, dict) and len(dist) == 1 and next(iter(dist)) in DISTRIBUTIONS
        args = next(iter(dist.values())) if ok else None
        ok = ok and isinstance(args, list) and (len(args) == 2 or "choice" in dist and args)
        if not ok:
            allowed = ", ".join(f"{{{d}: {a}}}" for d, a in DISTRIBUTIONS.items())
            raise ConfigError(f"search.space.{k}: expected one of {allowed}; got {dist!r} in {source}")
    seed = _expect(raw.get("seed", 0), int, "search.seed", source, "an int")
    return Search(metric, mode, n, space, seed)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; raises :class:`ConfigError` naming the key, the file and what
    is allowed. Override *values* are checked by each trial (a bad one fails that trial alone)."""
    source = Path(path)
    raw = read_yaml(source)
    for k in raw:
        if k not in SWEEP_KEYS:
            raise _unknown(k, list(SWEEP_KEYS), str(source))
    name = _expect(raw.get("name", source.stem), str, "name", source, "a string")
    if slug(name) != name:
        raise ConfigError(f"name: {name!r} in {source} is used as a folder name; use letters, digits, '_', '.', '-'")
    seeds = _seeds(raw.get("seeds", [0]), "seeds", source)
    threads = _expect(raw.get("threads", 1), int, "threads", source, "an int >= 1")
    if threads < 1:
        raise ConfigError(f"threads: must be >= 1, got {threads} in {source}")
    common_set = _dotted(raw.get("set", {}), "set", source)
    common_grid = _dotted(raw.get("grid", {}), "grid", source, lists=True)
    thresholds = _expect(raw.get("thresholds", {}), dict, "thresholds", source, "a mapping of env id: number")
    for env_id, t in thresholds.items():
        _expect(t, (int, float), f"thresholds.{env_id}", source, "a number")
    configs = raw.get("configs")
    if not isinstance(configs, list) or not configs:
        raise ConfigError(f"configs: expected a non-empty list of config files (or {{config: FILE, set: ..., "
                          f"grid: ...}} mappings) in {source}")
    entries = []
    for i, item in enumerate(configs):
        key = f"configs[{i}]"
        item = {"config": item} if isinstance(item, str) else _expect(item, dict, key, source, "a path or a mapping")
        for k in item:
            if k not in ENTRY_KEYS:
                raise _unknown(f"{key}.{k}", [f"{key}.{e}" for e in ENTRY_KEYS], str(source))
        cfg_path = _config_path(_expect(item.get("config"), str, f"{key}.config", source, "a config file path"),
                                f"{key}.config", source)
        entry_name = _expect(item.get("name", f"{cfg_path.parent.name}-{cfg_path.stem}"), str, f"{key}.name",
                             source, "a string")
        entries.append(Entry(cfg_path, entry_name, {**common_set, **_dotted(item.get("set", {}), f"{key}.set", source)},
                             {**common_grid, **_dotted(item.get("grid", {}), f"{key}.grid", source, lists=True)},
                             _seeds(item["seeds"], f"{key}.seeds", source) if "seeds" in item else seeds))
    search = _search(raw["search"], source) if raw.get("search") is not None else None
    if search is not None and (len(entries) != 1 or entries[0].grid or len(entries[0].seeds) != 1):
        raise ConfigError(f"search: needs exactly one config, no grid and one seed in {source} (each Optuna "
                          f"sample is one trial; run the best settings over seeds as a grid sweep)")
    spec = SweepSpec(name, source, entries, threads, {k: float(v) for k, v in thresholds.items()}, search)
    if search is None:
        names = [t.name for t in expand(spec, Path("."))]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"configs: trial names repeat ({', '.join(dup)}) in {source}; give the entries "
                              f"that share a config file different `name:`s")
    return spec


# ------------------------------------------------------------------------------ trials


def _value_text(v: Any) -> str:
    return v if isinstance(v, str) else f"{v:.4g}" if isinstance(v, float) else json.dumps(v)


def trial_name(prefix: str, values: dict[str, Any], seed: int) -> str:
    """``<prefix>-<key>=<value>...-s<seed>``: a function of the sweep file alone, so a re-run finds it.
    Unlike ``rundir.slug`` it keeps a value's sign (``temperature=-1``, not ``temperature-1``)."""
    parts = [prefix] + [f"{k.rsplit('.', 1)[-1]}={_value_text(v)}" for k, v in values.items()] + [f"s{seed}"]
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", "-".join(parts))


def expand(spec: SweepSpec, sweep_dir: Path) -> list[Trial]:
    """The grid: every entry x the product of its grid lists x its seeds."""
    trials = []
    for e in spec.entries:
        keys = list(e.grid)
        for combo in itertools.product(*(e.grid[k] for k in keys)):
            values = dict(zip(keys, combo, strict=True))
            for seed in e.seeds:
                trials.append(Trial(trial_name(e.name, values, seed), str(e.config), {**e.set, **values}, seed,
                                    spec.name, str(sweep_dir), spec.threads))
    return trials


def trial_digest(trial: Trial) -> str:
    """What the resume rule compares: the config file's text, the overrides and the seed."""
    text = Path(trial.config).read_text()
    blob = json.dumps({"config": text, "overrides": trial.overrides, "seed": trial.seed}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finished(trial: Trial) -> dict[str, Any] | None:
    """``done.json`` of a finished trial; None if it has not finished. Raises if it finished with
    other settings (the sweep file or the config changed since)."""
    done = Path(trial.sweep_dir) / trial.name / DONE_FILE
    if not done.is_file():
        return None
    record = json.loads(done.read_text())
    if record.get("digest") != trial_digest(trial):
        raise ConfigError(f"{done.parent}: finished with other settings than the sweep file now gives (its config "
                          f"file or overrides changed); delete that folder to rerun it, or rename the sweep")
    return record


def train_command(trial: Trial) -> list[str]:
    """The equivalent ``run.py train`` command line, recorded in the trial's command.txt."""
    sets = [f"{k}={_value_text(v)}" for k, v in trial.overrides.items() if k != "train.seed"]
    return [sys.executable, "run.py", "train", trial.config, "--seed", str(trial.seed),
            *(["--set", *sets] if sets else []), "--run-dir", trial.sweep_dir, "--name", trial.name, "--no-progress"]


def run_trial(trial: Trial, report: Any = None) -> dict[str, Any]:
    """Train one trial exactly as ``run.py train`` does, into ``<sweep_dir>/<name>/``, and write
    ``done.json``. ``report(metrics)`` gets every evaluation (Ray Tune's ``tune.report``)."""
    from experiments.config import load_config
    from experiments.train import run_training

    if (record := finished(trial)) is not None:  # search mode: Optuna still learns from the old result
        if report is not None and record.get("final_eval") is not None:
            report({"eval/mean_return": record["final_eval"], "global_step": record["global_step"]})
        return record
    run_dir = Path(trial.sweep_dir) / trial.name
    overrides = {**trial.overrides, "train.seed": trial.seed, "train.torch_threads": trial.threads,
                 "wandb.group": trial.sweep}
    cfg = load_config(trial.config, overrides)  # a bad override fails here, before any folder exists
    if run_dir.exists():  # an earlier attempt died: keep its files for a post-mortem, start afresh
        stale = Path(trial.sweep_dir) / INCOMPLETE / f"{trial.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        stale.parent.mkdir(parents=True, exist_ok=True)
        run_dir.rename(stale)
    last = {"step": 0}

    def on_eval(step: int, result: Any) -> None:
        last["step"] = step
        if report is not None:
            report({**result.summary(), "global_step": step})

    t0 = time.perf_counter()
    result = run_training(cfg, run_dir.parent, trial.name, train_command(trial), run_dir=run_dir,
                          progress_bar=False, on_eval=on_eval)
    record = {"digest": trial_digest(trial), "trial": dataclasses.asdict(trial), "final_eval": result.final_eval,
              "global_step": last["step"], "wall_s": time.perf_counter() - t0}
    tmp = run_dir / (DONE_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(run_dir / DONE_FILE)  # written last and atomically: its presence means "finished"
    return record


def _tune_trainable(config: dict[str, Any]) -> None:
    """What a Ray worker runs: the trial's plain data plus (search mode) the sampled values."""
    from ray import tune

    trial = Trial(**config["trial"])
    sampled = {k: v for k, v in config.items() if k != "trial"}
    if sampled:
        trial = dataclasses.replace(trial, overrides={**trial.overrides, **sampled},
                                    name=trial_name_of_config(config))
    try:
        run_trial(trial, report=tune.report)
    finally:
        if "wandb" in sys.modules:
            # Close W&B's service while this worker still runs; at the worker's exit its atexit
            # hook finds the connection gone and prints a ConnectionResetError traceback.
            sys.modules["wandb"].teardown()


def trial_name_of_config(config: dict[str, Any]) -> str:
    """A Tune trial's name from its config: the grid trial's own, or (search) with the sampled values."""
    sampled = {k: v for k, v in config.items() if k != "trial"}
    base = config["trial"]
    return trial_name(base["name"], sampled, base["seed"]) if sampled else base["name"]


def _name_of(t: Any) -> str:
    return trial_name_of_config(t.config)


def _search_space(search: Search) -> dict[str, Any]:
    from ray import tune

    make = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint,
            "choice": lambda *values: tune.choice(list(values))}
    return {k: make[d](*args) for k, spec in search.space.items() for d, args in spec.items()}


def _error_line(error: BaseException | None) -> str:
    """The root cause in one line (Tune wraps a trial's exception, with the worker's traceback)."""
    cause = error
    while getattr(cause, "cause", None) is not None and cause is not cause.cause:
        cause = cause.cause
    text = "".join(traceback.format_exception_only(type(cause), cause)).strip() if cause else "unknown error"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else repr(cause)


def _start_ray(address: str | None, num_cpus: int | None) -> tuple[bool, int]:
    """Join ``address`` or start a local cluster (no dashboard, no usage stats: no network).
    Returns (whether we started it, CPUs in the cluster)."""
    import ray

    if ray.is_initialized():
        return False, int(ray.cluster_resources().get("CPU", 1))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        # Workers import this checkout, whatever the working directory or installed copy.
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=True,
                 configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=True)
    return True, int(ray.cluster_resources().get("CPU", 1))


def run_sweep(path: str | Path, runs_root: Path = Path("runs/sweeps"), address: str | None = None,
              max_concurrent: int | None = None, num_cpus: int | None = None, verbose: int = 1) -> SweepResult:
    """Run a sweep file's unfinished trials on Ray Tune; summarize every finished trial of the sweep.

    At most ``max_concurrent`` trials run at once (default: the cluster's CPUs // ``threads``), so
    trials x torch threads never exceed the cores. A failed trial is recorded and the rest go on.
    """
    spec = load_sweep(path)
    require("sweep", "run.py sweep", "ray", *(["optuna"] if spec.search is not None else []))
    sweep_dir = (runs_root / spec.name).resolve()
    if spec.search is None:
        trials = expand(spec, sweep_dir)
        done = {t.name for t in trials if finished(t) is not None}  # raises if the sweep was edited
        todo = [t for t in trials if t.name not in done]
        skipped = sorted(done)
    else:
        e = spec.entries[0]
        todo = [Trial(e.name, str(e.config), e.set, e.seeds[0], spec.name, str(sweep_dir), spec.threads)]
        skipped = []
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.yaml").write_text(spec.source.read_text())  # what produced these runs
    trained: list[str] = []
    failed: dict[str, str] = {}
    if skipped:
        print(f"sweep {spec.name}: skipping {len(skipped)} finished trial(s) ({DONE_FILE} present)")
    if todo:
        trained, failed = _fit(spec, todo, sweep_dir, address, max_concurrent, num_cpus, verbose)
    rows, table = summarize(sweep_dir, spec.thresholds)
    return SweepResult(sweep_dir, trained, skipped, failed, rows, table)


def _fit(spec: SweepSpec, todo: list[Trial], sweep_dir: Path, address: str | None, max_concurrent: int | None,
         num_cpus: int | None, verbose: int) -> tuple[list[str], dict[str, str]]:
    import ray
    from ray import tune

    started, cpus = _start_ray(address, num_cpus)
    try:
        concurrent = max_concurrent or max(1, cpus // spec.threads)
        trainable = tune.with_resources(_tune_trainable, {"cpu": spec.threads})
        if spec.search is None:
            param_space: dict[str, Any] = {"trial": tune.grid_search([dataclasses.asdict(t) for t in todo])}
            tune_config = tune.TuneConfig(max_concurrent_trials=concurrent, trial_name_creator=_name_of,
                                          trial_dirname_creator=_name_of)
        else:
            from ray.tune.search.optuna import OptunaSearch

            s = spec.search
            param_space = {"trial": dataclasses.asdict(todo[0]), **_search_space(s)}
            tune_config = tune.TuneConfig(metric=s.metric, mode=s.mode, num_samples=s.num_samples,
                                          search_alg=OptunaSearch(seed=s.seed), max_concurrent_trials=concurrent,
                                          trial_name_creator=_name_of, trial_dirname_creator=_name_of)
        run_config = tune.RunConfig(
            # Tune's own bookkeeping, apart from the run folders; a fresh experiment per invocation
            # (resume is ours: done.json), so a re-run never trips over the last one's state.
            name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(sweep_dir / ".ray"),
            failure_config=tune.FailureConfig(max_failures=0), verbose=verbose)
        results = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                             run_config=run_config).fit()
    finally:
        if started:
            ray.shutdown()
    trained, failed = [], {}
    for r in results:
        name = trial_name_of_config(r.config)
        if r.error is not None:
            failed[name] = _error_line(r.error)
        else:
            trained.append(name)
    return sorted(trained), failed


def summarize(sweep_dir: Path, thresholds: dict[str, float] | None = None,
              ) -> tuple[list[dict[str, Any]], Path | None]:
    """The sweep's table (the same code as ``run.py compare``) -> ``summary.md`` and ``summary.json``."""
    from experiments.compare import load_groups, summary_rows, write_table

    runs = [p.parent for p in sweep_dir.glob(f"*/{DONE_FILE}")]
    if not runs:
        return [], None
    rows = summary_rows(load_groups(runs), thresholds)
    md, _ = write_table(rows, sweep_dir / "summary")
    return rows, md


def format_result(result: SweepResult) -> str:
    from experiments.compare import markdown_table

    lines = [f"sweep folder: {result.sweep_dir}",
             f"trials: {len(result.trained)} trained, {len(result.skipped)} skipped (finished before), "
             f"{len(result.failed)} failed"]
    if result.rows:
        json_table = result.table.with_suffix(".json")
        lines += ["", markdown_table(result.rows), "", f"table: {result.table} (and {json_table})"]
    if result.failed:
        lines += ["", "failed trials:"] + [f"  {name}: {err}" for name, err in sorted(result.failed.items())]
    lines.append(f"compare: python run.py compare {shlex.quote(str(result.sweep_dir))}")
    return "\n".join(lines)
