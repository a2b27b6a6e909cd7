"""Run folders: unique names, and the files that make a run reproducible.

Layout of ``runs/<name>-<YYYYmmdd-HHMMSS>-<6 hex>/``::

    config.yaml        resolved config (agent section with every hyperparameter in force)
    command.txt        the exact argv
    git.txt            revision and dirty flag of the code that ran
    seed.txt           the seed
    metrics.jsonl      one JSON object per log event, with global_step
    checkpoints/       periodic, on-signal and on-error checkpoints (``--resume`` continues from them)
    wandb_run_id.txt   the W&B run id a resumed run continues
    model.safetensors  final model (ours; SB3 baselines: model.zip)
    obs_rms.json       observation-normalization statistics, when env.normalize_obs
    wandb/             the W&B run (offline by default)
    videos/            eval videos (``eval --video``)
"""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
import time
from pathlib import Path

from experiments.config import Config, dump_config

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
