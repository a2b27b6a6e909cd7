"""Reliability: checkpoints and resume (bit-identical), signals, damaged and malicious checkpoints,
non-finite data, oversized buffers and constant memory. Real subprocesses and real envs.

The CLI-level equality is exact, not approximate: a SIGINT only sets a flag, and the learn loop
stops at the next step boundary, where the agent, the env and the RNGs are consistent; the
checkpoint written there holds all of them, so wherever the signal lands the resumed run ends with
the same weights as an uninterrupted one. A SIGKILL resumes from the last periodic checkpoint,
which is just as exact.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from envs_for_tests import NaNAfter, PickleExploit

from agents import GaussianSAC, GumbelSAC
from agents.checkpoint import read_checkpoint, state_tensors, write_safetensors
from agents.sac import NonFiniteError, SoftActorCritic
from envs import make_vec_env
from experiments.config import ConfigError, EnvConfig, load_config
from experiments.train import latest_checkpoint, run_training
from experiments.wandb_reader import read_run

REPO = Path(__file__).resolve().parents[1]
TINY: dict[str, Any] = {"net_arch": [16, 16], "batch_size": 16, "learning_starts": 50, "buffer_size": 2_000,
                        "seed": 0, "device": "cpu"}
TOTAL, CKPT, LOG = 1_000, 200, 100
CLI_SET = ["agent.net_arch=[16,16]", "agent.batch_size=16", "agent.learning_starts=50",
           f"train.total_timesteps={TOTAL}", f"train.checkpoint_freq={CKPT}", f"train.log_interval={LOG}",
           "train.eval_freq=500", "train.eval_episodes=2", "train.device=cpu"]


def weights(agent: SoftActorCritic) -> dict[str, torch.Tensor]:
    return state_tensors(agent)[0]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, differ


def start(root: Path, *args: str, wandb: str = "disabled") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "run.py", "train", "configs/gumbel_sac/cartpole.yaml", "--run-dir",
                             str(root), "--no-progress", "--wandb", wandb, "--set", *CLI_SET, *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def wait_for(root: Path, pattern: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    t0 = time.monotonic()
    while not list(root.glob(pattern)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.01)


def only_run_dir(root: Path) -> Path:
    (run_dir,) = root.iterdir()
    return run_dir


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_complete_metrics(run_dir: Path) -> None:
    evs = events(run_dir)
    train = [e["global_step"] for e in evs if "train/critic_loss" in e]
    evals = [e["global_step"] for e in evs if "eval/mean_return" in e]
    assert train == list(range(LOG, TOTAL + 1, LOG))  # strictly increasing, none missing, none twice
    assert evals == [500, 1000]
    steps = [e["global_step"] for e in evs]
    assert steps == sorted(steps)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ref")
    proc = start(root)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    run_dir = only_run_dir(root)
    assert_complete_metrics(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted(reference_run: Path) -> dict[str, torch.Tensor]:
    return weights(GumbelSAC.load(reference_run / "model.safetensors", device="cpu"))


# ------------------------------------------------------------------------------- agent level


def two_normalized_pendulums() -> gym.vector.VectorEnv:
    """NEXT_STEP autoreset and running observation statistics: the harder env state to restore."""
    return make_vec_env(EnvConfig(id="Pendulum-v1", n_envs=2, normalize_obs=True))


def two_masked_combinatorials() -> gym.vector.VectorEnv:
    """Action masks in the buffer (both states') and in the env state; a masked random warm-up."""
    return make_vec_env(EnvConfig(id="reparl/CombinatorialMasked-v0", n_envs=2))


@pytest.mark.parametrize("cls, make", [(GumbelSAC, lambda: "CartPole-v1"), (GaussianSAC, two_normalized_pendulums),
                                       (GumbelSAC, two_masked_combinatorials)])
def test_agent_resume_is_bit_identical(cls: type[SoftActorCritic], make: Any, tmp_path: Path) -> None:
    """learn(N), checkpoint, a new object restores, learn(M) == learn(N + M): weights, optimizer
    moments, alpha, buffer, episode statistics. N = 238 stops mid-episode on purpose."""
    first = cls(make(), **TINY).learn(238)
    path = first.checkpoint(tmp_path / "ck.safetensors")
    del first
    resumed = cls(make(), **TINY).restore(path).learn(150)
    reference = cls(make(), **TINY).learn(388)
    assert_same_weights(weights(resumed), weights(reference))
    assert all(torch.equal(v, reference.buffer.state_dict()[k]) for k, v in resumed.buffer.state_dict().items())
    assert list(resumed.episode_returns) == list(reference.episode_returns)
    assert resumed.num_updates == reference.num_updates and resumed.num_timesteps == 388


def test_prioritized_replay_resume_is_bit_identical(tmp_path: Path) -> None:
    """The priorities (and the largest one yet) are part of the checkpoint: resumed == uninterrupted."""
    hp = {**TINY, "prioritized_replay": 0.6}
    path = GumbelSAC("CartPole-v1", **hp).learn(238).checkpoint(tmp_path / "ck.safetensors")
    resumed = GumbelSAC("CartPole-v1", **hp).restore(path).learn(150)
    reference = GumbelSAC("CartPole-v1", **hp).learn(388)
    assert_same_weights(weights(resumed), weights(reference))
    assert torch.equal(resumed.buffer.priorities, reference.buffer.priorities)
    assert float(reference.buffer.priorities[:388].std()) > 0  # the priorities did move


def test_restore_refuses_other_hyperparameters(tmp_path: Path) -> None:
    path = GumbelSAC("CartPole-v1", **TINY).learn(60).checkpoint(tmp_path / "ck")
    with pytest.raises(ValueError, match="other hyperparameters: batch_size=16"):
        GumbelSAC("CartPole-v1", **{**TINY, "batch_size": 32}).restore(path)


def test_restore_accepts_a_checkpoint_that_predates_a_key(tmp_path: Path) -> None:
    """Keys added later (n_step, policy_delay) mean what older code did: its
    behaviour_before where the default has moved on (policy_delay 1, today 2), else the default."""
    path = GumbelSAC("CartPole-v1", **TINY, policy_delay=1).learn(60).checkpoint(tmp_path / "ck")
    tensors, meta = read_checkpoint(path)
    for key in ("n_step", "policy_delay"):
        del meta["hparams"][key]
    old = write_safetensors(tmp_path / "old.safetensors", tensors, meta)
    assert GumbelSAC("CartPole-v1", **TINY, policy_delay=1).restore(old).learn(20).num_timesteps == 80
    with pytest.raises(ValueError, match=r"policy_delay=1 \(here 2\)"):
        GumbelSAC("CartPole-v1", **TINY).restore(old)


def test_n_step_windows_stop_where_an_opaque_env_restarts_its_episodes(tmp_path: Path) -> None:
    """LunarLander's Box2D world is not plain data, so a restore starts fresh episodes: each copy's
    last stored step must end its episode, or n-step targets would run on into the new one."""
    make = lambda: gym.make_vec("LunarLander-v3", 2, vectorization_mode="sync",  # noqa: E731
                                vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    path = GumbelSAC(make(), **TINY, n_step=3).learn(40).checkpoint(tmp_path / "ck")
    with pytest.warns(RuntimeWarning, match="episodes restart"):
        resumed = GumbelSAC(make(), **TINY, n_step=3).restore(path)
    buf = resumed.buffer
    assert buf.pos == 40 and buf.truncated[38:40].tolist() == [1.0, 1.0]
    resumed.learn(20)
    batch = buf.sample(500, torch.Generator().manual_seed(0), n_step=3, gamma=0.5)
    old_rows = torch.isin(batch.obs, buf.obs[:40]).all(1)
    assert torch.isin(batch.next_obs[old_rows], buf.next_obs[:40]).all()  # no window crosses the restart


# ------------------------------------------------------------------------------- CLI: signals


def test_sigint_checkpoints_finishes_wandb_and_resumes_identically(
        tmp_path: Path, uninterrupted: dict[str, torch.Tensor]) -> None:
    proc = start(tmp_path, wandb="offline")
    wait_for(tmp_path, f"*/checkpoints/step_{CKPT}.safetensors", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    run_dir = only_run_dir(tmp_path)
    assert "resume with: python run.py train --resume" in err
    steps = sorted(int(p.stem[5:]) for p in (run_dir / "checkpoints").glob("step_*.safetensors"))
    stopped = steps[-1]
    assert CKPT <= stopped < TOTAL  # the signal's own checkpoint, at whatever step it landed
    assert read_checkpoint(run_dir / "checkpoints" / f"step_{stopped}.safetensors")[1]["num_timesteps"] == stopped
    first = read_run(next((run_dir / "wandb").rglob("run-*.wandb")))
    assert first.exit_code == 130 and first.history  # finished, with its metrics

    proc = run_cli("train", "--resume", str(run_dir), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert_complete_metrics(run_dir)
    assert_same_weights(weights(GumbelSAC.load(run_dir / "model.safetensors", device="cpu")), uninterrupted)
    stores = sorted((run_dir / "wandb").rglob("run-*.wandb"))
    assert len(stores) == 2  # offline W&B cannot append server-side: a second store with the same run id
    second = read_run(next(s for s in stores if read_run(s).exit_code == 0))
    assert second.run_id == first.run_id and min(h["global_step"] for h in second.history) > stopped


def test_second_sigint_finishes_wandb_with_exit_code_130(tmp_path: Path) -> None:
    """A second SIGINT raises KeyboardInterrupt wherever it lands: still an interruption for W&B
    (130, as the shell reports it), not a failure (1). Raised by the env at a fixed step, because two
    real SIGINTs sent back to back merge into one pending signal."""
    proc = run_cli("train", "configs/gumbel_sac/cartpole.yaml", "--run-dir", str(tmp_path), "--no-progress",
                   "--wandb", "offline", "--set", *CLI_SET, "env.id=tests.envs_for_tests:NaNCartPole-v0",
                   "env.kwargs={at: 150, what: interrupt}")
    assert proc.returncode == 130, proc.stderr
    run_dir = only_run_dir(tmp_path)
    assert read_run(next((run_dir / "wandb").rglob("run-*.wandb"))).exit_code == 130
    assert not (run_dir / "run.lock").exists()


def test_sigkill_resumes_from_last_periodic_checkpoint_past_a_damaged_one(
        tmp_path: Path, uninterrupted: dict[str, torch.Tensor]) -> None:
    proc = start(tmp_path)
    wait_for(tmp_path, f"*/checkpoints/step_{CKPT}.safetensors", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    run_dir = only_run_dir(tmp_path)
    good = max(int(p.stem[5:]) for p in (run_dir / "checkpoints").glob("step_*.safetensors"))
    assert good % CKPT == 0 and good < TOTAL
    damaged = run_dir / "checkpoints" / f"step_{good + 1}.safetensors"  # e.g. a disk that lost its tail
    raw = (run_dir / "checkpoints" / f"step_{good}.safetensors").read_bytes()
    damaged.write_bytes(raw[: len(raw) // 2])
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"global_step": 99')  # the torn line of a process killed mid-write

    proc = run_cli("train", "--resume", str(run_dir), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert f"skipping unusable checkpoint: {damaged}" in proc.stderr
    assert f"# resumed from step_{good}.safetensors" in (run_dir / "command.txt").read_text()
    assert_complete_metrics(run_dir)  # events logged after step `good` before the kill are not repeated
    assert_same_weights(weights(GumbelSAC.load(run_dir / "model.safetensors", device="cpu")), uninterrupted)


# ------------------------------------------------------------------------------- damaged and malicious files


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return GumbelSAC("CartPole-v1", **TINY).learn(80).checkpoint(tmp_path_factory.mktemp("ck") / "step_80.safetensors")


@pytest.mark.parametrize("damage, message", [
    ("truncated", "not a readable reparl model file"),
    ("header", "not a readable reparl model file"),
    ("payload", "corrupt: its header or tensors do not match the SHA-256"),
    ("model-file", "not a checkpoint"),
])
def test_damaged_checkpoint_rejected_naming_the_file(damage: str, message: str, good_checkpoint: Path,
                                                     tmp_path: Path) -> None:
    raw = bytearray(good_checkpoint.read_bytes())
    path = tmp_path / "checkpoints" / "step_100.safetensors"
    path.parent.mkdir()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) * 2 // 3])
    elif damage == "header":
        path.write_bytes(raw[:8] + b"\xff" * 40 + raw[48:])
    elif damage == "payload":  # one flipped byte deep in the tensor data: safetensors alone cannot tell
        raw[-100] ^= 0xFF
        path.write_bytes(raw)
    else:
        GumbelSAC("CartPole-v1", **TINY).save(path)
    with pytest.raises(ValueError, match=message) as info:
        GumbelSAC("CartPole-v1", **TINY).restore(path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="no usable checkpoint") as info:  # what --resume says
        latest_checkpoint(tmp_path)
    assert str(path) in str(info.value)


def test_malicious_pickle_checkpoint_does_not_execute(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "step_100.safetensors").write_bytes(pickle.dumps(PickleExploit(marker)))
    torch.save({"x": PickleExploit(marker)}, ckpts / "step_200.safetensors")  # torch's zip-pickle format
    for name in ("step_100", "step_200"):
        with pytest.raises(ValueError, match="not a readable reparl model file"):
            GumbelSAC("CartPole-v1", **TINY).restore(ckpts / f"{name}.safetensors")
    with pytest.raises(ConfigError, match="no usable checkpoint"):
        latest_checkpoint(tmp_path / "run")
    assert not marker.exists()


# ------------------------------------------------------------------------------- non-finite data


def test_nan_observation_stops_the_run_naming_env_and_step(tmp_path: Path) -> None:
    proc = run_cli("train", "configs/gumbel_sac/cartpole.yaml", "--run-dir", str(tmp_path), "--no-progress",
                   "--wandb", "disabled", "--set", *CLI_SET, "env.id=tests.envs_for_tests:NaNCartPole-v0",
                   "train.checkpoint_freq=100")
    assert proc.returncode == 1, proc.stderr
    assert "env NaNCartPole-v0 returned a non-finite observation at env step 250" in proc.stderr
    run_dir = only_run_dir(tmp_path)
    ckpts = sorted((run_dir / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["step_100.safetensors", "step_200.safetensors"]  # nothing after the NaN
    tensors, _ = read_checkpoint(ckpts[-1])  # the last good one verifies
    assert all(torch.isfinite(v.float()).all() for k, v in tensors.items() if not k.startswith("rng."))


def test_error_mid_run_writes_a_checkpoint_and_reraises(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs/gumbel_sac/cartpole.yaml", {
        "agent.net_arch": [16, 16], "agent.batch_size": 16, "agent.learning_starts": 50, "train.eval_freq": 0,
        "train.checkpoint_freq": 100, "env.id": "tests.envs_for_tests:NaNCartPole-v0",
        "env.kwargs": {"at": 120, "what": "raise"}, "wandb.mode": "disabled", "train.device": "cpu"})
    with pytest.warns(RuntimeWarning, match="error at env step 119; checkpoint"), \
            pytest.raises(RuntimeError, match="simulator crashed at step 120"):
        run_training(cfg, tmp_path, "crash", ["pytest"], progress_bar=False)
    ckpts = sorted((only_run_dir(tmp_path) / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["step_100.safetensors", "step_119.safetensors"]
    assert read_checkpoint(ckpts[-1])[1]["num_timesteps"] == 119


def test_inf_reward_is_refused_by_the_agent() -> None:
    agent = GumbelSAC(NaNAfter(gym.make("CartPole-v1"), at=30, what="reward"), **TINY)
    with pytest.raises(NonFiniteError, match="non-finite reward at env step 30"):
        agent.learn(100)
    assert agent.buffer is not None and len(agent.buffer) == 29  # the bad step never reached the buffer


def test_nan_loss_or_weight_is_named_with_the_step() -> None:
    agent = GumbelSAC("CartPole-v1", **TINY).learn(60)
    agent.check_finite()
    with torch.no_grad():
        next(agent.critic.parameters()).fill_(float("nan"))
    agent.learn(5)
    with pytest.raises(NonFiniteError, match=r"at env step 65 \(update \d+\) in: .*train/critic_loss.*critic\."):
        agent.check_finite()


# ------------------------------------------------------------------------------- load


def test_buffer_that_cannot_fit_is_refused_before_the_run_starts(tmp_path: Path) -> None:
    proc = run_cli("train", "configs/gumbel_sac/cartpole.yaml", "--run-dir", str(tmp_path), "--wandb", "disabled",
                   "--set", "agent.buffer_size=100000000000000")
    assert proc.returncode == 2
    assert "agent.buffer_size=100,000,000,000,000 needs" in proc.stderr and "GiB" in proc.stderr
    assert not any(tmp_path.iterdir())  # no run folder, no W&B run


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_is_constant_once_the_buffer_is_full() -> None:
    """Buffer 1,000, 3,000 steps: after the buffer is full and the allocator has warmed up, RSS may
    move by page-cache noise but shows no trend (a leak of one 64-byte tensor per step would be 64 KB
    per 1,000 steps; one Python float per step would be 24 KB)."""
    samples: list[tuple[int, int]] = []

    def sample(a: SoftActorCritic) -> None:
        if a.num_timesteps % 250 == 0:
            samples.append((a.num_timesteps, rss_bytes()))

    GumbelSAC("CartPole-v1", **{**TINY, "buffer_size": 1_000}).learn(3_000, callback=sample)
    steady = np.array([r for s, r in samples if s >= 1_500], dtype=np.float64)
    slope_per_1000 = np.polyfit(np.arange(len(steady)) * 250, steady, 1)[0] * 1_000
    assert steady.max() - steady.min() < 4 * 2**20, samples
    assert slope_per_1000 < 256 * 2**10, samples


def test_resume_of_a_run_that_predates_a_key_runs_it_as_it_ran(tmp_path: Path) -> None:
    """A run folder made before policy_delay existed: its config.yaml lacks the key, and it stepped
    the actor on every update. --resume rebuilds that (behaviour_before), not today's default of 2,
    which its checkpoint would refuse."""
    proc = run_cli("train", "configs/gumbel_sac/cartpole.yaml", "--run-dir", str(tmp_path), "--no-progress",
                   "--wandb", "disabled", "--set", *CLI_SET, "train.total_timesteps=200", "agent.policy_delay=1")
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path)
    config = (run_dir / "config.yaml").read_text()
    assert "  policy_delay: 1\n" in config and "total_timesteps: 200\n" in config
    (run_dir / "config.yaml").write_text(config.replace("  policy_delay: 1\n", "")
                                         .replace("total_timesteps: 200\n", "total_timesteps: 300\n"))
    proc = run_cli("train", "--resume", str(run_dir), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert GumbelSAC.load(run_dir / "model.safetensors").hparams["policy_delay"] == 1


def test_resume_refuses_overrides_and_finished_runs(reference_run: Path) -> None:
    proc = run_cli("train", "--resume", str(reference_run), "--seed", "3")
    assert proc.returncode == 2 and "drop CONFIG and the overrides" in proc.stderr
    proc = run_cli("train", "--resume", str(reference_run))
    assert proc.returncode == 2 and f"already reached train.total_timesteps={TOTAL}" in proc.stderr
