"""Lint and layering: ruff passes, ``agents`` stands alone (no W&B, runner or CLI on import), and the
arrows point one way, ``run.py -> experiments -> agents, envs`` (DESIGN.md)."""

from __future__ import annotations

import ast
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


def _imported_roots(path: Path) -> set[str]:
    """Top-level package of every import in a module, lazy ones inside functions included."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


# The AST, not sys.modules after an import: a lazy import inside a function, or one under
# TYPE_CHECKING, closes a loop just the same and would not show up in test_agents_import_alone.
@pytest.mark.parametrize(("package", "forbidden"), [("envs", {"experiments", "run"}),
                                                    ("agents", {"experiments", "run", "wandb"})])
def test_lower_packages_never_import_upward(package: str, forbidden: set[str]) -> None:
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules
    offenders = {str(m.relative_to(ROOT)): sorted(_imported_roots(m) & forbidden) for m in modules}
    assert {m: bad for m, bad in offenders.items() if bad} == {}
