"""``run.py sweep`` on a real local Ray cluster, and ``run.py compare`` on what it wrote.

One module-scoped sweep (Ray starts once): GumbelSAC and SB3 DQN on CartPole-v1 x 2 seeds at
300 env steps with 16-unit networks, plus one trial whose override is invalid. Everything is
read back from disk: run folders, metrics.jsonl and the offline W&B files.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments.cli import main
from experiments.config import ConfigError
from experiments.sweep import DONE_FILE, load_sweep
from experiments.wandb_reader import read_run

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]
GOOD = ["gumbel_sac-cartpole-s0", "gumbel_sac-cartpole-s1", "baselines-dqn_cartpole-s0", "baselines-dqn_cartpole-s1"]
BAD = "bad-temperature=-1-s0"


def _run_cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def ray_cluster():  # noqa: ANN201
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, ray_cluster: None) -> dict:
    """The smoke sweep plus a GumbelSAC trial with temperature -1 (invalid), run through the CLI."""
    root = tmp_path_factory.mktemp("sweeps")
    spec = yaml.safe_load((ROOT / "configs/sweeps/smoke.yaml").read_text())
    spec["name"] = "test-sweep"
    spec["configs"].append({"config": "configs/gumbel_sac/cartpole.yaml", "name": "bad", "seeds": [0],
                            "grid": {"agent.temperature": [-1]}})
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    t0 = time.perf_counter()
    code, out = _run_cli(["sweep", str(path), "--run-dir", str(root / "runs")])
    return {"path": path, "dir": root / "runs" / "test-sweep", "code": code, "out": out,
            "wall": time.perf_counter() - t0}


def test_sweep_writes_runs_wandb_group_and_table(sweep: dict) -> None:
    d = sweep["dir"]
    assert sorted(p.parent.name for p in d.glob(f"*/{DONE_FILE}")) == sorted(GOOD)
    for name in GOOD:
        run = read_run(d / name / "wandb")
        assert run.group == "test-sweep" and run.exit_code == 0
        cfg = yaml.safe_load((d / name / "config.yaml").read_text())
        assert cfg["train"]["seed"] == int(name[-1]) and cfg["train"]["total_timesteps"] == 300
        assert run.config["train"]["seed"] == cfg["train"]["seed"]
        evals = [json.loads(line) for line in (d / name / "metrics.jsonl").read_text().splitlines()]
        assert [e["global_step"] for e in evals if "eval/mean_return" in e] == [100, 200, 300]
    rows = json.loads((d / "summary.json").read_text())["rows"]
    assert {r["config"]: r["n_seeds"] for r in rows} == {"DQN": 2, "GumbelSAC": 2}
    assert "| CartPole-v1 | GumbelSAC | 2 |" in (d / "summary.md").read_text()
    assert "| CartPole-v1 | GumbelSAC | 2 |" in sweep["out"]


def test_a_bad_trial_fails_alone_with_its_error(sweep: dict) -> None:
    assert sweep["code"] == 1  # the CLI says something failed...
    assert not (sweep["dir"] / BAD).exists()  # ...the config error stopped it before any run folder
    line = next(line for line in sweep["out"].splitlines() if line.strip().startswith(f"{BAD}:"))
    assert "ConfigError" in line and "temperature" in line
    assert "4 trained" in sweep["out"] and "1 failed" in sweep["out"]


def test_rerun_skips_finished_trials(sweep: dict) -> None:
    before = {p: p.stat().st_mtime_ns for p in sweep["dir"].glob(f"*/{DONE_FILE}")}
    t0 = time.perf_counter()
    code, out = _run_cli(["sweep", str(sweep["path"]), "--run-dir", str(sweep["dir"].parent)])
    wall = time.perf_counter() - t0
    assert code == 1 and "0 trained, 4 skipped" in out and "1 failed" in out  # only the bad one ran again
    assert {p: p.stat().st_mtime_ns for p in sweep["dir"].glob(f"*/{DONE_FILE}")} == before
    assert sorted(p.name for p in sweep["dir"].iterdir() if p.is_dir() and not p.name.startswith(".")) == sorted(GOOD)
    assert wall < sweep["wall"]


def test_an_edited_sweep_is_refused_not_mixed(sweep: dict, tmp_path: Path) -> None:
    spec = yaml.safe_load(sweep["path"].read_text())
    spec["set"]["train.total_timesteps"] = 400
    spec["configs"] = spec["configs"][:1]
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(spec))
    code, _ = _run_cli(["sweep", str(edited), "--run-dir", str(sweep["dir"].parent)])
    assert code == 2  # ConfigError: finished with other settings


def test_compare_plot_and_table_match_the_run_folders(sweep: dict, tmp_path: Path) -> None:
    from matplotlib import image

    out = tmp_path / "cmp.png"
    code, text = _run_cli(["compare", str(sweep["dir"]), "--out", str(out), "--threshold", "CartPole-v1=12"])
    assert code == 0
    assert out.stat().st_size > 20_000
    pixels = image.imread(out)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 500  # curves, bands, text: not blank
    rows = {r["config"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    for label, prefix in (("GumbelSAC", "gumbel_sac-cartpole"), ("DQN", "baselines-dqn_cartpole")):
        curves = []
        for seed in (0, 1):
            events = [json.loads(line) for line in (sweep["dir"] / f"{prefix}-s{seed}" / "metrics.jsonl").open()]
            curves.append([(e["global_step"], e["eval/mean_return"]) for e in events if "eval/mean_return" in e])
        finals = np.array([c[-1][1] for c in curves])
        firsts = [next((s for s, v in c if v >= 12), None) for c in curves]
        r = rows[label]
        assert r["finals"] == pytest.approx(finals.tolist())
        assert r["final_mean"] == pytest.approx(finals.mean())
        assert r["final_iqm"] == pytest.approx(finals.mean())  # two seeds: nothing is trimmed
        assert min(finals) <= r["iqm_ci95"][0] <= r["final_iqm"] <= r["iqm_ci95"][1] <= max(finals)
        assert r["threshold"] == 12 and r["steps_to_threshold"] == firsts
        med = None if None in firsts else float(np.median(firsts))
        assert r["median_steps_to_threshold"] == med
        lows = [None if f is None else min(v for step, v in c if step >= f)
                for c, f in zip(curves, firsts, strict=True)]
        assert r["lowest_after_threshold"] == lows
        reached = [v for v in lows if v is not None]
        assert r["worst_after_threshold"] == (min(reached) if reached else None)
        assert f"| CartPole-v1 | {label} | 2 | {finals.mean():.1f} |" in text
        assert r["floor"] is None and r["below_floor_after_threshold"] is None
    assert out.with_suffix(".md").read_text().strip() in text
    assert "below floor" not in text  # the column only when --floor asks for it
    # --floor: the seeds whose lowest eval after first reaching the threshold is below it.
    code, text = _run_cli(["compare", str(sweep["dir"]), "--out", str(out), "--threshold", "CartPole-v1=12",
                           "--floor", "CartPole-v1=30"])
    assert code == 0 and "seeds below floor after reaching" in text
    for r in json.loads(out.with_suffix(".json").read_text())["rows"]:
        reached = [v for v in r["lowest_after_threshold"] if v is not None]
        assert r["floor"] == 30 and r["below_floor_after_threshold"] == sum(v < 30 for v in reached)
        assert f"| {r['below_floor_after_threshold']}/{r['reached']} (< 30) |" in text


def test_compare_until_cuts_every_curve_at_one_budget(sweep: dict, tmp_path: Path) -> None:
    run = sweep["dir"] / "gumbel_sac-cartpole-s0"
    events = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    curve = [(e["global_step"], e["eval/mean_return"]) for e in events if "eval/mean_return" in e]
    assert len(curve) >= 2
    until = curve[-2][0]  # the last eval falls outside
    code, _ = _run_cli(["compare", str(run), "--out", str(tmp_path / "c.png"), "--until", str(until)])
    assert code == 0
    (row,) = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert row["finals"] == pytest.approx([curve[-2][1]])
    code, _ = _run_cli(["compare", str(run), "--out", str(tmp_path / "d.png"), "--until", "0"])
    assert code == 2  # ConfigError
    # Per env: the run's own env's entry wins over the common value; another env's leaves it uncut.
    for until_args, expected in ((["1", f"CartPole-v1={until}"], curve[-2][1]), (["Acrobot-v1=1"], curve[-1][1])):
        code, _ = _run_cli(["compare", str(run), "--out", str(tmp_path / "e.png"), "--until", *until_args])
        assert code == 0
        (row,) = json.loads((tmp_path / "e.json").read_text())["rows"]
        assert row["finals"] == pytest.approx([expected])


def test_runs_saved_before_a_new_hyperparameter_group_with_its_default() -> None:
    from experiments.compare import Run, config_key, with_new_defaults

    def key(config: dict) -> str:
        return config_key(Run(Path("."), with_new_defaults(config), np.zeros(1), np.zeros(1)))

    base = {"agent.name": "GumbelSAC", "env.id": "CartPole-v1", "agent.estimator": "st"}
    old = key(base)  # written before backup_entropy existed, when targets always carried the entropy
    assert old == key({**base, "agent.backup_entropy": True}) != key({**base, "agent.backup_entropy": False})
    # ... although GumbelSAC's default is now False: the run is labelled with what it ran, not with
    # what a new run would get.
    from agents import GumbelSAC
    assert GumbelSAC.defaults["backup_entropy"] is False
    assert key({**base, "agent.backup_entropy": False}) != old
    assert key({**base, "agent.name": "NoSuchAgent"})  # an agent this install lacks: left as it is


def test_runs_saved_before_a_new_env_or_train_key_group_with_its_default() -> None:
    """A run folder written before env.atari_preprocessing (or any env/train key) existed groups with
    today's runs of the same config, which record the key at its default, and apart from a run that
    set it otherwise."""
    from experiments.compare import Run, config_key, flatten, with_new_defaults
    from experiments.config import build_config

    today = flatten(build_config({"agent": {"name": "GumbelSAC"}, "env": {"id": "CartPole-v1"}}).to_dict())
    old = {k: v for k, v in today.items() if k not in ("env.atari_preprocessing", "train.torch_threads")}
    assert old != today

    def key(config: dict) -> str:
        return config_key(Run(Path("."), with_new_defaults(config), np.zeros(1), np.zeros(1)))

    assert key(old) == key(today) != key({**today, "env.atari_preprocessing": False})


def test_table_of_an_env_without_a_threshold() -> None:
    """Combinatorial-v0 has no reward_threshold: the row has no steps-to-threshold columns (the
    sweep's final table crashed on it once, after a 30-trial sweep had finished)."""
    from experiments.compare import Group, Run, markdown_table, summary_rows

    runs = [Run(Path(f"s{i}"), {"env.id": "reparl/Combinatorial-v0", "agent.name": "GumbelSAC", "train.seed": i},
                np.array([1000, 2000]), np.array([4.0, 5.0 + i])) for i in range(3)]
    (row,) = summary_rows([Group("reparl/Combinatorial-v0", "GumbelSAC", "GumbelSAC", runs)])
    assert row["threshold"] is None and row["steps_to_threshold"] == [] and row["reached"] == 0
    assert row["lowest_after_threshold"] == [] and row["worst_after_threshold"] is None
    assert row["finals"] == [5.0, 6.0, 7.0]
    assert "reparl/Combinatorial-v0" in markdown_table([row])
    (row,) = summary_rows([Group("reparl/Combinatorial-v0", "GumbelSAC", "GumbelSAC", runs)],
                          {"reparl/Combinatorial-v0": 6.0})
    assert row["steps_to_threshold"] == [None, 2000, 2000] and row["lowest_after_threshold"] == [None, 6.0, 7.0]


def test_floor_counts_the_seeds_that_fell_after_reaching_the_threshold() -> None:
    """The stability bar per seed: a dip before the first 475 does not count, a dip after it
    does, a seed that never reached 475 is not counted, and an env without a threshold gets "-"."""
    from experiments.compare import Group, Run, markdown_table, summary_rows

    steps = np.array([1000, 2000, 3000, 4000])
    curves = [[100.0, 480.0, 300.0, 500.0],   # reaches 475 at 2k, then 300: below the floor
              [390.0, 200.0, 480.0, 450.0],   # below 400 only before reaching 475: holds
              [100.0, 200.0, 300.0, 350.0]]   # never reaches 475: not counted either way
    runs = [Run(Path(f"s{i}"), {"env.id": "CartPole-v1", "agent.name": "GumbelSAC", "train.seed": i},
                steps, np.array(c)) for i, c in enumerate(curves)]
    group = Group("CartPole-v1", "GumbelSAC", "GumbelSAC", runs)
    (row,) = summary_rows([group], {"CartPole-v1": 475.0}, floors={"CartPole-v1": 400.0})
    assert row["reached"] == 2 and row["lowest_after_threshold"] == [300.0, 450.0, None]
    assert row["floor"] == 400.0 and row["below_floor_after_threshold"] == 1
    assert "| 1/2 (< 400) |" in markdown_table([row])
    (row,) = summary_rows([group], {"CartPole-v1": 475.0}, floors={"CartPole-v1": 250.0})
    assert row["below_floor_after_threshold"] == 0
    (plain,) = summary_rows([group], {"CartPole-v1": 475.0})
    assert plain["below_floor_after_threshold"] is None and "below floor" not in markdown_table([plain])
    other = Group("reparl/Combinatorial-v0", "GumbelSAC", "GumbelSAC",
                  [Run(Path("c"), {"env.id": "reparl/Combinatorial-v0", "agent.name": "GumbelSAC"}, steps,
                       np.array([1.0, 2.0, 3.0, 4.0]))])
    rows = summary_rows([group, other], {"CartPole-v1": 475.0}, floors={"CartPole-v1": 400.0})
    assert rows[1]["below_floor_after_threshold"] is None
    table = markdown_table(rows)
    assert "| 1/2 (< 400) |" in table and table.splitlines()[-1].endswith("| - | - |")


def test_iqm_trims_a_quarter_each_side() -> None:
    from experiments.compare import bootstrap_ci, iqm

    x = [100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -100.0]  # 8 runs: the 2 lowest and 2 highest go
    assert iqm(x) == pytest.approx(3.5)
    lo, hi = bootstrap_ci([5.0] * 5)
    assert lo == hi == 5.0


@pytest.mark.parametrize(("change", "message"), [
    ({"configs": []}, "configs: expected a non-empty list"),
    ({"grid": {"agent.estimator": "st"}}, "grid.agent.estimator: expected a non-empty list"),
    ({"set": {"agnt.temperature": 1}}, "set.agnt.temperature: not a SECTION.KEY"),
    ({"set": {"train.seed": 3}}, "set.train.seed: set by the sweep"),
    ({"seedz": [1]}, "did you mean seeds?"),
    ({"search": {"num_samples": 2, "space": {"agent.temperature": {"normal": [0, 1]}}}}, "search.space"),
])
def test_sweep_file_errors_name_the_key_and_file(tmp_path: Path, change: dict, message: str) -> None:
    spec = {"seeds": [0], "configs": ["configs/gumbel_sac/cartpole.yaml"], **change}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_ready_made_sweeps_validate() -> None:
    for path in sorted((ROOT / "configs/sweeps").glob("*.yaml")):
        load_sweep(path)
