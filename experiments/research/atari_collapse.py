"""Research probe: does GumbelSAC's policy collapse at the start of learning on Atari Breakout?

The first run of ``configs/gumbel_sac/atari_breakout.yaml`` at torch's Adam epsilon (1e-8) lost its
entropy within 2k env steps of learning (1.38 nats, the maximum for 4 actions, to exactly 0): the
actor's gradients are about 1e-6 per weight (Breakout's rewards are rare), Adam divides them by
their own running scale and so steps every weight at full size along the critics' early, noisy
preference; the softmax saturates in float32, where its gradient is exactly zero, and no entropy
weight can bring it back. This probe prints the actor's entropy every 500 steps after a short warm-up,
for the agent as shipped, with another Adam epsilon, or with the actor reading the critics' encoder
(:mod:`experiments.research.shared_encoder`):

    python -m experiments.research.atari_collapse                      # adam_eps 1e-8: collapses
    python -m experiments.research.atari_collapse --adam-eps 1e-4      # CleanRL's sac_atari epsilon
    python -m experiments.research.atari_collapse --shared-encoder     # SAC-AE / DrQ layout

About 4 minutes a run on one core (5k random steps, then 5k steps with an update every 4th).
"""

from __future__ import annotations

import argparse
import time

import torch

from agents import GumbelSAC
from envs import make_vec_env


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="ALE/Breakout-v5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--adam-eps", type=float, default=GumbelSAC.defaults["adam_eps"])
    p.add_argument("--shared-encoder", action="store_true", help="the actor reads the critics' encoder")
    p.add_argument("--warmup", type=int, default=5000, help="random steps before learning")
    p.add_argument("--total", type=int, default=10_000, help="env steps in all")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cls: type[GumbelSAC] = GumbelSAC
    hp = {"buffer_size": 20_000, "batch_size": 64, "learning_starts": args.warmup, "train_freq": 4,
          "seed": args.seed, "adam_eps": args.adam_eps}
    if args.shared_encoder:
        from experiments.research.shared_encoder import SharedEncoderGumbelSAC

        cls = SharedEncoderGumbelSAC
    agent = cls(make_vec_env(args.env), **hp)
    start = time.time()
    print("| env step | entropy (nats) | alpha | mean Q | actor grad norm | s |\n|---|---|---|---|---|---|")

    def report(a: GumbelSAC) -> bool:
        if a.num_timesteps % 500 == 0 and a.num_timesteps > args.warmup:
            m = a.pop_train_info()
            print(f"| {a.num_timesteps} | {m['train/entropy']:.3f} | {m['train/alpha']:.4f} | "
                  f"{m['train/q_mean']:.3f} | {m['grad/actor_norm']:.2g} | {time.time() - start:.0f} |", flush=True)
        return True

    agent.learn(args.total, callback=report)


if __name__ == "__main__":
    main()
