"""Counterfactual replay: continue a run from one of its checkpoints with some settings changed.

A checkpoint holds everything the run needs to go on exactly (RNG states, the env's state, the
replay buffer), and deterministic evaluation draws no random numbers. So a replay with nothing
changed reproduces the run's own evaluations to the digit (``tests/test_replay.py``), and with a
change, any difference is that change's doing on that very trajectory: a paired comparison that
fresh seeds cannot give. It found which settings remove a dip the defaults had, from a checkpoint
a few thousand steps before it (``benchmarks/archive/README.md``, "Bounded targets")::

    python -m experiments.research.replay runs/sweeps/gumbel_stability_seeds/policy_delay_2-s9 \\
        --from 10000 --until 24000 --set agent.bound_targets=true

The run folder is only read; nothing is logged to W&B.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from envs import make_vec_env
from experiments.config import ConfigError, load_config, parse_overrides
from experiments.loop import evaluate_at, make_eval_env
from experiments.train import build_agent


def replay(run_dir: str | Path, start: int, until: int, overrides: dict[str, Any] | None = None,
           log: Any = None) -> list[dict[str, float]]:
    """Continue ``run_dir`` from its checkpoint at env step ``start`` to ``until`` with ``overrides``
    (dotted config keys); evaluate as the run did (its eval_freq, episodes and seeds). One row per
    evaluation: step, eval return, and the update metrics averaged since the previous one."""
    run_dir = Path(run_dir)
    overrides = dict(overrides or {})
    bad = [k for k in overrides if not k.startswith("agent.")]
    if bad:
        raise ConfigError(f"a replay changes agent settings only (agent.KEY=VALUE); got {', '.join(bad)}")
    cfg = load_config(run_dir / "config.yaml", overrides)
    ckpt = run_dir / "checkpoints" / f"step_{start}.safetensors"
    if not ckpt.exists():
        have = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.safetensors"))
        raise ConfigError(f"{ckpt} does not exist; this run has {', '.join(have) or 'no checkpoints'}")
    if until <= start:
        raise ConfigError(f"--until {until} must be after --from {start}")
    if not cfg.train.eval_freq:
        raise ConfigError(f"{run_dir} evaluated nothing (train.eval_freq: 0), so a replay has nothing to compare")
    if cfg.train.torch_threads is not None:  # the run's thread count: float sums depend on it
        import torch

        torch.set_num_threads(cfg.train.torch_threads)
    venv = make_vec_env(cfg.env)
    agent = build_agent(cfg, venv, ckpt, changed=[k.split(".", 1)[1] for k in overrides])
    if agent.buffer is None or len(agent.buffer) == 0:
        raise ConfigError(f"{ckpt} was saved without its replay buffer (train.checkpoint_buffer: false); "
                          "a replay needs it")
    eval_env = make_eval_env(cfg, cfg.train.eval_episodes)
    every = cfg.train.eval_freq
    rows: list[dict[str, float]] = []
    state = {"next": (start // every + 1) * every}

    def callback(a: Any) -> bool:
        step = a.num_timesteps
        if step >= state["next"]:
            while state["next"] <= step:
                state["next"] += every
            result = evaluate_at(cfg, a, eval_env, step, venv)
            info = {k: float(v) for k, v in a.pop_train_info().items()}
            rows.append({"step": step, "eval": result.mean, **info})
            if log is not None:
                log(rows[-1])
        return step < until

    try:
        agent.learn(until - agent.num_timesteps, callback=callback)
    finally:
        eval_env.close()
        venv.close()
    return rows


def original_evals(run_dir: str | Path) -> dict[int, float]:
    """The run's own evaluations, step -> mean return, from its metrics.jsonl."""
    out: dict[int, float] = {}
    path = Path(run_dir) / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if "eval/mean_return" in row:
                out[int(row["global_step"])] = float(row["eval/mean_return"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.research.replay", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a run folder whose checkpoints include the replay buffer")
    p.add_argument("--from", dest="start", type=int, required=True, help="env step of the checkpoint to start from")
    p.add_argument("--until", type=int, required=True, help="env step to stop at")
    p.add_argument("--set", nargs="*", default=[], metavar="agent.KEY=VALUE",
                   help="agent settings to change (none: the run itself, reproduced)")
    args = p.parse_args(argv)
    try:
        before = original_evals(args.run_dir)
        label = " ".join(args.set) or "nothing changed"

        def log(row: dict[str, float]) -> None:
            was = before.get(int(row["step"]), math.nan)
            print(f"| {row['step']:,} | {was:.1f} | {row['eval']:.1f} | {row.get('train/critic_loss', math.nan):.2f} "
                  f"| {row.get('train/q_mean', math.nan):.1f} | {row.get('train/alpha', math.nan):.3f} |", flush=True)

        print(f"Replay of {args.run_dir} from step {args.start:,} with {label}\n")
        print("| step | run's eval | replay's eval | critic loss | mean Q | alpha |\n|---|---|---|---|---|---|")
        rows = replay(args.run_dir, args.start, args.until, parse_overrides(args.set), log=log)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_low = min((v for s, v in before.items() if args.start < s <= args.until), default=math.nan)
    print(f"\nlowest eval: run {run_low:.1f}, replay {min(r['eval'] for r in rows):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
