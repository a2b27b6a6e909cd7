"""Lint and layering: ruff passes, and ``agents`` stands alone (no W&B, runner or CLI on import)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str] | None:
    exe = shutil.which("ruff") or (str(Path(sys.executable).with_name("ruff"))
                                   if Path(sys.executable).with_name("ruff").exists() else None)
    return [exe] if exe else None


def test_ruff_check_passes() -> None:
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed")
    res = subprocess.run([*ruff, "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_agents_import_alone() -> None:
    code = ("import json, sys; import agents; from agents import GumbelSAC, GaussianSAC; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('wandb', 'experiments', 'run', 'ray', 'envs'))))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []
