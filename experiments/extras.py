"""The optional parts of reparl and the pip extras that install them (pyproject.toml).

Training and evaluating one agent needs none of them. A command that does need one checks here
before it starts, so a missing package is one line naming the extra and the command that installs
it, instead of an ImportError from deep inside Ray or gymnasium's video recorder.
"""

from __future__ import annotations

import importlib.util

from experiments.config import ConfigError

EXTRAS: dict[str, str] = {
    "sweep": "Ray Tune and Optuna",
    "video": "moviepy",
    "export": "onnx",
    "dashboard": "wandb-workspaces",
}
"""Extra -> what it installs, as the error message names it (the packages are pyproject.toml's)."""


class MissingExtra(ConfigError):
    """An optional package this install lacks; the message names the extra and the install command."""


def install_command(extra: str) -> str:
    """The README's install with ``extra`` added; the lock pins its packages as it pins the core."""
    return f"pip install -c requirements.lock -e '.[{extra}]'"


def require(extra: str, what: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` if any of the top-level ``modules`` cannot be imported.

    ``find_spec`` looks for the package without importing it, so the check costs nothing when
    the package is there (importing Ray alone takes seconds)."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"{what} needs {', '.join(missing)}, which this install lacks (the '{extra}' extra: "
                           f"{EXTRAS[extra]}); install it with: {install_command(extra)}")
