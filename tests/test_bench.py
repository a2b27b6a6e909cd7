"""`run.py bench` end to end on tiny settings: it measures both libraries in fresh processes and
writes what it prints. Speed itself is never asserted (machines here are shared and noisy);
only the structure of the benchmark and facts that do not depend on timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from experiments.research.bench import (
    RACE_CONFIG,
    RACE_VARIANTS,
    SAC_SETTINGS,
    _ours_hp,
    _race_hyperparameters,
    _sb3_hp,
    matmul_peak_gflops,
)

REPO = Path(__file__).resolve().parents[1]


def test_bench_quick_throughput_and_envs(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "run.py", "bench", "--quick", "--sections", "throughput", "envs",
                           "--rounds", "2", "--updates", "10", "--env-steps", "20", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "bench.json").read_text())
    md = (out / "bench.md").read_text()
    assert result["machine"]["torch"] and result["machine"]["cores"] >= 1
    assert set(result["throughput"]) == {"reparl", "reparl_eager", "sb3"}
    for rows in result["throughput"].values():
        assert len(rows) == 2  # one per round, the variants alternating
        for r in rows:
            assert r["updates_per_s"] > 0 and r["env_steps_per_s"] > 0 and r["peak_rss_mib"] > 0
    # The compiled update's FLOPs are counted on an eager twin: the same maths.
    assert result["throughput"]["reparl"][0]["flops_per_update"] == \
        result["throughput"]["reparl_eager"][0]["flops_per_update"]
    ours = result["throughput"]["reparl"][0]["flops_per_update"]
    sb3 = result["throughput"]["sb3"][0]["flops_per_update"]
    # Same networks and batch, but our actor loss differentiates the policy's parameters only
    # (torch.func.grad over them), not the critics' weights; SB3 computes those weight gradients and
    # throws them away. So our update must count strictly fewer FLOPs than SB3's; if the actor's
    # gradient reached the critics' weights, the counts would be equal.
    assert 0 < ours < sb3
    assert [row["n_envs"] for row in result["envs"]] == [1, 2]
    assert "| SB3 SAC |" in md and "compile=false" in md and "## Vector envs" in md
    assert "## Throughput" in proc.stdout and "## Vector envs" in proc.stdout  # printed as well as written


def test_bench_quick_cartpole_race(tmp_path: Path) -> None:
    """The race's columns run in the order written, and the header states the threads asked for."""
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "run.py", "bench", "--quick", "--sections", "cartpole", "--seeds", "0",
                           "--race-episodes", "2", "--threads", "1", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "bench.json").read_text())
    assert result["machine"]["torch_threads"] == 1
    assert list(result["cartpole"]) == [*RACE_VARIANTS, "sb3"]
    for rows in result["cartpole"].values():
        assert len(rows) == 1 and rows[0]["wall_s"] > 0
        assert rows[0]["train_s"] is None or 0 < rows[0]["train_s"] <= rows[0]["wall_s"]
    assert "cartpole_fast.yaml" in (out / "bench.md").read_text()


def test_bench_quick_pairwise_cost_table(tmp_path: Path) -> None:
    """The pairwise section alone: every (rank, factors) cell measured in its own process and printed
    as a table; its FLOP counts (not timings) rise with rank and factors and at most double when F does."""
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "run.py", "bench", "--quick", "--sections", "pairwise", "--rounds", "1",
                           "--updates", "3", "--threads", "1", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "bench.json").read_text())
    assert set(result) >= {"pairwise"} and not set(result) & {"throughput", "scaling", "envs", "cartpole"}
    cells = {(row["rank"], row["factors"]): row for row in result["pairwise"]}
    assert set(cells) == {(2, 2), (4, 2), (2, 4), (4, 4)}
    for (rank, factors), row in cells.items():
        assert row["ms_per_update"] > 0 and len(row["rounds"]) == 1 and row["rounds"][0]["updates"] == 3
        assert row["critic_outputs"] == 4 * factors * (1 + rank)
    for rank in (2, 4):
        assert 1 < cells[rank, 4]["flops_per_update"] / cells[rank, 2]["flops_per_update"] <= 2
    for factors in (2, 4):
        assert cells[4, factors]["flops_per_update"] > cells[2, factors]["flops_per_update"]
    assert "## Pairwise critic" in proc.stdout and "| factors F | R = 2 | R = 4 |" in (out / "bench.md").read_text()


def test_race_column_runs_what_its_config_file_says() -> None:
    """The tuned column is configs/gumbel_sac/cartpole_fast.yaml's agent section, not a copy of it,
    so `run.py train` on that file trains what the race timed."""
    from experiments.config import load_config

    hp = _race_hyperparameters("reparl_tuned")
    assert hp == load_config(RACE_CONFIG).agent.hyperparameters and hp["net_arch"] == [64, 64]
    assert _race_hyperparameters("reparl") == {} and _race_hyperparameters("sb3") == {}


def test_identical_settings_map_onto_both_libraries() -> None:
    ours, sb3 = _ours_hp(SAC_SETTINGS), _sb3_hp(SAC_SETTINGS)
    assert ours["learning_rate"] == ours["critic_learning_rate"] == sb3["learning_rate"]
    assert ours["target_update_rate"] == sb3["tau"] and ours["batch_size"] == sb3["batch_size"]
    assert ours["net_arch"] == sb3["policy_kwargs"]["net_arch"] and ours["n_critics"] == 2


def test_matmul_peak_is_a_plausible_rate() -> None:
    assert 0.1 < matmul_peak_gflops(n=64, reps=50) < 1e5


def _cartpole_dips() -> Any:
    """benchmarks/archive/cartpole_dips.py, a script rather than a package module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cartpole_dips", REPO / "benchmarks" / "archive" / "cartpole_dips.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cartpole_dips_finds_the_checkpoints_saved_inside_a_dip(tmp_path: Path) -> None:
    """benchmarks/archive/cartpole_dips.py: a checkpoint counts when its step's evaluation is below the
    floor after the first at or above the threshold; not before it, not at a good evaluation."""
    module = _cartpole_dips()
    evals = {1000: 200.0, 2000: 480.0, 3000: 500.0, 4000: 350.0, 5000: 410.0, 6000: 120.0}
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"global_step": s, "eval/mean_return": v}) + "\n"
                                                    for s, v in evals.items()))
    (tmp_path / "checkpoints").mkdir()
    for step in (1000, 3000, 4000, 5000, 6000):
        (tmp_path / "checkpoints" / f"step_{step}.safetensors").touch()
    found = module.dip_checkpoints(tmp_path, threshold=475, floor=400)
    assert [(step, value) for step, value, _ in found] == [(4000, 350.0), (6000, 120.0)]


def test_cartpole_dips_sampled_episodes_draw_from_the_policy() -> None:
    """--sampled: the policy's draws, not its argmax. An untrained policy is near uniform, so its
    sampled actions leave the greedy episode (which repeats exactly from the same reset seed)."""
    import gymnasium as gym
    import torch

    from agents import GumbelSAC

    module = _cartpole_dips()
    agent, env = GumbelSAC("CartPole-v1", seed=0), gym.make("CartPole-v1")
    torch.manual_seed(0)
    _, greedy, _ = module.greedy_episode(agent, env, 1000)
    assert module.greedy_episode(agent, env, 1000)[1] == greedy
    _, sampled, end = module.greedy_episode(agent, env, 1000, deterministic=False)
    n = min(len(greedy), len(sampled))
    assert sampled[:n] != greedy[:n]
    assert end in module.episode_ends(agent, env, 1, deterministic=False)


def test_reference_suite_reads_its_configs_and_passes_the_race_flags() -> None:
    """The reference learning suite: our agents start from their shipped config's agent section,
    --set reaches our agents only, and --total / --stop-at-threshold reach every job."""
    from experiments.research.learning_bench import SB3_PPO_COMBINATORIAL, SUITES, build_jobs

    jobs = build_jobs("reference", [0, 1], overrides={"batch_size": 64}, total=500, stop_at_threshold=True)
    assert len(jobs) == 2 * len(SUITES["reference"])
    assert {(j.name, j.env_id) for j in jobs} >= {("GumbelSAC", "CartPole-v1"), ("SB3 DQN (zoo)", "Acrobot-v1"),
                                                  ("GumbelSAC pairwise", "reparl/Combinatorial-v0"),
                                                  ("SB3 SAC (lr 1e-3)", "Pendulum-v1")}
    assert all(j.total == 500 and j.stop_at_threshold and j.eval_every == 1000 and j.eval_episodes == 10 for j in jobs)
    pairwise = next(j for j in jobs if j.name == "GumbelSAC pairwise")
    assert pairwise.hp == {"critic": "pairwise", "pairwise_rank": 24, "batch_size": 64}
    ppo = next(j for j in jobs if j.algo == "sb3:PPO")
    assert ppo.hp == SB3_PPO_COMBINATORIAL  # no GumbelSAC override leaks into an SB3 column


def test_combinatorial_suite_covers_every_structure_from_its_configs() -> None:
    """GumbelSAC and SB3 PPO on each env of the suite at one budget, the threshold 75% of the optimum
    the env itself states, each job's settings read from its config file (PPO's 8 copies too)."""
    from envs.combinatorial_suite import SUITE
    from experiments.config import load_config
    from experiments.research.learning_bench import (
        COMBINATORIAL_ENVS,
        CRITIC_FORMS,
        SB3_PPO_CARTPOLE,
        SB3_PPO_COMBINATORIAL,
        build_jobs,
    )

    jobs = build_jobs("combinatorial", [0])
    env_ids = {"reparl/Combinatorial-v0", "reparl/CombinatorialMasked-v0", *(f"reparl/{n}-v0" for n in SUITE)}
    assert set(COMBINATORIAL_ENVS) == env_ids
    assert {(j.algo, j.env_id) for j in jobs} == {(a, e) for a in ("GumbelSAC", "sb3:PPO") for e in env_ids}
    assert len({j.total for j in jobs}) == 1
    # The ring's optimum, 16, is its module's docstring's (tests/test_combinatorial.py).
    optimum = {"reparl/Combinatorial-v0": 16.0, "reparl/CombinatorialMasked-v0": 16.0,
               **{f"reparl/{n}-v0": cls().optimal_return() for n, cls in SUITE.items()}}
    for job in jobs:
        assert job.threshold == 0.75 * optimum[job.env_id]
        if job.config is None:  # PPO with one copy at SB3's defaults, or at the zoo's CartPole settings
            assert job.algo == "sb3:PPO" and job.hp == ({} if "1 env" in job.name else SB3_PPO_CARTPOLE)
            continue
        cfg = load_config(REPO / "configs" / job.config)
        assert (cfg.env.id, cfg.agent.name) == (job.env_id, "PPO" if job.algo == "sb3:PPO" else "GumbelSAC")
        if job.algo == "sb3:PPO":
            assert job.hp == SB3_PPO_COMBINATORIAL == {"n_envs": cfg.env.n_envs}
        else:
            assert job.hp == cfg.agent.hyperparameters
    forms = build_jobs("combinatorial", [0, 1], only=["GumbelSAC"], overrides={"batch_size": 64},
                       variants=CRITIC_FORMS)
    assert len(forms) == 2 * len(env_ids) * len(CRITIC_FORMS)
    chain = {j.name: j.hp for j in forms if j.env_id == "reparl/CombinatorialChain-v0" and j.seed == 1}
    assert chain["GumbelSAC pairwise r64"] == {"critic": "pairwise", "pairwise_rank": 64, "batch_size": 64}
    assert chain["GumbelSAC heads"] == {"critic": "heads", "batch_size": 64}
    ring = {j.name: j.hp for j in forms if j.env_id == "reparl/Combinatorial-v0"}
    assert ring["GumbelSAC joint"]["critic"] == "joint" and ring["GumbelSAC heads"]["critic"] == "heads"
    ppo = build_jobs("combinatorial", [0], only=["SB3 PPO (defaults, 8 envs)"], variants=CRITIC_FORMS)
    assert {j.name for j in ppo} == {"SB3 PPO (defaults, 8 envs)"} and all(j.hp == {"n_envs": 8} for j in ppo)


def test_critic_forms_and_envs_by_name_and_a_misspelt_one_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """--critic-forms NAME...: only the forms named run; a name that is no form is refused in one line
    that lists the forms, before any job starts."""
    from experiments.research.learning_bench import main

    with pytest.raises(SystemExit):
        main(["--suite", "combinatorial", "--only", "GumbelSAC", "--critic-forms", "pairwise r16", "pairwise r5"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "'pairwise r5' is not a critic form" in err and "'pairwise r16'" in err
    with pytest.raises(SystemExit):  # --envs likewise: an id the suite does not run, with the ids it does
        main(["--suite", "combinatorial", "--envs", "reparl/CombinatorialAssign-v0", "reparl/Combinatorial-v1"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "'reparl/Combinatorial-v1' has no job" in err and "reparl/CombinatorialPlan-v0" in err


def test_variant_and_label_name_our_jobs_and_a_bad_spec_is_refused(capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path) -> None:
    """--variant NAME=module:Class: our agents' jobs take the class and the name, SB3's stay as they
    were, and --label TEXT appends TEXT to our names; the archived value-split command names exactly
    the jobs kept for it. A spec that is not NAME=module:Class, or names no module or class, is refused
    in one line before any job starts."""
    from experiments.research.learning_bench import build_jobs, job_file, main, with_variant

    spec = "GumbelSAC pairwise r16, value split=experiments.research.value_split:ValueSplitGumbelSAC"
    # As the archived command: straight-through, the estimator of the time (--set estimator=st).
    jobs = with_variant(build_jobs("combinatorial", [0], overrides={"estimator": "st"}, total=20_000), spec)
    ours = [j for j in jobs if not j.algo.startswith("sb3:")]
    assert ours and {(j.name, j.algo) for j in ours} == {tuple(spec.split("="))}
    assert {j.name for j in jobs if j.algo.startswith("sb3:")} == {
        j.name for j in build_jobs("combinatorial", [0]) if j.algo.startswith("sb3:")}
    kept = REPO / "benchmarks" / "kept" / "assign_value_split"
    assign = [j for j in ours if j.env_id == "reparl/CombinatorialAssign-v0"]
    assert job_file(assign[0], kept).is_file()
    for bad, says in [("value split", "give NAME=module:Class"),
                      ("v=experiments.research.value_split:NoSuchClass", "has no class 'NoSuchClass'"),
                      ("v=experiments.research.no_such_probe:X", "cannot import"),
                      ("v=os; print(1):X", "give NAME=module:Class")]:
        with pytest.raises(SystemExit):
            main(["--suite", "combinatorial", "--only", "GumbelSAC", "--variant", bad])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert says in err and repr(bad) in err, err
    main(["--suite", "exact", "--seeds", "0", "--total", "200", "--workers", "1", "--set", "estimator=st",
          "--label", "st", "--out", str(tmp_path / "st.json")])
    (ours,) = json.loads((tmp_path / "st.json").read_text())["results"]
    assert ours["name"].endswith(" st") and ours["hp"]["estimator"] == "st"


def test_lowest_after_best_reads_a_fall_from_the_first_eval_near_the_best() -> None:
    """The collapse measure: from the first eval at 75% of the run's best, the lowest, over the best; a
    run that only rises stays at the eval where it crossed; a fall before that point does not count."""
    from experiments.research.learning_bench import lowest_after_best

    rising = [(1000, 2.0), (2000, 6.0), (3000, 8.0)]
    assert lowest_after_best(rising) == pytest.approx(6.0 / 8.0)
    collapse = [(1000, 1.0), (2000, 10.0), (3000, 9.0), (4000, 4.0), (5000, 9.0)]
    assert lowest_after_best(collapse) == pytest.approx(0.4)
    early_dip = [(1000, 8.0), (2000, 0.0), (3000, 10.0)]  # 8 is already 80% of 10: the dip counts
    assert lowest_after_best(early_dip) == 0.0
    assert lowest_after_best([(1000, 0.1), (2000, 0.0), (3000, 1.0)]) == 1.0
    assert lowest_after_best([(1000, -5.0)]) is None


def test_from_until_and_against_read_the_minatar_table_at_100k(capsys: pytest.CaptureFixture[str]) -> None:
    """--from RESULTS --until STEP reads each run as ended at STEP (final = its eval there, the curve mean
    over the evals up to it); --against NAME prints one-sided Mann-Whitney p-values beside it, which for
    3 seeds wholly above 3 others is 1/20 both ways round. Checked on the shipped MinAtar results."""
    from experiments.research.learning_bench import cut_at, main

    results = json.loads((REPO / "benchmarks" / "minatar.json").read_text())["results"]
    cut = cut_at(results, 100_000)
    for r, c in zip(results, cut, strict=True):
        assert len(c["curve"]) == 10 and [list(pt) for pt in c["curve"]] == r["curve"][:10]
        assert c["final"] == dict((s, v) for s, v in r["curve"])[100_000]
    assert cut_at(results, 5_000) == []  # no run has an eval by then
    main(["--from", str(REPO / "benchmarks" / "minatar.json"), "--until", "100000",
          "--against", "SB3 DQN (MinAtar paper)"])
    rows = {line.split(" | ")[1]: line for line in capsys.readouterr().out.splitlines() if "| 3 seeds |" in line}
    assert set(rows) == {"reparl/MinAtar-Breakout-v0", "reparl/MinAtar-SpaceInvaders-v0"}
    # SpaceInvaders at 100k: every GumbelSAC eval (41.0, 53.6, 67.1) above every DQN one (15.6-20.6).
    assert "| 0.05, 1 | 0.05, 1 |" in rows["reparl/MinAtar-SpaceInvaders-v0"]
    for argv, says in [(["--until", "100000"], "add --from"),
                       (["--from", str(REPO / "benchmarks" / "minatar.json"), "--against", "DQN"],
                        "--against 'DQN' names no agent")]:
        with pytest.raises(SystemExit):
            main(argv)
        assert says in capsys.readouterr().err.strip().splitlines()[-1]


def test_keep_reruns_only_the_missing_jobs(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """--keep: each finished job is kept as it ends; a rerun with the same arguments reuses it (the
    very same result, wall seconds included) and a changed setting runs anew beside it. A job that
    runs says so on stderr (started, its evals, done, where it is kept); a reused one says nothing."""
    from experiments.research.learning_bench import Job, main, run_job

    argv = ["--suite", "exact", "--seeds", "0", "--total", "300", "--workers", "1", "--keep", str(tmp_path / "k")]
    main([*argv, "--out", str(tmp_path / "a.json")])
    err = capfd.readouterr().err  # the job's own process writes these lines
    name = "[GumbelSAC exact | CartPole-v1 | seed 0]"
    assert f"{name} started: 300 env steps" in err and f"{name} done in " in err, err
    assert f"{name} kept in {tmp_path / 'k'}" in err, err
    main([*argv, "--out", str(tmp_path / "b.json")])
    assert "started" not in capfd.readouterr().err
    job = Job("GumbelSAC", "GumbelSAC", "CartPole-v1", 300, 475.0, eval_every=100, eval_episodes=1)
    run_job(job)  # in this process: the first eval is reported, the next within a minute is not
    err = capfd.readouterr().err
    assert "seed 0] step 100/300: eval " in err and "step 200/300" not in err and "final eval" in err, err
    a, b = (json.loads((tmp_path / f"{x}.json").read_text())["results"] for x in "ab")
    assert a == b and len(a) == 1 and a[0]["wall_s"] > 0
    main([*argv[:5], "400", *argv[6:], "--out", str(tmp_path / "c.json")])
    c = json.loads((tmp_path / "c.json").read_text())["results"]
    assert c[0]["total"] == 400 and len(list((tmp_path / "k").glob("*.json"))) == 2


def test_minatar_suite_gives_sb3_dqn_the_configs_cnn() -> None:
    """The MinAtar suite: each game with GumbelSAC and SB3 DQN from their shipped configs, DQN's
    epsilon schedule rescaled to end at the paper's step, and the config's named CNN reaching SB3."""
    import dataclasses

    from experiments.research.learning_bench import build_jobs, run_job

    jobs = build_jobs("minatar", [0])
    assert {(j.algo, j.env_id) for j in jobs} == {(a, f"reparl/MinAtar-{g}-v0") for a in ("GumbelSAC", "sb3:DQN")
                                                  for g in ("Breakout", "SpaceInvaders")}
    dqn = next(j for j in jobs if j.algo == "sb3:DQN")
    assert dqn.hp["exploration_fraction"] * dqn.total == 105_000
    assert dqn.hp["policy_kwargs"]["features_extractor_class"] == "MinAtarCNN"
    result = run_job(dataclasses.replace(dqn, total=100, eval_every=100, eval_episodes=1))
    assert len(result["curve"]) == 1 and result["curve"][0][1] >= 0


def test_goal_suite_records_the_scoring_probability() -> None:
    """The goal suite's curve is the fraction of evaluation episodes that score (Goal's published
    figure), not the mean return (at most 0 unless the episode scores); an env that does not report
    info["is_success"] is refused with the reason."""
    import dataclasses

    from experiments.research.learning_bench import build_jobs, run_job

    job = build_jobs("goal", [0], total=200, eval_episodes=10)[0]
    assert (job.metric, job.threshold, job.config) == ("success", 0.789, "hybrid_sac/goal.yaml")
    result = run_job(dataclasses.replace(job, eval_every=100))
    values = [v for _, v in result["curve"]]
    assert len(values) == 2 and all(0.0 <= v <= 1.0 and round(v * 10, 9) % 1 == 0 for v in values)
    with pytest.raises(RuntimeError, match="is_success"):
        run_job(dataclasses.replace(job, env_id="CartPole-v1", algo="GumbelSAC", hp={}, total=100, eval_every=100))


def test_bench_quick_pixels_row(tmp_path: Path) -> None:
    """The pixel section: GumbelSAC and SB3 DQN with the same CNN on MinAtar, each in its own process."""
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "run.py", "bench", "--quick", "--sections", "pixels", "--rounds", "1",
                           "--updates", "3", "--env-steps", "20", "--threads", "1", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "bench.json").read_text())
    for lib in ("reparl", "sb3"):
        (row,) = result["pixels"][lib]
        assert row["updates_per_s"] > 0 and row["env_steps_per_s"] > 0
    assert "## Pixels: GumbelSAC vs SB3 DQN" in (out / "bench.md").read_text()
