"""``compare``: run folders (or a sweep folder) -> learning curves (PNG) and a table (Markdown + JSON).

Everything is read from disk (each run's ``config.yaml`` and ``metrics.jsonl``), so it works the
same offline, after ``wandb sync``, or on folders copied from a cluster. Runs whose configs are
equal except for the seed form one group; each group gets one curve (mean over seeds with a
95% bootstrap band) and one table row: final value (the metric's last event, i.e. the final
evaluation), its interquartile mean (IQM) with a 95% bootstrap CI, and the median env step at
which the metric first reached the env's threshold. ``run.py sweep`` prints the same table.
``--wandb`` also logs the table (a ``wandb.Table``) and the picture (a ``wandb.Image``) into a new
W&B run of job type ``compare``, offline by default, beside the PNG.

IQM and the bootstrap follow rliable (Agarwal et al., 2021, "Deep RL at the Edge of the
Statistical Precipice"), written out here rather than imported: rliable 1.2.0 needs ``arch``,
whose 7.2.0 release fails at import with the pandas 3 that ``ray[tune]`` installs
(``TypeError: deprecate_kwarg()``), and it would add scipy, statsmodels and seaborn for ~30 lines.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.config import SECTIONS, ConfigError, agent_class, agent_defaults, read_yaml
from experiments.rundir import MODEL_FILES

METRIC = "eval/mean_return"
CONFIDENCE = 0.95
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0  # a fixed stream: the same runs always print the same CI
# Keys that do not change what a run learns: runs differing only here are seeds of one config.
NOT_CONFIG = ("train.seed", "train.torch_threads", "train.device", "wandb.")


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    """Flattened resolved config: ``{"agent.name": "GumbelSAC", "train.seed": 0, ...}``."""
    steps: np.ndarray
    values: np.ndarray
    """The metric at each of its events (``steps`` are env steps)."""

    @property
    def env_id(self) -> str:
        return str(self.config["env.id"])

    @property
    def final(self) -> float:
        return float(self.values[-1])


@dataclass
class Group:
    env_id: str
    agent: str
    label: str
    runs: list[Run] = field(default_factory=list)


# ------------------------------------------------------------------------------ statistics


def iqm(x: Sequence[float] | np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean(x, 0.25)``, as rliable)."""
    x = np.sort(np.asarray(x, dtype=float), axis=axis)
    n = x.shape[axis]
    cut = int(0.25 * n)
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def bootstrap_ci(x: Sequence[float] | np.ndarray, statistic: Callable[..., Any] = iqm,
                 reps: int = BOOTSTRAP_REPS, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of ``statistic`` over the runs (axis 0 of ``x``; extra axes, e.g. steps,
    are kept). A group holds one task, so rliable's stratified bootstrap (resampling runs within each
    task) is this: resample the seeds with replacement."""
    x = np.asarray(x, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(reps, len(x)))
    stats = statistic(x[idx], axis=1)
    alpha = (1 - confidence) / 2
    return np.quantile(stats, alpha, axis=0), np.quantile(stats, 1 - alpha, axis=0)


def first_step_at(run: Run, threshold: float) -> int | None:
    """The first env step at which the metric reached ``threshold``; None if it never did."""
    hit = np.flatnonzero(run.values >= threshold)
    return int(run.steps[hit[0]]) if hit.size else None


def lowest_after(run: Run, step: int | None) -> float | None:
    """The lowest value at or after env ``step`` (a first step at threshold): how far a run falls
    back once it has solved the task. None if it never got there."""
    if step is None:
        return None
    return float(run.values[run.steps >= step].min())


def threshold_for(env_id: str, thresholds: dict[str, float | None] | None, metric: str = METRIC) -> float | None:
    """``thresholds[env_id]`` if given, else (for the eval return) gymnasium's ``spec.reward_threshold``."""
    import gymnasium as gym

    if thresholds and env_id in thresholds:
        return thresholds[env_id]
    if metric != METRIC:
        return None
    try:
        return gym.spec(env_id.split(":")[-1]).reward_threshold
    except gym.error.Error:
        return None


# ------------------------------------------------------------------------------ reading runs


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in ("agent", "env", "train", "wandb") and not prefix:
            out.update(flatten(v, f"{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "metrics.jsonl").is_file()


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Run folders among ``paths``, and under those that are not run folders themselves.
    A run without a final model (still running, crashed, killed) is left out with a warning."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise ConfigError(f"{path}: no such folder (give run folders or a folder holding them)")
        candidates = [path] if is_run_dir(path) else sorted(p.parent for p in path.rglob("config.yaml")
                                                             if is_run_dir(p.parent))
        if not candidates:
            raise ConfigError(f"{path}: no run folders in it (a run folder holds config.yaml and metrics.jsonl)")
        for run_dir in candidates:
            if any((run_dir / m).is_file() for m in MODEL_FILES):
                found.append(run_dir)
            else:
                warnings.warn(f"skipping {run_dir}: no {' or '.join(MODEL_FILES)} (unfinished run)",
                              RuntimeWarning, stacklevel=2)
    return list(dict.fromkeys(found))


def load_run(path: Path, metric: str = METRIC, until: int | None = None,
             until_per_env: dict[str, int] | None = None) -> Run | None:
    """The run's config and the metric's events (those at env steps <= ``until``, or its env's
    entry in ``until_per_env``, if given); None (with a warning) when it never logged the metric."""
    config = flatten(read_yaml(path / "config.yaml"))  # the config loader's bounds: no aliases, 1 MiB
    until = (until_per_env or {}).get(str(config.get("env.id")), until)
    points: dict[int, float] = {}
    for line in (path / "metrics.jsonl").read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:  # a torn last line of a killed run
            continue
        if metric in event and (until is None or int(event["global_step"]) <= until):
            points[int(event["global_step"])] = float(event[metric])  # "nan" strings read back as nan
    if not points:
        warnings.warn(f"skipping {path}: no {metric} in metrics.jsonl", RuntimeWarning, stacklevel=2)
        return None
    steps = np.array(sorted(points))
    return Run(path, with_new_defaults(config), steps, np.array([points[s] for s in steps]))


def section_defaults() -> dict[str, Any]:
    """Every env, train and wandb key's default, flattened as :func:`load_run` flattens a config."""
    out: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        if name == "agent":
            continue
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f"{name}.{f.name}"] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f"{name}.{f.name}"] = f.default_factory()
    return out


def with_new_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` plus, for each key its run predates, the value that run ran with: for an agent
    hyperparameter the agent's ``behaviour_before`` where it declares one (a default that has since
    changed), else today's default; for an env, train or wandb key, today's default. Without this,
    runs of one config made before and after a release split into groups, and a run made before a
    default changed would be labelled with the new one."""
    config = {**section_defaults(), **config}
    try:
        defaults = agent_defaults(str(config.get("agent.name")))
        before = getattr(agent_class(str(config.get("agent.name"))), "behaviour_before", {})
    except (AttributeError, KeyError, ImportError):  # an agent this install does not have: leave it
        return config
    filled = {**defaults, **{k: v for k, v in before.items() if k in defaults}}
    return {**{f"agent.{k}": v for k, v in flatten(filled).items()}, **config}


def config_key(run: Run) -> str:
    return json.dumps({k: v for k, v in run.config.items() if not k.startswith(NOT_CONFIG)}, sort_keys=True,
                      default=str)


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """One group per config (everything but the seed). A label is the agent plus the settings that
    tell its groups on the same env apart (``GumbelSAC estimator=soft``), so DQN's many
    hyperparameters do not crowd GumbelSAC's label."""
    by_key: dict[str, list[Run]] = {}
    for run in runs:
        by_key.setdefault(config_key(run), []).append(run)
    groups = [Group(rs[0].env_id, str(rs[0].config["agent.name"]), "", sorted(rs, key=lambda r: r.config.get(
        "train.seed", 0))) for rs in by_key.values()]
    for g in groups:
        siblings = [o.runs[0].config for o in groups if (o.env_id, o.agent) == (g.env_id, g.agent)]
        mine = g.runs[0].config
        differ = [k for k in mine if not k.startswith(NOT_CONFIG)
                  and any(json.dumps(s.get(k), default=str) != json.dumps(mine[k], default=str) for s in siblings)]
        shown = {k: f"{mine[k]:.4g}" if isinstance(mine[k], float) else mine[k] for k in sorted(differ)}
        g.label = " ".join([g.agent] + [f"{k.split('.', 1)[1]}={v}" for k, v in shown.items()])
    return sorted(groups, key=lambda g: (g.env_id, g.label))


# ------------------------------------------------------------------------------ the table


def summary_rows(groups: Sequence[Group], thresholds: dict[str, float | None] | None = None,
                 metric: str = METRIC, floors: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per group; thresholds as :func:`threshold_for`. ``floors[env_id]``: also count the
    seeds that fell below it after first reaching the threshold (a stability bar: "never below 400
    after first reaching 475" on CartPole-v1, counted per seed)."""
    rows = []
    single = [f"{g.env_id} {g.label}" for g in groups if len(g.runs) < 2]
    if single:
        warnings.warn(f"{len(single)} group(s) have one seed ({', '.join(single)[:200]}): a confidence interval "
                      "over one run is that run, [x, x]; add seeds before reading it", RuntimeWarning, stacklevel=2)
    for g in groups:
        threshold = threshold_for(g.env_id, thresholds, metric)
        floor = (floors or {}).get(g.env_id)
        finals = np.array([r.final for r in g.runs])
        lo, hi = bootstrap_ci(finals)
        firsts = [first_step_at(r, threshold) for r in g.runs] if threshold is not None else []
        # A seed that never got there counts as infinitely slow, so the median says "never"
        # once half the seeds never reached it (as experiments/research/learning_bench.py does).
        median_first = float(np.median([math.inf if f is None else f for f in firsts])) if firsts else None
        lows = [lowest_after(r, f) for r, f in zip(g.runs, firsts, strict=True)] if firsts else []
        reached_lows = [v for v in lows if v is not None]
        rows.append({
            "env": g.env_id, "config": g.label, "agent": g.agent, "metric": metric, "n_seeds": len(g.runs),
            "seeds": [r.config.get("train.seed") for r in g.runs], "finals": finals.tolist(),
            "final_mean": float(finals.mean()), "final_iqm": float(iqm(finals)),
            "iqm_ci95": [float(lo), float(hi)], "threshold": threshold,
            "steps_to_threshold": firsts,
            "median_steps_to_threshold": None if median_first is None or math.isinf(median_first)
            else median_first,
            "reached": sum(f is not None for f in firsts),
            # Per seed, and the worst seed: a stable agent never falls below the floor once solved.
            "lowest_after_threshold": lows, "worst_after_threshold": min(reached_lows) if reached_lows else None,
            "floor": floor, "below_floor_after_threshold": None if floor is None or threshold is None
            else sum(v < floor for v in reached_lows),
            "runs": [str(r.path) for r in g.runs],
        })
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    floors = any(r.get("floor") is not None for r in rows)  # the column only when a floor was asked for
    out = ["| env | config | seeds | final mean | final IQM [95% CI] | threshold | median steps to threshold "
           "| reached | lowest after reaching |" + (" seeds below floor after reaching |" if floors else ""),
           "|---|---|---|---|---|---|---|---|---|" + ("---|" if floors else "")]
    for r in rows:
        lo, hi = r["iqm_ci95"]
        t = r["threshold"]
        if t is None:
            steps, reached, low = "-", "-", "-"
        else:
            m, w = r["median_steps_to_threshold"], r["worst_after_threshold"]
            steps = "never" if m is None else f"{m:,.0f}"
            reached = f"{r['reached']}/{r['n_seeds']}"
            low = "-" if w is None else f"{w:.1f}"
        below = r.get("below_floor_after_threshold")
        floor_cell = f" {below}/{r['reached']} (< {r['floor']:g}) |" if below is not None else " - |"
        out.append(f"| {r['env']} | {r['config']} | {r['n_seeds']} | {r['final_mean']:.1f} | "
                   f"{r['final_iqm']:.1f} [{lo:.1f}, {hi:.1f}] | {'-' if t is None else f'{t:g}'} | {steps} | "
                   f"{reached} | {low} |" + (floor_cell if floors else ""))
    return "\n".join(out)


def write_table(rows: Sequence[dict[str, Any]], stem: Path) -> tuple[Path, Path]:
    """``<stem>.md`` (the printed table) and ``<stem>.json`` (every number, per seed too)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, js = stem.with_suffix(".md"), stem.with_suffix(".json")
    md.write_text(markdown_table(rows) + "\n")
    js.write_text(json.dumps({"confidence": CONFIDENCE, "bootstrap_reps": BOOTSTRAP_REPS, "rows": list(rows)},
                             indent=1) + "\n")
    return md, js


# ------------------------------------------------------------------------------ the plot


def plot_curves(groups: Sequence[Group], out: Path, metric: str = METRIC,
                thresholds: dict[str, float | None] | None = None) -> Path:
    """One subplot per env; per group the mean over seeds and a 95% bootstrap band of the mean."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster or in CI
    import matplotlib.pyplot as plt

    envs = sorted({g.env_id for g in groups})
    ncols = min(len(envs), 3)
    nrows = math.ceil(len(envs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4 * nrows), squeeze=False)
    for ax, env_id in zip(axes.flat, envs, strict=False):
        for g in (g for g in groups if g.env_id == env_id):
            # Seeds of one config evaluate at the same steps; interpolation only covers the odd
            # off-by-a-vector-step case, and the curve stops where the shortest run stops.
            end = min(r.steps[-1] for r in g.runs)
            grid = np.unique(np.concatenate([r.steps for r in g.runs]))
            grid = grid[grid <= end]
            curves = np.stack([np.interp(grid, r.steps, r.values) for r in g.runs])
            lo, hi = bootstrap_ci(curves, statistic=np.mean)
            (line,) = ax.plot(grid, curves.mean(axis=0), label=f"{g.label} (n={len(g.runs)})")
            ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        t = threshold_for(env_id, thresholds, metric)
        if t is not None and math.isfinite(t):  # a suite with no threshold passes inf: no line to draw
            ax.axhline(t, color="grey", linestyle="--", linewidth=1, label=f"threshold {t:g}")
        ax.set(title=env_id, xlabel="env steps", ylabel=metric)
        ax.grid(alpha=0.3)
        # Below the axes: inside, a legend of several long config labels hides the curves' ends.
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    for ax in list(axes.flat)[len(envs):]:
        ax.set_visible(False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------ W&B

TABLE_COLUMNS = ["env", "config", "agent", "n_seeds", "final_mean", "final_iqm", "iqm_ci95_low", "iqm_ci95_high",
                 "threshold", "median_steps_to_threshold", "reached", "worst_after_threshold",
                 "below_floor_after_threshold"]
"""The W&B table's columns: the JSON table's names, the CI split into its two ends."""


def table_data(rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """The rows as :data:`TABLE_COLUMNS` lists (the per-seed lists stay in the JSON table)."""
    return [[r["iqm_ci95"][0] if c == "iqm_ci95_low" else r["iqm_ci95"][1] if c == "iqm_ci95_high" else r.get(c)
             for c in TABLE_COLUMNS] for r in rows]


def log_to_wandb(rows: Sequence[dict[str, Any]], png: Path, mode: str = "offline", project: str = "reparl",
                 entity: str | None = None, config: dict[str, Any] | None = None) -> str | None:
    """Log the table (a ``wandb.Table``) and the picture (a ``wandb.Image``) into a new W&B run of job
    type ``compare``, named after the PNG and written beside it (offline: ``<png dir>/wandb/``).

    Returns what to tell the user: the ``wandb sync`` command (offline) or the run's URL. As in
    training, a W&B failure costs nothing already written: it is one warning, and None."""
    import os

    from experiments.wandb_reader import wait_until_complete

    os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")  # as experiments/tracking.py: no Weave banner
    run = None
    try:
        import wandb

        run = wandb.init(mode=mode, project=project, entity=entity, job_type="compare", name=png.stem,
                         dir=str(png.parent), config=config or {}, reinit="create_new",
                         settings=wandb.Settings(x_disable_stats=True, console="off", save_code=False, silent=True))
        run.log({"compare/table": wandb.Table(columns=TABLE_COLUMNS, data=table_data(rows)),
                 "compare/curves": wandb.Image(str(png))})
        run_dir, url = Path(run.dir).parent, (run.url if mode == "online" else None)  # offline: a warning
        run.finish()
        run = None
    except Exception as e:  # wandb raises many types (UsageError, CommError, ValueError...)
        warnings.warn(f"W&B logging failed ({type(e).__name__}: {e}); the table and the picture are on disk only",
                      RuntimeWarning, stacklevel=2)
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # already broken; nothing more to save
                pass
        return None
    if mode != "offline":
        return url
    # finish() can return before wandb-core has written the last records (experiments/tracking.py).
    if not wait_until_complete(run_dir):
        warnings.warn(f"W&B offline run {run_dir} has no exit record after 60 s; it may lack its last records",
                      RuntimeWarning, stacklevel=2)
    return f"wandb sync {run_dir}"


# ------------------------------------------------------------------------------ entry points


def load_groups(paths: Sequence[Path], metric: str = METRIC, until: int | None = None,
                until_per_env: dict[str, int] | None = None) -> list[Group]:
    runs = [r for p in find_runs(paths) if (r := load_run(p, metric, until, until_per_env)) is not None]
    if not runs:
        raise ConfigError(f"no finished run with {metric} in {', '.join(map(str, paths))}")
    return group_runs(runs)


def parse_thresholds(items: Sequence[str]) -> tuple[float | None, dict[str, float]]:
    """``["475"]`` -> one threshold for every env; ``["CartPole-v1=475", ...]`` -> per env."""
    return parse_per_env(items, "--threshold", float)


def parse_until(items: Sequence[str]) -> tuple[int | None, dict[str, int]]:
    """``["30000"]`` -> one budget for every env; ``["CartPole-v1=20000", ...]`` -> per env."""
    every, per_env = parse_per_env(items, "--until", int)
    for env_id, step in [("", every), *per_env.items()]:
        if step is not None and step < 1:
            raise ConfigError(f"--until {env_id + '=' if env_id else ''}{step}: expected an env step >= 1")
    return every, per_env


def parse_per_env(items: Sequence[str], flag: str, kind: Callable[[str], Any]) -> tuple[Any, dict[str, Any]]:
    """One value for every env (``X``) and/or per env (``ENV_ID=X``, split at the last ``=``, so
    ``reparl/Combinatorial-v0=12`` works); a per-env value overrides the common one."""
    every: Any = None
    per_env: dict[str, Any] = {}
    for item in items:
        env_id, sep, value = item.rpartition("=")
        try:
            number = kind(value)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise ConfigError(f"{flag} {item!r}: expected {what} or ENV_ID={what.split()[-1].upper()}") from None
        if sep:
            per_env[env_id] = number
        else:
            every = number
    return every, per_env


def _for_every_env(groups: Sequence[Group], every: Any, per_env: dict[str, Any] | None) -> dict[str, Any] | None:
    """``per_env`` with ``every`` (if given) for each env of ``groups`` it does not name."""
    return per_env if every is None else {**{g.env_id: every for g in groups}, **(per_env or {})}


def compare(paths: Sequence[Path], out: Path, metric: str = METRIC,
            thresholds: dict[str, float | None] | None = None,
            threshold: float | None = None, until: int | None = None,
            until_per_env: dict[str, int] | None = None, floor: float | None = None,
            floors: dict[str, float] | None = None) -> tuple[list[dict[str, Any]], Path, Path, Path]:
    """Plot and tabulate ``paths``; returns the rows, the PNG, and the Markdown and JSON tables.
    ``until``: cut every curve at this env step (``until_per_env``: at its env's step), so runs
    with longer budgets (PPO's whole rollouts, a longer baseline) are compared at the same budget.
    ``floor`` (``floors``: per env): count the seeds below it after first reaching the threshold."""
    groups = load_groups(paths, metric, until, until_per_env)
    thresholds = _for_every_env(groups, threshold, thresholds)
    rows = summary_rows(groups, thresholds, metric, _for_every_env(groups, floor, floors))
    png = plot_curves(groups, out, metric, thresholds)
    md, js = write_table(rows, out.with_suffix(""))
    return rows, png, md, js
