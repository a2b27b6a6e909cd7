"""Learning benchmark: steps to a return threshold and final return, over seeds, beside SB3.

Each (agent, seed) trains in its own process with one torch thread, evaluating every
``eval_every`` env steps on ``eval_episodes`` deterministic episodes. Ours and SB3's models go
through the same :func:`experiments.evaluation.evaluate`, so the figures compare directly.

    python -m experiments.research.learning_bench --suite defaults --seeds 0 1 2 3 4
    python -m experiments.research.learning_bench --suite reference --seeds 0 1 2 3 4 --out ref.json

A long study is best run with ``--keep DIR``: every job keeps its result there as it ends, and the same
command run again (after a reboot, or in the next session) runs only the jobs still missing. Each job
reports on stderr as it starts, at an eval at most once a minute, and when it ends; stdout is the table.

``defaults``: GumbelSAC on CartPole-v1 and GaussianSAC on Pendulum-v1 at the agents' defaults (no
config), beside SB3's DQN (the RL Zoo's CartPole settings) and SAC (learning rate 1e-3).
``reference`` is the reference learning suite of ``benchmarks/README.md``: each of our agents at a
shipped config (its agent section read from ``configs/``) beside the SB3 counterpart used so far.

``platform`` is HybridSAC on Platform beside the relaxed-Box baselines; ``goal`` is HybridSAC's scoring
probability on Robot Soccer Goal (the curve records the fraction of evaluation episodes that score).

``minatar`` is GumbelSAC beside SB3 DQN with the same CNN on MinAtar Breakout and SpaceInvaders,
250k env steps a run (a GumbelSAC run about 40 min, a DQN run about 20, two jobs sharing 2 cores):

    python -m experiments.research.learning_bench --suite minatar --seeds 0 1 2 --keep runs/minatar --out minatar.json

``combinatorial`` is the combinatorial suite: the ring and its masked variant (``envs/combinatorial.py``)
and the six structures of ``envs/combinatorial_suite.py``, each with GumbelSAC at its shipped config
(``configs/gumbel_sac/combinatorial*.yaml``) beside SB3's default PPO with 8 copies
(``configs/baselines/ppo_combinatorial*.yaml``), 50k env steps each, threshold 75% of the optimal
return. ``--critic-forms [FORM ...]`` runs every GumbelSAC job once per critic form of :data:`CRITIC_FORMS`
named (all when none is: heads, joint, pairwise at ranks 4, 16 and 64), as "GumbelSAC <form>"; one form
alone is also ``--set``:

    python -m experiments.research.learning_bench --suite combinatorial --seeds 0 1 2 3 4 --out combi.json
    python -m experiments.research.learning_bench --suite combinatorial --critic-forms --only GumbelSAC
    python -m experiments.research.learning_bench --suite combinatorial --critic-forms "pairwise r4" --only GumbelSAC
    python -m experiments.research.learning_bench --suite combinatorial --set critic=pairwise pairwise_rank=64

``--set KEY=VALUE ... --label TEXT`` runs our agents' jobs with other settings, named "<name> TEXT"
(``--set estimator=exact --label exact``); ``--variant NAME=module:Class`` runs them with a research
subclass (a probe's critic or policy, e.g. :mod:`experiments.research.value_split`), beside the same
baselines, seeds and budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Job:
    name: str
    algo: str  # "GumbelSAC", "GaussianSAC", "sb3:DQN", "sb3:SAC", "sb3:PPO", or a variant's "module:Class"
    env_id: str
    total: int
    threshold: float
    hp: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    eval_every: int = 1000
    eval_episodes: int = 10
    stop_at_threshold: bool = False  # end the run at the first eval >= threshold (wall-clock races)
    threads: int = 1
    device: str = "cpu"
    # A shipped config (relative to configs/) whose agent section the hyperparameters start from, so
    # the suite trains what `run.py train` on that file trains; resolved by build_jobs, so the
    # results JSON records the resulting hp.
    config: str | None = None
    # What the curve records: the mean return, or the fraction of evaluation episodes ending with
    # info["is_success"] (Goal's scoring probability, the figure its papers publish).
    metric: str = "return"


# RL Zoo's tuned settings (rl-baselines3-zoo hyperparams/dqn.yml, ppo.yml, sac.yml).
SB3_DQN_CARTPOLE = dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000,
                        gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128,
                        exploration_fraction=0.16, exploration_final_eps=0.04, policy_kwargs={"net_arch": [256, 256]})
SB3_DQN_ACROBOT = dict(learning_rate=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=0, gamma=0.99,
                       target_update_interval=250, train_freq=4, gradient_steps=-1, exploration_fraction=0.12,
                       exploration_final_eps=0.1, policy_kwargs={"net_arch": [256, 256]})
SB3_SAC_PENDULUM = dict(learning_rate=1e-3)
SB3_PPO_CARTPOLE = dict(n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
                        learning_rate=1e-3, clip_range=0.2, n_envs=8)
# The zoo has no Combinatorial-v0 entry: SB3's default PPO with 8 copies, as configs/baselines/ppo_combinatorial.yaml.
SB3_PPO_COMBINATORIAL = dict(n_envs=8)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# The combinatorial suite: env id -> (config name after gumbel_sac/ and baselines/ppo_, optimal return),
# the optimum as each env's docstring states and tests/test_combinatorial_suite.py proves.
COMBINATORIAL_ENVS: dict[str, tuple[str, float]] = {
    "reparl/Combinatorial-v0": ("combinatorial", 16.0),
    "reparl/CombinatorialMasked-v0": ("combinatorial_masked", 16.0),
    "reparl/CombinatorialChain-v0": ("combinatorial_chain", 16.0),
    "reparl/CombinatorialTriples-v0": ("combinatorial_triples", 16.0),
    "reparl/CombinatorialAssign-v0": ("combinatorial_assign", 16.0),
    "reparl/CombinatorialPairs-v0": ("combinatorial_pairs", 16.0),
    "reparl/CombinatorialPlan-v0": ("combinatorial_plan", 12.0),
    "reparl/CombinatorialAssignMasked-v0": ("combinatorial_assign_masked", 16.0),
}
COMBINATORIAL_BUDGET = 50_000
COMBINATORIAL_FRACTION = 0.75  # the threshold: this fraction of the optimal return
# --critic-forms: each GumbelSAC job once per entry, named "GumbelSAC <key>".
CRITIC_FORMS: dict[str, dict[str, Any]] = {
    "heads": {"critic": "heads"},
    "joint": {"critic": "joint"},
    "pairwise r4": {"critic": "pairwise", "pairwise_rank": 4},
    "pairwise r16": {"critic": "pairwise", "pairwise_rank": 16},
    "pairwise r64": {"critic": "pairwise", "pairwise_rank": 64},
}


PROGRESS_EVERY_S = 60.0  # a job reports its latest eval at most this often (a MinAtar run takes ~40 min)
KEPT_MAX_BYTES = 16 * 2**20  # one job's result (its curve) is a few kB
RESULTS_MAX_BYTES = 256 * 2**20  # a whole study's --out file: a few hundred kB per hundred jobs


def job_file(job: Job, folder: Path) -> Path:
    """Where ``--keep DIR`` keeps one finished job's result: a name from the job's identity and a
    hash of everything the job sets, so a changed setting never reuses an old result. An agent's
    defaults are not in the job: when one moves, the kept jobs that ran under the old value are
    renamed to carry it (``--set KEY=OLD``, as the straight-through studies were when ``estimator``
    became ``auto``)."""
    import hashlib

    key = hashlib.sha256(json.dumps(asdict(job), sort_keys=True).encode()).hexdigest()[:12]
    slug = "".join(c if c.isalnum() else "_" for c in f"{job.name}_{job.env_id}_s{job.seed}")
    return folder / f"{slug}_{key}.json"


def progress(job: Job, text: str) -> None:
    """One line on stderr about ``job``, so a long study shows where each worker is; stdout keeps the table."""
    print(f"[{job.name} | {job.env_id} | seed {job.seed}] {text}", file=sys.stderr, flush=True)


def run_kept(job_and_folder: tuple[Job, Path | None]) -> dict[str, Any]:
    """:func:`run_job`, or the result ``--keep`` already holds for this exact job (a long study
    stopped part way reruns only what is missing); a new result is written there atomically."""
    job, folder = job_and_folder
    if folder is None:
        return run_job(job)
    path = job_file(job, folder)
    if path.exists() and path.stat().st_size <= KEPT_MAX_BYTES:  # a larger file is not one of ours: rerun
        kept = json.loads(path.read_text())
        if isinstance(kept, dict) and kept.get("job") == json.loads(json.dumps(asdict(job))):
            return kept["result"]
    result = run_job(job)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"job": asdict(job), "result": result}))
    tmp.replace(path)
    progress(job, f"kept in {path}")
    return result


def run_job(job: Job) -> dict[str, Any]:
    import torch

    torch.set_num_threads(job.threads)
    import envs  # noqa: F401  (registers reparl/ ids in this spawned process, for SB3 and for evaluation)
    from experiments.evaluation import evaluate

    curve: list[tuple[int, float]] = []
    # Wall-clock spent evaluating is kept apart, so "seconds of training to reach the threshold"
    # does not depend on how long the evaluation episodes of a good policy are.
    clock = {"eval_s": 0.0, "first_train_s": None, "reported": 0.0}
    t0 = time.perf_counter()
    progress(job, f"started: {job.total:,} env steps, an eval every {job.eval_every:,}")

    def evaluate_at(model: Any, step: int) -> bool:
        """Evaluate, record; False once the threshold is reached and the job stops there."""
        t = time.perf_counter()
        trained_s = t - t0 - clock["eval_s"]
        r = evaluate(model, job.env_id, job.eval_episodes, seed=10_000 + step)
        clock["eval_s"] += time.perf_counter() - t
        if job.metric == "success":
            if r.successes is None:
                raise RuntimeError(f"{job.env_id} does not report info['is_success'] at every episode's end; "
                                   "metric='success' needs it")
            value = float(r.successes.mean())
        else:
            value = r.mean
        curve.append((step, value))
        if value >= job.threshold and clock["first_train_s"] is None:
            clock["first_train_s"] = trained_s
        now = time.perf_counter()
        if now - clock["reported"] >= PROGRESS_EVERY_S:
            clock["reported"] = now
            progress(job, f"step {step:,}/{job.total:,}: eval {value:.2f} after {(now - t0) / 60:.1f} min")
        return not (job.stop_at_threshold and clock["first_train_s"] is not None)
    if job.algo.startswith("sb3:"):
        import stable_baselines3 as sb3
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.env_util import make_vec_env

        hp = dict(job.hp)
        n_envs = hp.pop("n_envs", 1)
        if hp.get("policy_kwargs") is not None:  # classes a config names (MinAtarCNN, RMSprop), never paths
            from experiments.sb3_extractors import resolve_policy_kwargs

            hp["policy_kwargs"] = resolve_policy_kwargs(hp["policy_kwargs"])
        cls = getattr(sb3, job.algo[4:])
        env = make_vec_env(job.env_id, n_envs=n_envs, seed=job.seed)
        model = cls("MlpPolicy", env, seed=job.seed, device=job.device, verbose=0, **hp)

        class EvalCB(BaseCallback):
            next_eval = job.eval_every

            def _on_step(self) -> bool:
                go_on = True
                if self.num_timesteps >= self.next_eval:
                    self.next_eval += job.eval_every
                    go_on = evaluate_at(self.model, self.next_eval - job.eval_every)
                # PPO collects whole rollouts (8 x 2048 steps at SB3's defaults), so learn(total)
                # would run past the budget the other columns get; stop it there.
                return go_on and self.num_timesteps < job.total

        model.learn(job.total, callback=EvalCB())
    else:
        model = agent_class(job.algo)(job.env_id, seed=job.seed, device=job.device, **job.hp)
        state = {"next": job.eval_every}

        def cb(agent: Any) -> bool:
            if agent.num_timesteps >= state["next"]:
                state["next"] += job.eval_every
                return evaluate_at(agent, state["next"] - job.eval_every)
            return True

        model.learn(job.total, callback=cb)
    wall = time.perf_counter() - t0
    first = next((s for s, r in curve if r >= job.threshold), None)
    final = curve[-1][1] if curve else None
    progress(job, f"done in {wall / 60:.1f} min: " + ("no eval" if final is None else f"final eval {final:.2f}"))
    return {**asdict(job), "curve": curve, "first": first, "final": final,
            "min_after_first": min_after(curve, first),
            "wall_s": wall, "eval_s": clock["eval_s"], "first_train_s": clock["first_train_s"]}


def min_after(curve: list[tuple[int, float]], first: int | None) -> float | None:
    """The lowest eval from step ``first`` (the first at the threshold) on; None when it never got there."""
    return min((v for s, v in curve if first is not None and s >= first), default=None)


def curve_mean(r: dict[str, Any]) -> float:
    """One run's mean evaluation: the area under its curve over its length."""
    return float(np.mean([v for _, v in r["curve"]]))


def by_agent_env(results: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """``results`` grouped by (agent name, env id), in first-seen order."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault((r["name"], r["env_id"]), []).append(r)
    return by


def _median_seconds(rs: list[dict[str, Any]]) -> str:
    """Median training seconds (evaluation excluded) to the first eval at the threshold; "never"
    counts as infinitely slow, so the median is "never" once half the seeds never got there."""
    med = float(np.median([r["first_train_s"] if r["first_train_s"] is not None else np.inf for r in rs]))
    return "never" if med == np.inf else f"{med:.0f}"


def curve_means(rs: list[dict[str, Any]]) -> str:
    """The IQM over seeds of each run's mean evaluation (the area under its curve over its length):
    how fast it learned, where "final" is only where it ended."""
    from experiments.compare import iqm

    means = [curve_mean(r) for r in rs if r["curve"]]
    return f"{float(iqm(np.array(means))):.3g}" if means else "-"


def lowest_after_best(curve: list[tuple[int, float]], fraction: float = 0.75) -> float | None:
    """Collapse after learning: the lowest evaluation from the first one at ``fraction`` of the run's best
    onwards, as a fraction of that best (1: never fell below the best once there; None: best <= 0, where
    the ratio means nothing). Needs no optimum, so it reads the same on a run that never nears one."""
    values = [v for _, v in curve]
    best = max(values, default=0.0)
    if best <= 0:
        return None
    start = next(i for i, v in enumerate(values) if v >= fraction * best)
    return min(values[start:]) / best


def summarize(results: list[dict[str, Any]]) -> str:
    from experiments.compare import bootstrap_ci, iqm

    rows = ["| agent | env | seeds | first step ≥ threshold (per seed) | median | final (per seed) | "
            "final IQM [95% CI] | min after first | lowest after 75% of best, / best | curve mean IQM | "
            "wall s (median) | train s to threshold (median) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, env_id), rs in by_agent_env(results).items():
        rs.sort(key=lambda r: r["seed"])
        firsts = [r["first"] for r in rs]
        reached = sorted(f if f is not None else float("inf") for f in firsts)
        med = float(np.median(reached))  # inf ("never") when the middle seed never got there
        finals = ", ".join("-" if r["final"] is None else f"{r['final']:.3g}" for r in rs)
        values = np.array([r["final"] for r in rs if r["final"] is not None], dtype=float)  # None: no eval yet
        iqm_cell = "-"
        if len(values):
            low, high = bootstrap_ci(values) if len(values) > 1 else (values[0], values[0])
            iqm_cell = f"{float(iqm(values)):.2f} [{float(low):.2f}, {float(high):.2f}]"
        mins = ", ".join("-" if r["min_after_first"] is None else f"{r['min_after_first']:.3g}" for r in rs)
        fmt = lambda f: "never" if f is None else f"{f / 1000:g}k"  # noqa: E731
        dips = [lowest_after_best(r["curve"]) for r in rs]
        dip_cell = ", ".join("-" if d is None else f"{d:.2f}" for d in dips)
        rows.append(f"| {name} | {env_id} | {len(rs)} | {', '.join(fmt(f) for f in firsts)} | "
                    f"{'never' if med == float('inf') else f'{med / 1000:g}k'} | "
                    f"{finals} | {iqm_cell} | {mins} | {dip_cell} | {curve_means(rs)} | "
                    f"{np.median([r['wall_s'] for r in rs]):.0f} | {_median_seconds(rs)} |")
    return "\n".join(rows)


SUITES: dict[str, list[Job]] = {
    # Each agent at its defaults, beside SB3 (Pendulum has no reward_threshold: -200).
    "defaults": [
        Job("GumbelSAC", "GumbelSAC", "CartPole-v1", 50_000, 475.0),
        Job("SB3 DQN (zoo)", "sb3:DQN", "CartPole-v1", 50_000, 475.0, SB3_DQN_CARTPOLE),
        Job("GaussianSAC", "GaussianSAC", "Pendulum-v1", 10_000, -200.0),
        Job("SB3 SAC (lr 1e-3)", "sb3:SAC", "Pendulum-v1", 10_000, -200.0, SB3_SAC_PENDULUM),
    ],
    # The exact-expectation reference at the same defaults, beside the defaults suite's straight-through.
    "exact": [Job("GumbelSAC exact", "GumbelSAC", "CartPole-v1", 20_000, 475.0, {"estimator": "exact"})],
    # A task no default was tuned on (RL Zoo DQN: -76.6 at 100k).
    "acrobot": [Job("GumbelSAC", "GumbelSAC", "Acrobot-v1", 30_000, -100.0)],
    # The reference learning suite (benchmarks/README.md): each agent at a shipped config beside
    # the SB3 column used for that env so far, at gymnasium's thresholds (Pendulum has none: -200,
    # as in the defaults suite; Combinatorial-v0: 8 of an optimal 16, random 4).
    "reference": [
        Job("GumbelSAC", "GumbelSAC", "CartPole-v1", 20_000, 475.0, config="gumbel_sac/cartpole.yaml"),
        Job("SB3 DQN (zoo)", "sb3:DQN", "CartPole-v1", 20_000, 475.0, SB3_DQN_CARTPOLE),
        Job("GumbelSAC", "GumbelSAC", "Acrobot-v1", 50_000, -100.0, config="gumbel_sac/acrobot.yaml"),
        Job("SB3 DQN (zoo)", "sb3:DQN", "Acrobot-v1", 50_000, -100.0, SB3_DQN_ACROBOT),
        Job("GumbelSAC pairwise", "GumbelSAC", "reparl/Combinatorial-v0", 20_000, 8.0,
            config="gumbel_sac/combinatorial_pairwise.yaml"),
        Job("SB3 PPO (defaults, 8 envs)", "sb3:PPO", "reparl/Combinatorial-v0", 20_000, 8.0, SB3_PPO_COMBINATORIAL),
        Job("GaussianSAC", "GaussianSAC", "Pendulum-v1", 10_000, -200.0, config="gaussian_sac/pendulum.yaml"),
        Job("SB3 SAC (lr 1e-3)", "sb3:SAC", "Pendulum-v1", 10_000, -200.0, SB3_SAC_PENDULUM),
    ],
    # Platform (Masson et al. 2016): the hybrid agent on the parameterized actions beside what a user would
    # try instead, the action relaxed into one Box (PA-DDPG's relaxation, envs/hybrid.py): GaussianSAC and
    # SB3's SAC and PPO at their defaults. Return normalized to [0, 1]; threshold MP-DQN's 0.95.
    "platform": [
        Job("HybridSAC", "HybridSAC", "reparl/Platform-v0", 20_000, 0.95, eval_episodes=20,
            config="hybrid_sac/platform.yaml"),
        Job("HybridSAC st", "HybridSAC", "reparl/Platform-v0", 20_000, 0.95, {"estimator": "st"}, eval_episodes=20,
            config="hybrid_sac/platform.yaml"),
        Job("GaussianSAC (relaxed Box)", "GaussianSAC", "reparl/PlatformRelaxed-v0", 20_000, 0.95, eval_episodes=20,
            config="gaussian_sac/platform_relaxed.yaml"),
        Job("SB3 SAC (relaxed Box)", "sb3:SAC", "reparl/PlatformRelaxed-v0", 20_000, 0.95, eval_episodes=20),
        Job("SB3 PPO (relaxed Box)", "sb3:PPO", "reparl/PlatformRelaxed-v0", 20_000, 0.95, eval_episodes=20),
    ],
    # Robot Soccer Goal (envs/goal.py): the scoring probability over 100 evaluation episodes (95%
    # interval about +-0.1), beside MP-DQN's published 0.789 (Bester et al. 2019), which is the threshold.
    "goal": [
        Job("HybridSAC", "HybridSAC", "reparl/Goal-v0", 30_000, 0.789, eval_every=2000, eval_episodes=100,
            config="hybrid_sac/goal.yaml", metric="success"),
    ],
    # MinAtar (Young and Tian 2019; envs/minatar.py): GumbelSAC at its shipped configs beside SB3 DQN at
    # the paper's DQN settings with the paper's network (configs/baselines/dqn_minatar_*.yaml; the same
    # CNN through policy_kwargs), 250k env steps each. About 40 min per GumbelSAC run and 20 per DQN run,
    # two jobs sharing a 2-core machine and nothing else (3 seeds of both games: ~3 h): run it with --keep.
    "minatar": [
        job
        for game, name in (("Breakout", "breakout"), ("SpaceInvaders", "space_invaders"))
        for job in (Job("GumbelSAC", "GumbelSAC", f"reparl/MinAtar-{game}-v0", 250_000, float("inf"),
                        eval_every=10_000, config=f"gumbel_sac/minatar_{name}.yaml"),
                    # epsilon reaches 0.1 at step 105k as in the paper (the config's 0.21 is of its 500k).
                    Job("SB3 DQN (MinAtar paper)", "sb3:DQN", f"reparl/MinAtar-{game}-v0", 250_000, float("inf"),
                        {"exploration_fraction": 105_000 / 250_000}, eval_every=10_000,
                        config=f"baselines/dqn_minatar_{name}.yaml"))
    ],
    "combinatorial": [
        job
        for env_id, (name, optimum) in COMBINATORIAL_ENVS.items()
        for job in (Job("GumbelSAC", "GumbelSAC", env_id, COMBINATORIAL_BUDGET, COMBINATORIAL_FRACTION * optimum,
                        config=f"gumbel_sac/{name}.yaml"),
                    # No masks for PPO on the masked envs (that is sb3-contrib's MaskablePPO, not a
                    # dependency): the masks are in its observation, and a forbidden choice pays 0.
                    Job("SB3 PPO (defaults, 8 envs)", "sb3:PPO", env_id, COMBINATORIAL_BUDGET,
                        COMBINATORIAL_FRACTION * optimum, config=f"baselines/ppo_{name}.yaml"),
                    # One copy: 2,048-step rollouts, so PPO updates ~24 times in 50k steps rather than 3.
                    Job("SB3 PPO (defaults, 1 env)", "sb3:PPO", env_id, COMBINATORIAL_BUDGET,
                        COMBINATORIAL_FRACTION * optimum),
                    # The zoo tunes no MultiDiscrete task; its PPO for small discrete tasks (CartPole-v1):
                    # 8 copies x 32-step rollouts, 20 epochs: ~78 policy iterations in 20k steps, not ~10 (the
                    # zoo anneals lr and clip range linearly from these values; here they stay constant).
                    Job("SB3 PPO (zoo CartPole settings)", "sb3:PPO", env_id, COMBINATORIAL_BUDGET,
                        COMBINATORIAL_FRACTION * optimum, SB3_PPO_CARTPOLE))
    ],
}


def cut_at(results: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    """``results`` as if every run had ended at env step ``step``: the curve up to it, "final" its last
    eval (a 100k probe read beside the same seeds' 250k runs). A run with no eval by then is dropped;
    "wall_s" stays the whole run's."""
    out = []
    for r in results:
        curve = [(s, v) for s, v in r["curve"] if s <= step]
        if curve:
            first = r["first"] if r["first"] is not None and r["first"] <= step else None
            out.append({**r, "curve": curve, "final": curve[-1][1], "first": first,
                        "first_train_s": r["first_train_s"] if first is not None else None,
                        "min_after_first": min_after(curve, first)})
    return out


def versus(results: list[dict[str, Any]], reference: str) -> str:
    """Each agent against ``reference`` on every env both ran: one-sided Mann-Whitney U p-values
    (``scipy.stats.mannwhitneyu``, exact for small samples) that it is above, and that it is below, on
    the final evals and on the curve means. With 3 seeds against 3 the smallest p is 1/20 = 0.05."""
    from scipy.stats import mannwhitneyu

    by = by_agent_env(results)
    if not any(name == reference for name, _ in by):
        raise ValueError(f"--against {reference!r} names no agent in the results; "
                         f"they hold {', '.join(sorted({n for n, _ in by}))}")
    rows = [f"| agent | env | seeds | against {reference} | final: p above, p below | "
            "curve mean: p above, p below |", "|---|---|---|---|---|---|"]
    for (name, env_id), rs in by.items():
        base = by.get((reference, env_id))
        if name == reference or not base:
            continue
        cells = []
        for key in (lambda r: r["final"], curve_mean):
            a, b = [key(r) for r in rs], [key(r) for r in base]
            cells.append(f"{mannwhitneyu(a, b, alternative='greater').pvalue:.3g}, "
                         f"{mannwhitneyu(a, b, alternative='less').pvalue:.3g}")
        rows.append(f"| {name} | {env_id} | {len(rs)} | {len(base)} seeds | {cells[0]} | {cells[1]} |")
    return "\n".join(rows)


def plot(results: list[dict[str, Any]], out: Path) -> Path:
    """The curves of ``results``, one panel per env, mean over seeds with a 95% bootstrap band
    (:func:`experiments.compare.plot_curves`). A relaxed-Box id shares its hybrid env's panel
    (``envs/hybrid.py`` registers ``reparl/<Name>Relaxed-v0`` beside ``reparl/<Name>-v0``)."""
    from experiments.compare import Group, Run, plot_curves

    groups: dict[tuple[str, str], Group] = {}
    thresholds: dict[str, float | None] = {}
    for r in results:
        panel = r["env_id"].replace("Relaxed-", "-")
        thresholds[panel] = r["threshold"]
        g = groups.setdefault((r["name"], panel), Group(panel, r["algo"], r["name"]))
        steps, values = zip(*r["curve"], strict=True)
        g.runs.append(Run(Path(f"seed{r['seed']}"), {"env.id": panel}, np.array(steps), np.array(values)))
    metric = "scoring probability" if any(r.get("metric") == "success" for r in results) else "eval return"
    return plot_curves(list(groups.values()), out, metric, thresholds)


def config_hyperparameters(config: str) -> dict[str, Any]:
    """The agent section of ``configs/<config>`` (validated as ``run.py train`` validates it), with
    ``n_envs`` from its env section where that is not 1 (both run_job paths take it as a hyperparameter)."""
    from experiments.config import load_config

    cfg = load_config(CONFIGS / config)
    return {**cfg.agent.hyperparameters, **({"n_envs": cfg.env.n_envs} if cfg.env.n_envs != 1 else {})}


def build_jobs(suite: str, seeds: list[int], only: list[str] | None = None, overrides: dict[str, Any] | None = None,
               total: int | None = None, eval_episodes: int | None = None,
               stop_at_threshold: bool = False, variants: dict[str, dict[str, Any]] | None = None) -> list[Job]:
    """One job per (suite entry, seed); ``overrides`` go to our agents only, over a config's agent section.
    ``variants`` (e.g. :data:`CRITIC_FORMS`): each GumbelSAC entry once per variant, named
    "<name> <variant>", the variant's settings between the config's and ``overrides``."""
    jobs = []
    for base in SUITES[suite]:
        if only and base.name not in only:
            continue
        hp = {**(config_hyperparameters(base.config) if base.config else {}), **base.hp}
        expanded = [(base.name, {})]
        if variants and base.algo == "GumbelSAC":
            expanded = [(f"{base.name} {key}", extra) for key, extra in variants.items()]
        for name, extra in expanded:
            job_hp = dict(hp) if base.algo.startswith("sb3:") else {**hp, **extra, **(overrides or {})}
            for seed in seeds:
                jobs.append(dataclasses.replace(base, name=name, total=total or base.total, hp=dict(job_hp),
                                                seed=seed, eval_episodes=eval_episodes or base.eval_episodes,
                                                stop_at_threshold=stop_at_threshold))
    return jobs


def agent_class(algo: str) -> type:
    """Our agent a job names: one of :data:`agents.AGENTS` by name, or a research subclass named in code
    as "module:Class" (``--variant``)."""
    from agents import AGENTS

    if ":" not in algo:
        return AGENTS[algo]
    module, cls_name = algo.split(":")
    return getattr(importlib.import_module(module), cls_name)


def with_variant(jobs: list[Job], spec: str) -> list[Job]:
    """``--variant NAME=module:Class``: our agents' jobs run the research class ``Class`` of ``module``
    (a subclass of one of :data:`agents.AGENTS`, such as :mod:`experiments.research.value_split`'s), named
    NAME; SB3's jobs are left as they are, so a variant runs beside the same baselines and seeds. The
    class is imported here, so a misspelt one is refused before any job starts."""
    name, sep, target = spec.rpartition("=")
    module, colon, cls_name = target.partition(":")
    if not (sep and name and colon and cls_name.isidentifier()
            and all(part.isidentifier() for part in module.split("."))):
        raise ValueError(f"--variant {spec!r}: give NAME=module:Class, e.g. "
                         "'GumbelSAC value split=experiments.research.value_split:ValueSplitGumbelSAC'")
    try:
        found = agent_class(target)
    except ImportError as e:
        raise ValueError(f"--variant {spec!r}: cannot import {module!r} ({e}); name a module of this "
                         "repository, e.g. experiments.research.value_split") from None
    except AttributeError:
        found = None
    if not isinstance(found, type):
        raise ValueError(f"--variant {spec!r}: {module!r} has no class {cls_name!r}")
    return [j if j.algo.startswith("sb3:") else dataclasses.replace(j, name=name, algo=target) for j in jobs]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="defaults", choices=sorted(SUITES),
                   help="defaults: each agent at its defaults beside SB3; reference: the shipped configs "
                        "(benchmarks/README.md); platform, goal: the hybrid agent; minatar: pixels; exact, "
                        "acrobot: single GumbelSAC jobs (default: defaults)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--only", nargs="*", default=None, help="names of the suite's jobs to run")
    p.add_argument("--envs", nargs="*", default=None, metavar="ID", help="run only the suite's jobs on these env ids")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="hyperparameter overrides for our agents (JSON values)")
    p.add_argument("--total", type=int, default=None, help="override every job's env-step budget")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=None, help="write results JSON here")
    p.add_argument("--eval-episodes", type=int, default=None,
                   help="episodes per evaluation for every job (default: each job's own, 10); the CartPole "
                        "race of run.py bench uses 100, Gymnasium's 'solved'")
    p.add_argument("--stop-at-threshold", action="store_true",
                   help="end each run at its first eval >= threshold (a wall-clock race; 'final' is then that eval)")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="keep each finished job's result in DIR as it ends, and reuse the ones there: a study "
                        "stopped part way, rerun with the same arguments, runs only the jobs still missing")
    p.add_argument("--plot", type=Path, default=None,
                   help="draw the curves here (PNG), from this run or, with --from, from saved results")
    p.add_argument("--from", dest="from_", type=Path, nargs="+", default=None, metavar="JSON",
                   help="summarize and plot results JSON files written by --out instead of running jobs")
    p.add_argument("--until", type=int, default=None, metavar="STEP",
                   help="with --from: read every run as if it had ended at env step STEP (a shorter probe "
                        "beside longer runs of the same seeds)")
    p.add_argument("--against", default=None, metavar="NAME",
                   help="with --from: one-sided Mann-Whitney p-values of each agent against agent NAME "
                        "on the same env (finals and curve means)")
    p.add_argument("--critic-forms", nargs="*", default=None, metavar="FORM",
                   help=f"run each GumbelSAC job once per critic form named (default: all of "
                        f"{', '.join(repr(k) for k in CRITIC_FORMS)})")
    p.add_argument("--variant", default=None, metavar="NAME=MODULE:CLASS",
                   help="run our agents' jobs with a research subclass instead, named NAME (SB3's jobs "
                        "unchanged), e.g. 'GumbelSAC value split=experiments.research.value_split:ValueSplitGumbelSAC'")
    p.add_argument("--label", default=None, metavar="TEXT",
                   help="append TEXT to our agents' job names, so a --set study reads apart from the same jobs "
                        "without it (e.g. --set estimator=exact --label exact)")
    args = p.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    if args.eval_episodes is not None and args.eval_episodes < 1:
        p.error(f"--eval-episodes {args.eval_episodes}: an evaluation needs at least 1 episode")
    overrides = {k: json.loads(v) if v[:1] in "[{0123456789-tfn" else v for k, v in (s.split("=", 1) for s in args.set)}
    if (args.until is not None or args.against is not None) and not args.from_:
        p.error("--until and --against read saved results: add --from RESULTS.json")
    if args.until is not None and args.until < 1:
        p.error(f"--until {args.until}: give an env step of at least 1")
    if args.from_:
        for path in args.from_:
            if not path.is_file() or path.stat().st_size > RESULTS_MAX_BYTES:
                p.error(f"--from {path}: not a results file of at most {RESULTS_MAX_BYTES // 2**20} MiB; "
                        "pass the JSON that --out wrote")
        results = [r for path in args.from_ for r in json.loads(path.read_text())["results"]]
        if args.until is not None:
            results = cut_at(results, args.until)
        print(summarize(results))
        if args.against is not None:
            try:
                print("\n" + versus(results, args.against))
            except ValueError as e:
                p.error(str(e))
        if args.plot:
            print(f"curves: {plot(results, args.plot)}")
        return
    forms = None
    if args.critic_forms is not None:
        unknown = [f for f in args.critic_forms if f not in CRITIC_FORMS]
        if unknown:
            p.error(f"--critic-forms {unknown[0]!r} is not a critic form; "
                    f"choose from {', '.join(map(repr, CRITIC_FORMS))}")
        forms = {k: v for k, v in CRITIC_FORMS.items() if not args.critic_forms or k in args.critic_forms}
    jobs = build_jobs(args.suite, args.seeds, args.only, overrides, args.total, args.eval_episodes,
                      args.stop_at_threshold, forms)
    if args.envs is not None:
        known = sorted({j.env_id for j in jobs})
        for env_id in args.envs:
            if env_id not in known:
                p.error(f"--envs {env_id!r} has no job in suite {args.suite!r}; its envs: {', '.join(known)}")
        jobs = [j for j in jobs if j.env_id in args.envs]
    if args.variant is not None:
        try:
            jobs = with_variant(jobs, args.variant)
        except ValueError as e:
            p.error(str(e))
    if args.label:
        jobs = [j if j.algo.startswith("sb3:") else dataclasses.replace(j, name=f"{j.name} {args.label}") for j in jobs]
    with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        results = pool.map(run_kept, [(j, args.keep) for j in jobs], chunksize=1)
    table = summarize(results)
    print(table)
    if args.plot:
        print(f"curves: {plot(results, args.plot)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = sys.argv[1:] if argv is None else argv  # the study's command, recorded beside its results
        args.out.write_text(json.dumps({"argv": command, "overrides": overrides, "results": results}, indent=1))


if __name__ == "__main__":
    main()
