"""The measurement behind deleting the hand-written update (issue 20): updates/s of GaussianSAC's three
update paths beside SB3 SAC, in one run, at identical settings (SB3 SAC's defaults on Pendulum-v1).

    python benchmarks/archive/update_paths.py --old-tree PATH [--rounds 3] [--updates 300]

``--old-tree``: a checkout of commit 0d58786, the last with the hand-written backward passes
(``manual_backward``). Its two rows (hand-written, and that commit's autograd path) run from there;
the eager and compiled rows run this checkout's single update. Every measurement is a fresh process,
the rows alternate in order every round, and the table gives medians and ratios to SB3 of this run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]
SETTINGS = {"learning_rate": 3e-4, "critic_learning_rate": 3e-4, "batch_size": 256, "learning_starts": 1000,
            "buffer_size": 1_000_000, "target_update_rate": 0.005, "gamma": 0.99, "net_arch": [256, 256],
            "alpha": 1.0}
MEASURE = r"""
import json, sys, time, torch
torch.set_num_threads({threads})
lib, extra, n = {lib!r}, {extra!r}, {updates}
if lib == "sb3":
    from stable_baselines3 import SAC
    m = SAC("MlpPolicy", "Pendulum-v1", seed=0, verbose=0, learning_rate=3e-4, batch_size=256, learning_starts=1000,
            tau=0.005, gamma=0.99, policy_kwargs={{"net_arch": [256, 256]}})
    m.learn(1000)
    step = lambda k: m.train(gradient_steps=k, batch_size=256)
else:
    from agents import GaussianSAC
    m = GaussianSAC("Pendulum-v1", seed=0, device="cpu", **{settings!r}, **extra)
    m.learn(1000)
    def step(k):
        for _ in range(k):
            m.train_step()
        m.pop_train_info()
t = time.perf_counter(); step(30); warm = time.perf_counter() - t  # the first updates compile, where they do
t = time.perf_counter(); step(n); rate = n / (time.perf_counter() - t)
print(json.dumps({{"updates_per_s": rate, "first_30_s": warm}}))
"""
ROWS = {
    "hand-written backward (0d58786 default, manual_backward=true)": ("old", {"manual_backward": True}),
    "autograd, eager (0d58786, manual_backward=false)": ("old", {"manual_backward": False}),
    "single update, eager (compile=false)": ("new", {"compile": False}),
    "single update, compiled (compile=true, the default)": ("new", {"compile": True}),
    "SB3 SAC": ("sb3", {}),
}


def measure(tree: Path, lib: str, extra: dict, updates: int, threads: int) -> dict:
    code = MEASURE.format(threads=threads, lib=lib, extra=extra, updates=updates, settings=SETTINGS)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old-tree", type=Path, required=True, help="a checkout of commit 0d58786")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--updates", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    a = p.parse_args()
    results: dict[str, list[dict]] = {row: [] for row in ROWS}
    order = list(ROWS)
    for r in range(a.rounds):
        for row in order if r % 2 == 0 else order[::-1]:
            tree, extra = ROWS[row]
            res = measure(a.old_tree if tree == "old" else HERE, "sb3" if tree == "sb3" else "reparl", extra,
                          a.updates, a.threads)
            results[row].append(res)
            print(f"round {r + 1} {row}: {res['updates_per_s']:.0f} updates/s", file=sys.stderr)
    sb3 = statistics.median(x["updates_per_s"] for x in results["SB3 SAC"])
    print(f"\nGaussianSAC update paths, Pendulum-v1, batch 256, [256, 256], {a.threads} threads, median of "
          f"{a.rounds} rounds x {a.updates} updates\n")
    print("| update | updates/s (rounds) | / SB3 SAC |\n|---|---|---|")
    for row, res in results.items():
        rates = [x["updates_per_s"] for x in res]
        print(f"| {row} | {statistics.median(rates):.0f} ({', '.join(f'{x:.0f}' for x in rates)}) | "
              f"{statistics.median(rates) / sb3:.2f}x |")
    if a.out:
        a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
