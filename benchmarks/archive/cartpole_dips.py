"""How CartPole-v1 fails inside a dip: every checkpoint saved while a run's evaluation sat below
``--floor`` after first reaching ``--threshold``, rerun greedily, with each episode's end.

An episode ends with the cart off the track (|x| > 2.4), the pole down (|theta| > 12 degrees),
or at the 500-step limit. Issue 6's analysis of GumbelSAC's dips after solving
(benchmarks/archive/README.md, "Where the dips go")::

    python benchmarks/archive/cartpole_dips.py runs/sweeps/*/*-s*

Greedy episodes from seeds 1000-1009 (not the runs' own evaluation seeds): the question is how
the policy fails, not what the run logged. ``--sampled`` draws the actions from the policy instead
(the behaviour policy training acts with), to tell a greedy-evaluation artefact from a policy
that fails either way. ``--trace`` also follows one such episode per
checkpoint and prints, every tenth of the way, the state, the critics' value of the greedy action
(min over the ensemble) and the discounted return the episode actually had from there. Reads the
run folders only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from agents import GumbelSAC

X_LIMIT = 2.4  # CartPole-v1's track half-length


def dip_checkpoints(run_dir: Path, threshold: float, floor: float) -> list[tuple[int, float, Path]]:
    """(step, eval, checkpoint) for each checkpoint at an evaluation below ``floor`` after the first
    at or above ``threshold``."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    evals = {int(r["global_step"]): r["eval/mean_return"] for r in rows if "eval/mean_return" in r}
    first = min((s for s, v in evals.items() if v >= threshold), default=None)
    if first is None:
        return []
    out = []
    for ckpt in sorted((run_dir / "checkpoints").glob("step_*.safetensors")):
        step = int(ckpt.stem.split("_")[1])
        if step > first and evals.get(step, floor) < floor:
            out.append((step, evals[step], ckpt))
    return out


def greedy_episode(agent: GumbelSAC, env: gym.Env, seed: int,
                   deterministic: bool = True) -> tuple[list, list[int], str]:
    """One episode (greedy unless ``deterministic`` is false): the observations and actions
    taken, and how it ended."""
    obs, _ = env.reset(seed=seed)
    observations, actions = [], []
    while True:
        action, _ = agent.predict(obs, deterministic=deterministic)
        observations.append(obs)
        actions.append(int(action))
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    return observations, actions, ("500 steps" if truncated else
                                   "cart off the track" if abs(obs[0]) > X_LIMIT else "pole down")


def episode_ends(agent: GumbelSAC, env: gym.Env, episodes: int, deterministic: bool = True) -> dict[str, int]:
    ends = {"cart off the track": 0, "pole down": 0, "500 steps": 0}
    for ep in range(episodes):
        ends[greedy_episode(agent, env, 1000 + ep, deterministic)[2]] += 1
    return ends


def trace(agent: GumbelSAC, env: gym.Env, ckpt: Path, gamma: float = 0.99) -> None:
    """One greedy episode (seed 1000): the critics' Q of each greedy action against the
    discounted return that followed it (a terminated episode; a truncated one would bootstrap)."""
    observations, actions, end = greedy_episode(agent, env, 1000)
    with torch.no_grad():
        q = agent._critic_values(torch.as_tensor(np.stack(observations), dtype=torch.float32),
                                 torch.tensor(actions).reshape(-1, 1)).min(0).values
    n = len(actions)
    print(f"  {ckpt}: {n} steps, {end}")
    for t in sorted({*range(0, n, max(1, n // 10)), n - 1}):
        x, x_dot, theta, _ = observations[t]
        actual = (1 - gamma ** (n - t)) / (1 - gamma)
        print(f"    t={t:3d}  x={x:+.2f}  x_dot={x_dot:+.2f}  theta={theta:+.3f}  action={actions[t]}  "
              f"Q={float(q[t]):6.1f}  return that followed={actual:5.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (metrics.jsonl, checkpoints/)")
    parser.add_argument("--threshold", type=float, default=475.0)
    parser.add_argument("--floor", type=float, default=400.0)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--trace", action="store_true", help="follow one episode per checkpoint (Q against return)")
    parser.add_argument("--sampled", action="store_true",
                        help="sample the actions from the policy instead of taking the greedy one")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)  # --sampled: the same draws on every rerun
    runs = [r for r in args.runs
            if (r / "metrics.jsonl").is_file() and "CartPole-v1" in (r / "config.yaml").read_text()]
    print("| run | step | eval | cart off the track | pole down | 500 steps |\n|---|---|---|---|---|---|")
    totals = {"cart off the track": 0, "pole down": 0, "500 steps": 0}
    env = gym.make("CartPole-v1")
    for run in runs:
        for step, value, ckpt in dip_checkpoints(run, args.threshold, args.floor):
            agent = GumbelSAC.load(ckpt, device="cpu")
            ends = episode_ends(agent, env, args.episodes, deterministic=not args.sampled)
            worst = max(ends, key=ends.get)
            totals[worst] += 1
            counts = " | ".join(str(v) for v in ends.values())
            print(f"| {run.parent.name}/{run.name} | {step} | {value:.0f} | {counts} |")
            if args.trace:
                trace(agent, env, ckpt)
    print(f"\ncheckpoints by their most common end: {totals}")


if __name__ == "__main__":
    main()
