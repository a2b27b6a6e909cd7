"""End to end through the CLI: run folders, metrics, the offline W&B run read back, eval, SB3 baselines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agents import GaussianSAC, GumbelSAC
from experiments.config import load_config
from experiments.eval_run import run_eval
from experiments.rundir import create_run_dir
from experiments.train import run_training
from experiments.wandb_reader import read_run

REPO = Path(__file__).resolve().parents[1]
TINY = ["agent.learning_starts=100", "agent.net_arch=[32,32]", "agent.batch_size=32"]


def cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def gumbel_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("runs")
    proc = cli("train", "configs/gumbel_sac/cartpole.yaml", "--run-dir", str(root), "--seed", "3",
               "--set", *TINY, "train.total_timesteps=600", "train.eval_freq=300", "train.eval_episodes=3",
               "train.log_interval=200", "train.checkpoint_freq=300")
    (run_dir,) = root.iterdir()
    return run_dir, proc


def test_train_writes_the_run_folder(gumbel_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir, proc = gumbel_run
    assert re.fullmatch(r"gumbel_sac-cartpole-\d{8}-\d{6}-[0-9a-f]{6}", run_dir.name)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["train"]["total_timesteps"] == 600 and cfg["train"]["seed"] == 3  # --set and --seed applied
    assert cfg["agent"]["learning_starts"] == 100 and cfg["agent"]["net_arch"] == [32, 32]
    assert cfg["agent"]["estimator"] == GumbelSAC.defaults["estimator"]  # the defaults in force are recorded
    assert load_config(run_dir / "config.yaml").train.total_timesteps == 600  # and it loads back as a config
    command = (run_dir / "command.txt").read_text()
    assert "run.py train configs/gumbel_sac/cartpole.yaml" in command and "train.checkpoint_freq=300" in command
    git = (run_dir / "git.txt").read_text()
    assert re.search(r"revision: [0-9a-f]{40}", git) and re.search(r"dirty: (true|false)", git)
    assert (run_dir / "seed.txt").read_text().strip() == "3"
    # Output a log can hold: the run folder named first, plain eval lines, no progress-bar carriage returns.
    first = proc.stdout.splitlines()[0]
    assert first.startswith("GumbelSAC on CartPole-v1, 600 env steps: run folder") and str(run_dir) in first
    assert "eval at step 300:" in proc.stdout and "\r" not in proc.stdout + proc.stderr
    # Before the run: the replay buffer's bytes per transition and in all.
    assert re.fullmatch(r"replay buffer: [\d,]+ transitions x [\d,]+ bytes = [\d.,]+ GiB on cpu",
                        proc.stdout.splitlines()[1])
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_300.safetensors",
                                                                            "step_600.safetensors"]
    agent = GumbelSAC.load(run_dir / "model.safetensors")
    assert agent.num_timesteps == 600 and agent.hparams["net_arch"] == [32, 32]
    assert f"run folder: {run_dir}" in proc.stdout and "wandb sync " in proc.stdout


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal (a real pseudo-terminal as stderr) the progress bar shows; elsewhere plain lines."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal 120 columns wide
    proc = subprocess.Popen([sys.executable, "run.py", "train", "configs/gumbel_sac/cartpole.yaml", "--run-dir",
                             str(tmp_path), "--wandb", "disabled", "--set", *TINY, "train.total_timesteps=300",
                             "train.eval_freq=0", "agent.compile=false"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=300) == 0
    os.close(master)
    shown = b"".join(chunks).decode(errors="replace")
    assert "step/s" in shown and "300/300" in shown  # tqdm's bar


def test_metrics_jsonl_namespaces_and_steps(gumbel_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    evs = events(gumbel_run[0])
    steps = [e["global_step"] for e in evs]
    assert steps == sorted(steps) and steps[-1] == 600
    train = [e for e in evs if "train/critic_loss" in e]
    assert [e["global_step"] for e in train] == [200, 400, 600]
    for key in ("train/actor_loss", "train/alpha", "train/entropy", "grad/critic_norm", "grad/actor_norm",
                "rollout/ep_return", "rollout/ep_length", "time/steps_per_s", "time/updates_per_s"):
        assert all(key in e for e in train), key
    assert all(e["time/steps_per_s"] > 0 for e in train)
    evals = [e for e in evs if "eval/mean_return" in e]
    assert [e["global_step"] for e in evals] == [300, 600]
    assert all(e["eval/episodes"] == 3 and e["eval/std_return"] >= 0 for e in evals)


def test_offline_wandb_run_holds_config_metrics_and_step_axis(
        gumbel_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir = gumbel_run[0]
    run = read_run(run_dir / "wandb")
    assert run.config["train"]["total_timesteps"] == 600 and run.config["agent"]["learning_starts"] == 100
    assert run.config["agent"]["temperature"] == GumbelSAC.defaults["temperature"]  # full resolved config
    # What "auto" chose (the Discrete critic and its estimator), where config.yaml keeps the input "auto".
    assert {"GumbelSAC", "CartPole-v1", "estimator=st"} <= set(run.tags)
    assert (run.config["agent"]["critic"], run.config["agent"]["estimator"]) == ("heads", "st")
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["agent"]["critic"] == "auto"
    assert (run.group, run.job_type, run.project) == ("CartPole-v1", "train", "reparl")
    assert run.metrics == {"*": "global_step"}
    assert all("global_step" in h for h in run.history)
    keys = set().union(*run.history)
    for key in ("train/critic_loss", "grad/critic_norm", "rollout/ep_return", "eval/mean_return",
                "eval/std_return", "time/steps_per_s", "time/updates_per_s"):
        assert key in keys, key
    jsonl_evals = [(e["global_step"], e["eval/mean_return"]) for e in events(run_dir) if "eval/mean_return" in e]
    wandb_evals = [(h["global_step"], h["eval/mean_return"]) for h in run.history if "eval/mean_return" in h]
    assert wandb_evals == jsonl_evals
    assert run.artifacts == [f"model-{run.run_id}"]
    assert run.summary["eval/final_mean_return"] == jsonl_evals[-1][1]


def test_eval_prints_returns_and_writes_videos(gumbel_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir = gumbel_run[0]
    proc = cli("eval", str(run_dir), "--episodes", "2", "--video")
    report = json.loads((run_dir / "eval.json").read_text())
    assert len(report["returns"]) == 2 and report["deterministic"] is True
    assert f"return: {report['mean_return']:.2f} ± {report['std_return']:.2f}" in proc.stdout
    assert "episode lengths: mean" in proc.stdout
    videos = sorted((run_dir / "videos").glob("*.mp4"))
    assert len(videos) == 2 and all(v.stat().st_size > 1000 for v in videos)
    assert [str(v) for v in videos] == sorted(report["videos"])
    (eval_store,) = [p for p in (run_dir / "wandb").rglob("run-*.wandb") if read_run(p).job_type == "eval"]
    logged = read_run(eval_store)
    assert read_run(run_dir).job_type == "train"  # the run folder still reads as its training run
    mode = lambda name: (run_dir / name).stat().st_mode & 0o777  # noqa: E731
    assert mode("model.safetensors") == mode("config.yaml")  # not safetensors' 0600
    assert any(h.get("eval/video", {}).get("_type") == "video-file" for h in logged.history)


def test_eval_video_of_an_env_that_cannot_draw_is_refused_before_loading(tmp_path: Path) -> None:
    """--video on an env with no 'rgb_array' render mode (the combinatorial suite's) is one line that
    names the env and the fix, not gymnasium's TypeError from deep inside the vector env."""
    from agents import GumbelSAC

    path = tmp_path / "chain.safetensors"
    GumbelSAC("reparl/CombinatorialChain-v0", net_arch=[8]).save(path)
    proc = subprocess.run([sys.executable, "run.py", "eval", str(path), "--video", "--episodes", "1"], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "reparl/CombinatorialChain-v0 cannot draw frames" in line and "without --video" in line
    assert not (tmp_path / "videos").exists()


def test_eval_is_reproducible(gumbel_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir = gumbel_run[0]
    a = run_eval(run_dir, episodes=4, seed=1).result
    b = run_eval(run_dir, episodes=4, seed=1).result
    assert a.returns.tolist() == b.returns.tolist()
    assert len(a.lengths) == 4 and (a.lengths == a.returns).all()  # CartPole: +1 per step


def test_gaussian_sac_with_obs_normalization_trains_and_evaluates(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs/gaussian_sac/pendulum.yaml",
                      {"train.total_timesteps": 300, "train.eval_freq": 0, "agent.learning_starts": 100,
                       "agent.net_arch": [16], "agent.batch_size": 16, "env.normalize_obs": True,
                       "env.n_envs": 2, "wandb.mode": "disabled"})
    result = run_training(cfg, tmp_path, "pend", ["pytest"], progress_bar=False)
    stats = json.loads((result.run_dir / "obs_rms.json").read_text())
    assert stats["count"] >= 300 and len(stats["mean"]) == 3
    assert GaussianSAC.load(result.model_path).num_timesteps == 300
    report = run_eval(result.run_dir, episodes=2)
    assert len(report.result.returns) == 2 and (report.result.lengths == 200).all()
    assert not any("eval/mean_return" in e for e in events(result.run_dir))  # eval_freq=0 disables evaluation


@pytest.mark.parametrize("config, extra", [
    ("dqn_cartpole", ["agent.learning_starts=50", "agent.train_freq=50", "agent.gradient_steps=5"]),
    ("ppo_cartpole", ["env.n_envs=2", "agent.n_steps=50", "agent.batch_size=50", "agent.n_epochs=2"]),
    ("a2c_cartpole", ["env.n_envs=2"]),
    ("sac_pendulum", ["agent.learning_starts=100", "agent.policy_kwargs={net_arch: [32, 32]}"]),
    ("td3_pendulum", ["agent.learning_starts=100", "agent.policy_kwargs={net_arch: [32, 32]}"]),
])
def test_sb3_baselines_share_the_cli_and_metric_names(tmp_path: Path, config: str, extra: list[str]) -> None:
    wandb_mode = "offline" if config == "sac_pendulum" else "disabled"  # one W&B round trip is enough
    cli("train", f"configs/baselines/{config}.yaml", "--run-dir", str(tmp_path), "--no-progress",
        "--wandb", wandb_mode, "--set", "train.total_timesteps=400", "train.eval_freq=200",
        "train.eval_episodes=2", "train.log_interval=100", *extra)
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "model.zip").is_file()
    evs = events(run_dir)
    keys = set().union(*evs)
    assert {"rollout/ep_return", "rollout/ep_length", "time/steps_per_s", "eval/mean_return", "eval/std_return"} <= keys
    assert not keys & {"rollout/ep_rew_mean", "rollout/ep_len_mean", "time/fps", "train/ent_coef"}  # renamed
    assert [e["global_step"] for e in evs if "eval/mean_return" in e] == [200, 400]
    assert any(k.startswith("train/") for k in keys)  # SB3's own train/ metrics are forwarded
    if config == "sac_pendulum":
        assert {"train/alpha", "train/critic_loss", "train/actor_loss", "time/updates_per_s"} <= keys
        run = read_run(run_dir / "wandb")
        assert run.metrics == {"*": "global_step"} and run.config["agent"]["learning_rate"] == 1e-3
        assert "train/alpha" in set().union(*run.history)
    report = run_eval(run_dir, episodes=2)  # SB3's zip, loaded by the same eval
    assert len(report.result.returns) == 2 and report.model_path.suffix == ".zip"


def test_run_folders_never_collide(tmp_path: Path) -> None:
    dirs = {create_run_dir(tmp_path, "same") for _ in range(20)}  # same name, same second
    assert len(dirs) == 20 and all(d.is_dir() for d in dirs)


def test_entry_points_share_the_cli() -> None:
    for cmd in ([sys.executable, "-m", "experiments", "train", "--help"], [sys.executable, "run.py", "eval", "--help"]):
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0
        assert ("--set KEY=VALUE" in proc.stdout) if "train" in cmd else ("--stochastic" in proc.stdout)


@pytest.mark.parametrize("env_id, says", [("CartPole-v1", "agent: GumbelSAC"), ("Pendulum-v1", "agent: GaussianSAC"),
                                          ("reparl/CombinatorialMasked-v0", "action masks: yes (32 flags)")])
def test_check_env_names_the_agent(env_id: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    from experiments.cli import main

    assert main(["check-env", env_id]) == 0
    out = capsys.readouterr().out
    assert "gymnasium's checker: passed" in out and says in out


def test_check_env_refuses_what_no_agent_takes(capsys: pytest.CaptureFixture[str]) -> None:
    from experiments.cli import main

    assert main(["check-env", "Blackjack-v1"]) == 2  # a Tuple observation
    err = capsys.readouterr().err
    assert err.startswith("error: Blackjack-v1") and "FlattenObservation" in err


def read_tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of every TensorBoard event file under ``folder``, parsed from the TFRecord framing
    (u64 length, u32 crc, payload, u32 crc) with the Event protobuf tensorboardX writes."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in folder.rglob("events.out.tfevents.*"):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_event_files_hold_the_logged_metrics(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs/gumbel_sac/cartpole.yaml",
                      {"train.total_timesteps": 300, "train.eval_freq": 150, "train.eval_episodes": 2,
                       "train.log_interval": 100, "agent.learning_starts": 100, "agent.net_arch": [16],
                       "agent.batch_size": 16, "wandb.mode": "disabled", "train.tensorboard": True})
    result = run_training(cfg, tmp_path, "tb", ["pytest"], progress_bar=False)
    scalars = read_tensorboard_scalars(result.run_dir / "tensorboard")
    logged = [e for e in events(result.run_dir) if "eval/mean_return" in e]
    assert [step for step, _ in scalars["eval/mean_return"]] == [e["global_step"] for e in logged] == [150, 300]
    assert [round(v, 4) for _, v in scalars["eval/mean_return"]] == [round(e["eval/mean_return"], 4) for e in logged]
    assert "train/critic_loss" in scalars and "rollout/ep_return" in scalars
