"""Pixel envs users run: MinAtar (envs/minatar.py) and Atari with the DQN preprocessing (envs/), through
the factory the runner uses; the SB3 extractors a config names; SB3 DQN with the MinAtar CNN through
``run.py train`` and ``run.py eval --video``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import imageio_ffmpeg
import numpy as np
import pytest
import torch
import yaml
from gymnasium import spaces

from envs import IdSpec, make_env, make_vec_env
from envs.minatar import CELL_PIXELS
from experiments.config import ConfigError, build_config
from experiments.sb3_extractors import MinAtarCNN, NatureCNN

REPO = Path(__file__).resolve().parents[1]
BREAKOUT = "reparl/MinAtar-Breakout-v0"
ATARI = "ALE/Breakout-v5"


def rollout(env: gym.Env, seed: int, actions: np.ndarray) -> list[tuple]:
    """(obs, reward, terminated) at every step of a fixed action sequence, resetting at episode ends."""
    obs, _ = env.reset(seed=seed)
    out = [(obs.copy(), 0.0, False)]
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        out.append((obs.copy(), reward, terminated))
        if terminated or truncated:
            obs, _ = env.reset()
            out.append((obs.copy(), 0.0, False))
    return out


def same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------ MinAtar


@pytest.mark.parametrize("env_id, channels", [(BREAKOUT, 4), ("reparl/MinAtar-SpaceInvaders-v0", 6),
                                              ("reparl/MinAtar-Seaquest-v0", 10)])
def test_minatar_spaces_as_documented(env_id: str, channels: int) -> None:
    env = make_env(IdSpec(env_id))
    assert env.observation_space == spaces.Box(0, 1, (10, 10, channels), bool)
    assert env.action_space == spaces.Discrete(6)  # all six actions, as the MinAtar paper's agents have
    obs, _ = env.reset(seed=0)
    assert obs.dtype == bool and obs.shape == (10, 10, channels) and obs.any()
    assert make_env(IdSpec(BREAKOUT, kwargs={"minimal_action_set": True})).action_space == spaces.Discrete(3)


def test_minatar_is_deterministic_under_a_seed() -> None:
    """The seed fixes the game's randomness and the sticky actions: two envs agree step for step, one env
    replays itself after reset(seed) (the last action of the previous episode is not repeated), and
    another seed gives another game."""
    actions = np.random.default_rng(0).integers(6, size=400)
    a, b = make_env(IdSpec(BREAKOUT)), make_env(IdSpec(BREAKOUT))
    first = rollout(a, 5, actions)
    assert sum(t[2] for t in first) >= 2  # the comparison spans episode ends and unseeded resets
    assert same(first, rollout(b, 5, actions))
    assert same(first, rollout(a, 5, actions))
    assert not same(first, rollout(b, 6, actions))


def test_minatar_reset_forgets_the_last_action() -> None:
    """A new episode has no action to stick to: after steps of "left", reset(seed) plays as a fresh env
    does. Half the steps stick, so over 8 seeds some first step sticks (it would move the paddle)."""
    spec = IdSpec(BREAKOUT, kwargs={"sticky_action_prob": 0.5})
    used, noops = make_env(spec), np.zeros(5, dtype=int)
    used.reset(seed=100)
    for seed in range(8):
        for _ in range(3):
            used.step(1)  # left
        assert same(rollout(used, seed, noops), rollout(make_env(spec), seed, noops))


def test_minatar_sticky_actions_repeat_the_last_action() -> None:
    """With sticky_action_prob 1 every step repeats the episode's first action, no-op: the paddle never moves."""
    env = make_env(IdSpec(BREAKOUT, kwargs={"sticky_action_prob": 1.0}))
    obs, _ = env.reset(seed=0)
    paddle = obs[..., 0].copy()
    for _ in range(5):
        obs, *_ = env.step(1)  # left
        assert np.array_equal(obs[..., 0], paddle)
    free = make_env(IdSpec(BREAKOUT, kwargs={"sticky_action_prob": 0.0}))
    obs, _ = free.reset(seed=0)
    moved, *_ = free.step(1)
    assert not np.array_equal(moved[..., 0], obs[..., 0])


def test_minatar_vector_env_hands_over_final_obs() -> None:
    venv = make_vec_env(IdSpec(BREAKOUT, n_envs=2))
    obs, _ = venv.reset(seed=0)
    assert venv.single_observation_space.shape == (10, 10, 4) and obs.shape == (2, 10, 10, 4) and obs.dtype == bool
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(500):
        obs, reward, terminated, truncated, info = venv.step(rng.integers(6, size=2))
        done = terminated | truncated
        if done.any():
            assert np.array_equal(info["_final_obs"], done)
            for i in np.flatnonzero(done):
                final = info["final_obs"][i]
                assert final.dtype == bool and final.shape == (10, 10, 4)
                assert "episode" in info  # RecordEpisodeStatistics
            ended += int(done.sum())
    venv.close()
    assert ended >= 2


def test_minatar_renders_uint8_frames_of_its_cells() -> None:
    env = make_env(IdSpec(BREAKOUT), render_mode="rgb_array")
    obs, _ = env.reset(seed=1)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (10 * CELL_PIXELS, 10 * CELL_PIXELS, 3)
    cells = frame[::CELL_PIXELS, ::CELL_PIXELS]
    blocks = frame.reshape(10, CELL_PIXELS, 10, CELL_PIXELS, 3)
    assert (blocks == cells[:, None, :, None]).all()  # each cell one flat colour
    lit = cells.any(axis=-1)
    assert np.array_equal(lit, obs.any(axis=-1))  # black exactly where no object is
    paddle = obs[..., 0] & ~obs[..., 1:].any(-1)
    colours = {tuple(c) for c in cells[paddle]}
    assert len(colours) == 1  # one colour per kind of object


# ------------------------------------------------------------------------------ Atari


def test_atari_gets_the_dqn_preprocessing() -> None:
    env = make_env(IdSpec(ATARI))
    assert env.observation_space == spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert env.action_space == spaces.Discrete(4)
    obs, _ = env.reset(seed=0)
    ale = env.unwrapped.ale
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert (obs == obs[-1]).all()  # the stack starts as copies of the reset frame
    assert ale.getEpisodeFrameNumber() <= 30  # at most 30 no-ops, one frame each
    frames, lives, life_lost = ale.getEpisodeFrameNumber(), ale.lives(), False
    rng = np.random.default_rng(0)
    for _ in range(2000):
        new, _, terminated, truncated, _ = env.step(int(rng.integers(4)))
        assert ale.getEpisodeFrameNumber() - frames == 4  # frame skip 4 on an env that skips none itself
        assert np.array_equal(new[:-1], obs[1:])  # the stack shifts by one frame per step
        frames, obs = ale.getEpisodeFrameNumber(), new
        if ale.lives() < lives:
            life_lost = True
            assert not terminated  # a lost life does not end the episode
            break
        assert not (terminated or truncated)
    assert life_lost


def test_atari_is_deterministic_under_a_seed_and_can_be_raw() -> None:
    actions = np.random.default_rng(1).integers(4, size=60)
    a, b = make_env(IdSpec(ATARI)), make_env(IdSpec(ATARI))
    assert same(rollout(a, 3, actions), rollout(b, 3, actions))
    raw = make_env(IdSpec(ATARI, atari_preprocessing=False))
    assert raw.observation_space.shape == (210, 160, 3)
    with pytest.raises(ValueError, match=r"env.kwargs.frameskip=2: .*remove frameskip"):
        make_env(IdSpec(ATARI, kwargs={"frameskip": 2}))


def test_atari_vector_env_time_limit_in_agent_steps_and_final_obs() -> None:
    venv = make_vec_env(IdSpec(ATARI, n_envs=2, max_episode_steps=7))
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84)
    for t in range(1, 8):
        obs, _, terminated, truncated, info = venv.step(np.array([1, 1]))
        assert not terminated.any()
        assert truncated.all() == (t == 7)
    assert np.array_equal(info["_final_obs"], [True, True])
    assert info["final_obs"][0].shape == (4, 84, 84)
    assert (obs == obs[:, -1:]).all()  # each copy was reset: a fresh stack of one frame
    venv.close()


def test_atari_renders_the_screen() -> None:
    env = make_env(IdSpec(ATARI), render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (210, 160, 3)


# ------------------------------------------------------------------------------ SB3 extractors


def test_minatar_cnn_is_the_papers_network_on_channels_last_input() -> None:
    space = spaces.Box(0, 1, (10, 10, 4), bool)
    net = MinAtarCNN(space)
    assert net.features_dim == 128
    # Young and Tian 2019: 16 3x3 filters over 4 channels, then 8 * 8 * 16 = 1024 inputs to 128 units.
    assert sum(p.numel() for p in net.parameters()) == (16 * 4 * 9 + 16) + (1024 * 128 + 128)
    x = torch.rand(3, 10, 10, 4)
    conv, linear = net.conv[0], net.linear[0]
    h = torch.relu(torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), conv.weight, conv.bias)).flatten(1)
    assert torch.allclose(net(x), torch.relu(linear(h)))
    with pytest.raises(ValueError, match="3-D Box"):
        MinAtarCNN(spaces.Box(0, 1, (400,), np.float32))


def test_nature_cnn_shapes() -> None:
    net = NatureCNN(spaces.Box(0, 255, (4, 84, 84), np.uint8))
    assert net.linear[0].in_features == 64 * 7 * 7 and net(torch.rand(2, 4, 84, 84)).shape == (2, 512)


def test_a_config_names_extractors_never_import_paths() -> None:
    def dqn(policy_kwargs: object) -> dict:
        return {"agent": {"name": "DQN", "policy_kwargs": policy_kwargs}, "env": {"id": BREAKOUT}}

    build_config(dqn({"features_extractor_class": "MinAtarCNN", "optimizer_class": "RMSprop"}), "x.yaml")
    for key, value, allowed in [
            ("features_extractor_class", "stable_baselines3.common.torch_layers.NatureCNN", "MinAtarCNN, NatureCNN"),
            ("optimizer_class", "torch.optim.SGD", "Adam, RMSprop")]:
        with pytest.raises(ConfigError) as info:
            build_config(dqn({key: value}), "x.yaml")
        message = str(info.value)
        assert message.startswith(f"agent.policy_kwargs.{key}: '{value[:10]}") and "\n" not in message
        assert f"is not one of {allowed}" in message and message.endswith("(in x.yaml)")


# ------------------------------------------------------------------------------ through the runner


def cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def test_sb3_dqn_with_the_minatar_cnn_trains_and_records_a_video(tmp_path: Path) -> None:
    cli("train", "configs/baselines/dqn_minatar_breakout.yaml", "--run-dir", str(tmp_path), "--no-progress",
        "--wandb", "disabled", "--set", "train.total_timesteps=500", "agent.learning_starts=100",
        "train.eval_freq=250", "train.eval_episodes=2", "train.log_interval=100")
    (run_dir,) = tmp_path.iterdir()
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["agent"]["policy_kwargs"]["features_extractor_class"] == "MinAtarCNN"  # the name, not a class
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["global_step"] for e in events if "eval/mean_return" in e] == [250, 500]
    logged = [e for e in events if "train/n_updates" in e]
    assert len(logged) >= 2 and all(np.isfinite(e["train/loss"]) for e in logged)
    # One update per env step (train_freq 1), from the first step after the 100 random ones.
    assert all(e["train/n_updates"] == e["global_step"] - 101 for e in logged)

    from stable_baselines3 import DQN

    model = DQN.load(run_dir / "model.zip", device="cpu")
    assert isinstance(model.q_net.features_extractor, MinAtarCNN)
    assert isinstance(model.policy.optimizer, torch.optim.RMSprop) and model.policy.optimizer.defaults["centered"]

    cli("eval", str(run_dir), "--video", "--episodes", "1", "--wandb", "disabled")
    report = json.loads((run_dir / "eval.json").read_text())
    (video,) = (Path(v) for v in report["videos"])
    reader = imageio_ffmpeg.read_frames(str(video))
    meta = next(reader)
    assert tuple(meta["size"]) == (10 * CELL_PIXELS, 10 * CELL_PIXELS)
    assert sum(1 for _ in reader) == report["lengths"][0] + 1  # the reset frame and one per step


def test_gumbel_sac_trains_on_minatar_from_its_config_and_records_a_video(tmp_path: Path) -> None:
    """The shipped GumbelSAC config through the runner: the CNN encoder on bool frames, the frame
    buffer, the printed buffer line, a model that loads with its encoder, and a video of the game."""
    proc = cli("train", "configs/gumbel_sac/minatar_breakout.yaml", "--run-dir", str(tmp_path), "--no-progress",
               "--wandb", "disabled", "--set", "train.total_timesteps=400", "agent.learning_starts=200",
               "agent.compile=false", "train.eval_freq=400", "train.eval_episodes=1", "train.log_interval=100")
    assert "replay buffer: 100,000 transitions x" in proc.stdout
    (run_dir,) = tmp_path.iterdir()
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(np.isfinite(e.get("train/critic_loss", np.nan)) for e in events)

    from agents import GumbelSAC
    from agents.encoders import CNN

    model = GumbelSAC.load(run_dir / "model.safetensors")
    assert isinstance(model.policy.encoder.core, CNN) and model.policy.encoder.image
    cli("eval", str(run_dir), "--video", "--episodes", "1", "--wandb", "disabled")
    report = json.loads((run_dir / "eval.json").read_text())
    assert len(report["videos"]) == 1 and Path(report["videos"][0]).stat().st_size > 0
