"""Config schema, loading, overrides and the error messages users see; the env factory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

from envs import make_vec_env, obs_normalization, set_obs_normalization
from experiments.config import (
    Config,
    ConfigError,
    EnvConfig,
    agent_defaults,
    build_config,
    load_config,
    parse_overrides,
)
from experiments.research.learning_bench import (
    SB3_DQN_ACROBOT,
    SB3_DQN_CARTPOLE,
    SB3_PPO_CARTPOLE,
    SB3_PPO_COMBINATORIAL,
    SB3_SAC_PENDULUM,
)

REPO = Path(__file__).resolve().parents[1]
# Run configs only: configs/sweeps/ holds sweep files, validated by tests/test_sweep.py.
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.parent.name != "sweeps")


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------------ shipped configs


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_validate_and_list_only_what_differs(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    if cfg.agent.is_sb3:
        return  # baseline configs copy the zoo's file verbatim (it lists some SB3 defaults explicitly)
    defaults = agent_defaults(cfg.agent.name)
    same = {k: v for k, v in cfg.agent.hyperparameters.items() if defaults.get(k) == v}
    assert not same, f"{path} repeats the agent's defaults (they live only in agents/): {same}"


def test_shipped_config_set() -> None:
    names = {f"{p.parent.name}/{p.name}" for p in CONFIGS}
    assert {"gumbel_sac/cartpole.yaml", "gumbel_sac/acrobot.yaml", "gaussian_sac/pendulum.yaml",
            "baselines/dqn_cartpole.yaml", "baselines/ppo_cartpole.yaml", "baselines/a2c_cartpole.yaml",
            "baselines/sac_pendulum.yaml", "baselines/td3_pendulum.yaml"} <= names
    cart = load_config(REPO / "configs/gumbel_sac/cartpole.yaml")
    assert (cart.agent.name, cart.env.id, cart.train.total_timesteps) == ("GumbelSAC", "CartPole-v1", 50_000)
    assert (cart.train.eval_freq, cart.train.eval_episodes, cart.train.eval_deterministic) == (1000, 10, True)
    assert load_config(REPO / "configs/gaussian_sac/pendulum.yaml").train.total_timesteps == 20_000


@pytest.mark.parametrize("name, zoo", [("dqn_cartpole", SB3_DQN_CARTPOLE), ("ppo_cartpole", SB3_PPO_CARTPOLE),
                                       ("sac_pendulum", SB3_SAC_PENDULUM), ("dqn_acrobot", SB3_DQN_ACROBOT),
                                       ("ppo_combinatorial", SB3_PPO_COMBINATORIAL)])
def test_baseline_configs_match_the_zoo_settings_of_the_learning_bench(name: str, zoo: dict) -> None:
    cfg = load_config(REPO / f"configs/baselines/{name}.yaml")
    zoo = dict(zoo)
    assert cfg.env.n_envs == zoo.pop("n_envs", 1)
    assert cfg.agent.hyperparameters == zoo


# ------------------------------------------------------------------------------ precedence and parsing


def test_precedence_defaults_file_set(tmp_path: Path) -> None:
    path = write(tmp_path, {"agent": {"name": "GumbelSAC", "temperature": 2.0},
                            "env": {"id": "CartPole-v1"}, "train": {"total_timesteps": 5000, "seed": 3}})
    cfg = load_config(path, parse_overrides(["agent.temperature=0.5", "train.seed=7", "agent.net_arch=[64, 64]",
                                             "agent.target_entropy=null", "env.n_envs=4"]))
    assert cfg.agent.hyperparameters == {"temperature": 0.5, "net_arch": [64, 64], "target_entropy": None}
    assert (cfg.train.seed, cfg.train.total_timesteps, cfg.env.n_envs) == (7, 5000, 4)  # --set, file, --set
    assert cfg.train.log_interval == 1000  # schema default
    assert "learning_rate" not in cfg.agent.hyperparameters  # defaults stay in the agent class


def test_yaml_style_floats_and_ints_are_accepted_as_floats(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-3 (no dot) as a string: accept it for a float field instead of failing.
    cfg = load_config(write(tmp_path, {"agent": {"name": "GumbelSAC", "learning_rate": "1e-3", "temperature": 2}}))
    assert cfg.agent.hyperparameters == {"learning_rate": 1e-3, "temperature": 2.0}
    assert isinstance(cfg.agent.hyperparameters["temperature"], float)


def test_override_syntax_errors() -> None:
    assert "expected SECTION.KEY=VALUE" in error_of(parse_overrides, ["temperature"])
    assert "expected SECTION.KEY=VALUE" in error_of(parse_overrides, ["temperature=0.5"])


# ------------------------------------------------------------------------------ error messages


def test_unknown_key_names_key_file_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, {"agent": {"name": "GumbelSAC", "temprature": 0.5}})
    assert error_of(load_config, path) == f"agent.temprature: unknown key in {path}; did you mean agent.temperature?"
    ok = write(tmp_path, {"agent": {"name": "GumbelSAC"}})
    assert error_of(load_config, ok, {"train.sed": 1}) == "train.sed: unknown key in --set; did you mean train.seed?"
    assert "did you mean train" in error_of(load_config, ok, {"trian.seed": 1})
    assert "did you mean env.n_envs" in error_of(load_config, write(tmp_path, {"env": {"n_env": 2}}))


def test_wrong_type_names_expected_type(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"total_timesteps": "lots"}})
    assert error_of(load_config, path) == f"train.total_timesteps: expected int, got str 'lots' in {path}"
    msg = error_of(load_config, write(tmp_path, {"agent": {"name": "GumbelSAC", "learn_alpha": 3}}))
    assert msg.startswith("agent.learn_alpha: expected bool, got int 3")
    msg = error_of(load_config, write(tmp_path, {"wandb": {"mode": "sometimes"}}))
    assert "wandb.mode: expected 'offline' | 'online' | 'disabled'" in msg


def test_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"eval_episodes": 0}})
    assert error_of(load_config, path) == f"train.eval_episodes: must be >= 1, got 0 in {path}"
    msg = error_of(load_config, write(tmp_path, {"agent": {"name": "GumbelSAC", "gamma": 2.0}}))
    assert "gamma=2.0" in msg and str(tmp_path / "x.yaml") in msg
    msg = error_of(load_config, write(tmp_path, {"agent": {"name": "GumbelSAC", "estimator": "magic"}}))
    assert "estimator='magic'" in msg and "'st'" in msg  # the agent's own list of allowed values


def test_alpha_takes_a_number_or_auto(tmp_path: Path) -> None:
    def alpha(value: object) -> object:
        config = load_config(write(tmp_path, {"agent": {"name": "GumbelSAC", "alpha": value}}))
        return config.agent.hyperparameters["alpha"]

    assert alpha("auto") == "auto"
    assert alpha("1e-3") == 0.001  # YAML 1.1 reads 1e-3 as a string; still a number
    config = load_config(write(tmp_path, {"agent": {"name": "GumbelSAC", "alpha_learning_rate": "3e-3"}}))
    assert config.agent.hyperparameters["alpha_learning_rate"] == 0.003  # a null default, a number given
    msg = error_of(load_config, write(tmp_path, {"agent": {"name": "GumbelSAC", "alpha": "warm"}}))
    assert "alpha='warm'" in msg and '"auto"' in msg


def test_reserved_agent_keys_point_to_their_section(tmp_path: Path) -> None:
    msg = error_of(load_config, write(tmp_path, {"agent": {"name": "GumbelSAC", "n_envs": 4}}))
    assert msg.startswith("agent.n_envs: set env.n_envs instead")


def test_missing_file_suggests_the_nearest_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert error_of(load_config, "configs/gumbel_sac/cartpol.yaml") == \
        "configs/gumbel_sac/cartpol.yaml: no such config file; did you mean configs/gumbel_sac/cartpole.yaml?"


def test_unknown_agent_and_env(tmp_path: Path) -> None:
    msg = error_of(load_config, write(tmp_path, {"agent": {"name": "GumbelSACC"}}))
    assert "unknown agent 'GumbelSACC'" in msg and "did you mean GumbelSAC?" in msg
    path = write(tmp_path, {"env": {"id": "CartPol-v1"}})
    msg = error_of(load_config, path)
    assert msg.startswith(f"env.id: unknown environment 'CartPol-v1' in {path}; did you mean CartPole-v1")
    msg = error_of(load_config, write(tmp_path, {"env": {"id": "no_such_pkg:X-v0"}}))
    assert "cannot import module 'no_such_pkg'" in msg


def test_agent_on_the_wrong_action_space(tmp_path: Path) -> None:
    msg = error_of(load_config, write(tmp_path, {"agent": {"name": "GumbelSAC"}, "env": {"id": "Pendulum-v1"}}))
    assert "GumbelSAC handles Discrete/MultiDiscrete action spaces, but Pendulum-v1 has Box" in msg
    assert "use GaussianSAC" in msg
    msg = error_of(load_config, write(tmp_path, {"agent": {"name": "GaussianSAC"}, "env": {"id": "CartPole-v1"}}))
    assert "use GumbelSAC" in msg
    msg = error_of(load_config, write(tmp_path, {"agent": {"name": "DQN"}, "env": {"id": "Pendulum-v1"}}))
    assert "DQN handles Discrete action spaces" in msg and "use SAC, TD3, PPO or A2C" in msg


def test_n_step_with_normalized_observations_is_refused_before_the_run(tmp_path: Path) -> None:
    msg = error_of(load_config, write(tmp_path, {"agent": {"name": "GumbelSAC", "n_step": 3},
                                                 "env": {"id": "CartPole-v1", "normalize_obs": True}}))
    assert "env.normalize_obs with agent.n_step=3" in msg and "set env.normalize_obs: false or agent.n_step: 1" in msg
    msg = error_of(load_config, write(tmp_path, {"agent": {"name": "GaussianSAC", "n_step": 3}}))
    assert "n_step=3" in msg and "backup_entropy" in msg


def test_sb3_hyperparameters_are_checked_against_the_sb3_signature(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {"agent": {"name": "SAC", "ent_coef": 0.1, "train_freq": 2},
                                       "env": {"id": "Pendulum-v1"}}))
    assert cfg.agent.hyperparameters == {"ent_coef": 0.1, "train_freq": 2}
    msg = error_of(load_config, write(tmp_path, {"agent": {"name": "PPO", "n_step": 8}}))
    assert "agent.n_step: unknown key" in msg and "did you mean agent.n_steps?" in msg
    assert "not settable" in error_of(load_config, write(tmp_path, {"agent": {"name": "PPO", "policy": "CnnPolicy"}}))


def test_cli_config_error_exits_2_without_traceback() -> None:
    proc = subprocess.run([sys.executable, "run.py", "train", "configs/gumbel_sac/cartpole.yaml", "--set",
                           "env.id=Pendulum-v1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: agent.name: GumbelSAC handles") and "use GaussianSAC" in proc.stderr


# ------------------------------------------------------------------------------ env factory


def test_env_factory_vector_env_module_syntax_and_autoreset() -> None:
    venv = make_vec_env(EnvConfig(id="gymnasium.envs.classic_control:CartPole-v1", n_envs=3))
    assert venv.num_envs == 3
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    venv.reset(seed=0)
    for _ in range(60):  # every copy ends an episode under random actions; statistics come with it
        _, _, term, trunc, info = venv.step(venv.action_space.sample())
        if "episode" in info:
            break
    assert "episode" in info and info["episode"]["r"][info["_episode"]].min() >= 1
    venv.close()
    capped = make_vec_env(EnvConfig(id="CartPole-v1", max_episode_steps=5), n_envs=1)
    capped.reset(seed=0)
    steps = 0
    while True:
        steps += 1
        _, _, term, trunc, _ = capped.step(np.array([0]))
        if term[0] or trunc[0]:
            break
    assert steps <= 5


def test_obs_normalization_state_round_trip_and_freeze() -> None:
    cfg = EnvConfig(id="Pendulum-v1", n_envs=2, normalize_obs=True)
    train = make_vec_env(cfg)
    assert train.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP  # NormalizeObservation needs it
    train.reset(seed=0)
    for _ in range(20):
        train.step(train.action_space.sample())
    state = obs_normalization(train)
    assert state is not None and state["count"] > 20
    ev = make_vec_env(cfg, n_envs=1)
    set_obs_normalization(ev, state, frozen=True)
    raw = make_vec_env(cfg, n_envs=1, normalize=False)
    obs, _ = ev.reset(seed=5)
    raw_obs, _ = raw.reset(seed=5)
    expected = (raw_obs - np.array(state["mean"])) / np.sqrt(np.array(state["var"]) + state["epsilon"])
    np.testing.assert_allclose(obs, expected, rtol=1e-5)
    assert obs_normalization(ev)["count"] == state["count"]  # frozen: evaluation never updates the stats
    assert obs_normalization(raw) is None


def test_build_config_defaults_only() -> None:
    cfg = build_config({}, check_env=True)
    assert (cfg.agent.name, cfg.env.id, cfg.wandb.mode) == ("GumbelSAC", "CartPole-v1", "offline")
