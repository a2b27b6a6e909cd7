"""The command line: ``run.py``, ``python -m experiments`` and the ``reparl`` script all land here.

    reparl train configs/gumbel_sac/cartpole.yaml --seed 1 --set agent.temperature=0.5 env.n_envs=4
    reparl eval runs/gumbel_sac-cartpole-20260101-120000-a1b2c3 --episodes 20 --video
    reparl sweep configs/sweeps/discrete_estimators.yaml --max-concurrent 2
    reparl compare runs/sweeps/discrete_estimators --out estimators.png
"""

from __future__ import annotations

import argparse
import errno
import sys
import textwrap
import warnings
from pathlib import Path

from experiments.config import ConfigError, load_config, parse_overrides

EPILOG_TRAIN = """\
overrides:
  --set takes SECTION.KEY=VALUE pairs; each VALUE is read with yaml.safe_load, so
  agent.net_arch=[64,64], agent.target_entropy=null and train.eval_freq=0 all work.
  Precedence: schema defaults < CONFIG file < --set < --seed/--wandb/--device.
  Sections: agent (name + the agent's hyperparameters), env, train, wandb.

examples:
  %(prog)s configs/gumbel_sac/cartpole.yaml
  %(prog)s configs/gumbel_sac/cartpole.yaml --seed 3 --set agent.estimator=gumbel-rao agent.gumbel_rao_k=16
  %(prog)s configs/baselines/dqn_cartpole.yaml --wandb disabled --name dqn-smoke --set train.total_timesteps=2000
"""


def _fill(text: str) -> str:
    """A description wrapped by hand: these parsers keep their epilogs' examples raw, which keeps
    the description raw too."""
    return textwrap.fill(text, width=79)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reparl", description="Train and evaluate reparl agents and SB3 baselines from YAML configs.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{train,eval,export,dashboard,check-env,sweep,compare,bench,study}")

    t = sub.add_parser("train", help="train one config; writes a run folder (and an offline W&B run)",
                       description=_fill("Train the agent a config describes and write runs/<name>-<time>-<id>/ "
                                         "with the resolved config, command, git revision, seed, metrics.jsonl, "
                                         "checkpoints and the final model."),
                       epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("config", type=Path, nargs="?", help="YAML config, e.g. configs/gumbel_sac/cartpole.yaml")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue RUN_DIR from its latest good checkpoint, with its config.yaml, metrics.jsonl "
                        "and W&B run id (no CONFIG or overrides)")
    t.add_argument("--seed", type=int, help="overrides train.seed")
    t.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. agent.temperature=0.5 env.n_envs=4")
    t.add_argument("--wandb", choices=["offline", "online", "disabled"],
                   help="overrides wandb.mode (default offline: no account or network needed)")
    t.add_argument("--device", choices=["cpu", "cuda", "auto"], help="overrides train.device")
    t.add_argument("--run-dir", type=Path, default=Path("runs"),
                   help="parent folder of run folders (default: runs)")
    t.add_argument("--name", help="run folder prefix (default: <config folder>-<config name>)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in CI logs)")
    t.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files to <run>/tensorboard/ (overrides train.tensorboard)")

    e = sub.add_parser("eval", help="evaluate a run folder's model (or a model file)",
                       description="Load a trained model and print the mean ± std return and episode lengths. "
                                   "Results also go to eval.json in the run folder.")
    e.add_argument("target", type=Path, metavar="RUN_DIR_OR_MODEL",
                   help="a run folder, or a model.safetensors / model.zip file")
    e.add_argument("--episodes", type=int, help="episodes to run (default: the config's train.eval_episodes)")
    mode = e.add_mutually_exclusive_group()
    mode.add_argument("--deterministic", dest="deterministic", action="store_true", default=True,
                      help="act with the policy's mode (default)")
    mode.add_argument("--stochastic", dest="deterministic", action="store_false", help="sample actions")
    e.add_argument("--video", action="store_true",
                   help="record every episode as mp4 into <run>/videos/ (and to W&B as media); needs the video "
                        "extra (moviepy)")
    e.add_argument("--seed", type=int, default=None, help="seed of the evaluation envs (default 10000)")
    e.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="where the model runs (default auto: cuda if available)")
    e.add_argument("--env", dest="env_id", help="env id, for a model file outside a run folder")
    e.add_argument("--agent", help="algorithm, for an SB3 zip outside a run folder (DQN, PPO, A2C, SAC, TD3)")
    e.add_argument("--wandb", choices=["offline", "online", "disabled"],
                   help="log this evaluation to W&B (default: only with --video, in the run's mode)")

    x = sub.add_parser("export", help="write a run's policy as ONNX, TorchScript or a torch.export program",
                       description=_fill("Export the deterministic policy of a run folder (or a model.safetensors): "
                                         "raw observation (and action mask) in, the env's action and the logits or "
                                         "mean out, with the run's observation normalization inside. Checked against "
                                         "predict() by the tests (onnxruntime, TorchScript)."),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  %(prog)s runs/gumbel_sac-cartpole-<time>-<id>\n"
                              "  %(prog)s runs/<run> --format torchscript --out policy.pt")
    x.add_argument("target", type=Path, metavar="RUN_DIR_OR_MODEL", help="a run folder or a model.safetensors")
    x.add_argument("--format", dest="fmt", default="onnx", choices=["onnx", "torchscript", "exported-program"],
                   help="onnx (the default; needs the export extra), torchscript (.pt) or exported-program (.pt2)")
    x.add_argument("--out", type=Path, help="artifact path (default: policy.<onnx|pt|pt2> beside the model)")

    d = sub.add_parser("dashboard", help="build the W&B workspace of reparl's standard panels (--dry-run: its spec)",
                       description="Save a W&B workspace for ENTITY/PROJECT with reparl's panels: learning curves "
                                   "grouped by config (seeds as a band), the SAC diagnostics (alpha, entropy, critic "
                                   "loss, Q against target, gradient norms), the Gumbel estimator's cosine, "
                                   "throughput and dormant ReLU units. Needs W&B online access unless --dry-run, and "
                                   "the dashboard extra (wandb-workspaces).")
    d.add_argument("--entity", required=True, help="W&B entity (user or team)")
    d.add_argument("--project", required=True, help="W&B project (the config's wandb.project)")
    d.add_argument("--name", default="reparl", help="workspace name (default: reparl)")
    d.add_argument("--dry-run", action="store_true", help="write the workspace spec as JSON; send nothing")
    d.add_argument("--out", type=Path, help="with --dry-run: write the spec here instead of printing it")

    k = sub.add_parser("check-env", help="check an env with gymnasium's checker and say which agent takes it",
                       description="Run gymnasium's env checker on ENV_ID and check what reparl needs of its spaces: "
                                   "a Box or Discrete observation, an action space one of the agents takes (finite "
                                   "bounds for a Box), sb3-contrib action masks if it has action_masks().")
    k.add_argument("env_id", metavar="ENV_ID", help="a registered id; mypkg.module:MyEnv-v0 imports mypkg.module")

    s = sub.add_parser("sweep", help="run a sweep file's trials (configs x overrides x seeds) on Ray Tune",
                       description="Run every trial of a sweep file (configs/sweeps/*.yaml) as a `train` run in "
                                   "runs/sweeps/<name>/<trial>/ (W&B group <name>), on a local Ray cluster or the "
                                   "one --address names. Finished trials are skipped; a failed one does not stop "
                                   "the others. Ends with the table `compare` prints (summary.md, summary.json). "
                                   "Needs the sweep extra (Ray Tune, Optuna).")
    s.add_argument("sweep", type=Path, metavar="SWEEP_CONFIG", help="e.g. configs/sweeps/discrete_estimators.yaml")
    s.add_argument("--address", help="join a running Ray cluster (auto or HOST:PORT); default: start a local one")
    s.add_argument("--max-concurrent", type=int, metavar="N",
                   help="trials at once (default: the cluster's CPUs // the sweep's threads)")
    s.add_argument("--num-cpus", type=int, metavar="N", help="CPUs of the local cluster (default: all cores)")
    s.add_argument("--run-dir", type=Path, default=Path("runs/sweeps"),
                   help="parent of the sweep folder (default: runs/sweeps)")

    c = sub.add_parser("compare", help="learning curves and a table from run folders or sweep folders",
                       description="Group run folders by config (everything but the seed) and write learning "
                                   "curves (mean, 95% bootstrap band; one subplot per env) as a PNG, and a table "
                                   "(final return, IQM with a 95% bootstrap CI, steps to threshold) as Markdown and "
                                   "JSON beside it. Reads only the run folders (config.yaml, metrics.jsonl). With "
                                   "--wandb, also logs the table and the picture to a new W&B run.")
    c.add_argument("paths", type=Path, nargs="+", metavar="RUN_DIR_OR_SWEEP_DIR")
    c.add_argument("--metric", default="eval/mean_return", help="metric to plot and tabulate")
    c.add_argument("--out", type=Path, help="PNG path; the table goes beside it as .md and .json "
                                            "(default: compare-<time>.png in the first folder given, so a "
                                            "later compare does not overwrite it)")
    c.add_argument("--threshold", nargs="+", default=[], metavar="X|ENV_ID=X",
                   help="threshold for 'steps to threshold', for every env or per env "
                        "(default: gymnasium's reward_threshold of each env)")
    c.add_argument("--until", nargs="+", default=[], metavar="STEP|ENV_ID=STEP",
                   help="use each run's evals up to env step STEP only, to compare at one budget; "
                        "for every env or per env (CartPole-v1=20000 Acrobot-v1=30000)")
    c.add_argument("--floor", nargs="+", default=[], metavar="X|ENV_ID=X",
                   help="also count the seeds whose metric fell below X after first reaching the threshold, "
                        "for every env or per env (CartPole-v1=400: 'never below 400 after first reaching 475')")
    c.add_argument("--wandb", nargs="?", const="offline", choices=["offline", "online"], metavar="MODE",
                   help="also log the table (a wandb.Table) and the picture (a wandb.Image) to a new W&B run, "
                        "written beside the PNG; MODE is offline (the default, as in training: "
                        "compare RUN_DIR --wandb) or online")
    c.add_argument("--project", help="W&B project with --wandb (default: reparl, as the configs' wandb.project)")
    c.add_argument("--entity", help="W&B entity with --wandb (default: your default entity)")

    b = sub.add_parser("bench", help="speed benchmark beside SB3: prints tables, writes bench.md/bench.json",
                       description=_fill("Throughput of GaussianSAC vs SB3 SAC at identical settings, scaling with "
                                         "batch and width, vector envs, and GumbelSAC vs SB3 DQN wall-clock to "
                                         "CartPole 475, the pairwise critic's update cost against rank and "
                                         "factors, and GumbelSAC beside SB3 DQN on MinAtar pixels. Each "
                                         "measurement runs in a fresh process, ours and SB3's alternating; "
                                         "tables give medians and same-run ratios."),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  %(prog)s\n  %(prog)s --sections throughput --rounds 5\n"
                              "  %(prog)s --device cuda --sections throughput scaling\n"
                              "  %(prog)s --sections pairwise --rounds 1\n  %(prog)s --sections pixels")
    b.add_argument("--sections", nargs="+", default=None, metavar="SECTION",
                   help="any of throughput, scaling, envs, cartpole, pairwise, pixels (default: all); pairwise "
                        "is the pairwise critic's update cost against rank and number of factors, pixels "
                        "GumbelSAC beside SB3 DQN on MinAtar")
    b.add_argument("--rounds", type=int, default=3,
                   help="alternating rounds of the throughput and pairwise sections (default 3)")
    b.add_argument("--updates", type=int, default=300,
                   help="timed updates per throughput or pairwise measurement (default 300; a pairwise cell also "
                        "stops timing after 10 s)")
    b.add_argument("--env-steps", type=int, default=500, help="timed env steps per measurement (default 500)")
    b.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds of the CartPole race")
    b.add_argument("--race-episodes", type=int, default=100,
                   help="episodes per evaluation in the CartPole race (default 100: Gymnasium's 'solved' is a mean "
                        "of 475 over 100 consecutive episodes; evaluation time is not counted)")
    b.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    b.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's)")
    b.add_argument("--quick", action="store_true", help="tiny settings: a smoke test of the benchmark itself")
    b.add_argument("--out", type=Path, default=None, help="output folder (default runs/bench-<time>)")

    s = sub.add_parser("study", help="the gradient study: each Gumbel estimator against the exact gradient",
                       description="Compare the st, soft, gumbel-rao and reinmax actor gradients with the exact "
                                   "expectation on enumerable problems (random quadratics, a MultiDiscrete quadratic, "
                                   "a briefly trained CartPole critic): bias, variance, cosine, cost per call. Writes "
                                   "gradient_study.{md,json,png}. Definitions: experiments/research/study.py.")
    s.add_argument("--out-dir", type=Path, default=None,
                   help="where to write (default: runs/study-<time>; benchmarks/ holds the published study)")
    s.add_argument("--quick", action="store_true", help="a seconds-long version (fewer sizes, draws, steps)")
    s.add_argument("--draws", type=int, help="gradient draws per row (default 1000; quick 100)")
    s.add_argument("--seed", type=int, default=0, help="seed of the problems and the draws (default 0)")
    s.add_argument("--no-plot", action="store_true", help="skip gradient_study.png")
    return parser


def _sweep(args: argparse.Namespace) -> int:
    from experiments.sweep import format_result, run_sweep

    result = run_sweep(args.sweep, args.run_dir, address=args.address, max_concurrent=args.max_concurrent,
                       num_cpus=args.num_cpus)
    print(format_result(result))
    return 1 if result.failed else 0


def _compare(args: argparse.Namespace) -> int:
    import time

    from experiments.compare import (
        compare,
        is_run_dir,
        log_to_wandb,
        markdown_table,
        parse_per_env,
        parse_thresholds,
        parse_until,
    )
    from experiments.config import WandbConfig

    if args.wandb is None and (args.project or args.entity):
        raise ConfigError("--project and --entity name the W&B run of --wandb; add --wandb (offline) or drop them")
    every, per_env = parse_thresholds(args.threshold)
    until, until_per_env = parse_until(args.until)
    floor, floors = parse_per_env(args.floor, "--floor", float)
    first = args.paths[0]
    out = args.out or (first.parent if is_run_dir(first) else first) / time.strftime("compare-%Y%m%d-%H%M%S.png")
    rows, png, md, js = compare(args.paths, out, args.metric, per_env, every, until, until_per_env, floor, floors)
    print(f"{markdown_table(rows)}\n\nplot:  {png}\ntable: {md} (and {js})")
    if args.wandb is not None:
        config = {"paths": [str(p) for p in args.paths], "metric": args.metric, "threshold": args.threshold,
                  "until": args.until, "floor": args.floor}
        where = log_to_wandb(rows, png, args.wandb, args.project or WandbConfig.project, args.entity, config)
        if where is not None:
            print(f"W&B ({args.wandb}): " + (f"upload later with `{where}`" if args.wandb == "offline" else where))
    return 0


def _bench(args: argparse.Namespace) -> int:
    import time

    from experiments.research.bench import SECTIONS, run_bench, write

    sections = tuple(args.sections or SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown bench section(s) {unknown}; choose from {list(SECTIONS)}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device}: torch sees no CUDA device here; use --device cpu")
    result = run_bench(sections, rounds=args.rounds, updates=args.updates, env_steps=args.env_steps,
                       seeds=tuple(args.seeds), device=args.device, threads=args.threads, quick=args.quick,
                       race_episodes=args.race_episodes)
    out = args.out or Path("runs") / time.strftime("bench-%Y%m%d-%H%M%S")
    md, js = write(result, out)
    print(f"wrote {md} and {js}")
    return 0


def _study(args: argparse.Namespace, command: list[str]) -> int:
    import dataclasses
    import time

    import torch

    from experiments.research.study import Settings, run_study, write_results

    settings = Settings.quick() if args.quick else Settings()
    settings = dataclasses.replace(settings, seed=args.seed, **({"draws": args.draws} if args.draws else {}))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-call costs comparable across rows, and polite on shared machines
    try:
        rows = run_study(settings)
    finally:
        torch.set_num_threads(threads)
    line = " ".join(["python run.py", *command[command.index("study"):]])
    out_dir = args.out_dir or Path("runs") / time.strftime("study-%Y%m%d-%H%M%S")
    for path in write_results(rows, settings, out_dir, line, png=not args.no_plot):
        print(f"wrote {path}")
    return 0


def _train(args: argparse.Namespace, command: list[str]) -> int:
    from experiments.train import run_training

    overrides = parse_overrides(args.overrides)
    if args.tensorboard:
        overrides["train.tensorboard"] = True
    for key, value in (("train.seed", args.seed), ("wandb.mode", args.wandb), ("train.device", args.device)):
        if value is not None:
            overrides[key] = value
    if args.resume is not None:
        if args.config is not None or overrides:
            raise ConfigError("--resume continues a run with its own config.yaml; drop CONFIG and the overrides")
        cfg = load_config(args.resume / "config.yaml")
        result = run_training(cfg, args.resume.parent, args.resume.name, command, run_dir=args.resume,
                              progress_bar=not args.no_progress, resume=True)
    elif args.config is None:
        raise ConfigError("train needs a CONFIG file (or --resume RUN_DIR)")
    else:
        cfg = load_config(args.config, overrides)
        name = args.name or f"{args.config.parent.name}-{args.config.stem}"
        result = run_training(cfg, args.run_dir, name, command, progress_bar=not args.no_progress)
    lines = [f"run folder: {result.run_dir}",
             f"model:      {result.model_path}",
             f"metrics:    {result.run_dir / 'metrics.jsonl'}",
             f"config:     {result.run_dir / 'config.yaml'}"]
    if result.final_eval is not None:
        lines.append(f"final eval: {result.final_eval:.2f} (mean return over {cfg.train.eval_episodes} episodes)")
    if result.wandb_sync_hint:
        lines.append(f"W&B (offline): upload later with `{result.wandb_sync_hint}`")
    elif result.wandb_error:
        lines.append(f"W&B: disabled after an error ({result.wandb_error})")
    lines.append(f"evaluate:   python run.py eval {result.run_dir}")
    print("\n".join(lines))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from experiments.eval_run import EVAL_SEED, format_report, run_eval

    report = run_eval(args.target, episodes=args.episodes, deterministic=args.deterministic, video=args.video,
                      seed=EVAL_SEED if args.seed is None else args.seed, device=args.device, env_id=args.env_id,
                      agent=args.agent, wandb_mode=args.wandb)
    print(format_report(report, args.deterministic))
    return 0


def _export(args: argparse.Namespace) -> int:
    from agents import AGENTS
    from agents.checkpoint import read_model_file
    from agents.export import SUFFIXES, export_policy
    from envs import load_obs_normalization
    from experiments.extras import require
    from experiments.rundir import find_model

    if args.fmt == "onnx":
        require("export", "run.py export --format onnx", "onnx")
    model = find_model(args.target) if args.target.is_dir() else args.target
    if model.suffix != ".safetensors":
        raise ConfigError(f"{model}: export takes our agents' model.safetensors (SB3 zips: use SB3's own export)")
    try:
        _, meta = read_model_file(model)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    name = meta.get("agent")
    if name not in AGENTS:
        raise ConfigError(f"{model} holds agent {str(name)[:40]!r}; export knows {', '.join(AGENTS)}")
    agent = AGENTS[name].load(model, device="cpu")
    out = args.out or model.with_name("policy" + SUFFIXES[args.fmt])
    path = export_policy(agent, out, args.fmt, load_obs_normalization(model.parent / "obs_rms.json"))
    print(f"wrote {path} ({args.fmt}: inputs {'obs, mask' if agent.head.mask_size else 'obs'}; "
          f"outputs action, {'logits' if agent.head.mask_size else 'mean'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a config error, printed without a traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = list(sys.orig_argv) if argv is None else ["reparl", *argv]
    # Warnings (e.g. "W&B init failed; continuing") go to stderr as one line, not a stack.
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    from agents.collect import NonFiniteError  # after parse_args: --help does not wait for torch
    from experiments.train import Interrupted
    try:
        if args.command == "train":
            return _train(args, command)
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "compare":
            return _compare(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "study":
            return _study(args, command)
        if args.command == "export":
            return _export(args)
        if args.command == "check-env":
            from experiments.check_env import check_env

            print(check_env(args.env_id))
            return 0
        if args.command == "dashboard":
            from experiments.dashboard import run_dashboard

            print(run_dashboard(args.entity, args.project, args.name, args.dry_run, args.out))
            return 0
        return _eval(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: {e}; free some space, then `python run.py train --resume RUN_DIR` continues (or, if "
              "training had finished, writes the model from its last checkpoint)", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"interrupted: {e}\nresume with: python run.py train --resume {e.checkpoint.parents[1]}",
              file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
