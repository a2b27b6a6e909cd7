"""``train``: one config -> one run folder (and one W&B run), for our agents and SB3's alike.

Our agents' runs survive interruption: SIGINT/SIGTERM stop the loop at the next step boundary,
write a checkpoint and finish W&B; an error writes one too (unless the weights are already
non-finite) and is re-raised. ``--resume`` continues the same run folder from its latest good
checkpoint (see README, "Checkpoints and resume").
"""

from __future__ import annotations

import json
import math
import signal
import warnings
from collections.abc import Collection
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.buffer import ReplayBuffer
from agents.checkpoint import read_checkpoint
from agents.collect import NonFiniteError, has_action_masks
from envs import make_env, make_vec_env, save_obs_normalization
from experiments.config import Config, ConfigError, agent_class
from experiments.loop import OnEval, RunLoop, Throughput, window_mean
from experiments.rundir import create_run_dir, run_lock, write_run_files
from experiments.tracking import Tracker


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    final_eval: float | None
    wandb_sync_hint: str | None
    wandb_error: str | None


class Interrupted(Exception):  # noqa: N818 (it is not an error: the run stopped on request)
    """The run stopped on a signal after writing ``checkpoint``."""

    def __init__(self, signum: int, checkpoint: Path) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at a step boundary; checkpoint {checkpoint}")
        self.signum, self.checkpoint = signum, checkpoint


@contextmanager
def stop_on_signals(state: dict[str, Any]):  # noqa: ANN201
    """SIGINT/SIGTERM set ``state["signal"]``; the learn loop stops at the next step boundary, where
    the agent's state is consistent. A second signal interrupts at once."""
    def handler(signum: int, frame: Any) -> None:
        if state.get("signal") is not None:
            raise KeyboardInterrupt
        state["signal"] = signum

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (e.g. a Ray worker): no handlers
        previous = {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint that reads back and verifies; a bad one is skipped with a warning naming it."""
    found = sorted((run_dir / "checkpoints").glob("step_*.safetensors"),
                   key=lambda p: int(p.stem.removeprefix("step_")) if p.stem[5:].isdigit() else -1, reverse=True)
    if not found:
        raise ConfigError(f"{run_dir} has no checkpoints/step_*.safetensors to resume from")
    bad = []
    for path in found:
        try:
            read_checkpoint(path)
        except ValueError as e:
            bad.append(str(e))
            warnings.warn(f"skipping unusable checkpoint: {e}", RuntimeWarning, stacklevel=2)
            continue
        return path
    raise ConfigError("no usable checkpoint in " + str(run_dir / "checkpoints") + ":\n  " + "\n  ".join(bad))


def build_agent(cfg: Config, venv: Any, resume_from: Path | None = None, changed: Collection[str] = ()) -> Any:
    """The run's agent on ``venv``, fresh or restored from ``resume_from`` (``changed``: the
    hyperparameters allowed to differ from the checkpoint's, :meth:`SoftActorCritic.restore`)."""
    cls, hp = agent_class(cfg.agent.name), dict(cfg.agent.hyperparameters)
    if resume_from is not None:
        # A run folder's config.yaml lists every hyperparameter in force when the run began, so a
        # key it lacks was added since; the run ran with that key's old behaviour, not today's default.
        hp = {**{k: v for k, v in cls.behaviour_before.items() if k not in hp}, **hp}
    agent = cls(venv, seed=cfg.train.seed, device=cfg.train.device, **hp)
    if resume_from is not None:
        agent.restore(resume_from, changed)
    return agent


def train_ours(cfg: Config, run_dir: Path, tracker: Tracker, progress_bar: bool,
               resume_from: Path | None = None, on_eval: OnEval | None = None) -> tuple[Path, float | None]:
    """Our agents (GumbelSAC, GaussianSAC, HybridSAC): the agent's own loop, with the runner's work in its callback."""
    venv = make_vec_env(cfg.env)
    agent = build_agent(cfg, venv, resume_from)
    tracker.record_choices(agent.hparams)
    start = agent.num_timesteps

    def save_checkpoint(path: Path) -> Path:
        agent.check_finite()  # never replace a good checkpoint with NaN weights
        return agent.checkpoint(path, include_buffer=cfg.train.checkpoint_buffer)

    loop = RunLoop(cfg, run_dir, tracker, agent, save=save_checkpoint, checkpoint_suffix=".safetensors",
                   train_env=venv, progress_bar=progress_bar, start_step=start, on_eval=on_eval)
    print(buffer_line(cfg, ReplayBuffer.nbytes_for(**agent.buffer_arguments())), flush=True)
    rate = Throughput(loop, start, agent.num_updates)
    log_every = cfg.train.log_interval
    state: dict[str, Any] = {"next_log": (start // log_every + 1) * log_every, "last_log": start if start else -1,
                             "signal": None}

    def log_now(a: Any) -> None:
        # pop_train_info() is the one host sync of the update metrics (they accumulate on-device).
        metrics: dict[str, Any] = dict(a.pop_train_info())
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteError(f"non-finite {', '.join(bad)} (mean over the updates up to env step "
                                 f"{a.num_timesteps}, update {a.num_updates}); the last good checkpoint is kept")
        if a.episode_returns:
            metrics["rollout/ep_return"] = window_mean(a.episode_returns)
            metrics["rollout/ep_length"] = window_mean(a.episode_lengths)
            metrics["rollout/episodes"] = a.num_episodes
        metrics.update(rate(a.num_timesteps, a.num_updates))
        tracker.log(metrics, a.num_timesteps)
        state["last_log"] = a.num_timesteps

    def callback(a: Any) -> bool:
        n = a.num_timesteps
        if n >= state["next_log"]:
            log_now(a)
            while state["next_log"] <= n:
                state["next_log"] += log_every
        loop.on_step(n, a.episode_returns[-1] if a.episode_returns else None)
        return state["signal"] is None

    try:
        with stop_on_signals(state):
            try:
                agent.learn(cfg.train.total_timesteps - start, callback=callback, progress_bar=False)
            except NonFiniteError:
                raise  # resuming into the same NaN is pointless; the last periodic checkpoint stays
            except Exception:
                try:
                    warnings.warn(f"error at env step {agent.num_timesteps}; checkpoint "
                                  f"{loop.checkpoint(agent.num_timesteps)}", RuntimeWarning, stacklevel=2)
                except Exception as e:  # a broken state must not hide the original error
                    warnings.warn(f"no checkpoint written after the error: {e}", RuntimeWarning, stacklevel=2)
                raise
            if state["signal"] is not None:
                raise Interrupted(state["signal"], loop.checkpoint(agent.num_timesteps))
        if agent.num_timesteps != state["last_log"]:  # flush the tail since the last log
            log_now(agent)
        agent.check_finite()
        try:
            model_path = agent.save(run_dir / "model.safetensors")
        except OSError:
            _checkpoint_for_recovery(loop, agent.num_timesteps)
            raise
        save_obs_normalization(venv, run_dir / "obs_rms.json")
        loop.close(agent.num_timesteps)
    finally:
        if loop.bar is not None:
            loop.bar.close()
        venv.close()
    return model_path, loop.last_eval.mean if loop.last_eval is not None else None


def _checkpoint_for_recovery(loop: RunLoop, step: int) -> None:
    """The final model could not be written (a full disk): a checkpoint at the last step lets
    ``--resume`` write the model once there is room, without training again."""
    final = loop.run_dir / "checkpoints" / f"step_{step}{loop.suffix}"
    try:
        path = final if final.is_file() else loop.checkpoint(step)
    except Exception as e:  # the disk may be just as full: the original error is what matters
        warnings.warn(f"could not write the final model nor a checkpoint at step {step}: {e}", RuntimeWarning,
                      stacklevel=3)
        return
    warnings.warn(f"could not write the final model; checkpoint {path} holds it: free space, then "
                  f"`python run.py train --resume {loop.run_dir}` writes the model from it", RuntimeWarning,
                  stacklevel=3)


def recover_model(cfg: Config, run_dir: Path, checkpoint: Path) -> TrainResult:
    """A run that finished training but whose model file is missing (the final save failed): the
    model and observation statistics from its last checkpoint, restored as a resume would."""
    venv = make_vec_env(cfg.env)
    try:
        agent = build_agent(cfg, venv, checkpoint)
        agent.check_finite()
        model_path = agent.save(run_dir / "model.safetensors")
        save_obs_normalization(venv, run_dir / "obs_rms.json")
    finally:
        venv.close()
    warnings.warn(f"{run_dir} had finished training (checkpoint {checkpoint.name}) but had no model file; wrote "
                  f"{model_path} from that checkpoint", RuntimeWarning, stacklevel=2)
    return TrainResult(run_dir, model_path, None, None, None)


def buffer_nbytes(cfg: Config, observation_space: Any, action_space: Any, masks: bool = False) -> int:
    """Bytes of the replay buffer the config's agent will allocate for these spaces: its class's
    :meth:`~agents.sac.SoftActorCritic.buffer_arguments_for` (the action layout is its head's,
    images once per frame in their dtype). ``masks``: whether the env gives action masks (the
    buffer then keeps them)."""
    cls = agent_class(cfg.agent.name)
    return ReplayBuffer.nbytes_for(**cls.buffer_arguments_for(observation_space, action_space,
                                                              cfg.agent.hyperparameters, cfg.env.n_envs, masks))


def buffer_line(cfg: Config, nbytes: int) -> str:
    """The line the run prints before it starts: the replay buffer's bytes per transition and in all."""
    from agents.spaces import resolve_device

    n = int({**agent_class(cfg.agent.name).defaults, **cfg.agent.hyperparameters}["buffer_size"])
    return (f"replay buffer: {n:,} transitions x {nbytes / n:,.0f} bytes = {nbytes / 2**30:,.2f} GiB "
            f"on {resolve_device(cfg.train.device)}")


def check_buffer_fits(cfg: Config) -> None:
    """Refuse, before any run folder exists, a replay buffer that cannot be allocated."""
    if cfg.agent.is_sb3:
        return
    from agents.memory import check_fits
    from agents.spaces import resolve_device

    hp = {**agent_class(cfg.agent.name).defaults, **cfg.agent.hyperparameters}
    env = make_env(cfg.env)
    try:
        nbytes = buffer_nbytes(cfg, env.observation_space, env.action_space, has_action_masks(env))
    finally:
        env.close()
    try:
        check_fits(nbytes, resolve_device(cfg.train.device), f"agent.buffer_size={hp['buffer_size']:,}")
    except MemoryError as e:
        raise ConfigError(str(e)) from None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop events after ``step`` (and a torn last line): a resumed run logs them again, so the
    step axis never repeats or goes back. Written to a temp file and renamed."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("global_step", 0) <= step:
            keep.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    tmp.replace(path)


def run_training(cfg: Config, runs_root: Path, name: str, command: list[str], run_dir: Path | None = None,
                 progress_bar: bool = True, resume: bool = False, on_eval: OnEval | None = None) -> TrainResult:
    """Create the run folder, train, save, and close the trackers (also on failure).

    ``resume``: ``run_dir`` is an existing run folder; continue from its latest good checkpoint.
    ``on_eval``: called after each evaluation (``run.py sweep`` reports it to Ray Tune).
    """
    check_buffer_fits(cfg)
    if resume:
        if cfg.agent.is_sb3:
            raise ConfigError("--resume supports our agents (GumbelSAC, GaussianSAC, HybridSAC), not SB3 baselines")
    else:
        run_dir = create_run_dir(runs_root, name) if run_dir is None else run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        return _train_locked(cfg, run_dir, command, progress_bar, resume, on_eval)


def _train_locked(cfg: Config, run_dir: Path, command: list[str], progress_bar: bool, resume: bool,
                  on_eval: OnEval | None) -> TrainResult:
    resume_from = None
    if resume:
        resume_from = latest_checkpoint(run_dir)
        step = int(read_checkpoint(resume_from)[1]["num_timesteps"])
        if step >= cfg.train.total_timesteps:
            if not (run_dir / "model.safetensors").is_file():
                return recover_model(cfg, run_dir, resume_from)
            raise ConfigError(f"{run_dir} already reached train.total_timesteps={cfg.train.total_timesteps}")
        truncate_metrics(run_dir / "metrics.jsonl", step)
        with (run_dir / "command.txt").open("a") as f:
            f.write(f"# resumed from {resume_from.name}: " + " ".join(command) + "\n")
    else:
        write_run_files(run_dir, cfg, command)
    if cfg.train.torch_threads is not None:
        import torch

        torch.set_num_threads(cfg.train.torch_threads)
    tracker = Tracker(run_dir, cfg, resume=resume)
    hint = None
    exit_code = 1
    try:
        if cfg.agent.is_sb3:
            from experiments.baselines import train_sb3

            model_path, final = train_sb3(cfg, run_dir, tracker, progress_bar, on_eval)
        else:
            model_path, final = train_ours(cfg, run_dir, tracker, progress_bar, resume_from, on_eval)
        tracker.summary({"eval/final_mean_return": final} if final is not None else {})
        tracker.log_model(model_path)
        exit_code = 0
    except Interrupted as e:
        exit_code = 128 + e.signum
        raise
    except KeyboardInterrupt:  # a second SIGINT stops at once: still an interruption, as the shell reports it
        exit_code = 130
        raise
    finally:
        hint = tracker.finish(exit_code=exit_code)
    return TrainResult(run_dir, model_path, final, hint, tracker.wandb_error)
