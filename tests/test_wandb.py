"""Offline W&B: the reader against real runs on disk, and W&B failures that must not stop training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.config import build_config
from experiments.tracking import Tracker
from experiments.wandb_reader import BLOCK, find_datastore, is_complete, iter_payloads, read_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], str]:
    """A real offline run whose records cross several 32 KiB blocks (a 100 KB config value)."""
    run_dir = tmp_path_factory.mktemp("run")
    cfg = build_config({"wandb": {"project": "reader-test", "tags": ["t1"]}}, check_env=False)
    big = "x" * 100_000
    cfg.env.kwargs = {"note": big}  # lands in the config record, which must be split over blocks
    tracker = Tracker(run_dir, cfg)
    assert tracker.wandb_enabled, tracker.wandb_error
    rows = [{"train/loss": 1.0 / (i + 1), "rollout/ep_return": float(i)} for i in range(300)]
    for i, row in enumerate(rows):
        tracker.log(row, step=10 * i)
    tracker.log({"eval/mean_return": 42.5}, step=3000)
    hint = tracker.finish()
    return run_dir, rows, hint or ""


def test_finish_returns_only_once_the_run_is_on_disk(offline_run: tuple[Path, list[dict], str],
                                                     tmp_path: Path) -> None:
    """Tracker.finish waits for the exit record (offline, wandb's finish() can return before it is
    written); a run cut short before it, like a copy of the first half, is not complete."""
    datastore = find_datastore(offline_run[0])
    assert is_complete(datastore)
    half = tmp_path / "run-half.wandb"
    half.write_bytes(datastore.read_bytes()[: datastore.stat().st_size // 2])
    assert not is_complete(half)


def test_reader_returns_config_history_summary(offline_run: tuple[Path, list[dict], str]) -> None:
    run_dir, rows, hint = offline_run
    datastore = find_datastore(run_dir)
    assert datastore.stat().st_size > 2 * BLOCK  # the file really spans blocks
    assert hint == f"wandb sync {datastore.parent}"
    run = read_run(run_dir)
    assert run.project == "reader-test" and "t1" in run.tags and "GumbelSAC" in run.tags
    assert run.config["env"]["kwargs"]["note"] == "x" * 100_000  # reassembled from FIRST/MIDDLE/LAST pieces
    assert run.config["agent"]["name"] == "GumbelSAC" and run.config["agent"]["learning_rate"] == 3e-4
    assert run.metrics == {"*": "global_step"}
    history = [h for h in run.history if "train/loss" in h]
    assert [h["global_step"] for h in history] == [10 * i for i in range(300)]
    assert [h["train/loss"] for h in history] == pytest.approx([r["train/loss"] for r in rows])
    assert run.summary["eval/mean_return"] == 42.5 and run.summary["global_step"] == 3000
    # metrics.jsonl holds the same events, independent of W&B
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(events) == 301 and events[-1] == {"global_step": 3000, "eval/mean_return": 42.5}


def test_reader_rejects_foreign_and_corrupt_files(offline_run: tuple[Path, list[dict], str], tmp_path: Path) -> None:
    not_wandb = tmp_path / "run-x.wandb"
    not_wandb.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ValueError, match="not a W&B datastore"):
        list(iter_payloads(not_wandb))
    data = bytearray(find_datastore(offline_run[0]).read_bytes())
    data[7 + 7 + 3] ^= 0xFF  # a byte inside the first record's payload
    corrupt = tmp_path / "run-y.wandb"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        list(iter_payloads(corrupt))


def test_wandb_log_failure_disables_wandb_but_keeps_metrics(tmp_path: Path) -> None:
    cfg = build_config({}, check_env=False)
    tracker = Tracker(tmp_path, cfg)
    assert tracker.wandb_enabled
    tracker.run.finish()  # behind the tracker's back: the next wandb log raises
    with pytest.warns(RuntimeWarning, match="W&B log failed"):
        tracker.log({"train/x": 1.0}, step=5)
    assert not tracker.wandb_enabled
    tracker.log({"train/x": 2.0}, step=6)  # no second warning, no exception
    tracker.finish()
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert events == [{"global_step": 5, "train/x": 1.0}, {"global_step": 6, "train/x": 2.0}]


def test_wandb_init_failure_does_not_kill_training(tmp_path: Path) -> None:
    # A project name W&B refuses ('/' is not allowed): wandb.init raises UsageError.
    proc = subprocess.run(
        [sys.executable, "run.py", "train", "configs/gumbel_sac/cartpole.yaml", "--run-dir", str(tmp_path),
         "--no-progress", "--set", "wandb.project=bad/name", "train.total_timesteps=200", "agent.learning_starts=50",
         "agent.net_arch=[16]", "agent.batch_size=16", "train.eval_freq=200", "train.eval_episodes=2",
         "train.log_interval=100"],
        cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "W&B init failed" in proc.stderr and "Invalid project name" in proc.stderr
    assert "W&B: disabled after an error" in proc.stdout
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "model.safetensors").is_file()
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/mean_return" in e for e in events) and any("train/critic_loss" in e for e in events)
    assert not list(run_dir.rglob("*.wandb"))
