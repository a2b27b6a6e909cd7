"""Speed benchmark beside stable-baselines3: ``run.py bench``.

Every measurement runs in a fresh process, one at a time, ours and SB3's alternating for
``--rounds`` rounds; tables report medians and the ratio ours / SB3. Machines here are shared
and noisy, so only same-run ratios mean anything: no figure from a different run is compared.

Sections:
  throughput  GaussianSAC (defaults: the compiled update; and compile=false, eager) vs SB3 SAC on
              Pendulum-v1 at identical settings: env steps/s once
              learning has started, pure updates/s, FLOPs per update (counted by
              torch.utils.flop_counter, not assumed), GFLOP/s against the 256^3 fp32 matmul peak
              measured in the same process, and peak memory.
  scaling     GaussianSAC updates/s as batch size and width grow, with GFLOP/s beside the peak.
  envs        env steps/s during learning as the number of vector envs grows (ours and SB3).
  cartpole    GumbelSAC (defaults, and a smaller network and batch) vs SB3 DQN (RL Zoo settings):
              training wall-clock seconds to first reach eval >= 475 on CartPole-v1 (evaluation
              time excluded), per seed. An evaluation is 100 episodes by default, Gymnasium's
              definition of solving CartPole-v1 (a mean of 475 over 100 consecutive episodes);
              10-episode means pass by chance more often (benchmarks/archive/README.md, "The CartPole race").
  pairwise    GumbelSAC's update with the pairwise critic (defaults otherwise: the compiled update) as
              its rank and the number of factors grow at 4 choices each (reparl/Combinatorial-v0
              resized): milliseconds per update, median of --rounds, and FLOPs per update (counted
              on an eager twin). The critic's output is T (1 + R) wide, T = 4 F, and its pairwise
              term costs O(T R) per sample (agents.heads.pairwise_q), so at a fixed rank the cost
              should grow no faster than linearly in F.

    python run.py bench                       # everything: ~15 min on 2 cores, then the pairwise
                                              # section compiles an update for each of its 12 cells
    python run.py bench --sections throughput --rounds 5
    python run.py bench --sections pairwise --rounds 1
    python run.py bench --sections pixels
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

SECTIONS = ("throughput", "scaling", "envs", "cartpole", "pairwise", "pixels")

# Identical settings for both libraries: SB3 SAC's defaults, written out (sac.py), with ours set to match.
# Rows of the throughput table: (label, GaussianSAC hyperparameters beyond SAC_SETTINGS).
THROUGHPUT_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "reparl": ("reparl GaussianSAC (defaults: the update compiled)", {}),
    "reparl_eager": ("reparl GaussianSAC, compile=false (eager)", {"compile": False}),
    "sb3": ("SB3 SAC", {}),
}
# Columns of the CartPole race: (label, GumbelSAC hyperparameters). The zoo tuned DQN's CartPole
# settings for this task (batch 64, 128 updates per 256 steps); the second column is GumbelSAC
# tuned the same way, for CartPole, by configs/gumbel_sac/cartpole_fast.yaml (read from there).
RACE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "gumbel_sac" / "cartpole_fast.yaml"
RACE_VARIANTS: dict[str, tuple[str, dict[str, Any] | Path]] = {
    "reparl": ("GumbelSAC (defaults)", {}),
    "reparl_tuned": ("GumbelSAC, configs/gumbel_sac/cartpole_fast.yaml", RACE_CONFIG),
}
SAC_SETTINGS: dict[str, Any] = {"learning_rate": 3e-4, "buffer_size": 1_000_000, "learning_starts": 1000,
                                "batch_size": 256, "tau": 0.005, "gamma": 0.99, "train_freq": 1,
                                "gradient_steps": 1, "net_arch": [256, 256]}


def _ours_hp(s: dict[str, Any]) -> dict[str, Any]:
    return {"learning_rate": s["learning_rate"], "critic_learning_rate": s["learning_rate"],
            "buffer_size": s["buffer_size"], "learning_starts": s["learning_starts"], "batch_size": s["batch_size"],
            "target_update_rate": s["tau"], "gamma": s["gamma"], "train_freq": s["train_freq"],
            "gradient_steps": s["gradient_steps"], "net_arch": s["net_arch"], "n_critics": 2, "alpha": 1.0}


def _sb3_hp(s: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in s.items() if k != "net_arch"} | {"policy_kwargs": {"net_arch": s["net_arch"]}}


def matmul_peak_gflops(n: int = 256, reps: int = 400) -> float:
    """fp32 (n x n) @ (n x n) GFLOP/s, best of 5 timed blocks: the compute ceiling of this process."""
    import torch

    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    for _ in range(20):
        torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 * reps / best / 1e9


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _count_flops(fn: Any) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process. ``spec["lib"]`` is "reparl" or "sb3"."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device, settings = spec["device"], spec["settings"]
    env_id, n_envs = spec["env_id"], int(spec.get("n_envs", 1))
    starts = settings["learning_starts"]
    out: dict[str, Any] = {"peak_gflops": matmul_peak_gflops() if device == "cpu" else None}
    if spec["lib"] == "sb3":
        from stable_baselines3 import SAC
        from stable_baselines3.common.env_util import make_vec_env

        model = SAC("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=0), seed=0, device=device, verbose=0,
                    **_sb3_hp(settings))
        learn = lambda n: model.learn(n, reset_num_timesteps=False)  # noqa: E731
        update = lambda n: model.train(gradient_steps=n, batch_size=settings["batch_size"])  # noqa: E731
    else:
        from agents import GaussianSAC

        model = GaussianSAC(env_id, seed=0, device=device, n_envs=n_envs, **_ours_hp(settings),
                            **spec.get("extra", {}))
        learn = model.learn

        def update(n: int) -> None:
            for _ in range(n):
                model.train_step()
            model.pop_train_info()  # the host sync a logging interval would do

    learn(starts)  # uniform warm-up actions fill the buffer; no updates yet
    if spec.get("env_steps"):
        learn(n_envs)  # the first update allocates optimizer state: keep it out of the timing
        _sync(device)
        t = time.perf_counter()
        learn(int(spec["env_steps"]))
        _sync(device)
        out["env_steps_per_s"] = int(spec["env_steps"]) / (time.perf_counter() - t)
    if spec.get("updates"):
        update(10)
        _sync(device)
        t = time.perf_counter()
        update(int(spec["updates"]))
        _sync(device)
        out["updates_per_s"] = int(spec["updates"]) / (time.perf_counter() - t)
        if spec.get("count_flops", True):
            out["flops_per_update"] = _count_flops(lambda: update(1)) if spec["lib"] == "sb3" else \
                _eager_update_flops(spec)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


# The pairwise cost grid: ranks x factors, at PAIRWISE_CHOICES choices per factor.
PAIRWISE_RANKS = (4, 16, 64)
PAIRWISE_FACTORS = (4, 8, 16, 32)
PAIRWISE_CHOICES = 4
PAIRWISE_SECONDS = 10.0  # a cell stops timing after this long (a large cell's update can take ~1 s on 2 cores)


def measure_pairwise(spec: dict[str, Any]) -> dict[str, Any]:
    """GumbelSAC's update with the pairwise critic at one (rank, factors), in this (fresh) process."""
    import gymnasium as gym
    import torch

    import envs  # noqa: F401  (registers reparl/Combinatorial-v0)
    from agents import GumbelSAC

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device, settings = spec["device"], spec["settings"]
    hp = {"critic": "pairwise", "pairwise_rank": spec["rank"], "seed": 0, "device": device,
          "learning_starts": settings["learning_starts"], "batch_size": settings["batch_size"],
          "net_arch": settings["net_arch"], **spec.get("extra", {})}

    def agent(**more: Any) -> GumbelSAC:
        env = gym.make("reparl/Combinatorial-v0", factors=spec["factors"], choices=PAIRWISE_CHOICES)
        model = GumbelSAC(env, **{**hp, **more})
        model.learn(settings["learning_starts"])  # uniform warm-up actions fill the buffer; no updates yet
        return model

    model = agent()
    for _ in range(3):  # the first update builds (and by default compiles) the update
        model.train_step()
    model.pop_train_info()
    _sync(device)
    n, t = 0, time.perf_counter()
    while n < int(spec["updates"]) and (n < 3 or time.perf_counter() - t < spec.get("seconds", PAIRWISE_SECONDS)):
        model.train_step()
        n += 1
    model.pop_train_info()  # the host sync a logging interval would do
    _sync(device)
    seconds = time.perf_counter() - t
    # FLOPs on an eager twin, averaged over one policy_delay cycle (the actor steps on one update of it).
    twin = agent(compile=False)
    delay = int(twin.hparams["policy_delay"])
    flops = _count_flops(lambda: [twin.train_step() for _ in range(delay)]) / delay
    total = spec["factors"] * PAIRWISE_CHOICES
    return {"rank": spec["rank"], "factors": spec["factors"], "updates": n, "ms_per_update": 1e3 * seconds / n,
            "flops_per_update": flops, "critic_outputs": total * (1 + spec["rank"])}


def _eager_update_flops(spec: dict[str, Any]) -> int:
    """FLOPs of one GaussianSAC update, counted on an eager twin of the measured agent: FlopCounterMode
    would trace a compiled update again, and the compiled graph computes the same maths."""
    from agents import GaussianSAC

    settings = spec["settings"]
    twin = GaussianSAC(spec["env_id"], seed=0, device=spec["device"], n_envs=int(spec.get("n_envs", 1)),
                       **_ours_hp(settings), **{**spec.get("extra", {}), "compile": False})
    twin.learn(settings["learning_starts"] + 1)
    return _count_flops(twin.train_step)


def _race_hyperparameters(lib: str) -> dict[str, Any]:
    """A race column's GumbelSAC hyperparameters; a config file's agent section where it names one."""
    if lib not in RACE_VARIANTS:
        return {}
    hp = RACE_VARIANTS[lib][1]
    if isinstance(hp, Path):
        from experiments.config import load_config

        return dict(load_config(hp).agent.hyperparameters)
    return dict(hp)


def race(spec: dict[str, Any]) -> dict[str, Any]:
    """Training seconds to first reach the threshold (one seed), via the learning benchmark's job runner."""
    from experiments.research.learning_bench import SB3_DQN_CARTPOLE, Job, run_job

    if spec["lib"] == "sb3":
        job = Job("SB3 DQN (zoo)", "sb3:DQN", "CartPole-v1", spec["budget"], 475.0, SB3_DQN_CARTPOLE)
    else:
        job = Job("GumbelSAC", "GumbelSAC", "CartPole-v1", spec["budget"], 475.0, dict(spec.get("extra", {})))
    job.seed, job.stop_at_threshold, job.device = spec["seed"], True, spec["device"]
    job.eval_episodes = int(spec.get("eval_episodes", job.eval_episodes))
    job.threads = int(spec.get("threads") or 0) or _threads()
    r = run_job(job)
    return {"train_s": r["first_train_s"], "steps": r["first"], "wall_s": r["wall_s"]}


PIXELS_ENV = "reparl/MinAtar-Breakout-v0"


def measure_pixels(spec: dict[str, Any]) -> dict[str, Any]:
    """GumbelSAC (its CNN encoder, the frame buffer) or SB3 DQN given the same network (MinAtar's: 16 3x3
    filters, 128 units) on MinAtar Breakout, at the same batch: env steps/s while learning (one update per
    step) and updates/s, in this (fresh) process."""
    import torch

    import envs  # noqa: F401  (registers reparl/MinAtar-*)

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device, settings = spec["device"], spec["settings"]
    starts, batch = settings["learning_starts"], settings["batch_size"]
    if spec["lib"] == "sb3":
        from stable_baselines3 import DQN
        from stable_baselines3.common.env_util import make_vec_env

        from experiments.sb3_extractors import MinAtarCNN

        model = DQN("MlpPolicy", make_vec_env(PIXELS_ENV, seed=0), seed=0, device=device, verbose=0,
                    learning_starts=starts, batch_size=batch, buffer_size=10_000, train_freq=1,
                    policy_kwargs={"features_extractor_class": MinAtarCNN, "net_arch": []})
        learn = lambda n: model.learn(n, reset_num_timesteps=False)  # noqa: E731
        update = lambda n: model.train(gradient_steps=n, batch_size=batch)  # noqa: E731
    else:
        from agents import GumbelSAC

        model = GumbelSAC(PIXELS_ENV, seed=0, device=device, learning_starts=starts, batch_size=batch,
                          buffer_size=10_000, net_arch=[128], **spec.get("extra", {}))
        learn = model.learn

        def update(n: int) -> None:
            for _ in range(n):
                model.train_step()
            model.pop_train_info()

    learn(starts + 1)  # warm-up, and the first update (compilation, optimizer state) out of the timing
    update(10)
    _sync(device)
    t = time.perf_counter()
    learn(int(spec["env_steps"]))
    _sync(device)
    out = {"env_steps_per_s": int(spec["env_steps"]) / (time.perf_counter() - t)}
    t = time.perf_counter()
    update(int(spec["updates"]))
    _sync(device)
    out["updates_per_s"] = int(spec["updates"]) / (time.perf_counter() - t)
    return out


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _worker(args: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    kind, spec = args
    return {"measure": measure, "race": race, "pairwise": measure_pairwise, "pixels": measure_pixels}[kind](spec)


def _run(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh spawned process, so peak memory and warm caches belong to this measurement alone."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_worker, ((kind, spec),))


def machine(threads: int | None = None) -> dict[str, Any]:
    """The header: CPU, cores, the torch threads each measurement runs with, versions, GPU."""
    import stable_baselines3
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": threads or torch.get_num_threads(),
            "torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
            "python": platform.python_version(), "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _med(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def _fmt(x: float | None, nd: int = 0) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def run_bench(sections: tuple[str, ...] = SECTIONS, rounds: int = 3, updates: int = 300, env_steps: int = 500,
              seeds: tuple[int, ...] = (0, 1, 2, 3, 4), device: str = "cpu", threads: int | None = None,
              quick: bool = False, race_episodes: int = 100, log: Any = print) -> dict[str, Any]:
    """Run the chosen sections; returns {"machine", section: rows..., "markdown"}."""
    settings = dict(SAC_SETTINGS)
    if quick:  # a smoke run for tests: tiny everything, the same code paths
        settings.update(learning_starts=64, batch_size=32, net_arch=[32, 32])
    result: dict[str, Any] = {"machine": machine(threads), "device": device, "settings": settings,
                              "command": " ".join(sys.argv)}
    md = ["# reparl speed benchmark", "", "| machine | |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in result["machine"].items()] + [f"| device | {device} |", ""]
    base = {"device": device, "threads": threads, "settings": settings}

    def emit(lines: list[str]) -> None:
        md.extend(lines + [""])
        log("\n".join(lines) + "\n")

    log("\n".join(md))
    if "throughput" in sections:
        rows: dict[str, list[dict[str, Any]]] = {lib: [] for lib in THROUGHPUT_VARIANTS}
        order = list(THROUGHPUT_VARIANTS)
        for r in range(rounds):
            for lib in order if r % 2 == 0 else order[::-1]:
                spec = {**base, "lib": "sb3" if lib == "sb3" else "reparl", "env_id": "Pendulum-v1",
                        "env_steps": env_steps, "updates": updates, "extra": THROUGHPUT_VARIANTS[lib][1],
                        "count_flops": True}
                rows[lib].append(_run("measure", spec))
                log(f"  throughput round {r + 1}/{rounds} {lib}: {rows[lib][-1]['updates_per_s']:.0f} updates/s")
        result["throughput"] = rows
        med = {lib: {k: _med(rows[lib], k) for k in rows[lib][0]} for lib in rows}
        peak = _med([r for lib in rows for r in rows[lib]], "peak_gflops")
        sb3 = med["sb3"]
        lines = [f"## Throughput: GaussianSAC vs SB3 SAC, Pendulum-v1, identical settings "
                 f"(batch {settings['batch_size']}, net {settings['net_arch']}, train_freq 1, gradient_steps 1), "
                 f"median of {rounds} rounds", "",
                 f"Matmul peak: {_fmt(peak)} GFLOP/s (fp32 256^3 mm, median over every process of this run).", "",
                 "| implementation | env steps/s (learning) | updates/s | updates/s / SB3's | MFLOP per update "
                 "| GFLOP/s (% of peak) | peak RSS MiB |", "|---|---|---|---|---|---|---|"]
        for lib, (label, _) in THROUGHPUT_VARIANTS.items():
            d = med[lib]
            gflops = d["flops_per_update"] * d["updates_per_s"] / 1e9
            pct = f"{gflops:.0f} ({100 * gflops / peak:.0f}%)" if peak else f"{gflops:.0f}"
            lines.append(f"| {label} | {_fmt(d['env_steps_per_s'])} | {_fmt(d['updates_per_s'])} | "
                         f"{_ratio(d['updates_per_s'], sb3['updates_per_s'])} | {d['flops_per_update'] / 1e6:.0f} | "
                         f"{pct} | {_fmt(d['peak_rss_mib'])} |")
        emit(lines)
    if "scaling" in sections:
        grid = [("batch", b, settings["net_arch"]) for b in ((16, 32) if quick else (64, 128, 256, 512, 1024))]
        grid += [("width", settings["batch_size"], [w, w]) for w in ((16, 32) if quick else (64, 128, 256, 512, 1024))]
        lines = ["## Scaling: GaussianSAC updates/s", "",
                 "| batch | width | updates/s | MFLOP/update | GFLOP/s | % of matmul peak |",
                 "|---|---|---|---|---|---|"]
        result["scaling"] = []
        for what, batch, arch in grid:
            s = {**settings, "batch_size": batch, "net_arch": arch}
            n = max(20, int(updates * min(1.0, (256 / arch[0]) ** 2 * 256 / batch)))
            row = _run("measure", {**base, "settings": s, "lib": "reparl", "env_id": "Pendulum-v1", "updates": n})
            row.update(what=what, batch=batch, width=arch[0])
            result["scaling"].append(row)
            gf = row["flops_per_update"] * row["updates_per_s"] / 1e9
            pk = row["peak_gflops"]
            lines.append(f"| {batch} | {arch[0]} | {row['updates_per_s']:.0f} | {row['flops_per_update'] / 1e6:.0f} | "
                         f"{gf:.0f} | {'-' if not pk else f'{100 * gf / pk:.0f}%'} |")
        emit(lines)
    if "envs" in sections:
        lines = ["## Vector envs: env steps/s while learning (one update per vector step), Pendulum-v1", "",
                 "| n_envs | reparl | SB3 SAC | ratio |", "|---|---|---|---|"]
        result["envs"] = []
        for n_envs in (1, 2) if quick else (1, 2, 4, 8):
            pair = {lib: _run("measure", {**base, "lib": lib, "env_id": "Pendulum-v1", "n_envs": n_envs,
                                          "env_steps": env_steps * n_envs}) for lib in ("reparl", "sb3")}
            result["envs"].append({"n_envs": n_envs, **pair})
            a, b = pair["reparl"]["env_steps_per_s"], pair["sb3"]["env_steps_per_s"]
            lines.append(f"| {n_envs} | {a:.0f} | {b:.0f} | {_ratio(a, b)} |")
        emit(lines)
    if "cartpole" in sections:
        budget = 2000 if quick else 50_000
        tiny = {"net_arch": [32, 32], "batch_size": 32, "learning_starts": 200}
        libs = [*RACE_VARIANTS, "sb3"]
        rows: dict[str, list[dict[str, Any]]] = {lib: [] for lib in libs}
        labels = [RACE_VARIANTS[lib][0] for lib in RACE_VARIANTS] + ["SB3 DQN (RL Zoo)"]
        lines = ["## Wall-clock to CartPole-v1 eval >= 475: GumbelSAC vs SB3 DQN (RL Zoo settings)",
                 "", f"Training seconds (evaluation excluded; eval every 1k steps on {race_episodes} deterministic "
                 f"episodes), budget {budget:,} steps; 'never' = not reached.", "",
                 "| seed | " + " | ".join(f"{label} s (steps)" for label in labels) + " |",
                 "|---" * (len(libs) + 1) + "|"]
        # Each column's settings, read once (the tuned column's from its config file); --quick runs
        # them on tiny networks and batches (a smoke run).
        hps = {lib: {**_race_hyperparameters(lib), **(tiny if quick else {})} for lib in libs}
        for seed in seeds:
            for lib in libs if seed % 2 == 0 else libs[::-1]:
                rows[lib].append(_run("race", {**base, "lib": "sb3" if lib == "sb3" else "reparl", "seed": seed,
                                               "budget": budget, "extra": hps[lib], "eval_episodes": race_episodes}))
            cell = lambda r: "never" if r["train_s"] is None else f"{r['train_s']:.1f} ({r['steps']:,})"  # noqa: E731
            lines.append(f"| {seed} | " + " | ".join(cell(rows[lib][-1]) for lib in libs) + " |")
            log(lines[-1])
        inf = float("inf")
        med = {lib: statistics.median([r["train_s"] if r["train_s"] is not None else inf for r in rows[lib]])
               for lib in rows}
        fmt = lambda x: "never" if x == inf else f"{x:.1f}"  # noqa: E731
        lines.append("| median | " + " | ".join(fmt(med[lib]) for lib in libs) + " |")
        result["cartpole"] = rows
        emit(lines)
    if "pairwise" in sections:
        ranks, factors = ((2, 4), (2, 4)) if quick else (PAIRWISE_RANKS, PAIRWISE_FACTORS)
        extra = {"compile": False} if quick else {}  # quick: no minute-long compilation per cell
        cells: dict[tuple[int, int], list[dict[str, Any]]] = {(r, f): [] for f in factors for r in ranks}
        for r in range(rounds):  # every cell once per round, so drift in the machine's load hits all alike
            for cell in cells if r % 2 == 0 else list(cells)[::-1]:
                cells[cell].append(_run("pairwise", {**base, "rank": cell[0], "factors": cell[1],
                                                     "updates": updates, "extra": extra}))
                log(f"  pairwise round {r + 1}/{rounds} rank {cell[0]} factors {cell[1]}: "
                    f"{cells[cell][-1]['ms_per_update']:.1f} ms/update")
        result["pairwise"] = [{"rank": rank, "factors": f, "rounds": rows,
                               "ms_per_update": _med(rows, "ms_per_update"),
                               "flops_per_update": rows[0]["flops_per_update"],
                               "critic_outputs": rows[0]["critic_outputs"]} for (rank, f), rows in cells.items()]
        by = {(row["rank"], row["factors"]): row for row in result["pairwise"]}
        lines = [f"## Pairwise critic: GumbelSAC update cost against rank R and factors F ({PAIRWISE_CHOICES} "
                 f"choices each, batch {settings['batch_size']}, net {settings['net_arch']}"
                 f"{', eager' if quick else ''}), median of {rounds} rounds", "",
                 "ms per update (MFLOP per update). Each row doubles F; at a fixed R, linear cost at most "
                 "doubles.", "",
                 "| factors F | " + " | ".join(f"R = {rank}" for rank in ranks) + " |",
                 "|---" * (len(ranks) + 1) + "|"]
        for f in factors:
            lines.append(f"| {f} | " + " | ".join(f"{by[rank, f]['ms_per_update']:.2f} "
                                                  f"({by[rank, f]['flops_per_update'] / 1e6:,.3g})"
                                                  for rank in ranks) + " |")
        emit(lines)
    if "pixels" in sections:
        pix = {"reparl": [], "sb3": []}
        for r in range(rounds):
            for lib in ("reparl", "sb3") if r % 2 == 0 else ("sb3", "reparl"):
                pix[lib].append(_run("pixels", {**base, "lib": lib, "env_steps": env_steps, "updates": updates,
                                                "extra": {"compile": False} if quick else {}}))
                log(f"  pixels round {r + 1}/{rounds} {lib}: {pix[lib][-1]['updates_per_s']:.0f} updates/s")
        result["pixels"] = pix
        med = {lib: {k: _med(rows, k) for k in ("env_steps_per_s", "updates_per_s")} for lib, rows in pix.items()}
        lines = [f"## Pixels: GumbelSAC vs SB3 DQN with the same CNN, {PIXELS_ENV} (10 x 10 x 4 frames; "
                 f"batch {settings['batch_size']}), median of {rounds} rounds", "",
                 "| implementation | env steps/s (learning) | updates/s | updates/s / SB3 DQN's |", "|---|---|---|---|"]
        for lib, label in (("reparl", "GumbelSAC (CNN encoder, frame buffer)"), ("sb3", "SB3 DQN (MinAtarCNN)")):
            d = med[lib]
            lines.append(f"| {label} | {_fmt(d['env_steps_per_s'])} | {_fmt(d['updates_per_s'])} | "
                         f"{_ratio(d['updates_per_s'], med['sb3']['updates_per_s'])} |")
        emit(lines)
    result["markdown"] = "\n".join(md)
    return result


def write(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.md").write_text(result["markdown"] + "\n")
    (out / "bench.json").write_text(json.dumps(result, indent=1, default=str))
    return out / "bench.md", out / "bench.json"
