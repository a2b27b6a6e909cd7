"""run.py dashboard: every panel of the W&B workspace names a metric that a real offline run of each
agent logs (read back from the run's .wandb file on disk)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.config import load_config
from experiments.dashboard import AGENT_ONLY, panel_metrics
from experiments.train import run_training
from experiments.wandb_reader import read_run

REPO = Path(__file__).resolve().parents[1]
TINY = {"train.total_timesteps": 400, "train.eval_freq": 200, "train.eval_episodes": 2, "train.log_interval": 100,
        "agent.learning_starts": 100, "agent.net_arch": [16], "agent.batch_size": 16, "agent.diagnostic_interval": 20,
        "wandb.mode": "offline", "wandb.project": "dashboard-test"}


@pytest.mark.parametrize("config, agent", [("gumbel_sac/cartpole.yaml", "GumbelSAC"),
                                           ("gaussian_sac/pendulum.yaml", "GaussianSAC")])
def test_every_panel_metric_is_logged_by_a_real_run(config: str, agent: str, tmp_path: Path) -> None:
    spec_path = tmp_path / "workspace.json"
    assert main(["dashboard", "--entity", "someone", "--project", "dashboard-test", "--dry-run",
                 "--out", str(spec_path)]) == 0
    spec = json.loads(spec_path.read_text())
    in_spec = [m for section in spec["sections"] for panel in section["panels"] for m in panel["metrics"]]
    assert in_spec == panel_metrics() and spec["workspace_model"]["project"] == "dashboard-test"

    result = run_training(load_config(REPO / "configs" / config, TINY), tmp_path, "run", ["pytest"],
                          progress_bar=False)
    logged = {k for row in read_run(result.run_dir).history for k in row}
    expected = {m for m in in_spec if AGENT_ONLY.get(m, agent) == agent}
    assert expected <= logged, sorted(expected - logged)
