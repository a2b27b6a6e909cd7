"""SB3's own callbacks run with our agents, and the README's Python snippet runs as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnRewardThreshold,
)
from stable_baselines3.common.monitor import Monitor

from agents import GaussianSAC, GumbelSAC

REPO = Path(__file__).resolve().parents[1]
SMALL: dict[str, Any] = {"net_arch": [32, 32], "batch_size": 32, "learning_starts": 50, "buffer_size": 2_000,
                         "seed": 0, "device": "cpu"}


class Counter(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.starts = self.ends = 0

    def _on_training_start(self) -> None:
        self.starts += 1

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.ends += 1


def test_checkpoint_eval_stop_and_list(tmp_path: Path) -> None:
    """CheckpointCallback writes loadable safetensors models every 100 steps; EvalCallback evaluates
    on its own env, logs through the agent's SB3 logger and saves the best model; a reward threshold
    every evaluation passes stops training at the first evaluation; CallbackList composes them."""
    counter = Counter()
    stop = StopTrainingOnRewardThreshold(reward_threshold=-1e9)
    evaluate = EvalCallback(Monitor(gym.make("CartPole-v1")), eval_freq=150, n_eval_episodes=2,
                            best_model_save_path=str(tmp_path / "best"), log_path=str(tmp_path / "evals"),
                            callback_on_new_best=stop, verbose=0)
    checkpoints = CheckpointCallback(save_freq=100, save_path=str(tmp_path / "ck"), name_prefix="m")
    agent = GumbelSAC("CartPole-v1", **SMALL)
    agent.learn(1_000, callback=CallbackList([checkpoints, evaluate, counter]))
    assert agent.num_timesteps == 150  # stopped at the first evaluation
    assert counter.starts == 1 and counter.ends == 1 and counter.n_calls == 150
    saved = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert saved == ["m_100_steps.safetensors"]
    assert GumbelSAC.load(tmp_path / "ck" / saved[0]).num_timesteps == 100
    assert GumbelSAC.load(tmp_path / "best" / "best_model.safetensors").num_timesteps == 150
    assert evaluate.last_mean_reward > 0 and np.isfinite(evaluate.best_mean_reward)
    log = np.load(tmp_path / "evals" / "evaluations.npz")
    assert log["timesteps"].tolist() == [150] and log["results"].shape == (1, 2)


def test_plain_function_and_list_of_both() -> None:
    seen: list[int] = []
    agent = GaussianSAC("Pendulum-v1", **SMALL)
    agent.learn(120, callback=[lambda a: seen.append(a.num_timesteps), Counter()])
    assert seen == list(range(1, 121))
    agent.learn(50, callback=lambda a: a.num_timesteps < 130)  # False stops
    assert agent.num_timesteps == 130


def test_pickling_callbacks_are_refused() -> None:
    agent = GumbelSAC("CartPole-v1", **SMALL)
    with pytest.raises(ValueError, match="save_replay_buffer=True.*pickle"):
        agent.learn(10, callback=CheckpointCallback(10, "/tmp/x", save_replay_buffer=True))


def test_get_env_and_set_env() -> None:
    agent = GumbelSAC("CartPole-v1", **SMALL).learn(60)
    assert agent.get_env() is agent.env and agent.get_env().num_envs == 1
    agent.set_env("CartPole-v1")
    agent.learn(20)
    assert agent.num_timesteps == 80
    with pytest.raises(ValueError, match="observation space"):
        agent.set_env("Acrobot-v1")


def test_readme_python_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's snippet, as written, with the training shortened."""
    text = (REPO / "README.md").read_text()
    snippet = re.search(r"## Use the agents from Python.*?```python\n(.*?)```", text, re.S).group(1)
    assert "learn(20_000" in snippet
    snippet = snippet.replace("learn(20_000", "learn(300").replace('seed=0)', 'seed=0, learning_starts=100)', 1)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    mean, std = namespace["mean_reward"], namespace["std_reward"]
    assert mean > 0 and std >= 0
