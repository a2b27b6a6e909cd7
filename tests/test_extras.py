"""Training needs only the core install; the optional parts are extras that say so when missing.

The subprocesses here hide the extras' packages by setting ``sys.modules[name] = None`` before
reparl is imported: ``import name`` then raises ImportError and ``importlib.util.find_spec(name)``
returns None, as in an install that lacks them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from experiments.extras import EXTRAS, MissingExtra, install_command, require

REPO = Path(__file__).resolve().parents[1]
EXTRA_MODULES = ["ray", "optuna", "moviepy", "onnx", "wandb_workspaces"]
TINY = ["agent.learning_starts=100", "agent.net_arch=[16]", "agent.batch_size=32", "agent.buffer_size=1000",
        "agent.compile=false", "train.total_timesteps=300", "train.eval_freq=300", "train.eval_episodes=2",
        "train.checkpoint_freq=0", "train.log_interval=100"]


def python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_train_and_eval_import_no_extra(tmp_path: Path) -> None:
    """The README's train command, shortened, then eval without --video: none of the extras' packages
    is ever imported, so an install without them trains and evaluates."""
    proc = python(f"""
        import sys
        from experiments.cli import main
        assert main(["train", "configs/gumbel_sac/cartpole.yaml", "--run-dir", {str(tmp_path)!r}, "--no-progress",
                     "--set", *{TINY!r}]) == 0
        (run,) = __import__("pathlib").Path({str(tmp_path)!r}).iterdir()
        assert main(["eval", str(run), "--episodes", "2"]) == 0
        print("imported:", sorted(set({EXTRA_MODULES!r}) & set(sys.modules)))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported: []" in proc.stdout
    (run,) = tmp_path.iterdir()
    assert json.loads((run / "eval.json").read_text())["episodes"] == 2


def test_without_the_extras_each_command_that_needs_one_says_which_in_one_line(tmp_path: Path) -> None:
    hide = "; ".join(f"sys.modules[{m!r}] = None" for m in EXTRA_MODULES)
    commands = {
        "sweep": ["sweep", "configs/sweeps/smoke.yaml", "--run-dir", str(tmp_path / "sweeps")],
        "video": ["eval", str(tmp_path / "no-such-run"), "--video"],
        "export": ["export", str(tmp_path / "no-such-run"), "--format", "onnx"],
        "dashboard": ["dashboard", "--entity", "e", "--project", "p", "--dry-run"],
    }
    for extra, argv in commands.items():
        proc = python(f"""
            import sys; {hide}
            from experiments.cli import main
            sys.exit(main({argv!r}))
        """)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (extra, proc.stderr[-2000:])
        assert lines[0].startswith("error: ") and f"the '{extra}' extra" in lines[0], lines[0]
        assert lines[0].endswith(install_command(extra)), lines[0]
    assert not (tmp_path / "sweeps").exists()  # refused before the sweep folder is made


def test_require_passes_what_is_installed_and_names_what_is_not() -> None:
    require("sweep", "x", "json")  # present: no error, nothing imported
    with pytest.raises(MissingExtra, match=r"x needs no_such_module_xyz, .*'video' extra"):
        require("video", "x", "no_such_module_xyz")
    with pytest.raises(ValueError, match="unknown extra"):
        require("nope", "x", "json")


def test_extras_are_declared_and_pinned_and_the_test_extra_pulls_them() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    (self_ref,) = [d for d in extras["test"] if d.startswith("reparl[")]
    assert set(self_ref[len("reparl["):-1].split(",")) == set(EXTRAS)  # CI installs every optional part
    core = " ".join(project["dependencies"])
    assert not re.search(r"\b(ray|optuna|moviepy)\b", core)  # training one agent needs none of them
    # Every package an extra names has a pin, so `-c requirements.lock` fixes its version.
    pins = {re.split(r"[=<>]", line)[0].lower().replace("_", "-")
            for line in (REPO / "requirements.lock").read_text().splitlines() if "==" in line}
    named = {re.split(r"[\[<>=]", d)[0].lower() for deps in extras.values() for d in deps if not d.startswith("reparl")}
    assert named <= pins, named - pins


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"```bash\n(python3 -m venv .*)\n```", readme)
    assert len(commands) == 2 and all("-c requirements.lock" in c for c in commands)
    train, test = commands
    assert "'.[test]'" in test and "[" not in train  # training installs the core only
    assert test in (REPO / ".ci" / "run").read_text().splitlines()
