"""Research probe: how much of a suite task's one-step reward the pairwise critic's form can hold.

For one state of a task of ``envs/combinatorial_suite.py``, every joint action is
enumerated and the pairwise critic's output for that state (:func:`agents.heads.pairwise_q`: u and
V at rank R, no network) is fitted to the reward by least squares with Adam. Printed per rank: the
fraction of the reward's variance explained (R^2) and the true reward of the fitted function's best
joint action, over the optimum. At rank sum K the form is every pairwise function (V V^T, a PSD
matrix, can then take any off-diagonal blocks given large enough diagonal ones, which Q never reads),
so that row bounds what any pairwise critic can represent; a lower rank that reaches the same R^2
loses nothing. It separates "the critic cannot represent the task" from "the agent does not learn
what it could represent":

    python -m experiments.research.pairwise_fit --env reparl/CombinatorialAssign-v0 --ranks 4 16 64
"""

from __future__ import annotations

import argparse
import math

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401  (registers the reparl/ ids)
from agents.heads import GumbelHead, pairwise_q

MAX_JOINT = 1 << 17  # enumerated in one batch; the suite's Pairs (3^24) and Chain (5^8) are beyond it


def joint_actions(nvec: list[int]) -> np.ndarray:
    """Every joint action of a MultiDiscrete with ``nvec``, one row each, in the env's layout."""
    return np.stack(np.meshgrid(*(np.arange(n) for n in nvec), indexing="ij"), -1).reshape(-1, len(nvec))


def fit(env: gym.Env | str, ranks: list[int], seed: int = 0, steps: int = 3000, restarts: int = 2) -> list[dict]:
    """One row per rank: ``{"rank", "r2", "argmax_over_optimum"}``, the best of ``restarts`` fits."""
    env = gym.make(env).unwrapped if isinstance(env, str) else env
    env.reset(seed=seed)
    nvec = [int(n) for n in env.action_space.nvec]
    n_joint = math.prod(nvec)
    if n_joint > MAX_JOINT:
        name = env.spec.id if env.spec else type(env).__name__
        raise SystemExit(f"{name} has {n_joint:,} joint actions, more than the {MAX_JOINT:,} this probe enumerates; "
                         "pick a task with fewer (Assign, Triples)")
    actions = joint_actions(nvec)
    reward = torch.tensor(env.rewards(actions), dtype=torch.float32)
    # The agent's own layout: the flat one-hots the critic reads and each factor's last position.
    head = GumbelHead(env.action_space, critic="pairwise", estimator="st")
    y, ends = head.one_hot(torch.as_tensor(head.from_env(actions))), head.membership
    rows = []
    for rank in ranks:
        best = None
        for restart in range(restarts):
            torch.manual_seed(restart)
            out = (0.1 * torch.randn(1, sum(nvec) * (1 + rank))).requires_grad_()
            bias = torch.zeros(1, requires_grad=True)
            opt = torch.optim.Adam([out, bias], lr=0.02)
            for _ in range(steps):
                q = bias + pairwise_q(out, y, ends)
                loss = (q - reward).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            r2 = 1.0 - loss.item() / reward.var(unbiased=False).item()
            if best is None or r2 > best["r2"]:
                best = {"rank": rank, "r2": r2, "argmax_over_optimum": (reward[q.argmax()] / reward.max()).item()}
        rows.append(best)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="reparl/CombinatorialAssign-v0")
    p.add_argument("--ranks", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--seed", type=int, default=0, help="the state: the env's reset seed")
    p.add_argument("--steps", type=int, default=3000)
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = fit(a.env, a.ranks, a.seed, a.steps)
    print(f"{a.env}, state from reset(seed={a.seed})\n")
    print("| rank | R^2 | reward at the fit's argmax / optimum |\n|---|---|---|")
    for row in rows:
        print(f"| {row['rank']} | {row['r2']:.3f} | {row['argmax_over_optimum']:.2f} |")


if __name__ == "__main__":
    main()
