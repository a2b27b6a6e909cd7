"""Run folders: unique names, and the files that make a run reproducible.

Layout of ``runs/<name>-<YYYYmmdd-HHMMSS>-<6 hex>/``::

    config.yaml        resolved config (agent section with every hyperparameter in force)
    command.txt        the exact argv
    git.txt            revision and dirty flag of the code that ran
    seed.txt           the seed
    metrics.jsonl      one JSON object per log event, with global_step
    checkpoints/       periodic, on-signal and on-error checkpoints (``--resume`` continues from them)
    wandb_run_id.txt   the W&B run id a resumed run continues
    run.lock           the PID of the process writing the folder, while it runs
    model.safetensors  final model (ours; SB3 baselines: model.zip)
    obs_rms.json       observation-normalization statistics, when env.normalize_obs
    wandb/             the W&B run (offline by default)
    videos/            eval videos (``eval --video``)
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from experiments.config import Config, ConfigError, dump_config

REPO = Path(__file__).resolve().parents[1]
MODEL_FILES = ("model.safetensors", "model.zip")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def create_run_dir(root: Path, name: str) -> Path:
    """A fresh folder; the random suffix plus ``exist_ok=False`` keeps parallel runs apart even
    when they start in the same second."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        path = root / f"{slug(name)}-{stamp}-{secrets.token_hex(3)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a unique run folder under {root}")


def git_description() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        rev = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "revision: unknown (not a git checkout)\ndirty: unknown\n"
    return f"revision: {rev}\ndirty: {str(dirty).lower()}\n"


def write_run_files(run_dir: Path, cfg: Config, command: list[str]) -> None:
    """``command`` is the full command line as the process received it (``sys.orig_argv``)."""
    dump_config(cfg, run_dir / "config.yaml")
    (run_dir / "command.txt").write_text(shlex.join(command) + "\n")
    (run_dir / "git.txt").write_text(git_description())
    (run_dir / "seed.txt").write_text(f"{cfg.train.seed}\n")
    (run_dir / "checkpoints").mkdir(exist_ok=True)


def find_model(run_dir: Path) -> Path:
    for name in MODEL_FILES:
        if (run_dir / name).is_file():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir} holds no {' or '.join(MODEL_FILES)}; did the training finish?")


LOCK = "run.lock"


def _lock_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One writer per run folder: two processes resuming (or training into) the same folder would
    interleave checkpoints and metrics. ``run.lock`` holds the writer's PID; O_EXCL makes taking it
    atomic, and a lock left by a killed process (its PID no longer running) is taken over with a warning."""
    path = run_dir / LOCK
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _lock_pid(path)
            # An empty lock younger than a few seconds is one being written right now.
            young = pid is None and path.exists() and time.time() - path.stat().st_mtime < 5
            if young or (pid is not None and _alive(pid)):
                holder = f"process {pid}" if pid is not None else "another process"
                raise ConfigError(f"{run_dir} is in use by {holder} ({path}); wait for it to finish or stop it "
                                  f"(if no reparl run has that PID any more, delete {path})") from None
            warnings.warn(f"{path}: taking over the lock of process {pid}, which is no longer running",
                          RuntimeWarning, stacklevel=3)
            if _lock_pid(path) == pid:  # still the stale one, not a lock another process took meanwhile
                path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        break
    else:
        raise ConfigError(f"{run_dir}: could not take {path}; another process keeps taking it")
    try:
        yield
    finally:
        if _lock_pid(path) == os.getpid():
            path.unlink(missing_ok=True)
