"""Counterfactual replay (experiments.research.replay): a real run, continued from its own checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.config import ConfigError, load_config
from experiments.research.replay import main, original_evals, replay
from experiments.train import run_training

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GumbelSAC on CartPole, 1,200 steps: updates from step 100, evals every 100, checkpoints every 400."""
    cfg = load_config(REPO / "configs/gumbel_sac/cartpole.yaml", {
        "agent.net_arch": [32, 32], "agent.batch_size": 32, "agent.learning_starts": 100,
        "agent.learning_rate": 3e-3, "agent.critic_learning_rate": 3e-3, "train.total_timesteps": 1200,
        "train.eval_freq": 100, "train.eval_episodes": 3, "train.checkpoint_freq": 400, "train.log_interval": 100,
        "wandb.mode": "disabled", "train.device": "cpu"})
    result = run_training(cfg, tmp_path_factory.mktemp("runs"), "replayed", ["pytest"], progress_bar=False)
    return result.run_dir


def test_replay_with_nothing_changed_reproduces_the_runs_evaluations(run_dir: Path) -> None:
    """RNG states, env state and buffer come back from the checkpoint, and deterministic evaluation
    draws nothing: every evaluation after the checkpoint is the run's own, to the last bit."""
    rows = replay(run_dir, 400, 1200)
    own = original_evals(run_dir)
    assert [r["step"] for r in rows] == list(range(500, 1300, 100))
    assert [r["eval"] for r in rows] == [own[s] for s in range(500, 1300, 100)]
    assert len(set(own.values())) > 2  # the policy moved: a frozen one would match trivially


def test_replay_with_a_change_continues_the_same_state_differently(run_dir: Path) -> None:
    """A changed learning rate takes the same checkpoint elsewhere; the run folder is untouched."""
    before = (run_dir / "metrics.jsonl").read_text()
    rows = replay(run_dir, 400, 1200, {"agent.critic_learning_rate": 3e-2, "agent.learning_rate": 3e-2})
    own = original_evals(run_dir)
    assert [r["eval"] for r in rows] != [own[s] for s in range(500, 1300, 100)]
    assert (run_dir / "metrics.jsonl").read_text() == before


def test_replay_errors_name_the_fix(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="step_400.safetensors, step_800.safetensors"):
        replay(run_dir, 300, 1200)
    with pytest.raises(ConfigError, match=r"agent settings only .*train.eval_freq"):
        replay(run_dir, 400, 1200, {"train.eval_freq": 50})
    with pytest.raises(ValueError, match="does not match"):  # new shapes cannot take the old weights
        replay(run_dir, 400, 1200, {"agent.net_arch": [8, 8]})
    assert main([str(run_dir), "--from", "400", "--until", "300"]) == 2
    assert "must be after --from 400" in capsys.readouterr().err
