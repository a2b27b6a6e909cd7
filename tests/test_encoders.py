"""Observation encoders: what each space gets, image scaling and channel order, images and Dict
observations end to end, and save/load of every encoder kind (a user's class included)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from agents import GaussianSAC, GumbelSAC
from agents.encoders import CNN, DictEncoder, Flatten, ObsEncoder, channels_last, is_image, make_encoder
from agents.export import export_policy
from agents.spaces import obs_tensor
from tests.envs_for_tests import PixelSide

SMALL = dict(net_arch=[32], batch_size=32, learning_starts=64, buffer_size=2000, seed=0, device="cpu")


def test_encoder_chosen_from_the_space() -> None:
    flat = make_encoder(spaces.Box(-1, 1, (3, 2)))
    assert isinstance(flat.core, Flatten) and flat.features_dim == 6 and not list(flat.parameters())
    assert make_encoder(spaces.Discrete(5)).features_dim == 5
    atari = make_encoder(spaces.Box(0, 255, (4, 84, 84), np.uint8))
    assert isinstance(atari.core, CNN) and atari.features_dim == 512  # Nature DQN: 7x7x64 -> 512
    assert [m.out_channels for m in atari.modules() if isinstance(m, nn.Conv2d)] == [32, 64, 64]
    minatar = make_encoder(spaces.Box(0, 1, (10, 10, 4), np.bool_))
    assert minatar.features_dim == 16 * 8 * 8  # MinAtar's network: one 3x3 conv of 16, flattened
    # A small integer board is not an image, and float images are left to the user to declare.
    assert not is_image(spaces.Box(0, 3, (3, 3), np.uint8)) and not is_image(spaces.Box(0, 1, (8, 8, 3)))
    d = make_encoder(spaces.Dict({"b": spaces.Box(-1, 1, (2,)), "a": spaces.Box(0, 255, (12, 12, 3), np.uint8)}))
    assert isinstance(d, DictEncoder) and d.keys == ["a", "b"] and d.features_dim == 16 * 10 * 10 + 2
    custom = make_encoder(spaces.Box(0, 255, (12, 12, 3), np.uint8), "cnn",
                          {"channels": [8, 8], "kernels": [3, 3], "strides": [1, 2], "features": 20})
    assert custom.features_dim == 20


@pytest.mark.parametrize(("shape", "last"), [((84, 84, 4), True), ((4, 84, 84), False), ((10, 10, 10), True),
                                             ((3, 64, 48), False), ((64, 48, 3), True)])
def test_channel_order_detected(shape: tuple[int, ...], last: bool) -> None:
    assert channels_last(shape) is last


def test_images_are_scaled_inside_the_network_and_channel_orders_agree() -> None:
    """The same picture channels-last and channels-first gives the same features once the weights
    are the same, and uint8 input equals float input divided by 255 (bool input is used as 0/1)."""
    torch.manual_seed(0)
    last = make_encoder(spaces.Box(0, 255, (12, 12, 3), np.uint8))
    first = make_encoder(spaces.Box(0, 255, (3, 12, 12), np.uint8))
    first.load_state_dict(last.state_dict())
    img = torch.randint(0, 256, (5, 12, 12, 3), dtype=torch.uint8)
    out = last(img)
    assert torch.allclose(out, first(img.permute(0, 3, 1, 2)), atol=1e-6)
    assert torch.allclose(out, last.core(img.float() / 255), atol=1e-6)
    boolean = make_encoder(spaces.Box(0, 1, (10, 10, 4), np.bool_))
    board = torch.rand(2, 10, 10, 4) > 0.5
    assert torch.allclose(boolean(board), boolean.core(board.float()))


def _success(agent: GumbelSAC, env: gym.Env, n: int = 200) -> float:
    wins = 0
    obs, _ = env.reset(seed=123)
    for _ in range(n):
        action, _ = agent.predict(obs, deterministic=True)
        obs, reward, _, _, _ = env.step(action)
        wins += reward
        obs, _ = env.reset()
    return wins / n


@pytest.mark.parametrize("channels_first", [False, True])
def test_gumbel_sac_learns_from_pixels(channels_first: bool) -> None:
    """From a uint8 image stored as uint8: after 1,500 steps the greedy policy names the spot's side.
    A policy that had learned nothing wins Binomial(200, 0.5): at most 0.62 with probability 0.9995."""
    agent = GumbelSAC(PixelSide(channels_first=channels_first), **SMALL)
    agent.learn(1500)
    assert agent.buffer.stores[None].frames.dtype == torch.uint8
    assert _success(agent, PixelSide(channels_first=channels_first)) >= 0.9


def test_dict_observation_end_to_end(tmp_path: Path) -> None:
    """A Dict of an image and a vector, where the right action needs both: learned, saved, loaded."""
    env = PixelSide(dict_obs=True)
    agent = GumbelSAC(env, **SMALL)
    agent.learn(5000)
    assert _success(agent, PixelSide(dict_obs=True)) >= 0.9
    loaded = GumbelSAC.load(agent.save(tmp_path / "dict"))
    obs, _ = PixelSide(dict_obs=True).reset(seed=5)
    batch = {k: np.stack([v] * 4) for k, v in obs.items()}
    assert np.array_equal(loaded.predict(batch, deterministic=True)[0], agent.predict(batch, deterministic=True)[0])


class TinyExtractor(nn.Module):
    """A user's encoder in SB3's shape: (observation_space, features_dim), fed preprocessed floats."""

    def __init__(self, observation_space: spaces.Space, features_dim: int = 8) -> None:
        super().__init__()
        self.features_dim = features_dim
        width = int(np.prod(observation_space.shape))
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(width, features_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.float32 and float(x.max()) <= 1.0  # images arrive scaled
        return self.net(x)


@pytest.mark.parametrize("kind", ["flat", "cnn", "dict", "custom"])
def test_every_encoder_kind_saves_and_loads_without_pickle(kind: str, tmp_path: Path) -> None:
    image = spaces.Box(0, 255, (12, 12, 3), np.uint8)
    obs_space = {"flat": spaces.Box(-1, 1, (4,)), "cnn": image, "custom": image,
                 "dict": spaces.Dict({"image": image, "v": spaces.Box(-1, 1, (2,))})}[kind]
    extra = {"encoder": TinyExtractor, "encoder_kwargs": {"features_dim": 6}} if kind == "custom" else {}
    agent = GumbelSAC(observation_space=obs_space, action_space=spaces.Discrete(3), **SMALL, **extra)
    path = agent.save(tmp_path / kind)
    if kind == "custom":
        with pytest.raises(ValueError, match="pass it to load"):
            GumbelSAC.load(path)
        loaded = GumbelSAC.load(path, encoder=TinyExtractor)
    else:
        loaded = GumbelSAC.load(path)
    for a, b in zip(agent.policy.state_dict().values(), loaded.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    obs = obs_space.sample()
    obs_b = {k: v[None] for k, v in obs.items()} if kind == "dict" else obs[None]
    t = obs_tensor(obs_space, obs_b, torch.device("cpu"))
    assert torch.equal(agent.policy(t), loaded.policy(t))


def test_gaussian_sac_takes_an_image_encoder_too() -> None:
    agent = GaussianSAC(observation_space=spaces.Box(0, 255, (12, 12, 3), np.uint8),
                        action_space=spaces.Box(-1, 1, (2,)), **SMALL)
    assert isinstance(agent.policy.encoder, ObsEncoder) and isinstance(agent.critic.encoder.core, CNN)
    action, _ = agent.predict(np.zeros((12, 12, 3), np.uint8), deterministic=True)
    assert action.shape == (2,)


def test_pixel_policy_exports_and_onnxruntime_agrees(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    agent = GumbelSAC(PixelSide(), **SMALL)
    path = export_policy(agent, tmp_path / "pixels.onnx")
    obs = np.stack([PixelSide().observation_space.sample() for _ in range(64)])
    session = ort.InferenceSession(str(path))
    actions = session.run(None, {"obs": obs, "mask": np.ones((64, 2), dtype=bool)})[0]
    assert np.array_equal(actions, agent.predict(obs, deterministic=True)[0])


def test_bad_encoder_settings_say_what_is_wrong() -> None:
    image = spaces.Box(0, 255, (12, 12, 3), np.uint8)
    with pytest.raises(ValueError, match="unknown key"):
        make_encoder(image, "cnn", {"filters": [8]})
    with pytest.raises(ValueError, match="leaves no pixels"):
        make_encoder(image, "cnn", {"channels": [8], "kernels": [13], "strides": [1]})
    with pytest.raises(ValueError, match="encoder="):
        GumbelSAC(observation_space=image, action_space=spaces.Discrete(2), encoder="resnet")
