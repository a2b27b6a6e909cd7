"""Exported policies give predict()'s actions: onnxruntime, TorchScript and torch.export, for GumbelSAC
(Discrete; MultiDiscrete with masks) and GaussianSAC, observation normalization included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_masks import checked_vec_env

from agents import GaussianSAC, GumbelSAC
from agents.export import FORMATS, export_policy
from agents.sac import SoftActorCritic
from experiments.cli import main
from experiments.config import load_config
from experiments.train import run_training

REPO = Path(__file__).resolve().parents[1]
SMALL: dict[str, Any] = {"net_arch": [32, 32], "batch_size": 32, "learning_starts": 50, "buffer_size": 2_000,
                         "seed": 0, "device": "cpu"}
N = 300


@pytest.fixture(scope="module", params=["discrete", "multidiscrete-masked", "box"])
def agent(request: pytest.FixtureRequest) -> SoftActorCritic:
    if request.param == "discrete":
        return GumbelSAC("CartPole-v1", **SMALL).learn(200)
    if request.param == "multidiscrete-masked":
        return GumbelSAC(checked_vec_env(), critic="pairwise", pairwise_rank=4, **SMALL).learn(200)
    return GaussianSAC("Pendulum-v1", **SMALL).learn(200)


def observations(agent: SoftActorCritic) -> np.ndarray:
    space = agent.observation_space
    space.seed(1)
    return np.stack([space.sample() for _ in range(N)]).astype(np.float32)


def random_masks(agent: SoftActorCritic) -> np.ndarray | None:
    """Each factor keeps at least one allowed choice; about half of the others are masked."""
    head = agent.head
    if head.mask_size is None:
        return None
    gen = np.random.default_rng(2)
    blocks = []
    for n in head.nvec:
        block = gen.random((N, n)) < 0.5
        block[np.arange(N), gen.integers(n, size=N)] = True
        blocks.append(block)
    return np.concatenate(blocks, 1)


def run_artifact(path: Path, fmt: str, obs: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    inputs = [obs] if masks is None else [obs, masks]
    if fmt == "onnx":
        session = ort.InferenceSession(str(path))
        return session.run(["action"], dict(zip(("obs", "mask"), inputs, strict=False)))[0]
    module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
    with torch.no_grad():
        return module(*(torch.as_tensor(x) for x in inputs))[0].numpy()


@pytest.mark.parametrize("fmt", FORMATS)
def test_artifact_acts_as_predict(agent: SoftActorCritic, fmt: str, tmp_path: Path) -> None:
    path = export_policy(agent, tmp_path / "policy", fmt)
    obs, masks = observations(agent), random_masks(agent)
    want = agent.predict(obs, deterministic=True, action_masks=masks)[0]
    got = run_artifact(path, fmt, obs, masks)
    if isinstance(agent, GumbelSAC):
        assert got.dtype.kind == "i" and np.array_equal(got, want)
        if masks is not None:  # the masks were honoured, not just matched
            per_factor = got.reshape(N, -1) - agent.head.start
            flat = np.concatenate([np.eye(n, dtype=bool)[per_factor[:, f]] for f, n in enumerate(agent.head.nvec)], 1)
            assert not (flat & ~masks).any()
    else:
        assert np.allclose(got, want, atol=1e-5)


def test_cli_export_puts_the_runs_normalization_inside(tmp_path: Path) -> None:
    """A run with observation normalization: the artifact takes raw observations, as the env gives
    them, and acts as predict() does on the normalized ones."""
    cfg = load_config(REPO / "configs/gaussian_sac/pendulum.yaml",
                      {"train.total_timesteps": 300, "train.eval_freq": 0, "agent.learning_starts": 100,
                       "agent.net_arch": [16], "agent.batch_size": 16, "env.normalize_obs": True,
                       "wandb.mode": "disabled"})
    result = run_training(cfg, tmp_path, "pend", ["pytest"], progress_bar=False)
    assert main(["export", str(result.run_dir)]) == 0
    stats = json.loads((result.run_dir / "obs_rms.json").read_text())
    agent = GaussianSAC.load(result.model_path, device="cpu")
    raw = observations(agent) * 3.0
    normalized = (raw - np.asarray(stats["mean"])) / np.sqrt(np.asarray(stats["var"]) + stats["epsilon"])
    want = agent.predict(normalized.astype(np.float32), deterministic=True)[0]
    got = run_artifact(result.run_dir / "policy.onnx", "onnx", raw, None)
    assert np.allclose(got, want, atol=1e-5)


def test_cli_export_refuses_what_is_not_our_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"not a model")
    assert main(["export", str(bogus)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bogus) in err and err.count("\n") == 1
