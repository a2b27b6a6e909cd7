"""SB3's test taxonomy on GumbelSAC and GaussianSAC: run, save/load, determinism, bad config, learning."""

from __future__ import annotations

import json
import math
import pickle
import struct
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from envs_for_tests import ContinuousIdentity, DiscreteIdentity, MultiDiscreteTarget, PickleExploit
from gymnasium import spaces
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from agents import GaussianSAC, GumbelSAC
from agents.sac import SoftActorCritic
from envs.combinatorial import Combinatorial

SMALL: dict[str, Any] = {"net_arch": [32, 32], "batch_size": 32, "learning_starts": 50, "buffer_size": 2_000,
                         "seed": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def gumbel_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained("gumbel", 60).save(tmp_path_factory.mktemp("model") / "cartpole")


def trained(case: str, steps: int = 120, **kw: Any) -> SoftActorCritic:
    if case == "gumbel":
        return GumbelSAC("CartPole-v1", **{**SMALL, **kw}).learn(steps)
    if case == "gaussian":
        return GaussianSAC("Pendulum-v1", **{**SMALL, **kw}).learn(steps)
    return GumbelSAC(MultiDiscreteTarget(), **{**SMALL, **kw}).learn(steps)


def _obs(agent: SoftActorCritic, n: int = 16) -> np.ndarray:
    space = agent.observation_space
    space.seed(0)
    return np.stack([space.sample() for _ in range(n)])


def _stochastic(agent: SoftActorCritic, obs: np.ndarray) -> np.ndarray:
    torch.manual_seed(123)
    return agent.predict(obs, deterministic=False)[0]


# ------------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("case", ["gumbel", "gaussian", "multidiscrete"])
def test_save_load_same_predictions(case: str, tmp_path: Path) -> None:
    agent = trained(case)
    path = agent.save(tmp_path / "model")
    assert path.suffix == ".safetensors" and path.is_file()
    cls = type(agent)
    obs = _obs(agent)
    for loaded in (cls.load(path, device="cpu"), cls.load(path, env=agent.env, device="cpu")):
        assert np.array_equal(loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0])
        assert np.array_equal(_stochastic(loaded, obs), _stochastic(agent, obs))
        for name, module in agent.modules().items():
            theirs = loaded.modules()[name].state_dict()
            assert all(torch.equal(v, theirs[k]) for k, v in module.state_dict().items()), name
        assert loaded.num_timesteps == agent.num_timesteps and loaded.alpha == agent.alpha
        opt, lopt = agent.critic_optimizer.state_dict(), loaded.critic_optimizer.state_dict()
        assert all(torch.equal(opt["state"][i]["exp_avg"], lopt["state"][i]["exp_avg"]) for i in opt["state"])
    loaded.learn(10)  # a loaded agent with an env keeps learning


def test_saved_file_is_safetensors_without_pickle(gumbel_file: Path) -> None:
    raw = gumbel_file.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    meta = json.loads(header["__metadata__"]["reparl"])
    assert meta["agent"] == "GumbelSAC" and meta["action_space"]["type"] == "Discrete"
    # safetensors: 8 bytes of header length, then the JSON header; not torch.save's zip ("PK"), and no
    # pickle opcodes (the first byte is the length's low byte, which may well be 0x80, pickle's PROTO).
    assert raw[8:9] == b"{" and raw[:2] != b"PK" and b"cpickle" not in raw.lower() and b"torch._utils" not in raw
    from safetensors.torch import load_file

    assert "policy.net.0.weight" in load_file(str(gumbel_file))


class _CartPole3(gym.Wrapper):
    def __init__(self) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.action_space = spaces.Discrete(3)


def test_load_rejects_wrong_agent_and_wrong_space(gumbel_file: Path) -> None:
    path = gumbel_file
    with pytest.raises(ValueError, match="holds a GumbelSAC model"):
        GaussianSAC.load(path)
    with pytest.raises(ValueError, match="observation space"):
        GumbelSAC.load(path, env="Acrobot-v1", device="cpu")
    # Same observation shape, different number of actions: the action space differs.
    with pytest.raises(ValueError, match="action space"):
        GumbelSAC.load(path, env=_CartPole3(), device="cpu")


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "empty", "not-reparl", "weight-bit", "header-field"])
def test_load_rejects_damaged_file(damage: str, gumbel_file: Path, tmp_path: Path) -> None:
    raw = gumbel_file.read_bytes()
    path = tmp_path / "m.safetensors"
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "corrupted":
        path.write_bytes(raw[:8] + b"\xff" * 40 + raw[48:])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "weight-bit":  # one bit of a weight deep in the tensor data: safetensors alone cannot tell
        flipped = bytearray(raw)
        flipped[-100] ^= 0x40
        path.write_bytes(bytes(flipped))
    elif damage == "header-field":  # a counter changed in the JSON header, same length, still valid JSON
        at = raw.index(b'\\"num_timesteps\\": 60')
        path.write_bytes(raw[:at] + raw[at:].replace(b"60", b"50", 1))
    else:
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="truncated|corrupt|without reparl metadata"):
        GumbelSAC.load(path)


def test_crafted_pickle_does_not_execute(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(PickleExploit(marker))
    pickle.loads(payload)  # the payload is live: unpickling it creates the marker
    assert marker.exists()
    marker.unlink()
    model = tmp_path / "model.safetensors"
    model.write_bytes(payload)
    with pytest.raises(ValueError, match="not a readable reparl model file"):
        GumbelSAC.load(model)
    torch.save({"x": PickleExploit(marker)}, tmp_path / "t.safetensors")  # torch's zip-pickle format too
    with pytest.raises(ValueError):
        GaussianSAC.load(tmp_path / "t.safetensors")
    assert not marker.exists()


# ------------------------------------------------------------------------------- determinism, SB3 API


@pytest.mark.parametrize("case", ["gumbel", "gaussian"])
def test_same_seed_same_actions_and_weights(case: str) -> None:
    a, b = trained(case, 100), trained(case, 100)
    c = trained(case, 100, seed=1)
    obs = _obs(a)
    assert np.array_equal(_stochastic(a, obs), _stochastic(b, obs))
    assert all(torch.equal(x, y) for x, y in zip(a.policy.state_dict().values(), b.policy.state_dict().values(),
                                                   strict=True))
    assert all(torch.equal(x, y) for x, y in zip(a.critic.state_dict().values(), b.critic.state_dict().values(),
                                                   strict=True))
    assert a.buffer.state_dict()["actions"].equal(b.buffer.state_dict()["actions"])
    assert not all(torch.equal(x, y) for x, y in zip(a.policy.state_dict().values(),
                                                       c.policy.state_dict().values(), strict=True))


@pytest.mark.parametrize("case, env_id", [("gumbel", "CartPole-v1"), ("gaussian", "Pendulum-v1")])
def test_sb3_evaluate_policy(case: str, env_id: str) -> None:
    agent = trained(case, 60)
    mean, std = evaluate_policy(agent, Monitor(gym.make(env_id)), n_eval_episodes=2, deterministic=True)
    assert np.isfinite(mean) and np.isfinite(std)
    if case == "gaussian":
        assert mean < 0  # Pendulum rewards are never positive
    else:
        assert mean >= 8  # CartPole cannot fall in fewer than 8 steps


# ------------------------------------------------------------------------------- spaces


def test_wrong_action_space_points_to_the_other_agent() -> None:
    with pytest.raises(TypeError, match="use GaussianSAC"):
        GumbelSAC("Pendulum-v1", **SMALL)
    with pytest.raises(TypeError, match="use GumbelSAC"):
        GaussianSAC("CartPole-v1", **SMALL)


class _TupleObs(gym.Env):
    observation_space = spaces.Tuple((spaces.Box(-1, 1, (2,)), spaces.Discrete(3)))
    action_space = spaces.Discrete(2)


def test_unsupported_observation_space_refused() -> None:
    with pytest.raises(TypeError, match="FlattenObservation"):
        GumbelSAC(_TupleObs(), **SMALL)
    with pytest.raises(TypeError, match="finite"):
        GaussianSAC(observation_space=spaces.Box(-1, 1, (2,)), action_space=spaces.Box(-np.inf, np.inf, (1,)))


def test_predict_single_vs_batch_shapes() -> None:
    g, c, m = trained("gumbel", 0), trained("gaussian", 0), trained("multidiscrete", 0)
    for agent, single_shape in ((g, ()), (c, (1,)), (m, (3,))):
        obs = _obs(agent, 5)
        one, state = agent.predict(obs[0], state="s")
        many, _ = agent.predict(obs)
        assert np.shape(one) == single_shape and many.shape == (5, *single_shape) and state == "s"
        assert all(agent.action_space.contains(np.asarray(a, dtype=agent.action_space.dtype)) for a in many)
        assert np.array_equal(agent.predict(obs[0], deterministic=True)[0],
                              agent.predict(obs, deterministic=True)[0][0])
        with pytest.raises(ValueError, match="fits neither"):
            agent.predict(np.zeros((5, 99)))
    lake = GumbelSAC("FrozenLake-v1", **SMALL)  # Discrete observations are one-hot encoded
    assert np.shape(lake.predict(3)[0]) == () and lake.predict(np.array([0, 5, 15]))[0].shape == (3,)


def test_discrete_with_nonzero_start() -> None:
    env = DiscreteIdentity(3, start=-1)
    agent = GumbelSAC(env, **{**SMALL, "learning_starts": 20}).learn(60)
    actions = agent.predict(np.eye(3, dtype=np.float32))[0]
    assert set(actions.tolist()) <= {-1, 0, 1}
    stored = agent.buffer.actions[: len(agent.buffer)]
    assert int(stored.min()) >= 0 and int(stored.max()) <= 2, "stored actions are 0-based indices"
    assert stored.unique().numel() == 3


def test_multidiscrete_env_learns_without_invalid_actions() -> None:
    agent = trained("multidiscrete", 150)  # the env asserts every action is valid; auto: pairwise
    assert agent.head.kind == "pairwise" and agent.num_updates > 0
    assert np.isfinite(list(agent.pop_train_info().values())).all()
    heads = GumbelSAC(MultiDiscreteTarget(), estimator="exact", critic="heads", **SMALL).learn(80)
    assert heads.head.kind == "heads" and heads.num_updates > 0


# ------------------------------------------------------------------------------- bad configuration


@pytest.mark.parametrize("bad", [
    {"learning_rate": 0.0}, {"critic_learning_rate": -1.0}, {"gamma": 1.5}, {"batch_size": 0},
    {"target_update_rate": 0.0}, {"target_update_rate": 1.5}, {"n_critics": 0}, {"relu_subgradient": 2.0},
    {"net_arch": []}, {"buffer_size": 0}, {"alpha": 0.0}, {"alpha": "high"}, {"alpha_learning_rate": 0.0},
    {"train_freq": 0}, {"n_envs": 0},
    {"estimator": "foo"}, {"temperature": 0.0}, {"estimator": "reinmax", "temperature": 0.5},
    {"estimator": "reinmax", "temperature": 1.0, "temperature_schedule": "linear", "temperature_min": 0.5},
    {"critic": "x"}, {"gumbel_rao_k": 0}, {"target_entropy_scale": 2.0}, {"temperature_schedule": "cosine"},
    {"policy_delay": 0}, {"policy_delay": 1.5}, {"critic_layer_norm": "yes"}, {"compile": "yes"},
    {"prioritized_replay": 1.5}, {"prioritized_replay": True},
    {"priority_beta": -0.1}, {"adam_eps": 0.0}, {"adam_eps": "1e-4"},
])
def test_invalid_hyperparameters_raise(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        GumbelSAC("CartPole-v1", **{**SMALL, **bad})


@pytest.mark.parametrize("compile_update", [False, True])
def test_adam_eps_reaches_every_optimizer_and_the_update(compile_update: bool) -> None:
    """adam_eps is the epsilon of the three Adam states and of the update's own Adam step: the same
    updates with eps = 1 (above these gradients, so each step is about lr * gradient) move the
    weights less than a tenth as far as with torch's 1e-8, whose first steps are about lr per weight."""
    moved = {}
    for eps in (1e-8, 1.0):
        agent = GumbelSAC("CartPole-v1", **{**SMALL, "adam_eps": eps, "compile": compile_update, "seed": 0})
        assert {g["eps"] for o in agent.optimizers().values() for g in o.param_groups} == {eps}
        assert agent.update_settings().eps == eps
        before = {k: v.clone() for k, v in agent.policy.state_dict().items()}
        agent.learn(SMALL["learning_starts"] + 40)
        moved[eps] = sum((v - before[k]).abs().sum().item() for k, v in agent.policy.state_dict().items())
    assert 0 < moved[1.0] < moved[1e-8] / 10, moved


def test_unknown_and_inconsistent_hyperparameters() -> None:
    with pytest.raises(TypeError, match="unknown hyperparameters.*'temprature'"):
        GumbelSAC("CartPole-v1", temprature=1.0)
    with pytest.raises(TypeError, match="unknown hyperparameters"):
        GaussianSAC("Pendulum-v1", estimator="st")  # a GumbelSAC-only option
    with pytest.raises(ValueError, match="65,536 terms"):  # a joint critic enumerates at most 256 actions
        GumbelSAC(Combinatorial(), estimator="exact", critic="joint", **SMALL)
    with pytest.raises(ValueError, match="total_timesteps"):
        GumbelSAC("CartPole-v1", **SMALL).learn(-1)
    with pytest.raises(RuntimeError, match="no env"):
        GumbelSAC(observation_space=spaces.Box(-1, 1, (2,)), action_space=spaces.Discrete(2)).learn(10)


# ------------------------------------------------------------------------------- learning


FAST: dict[str, Any] = {"net_arch": [32, 32], "batch_size": 64, "learning_starts": 100, "learning_rate": 3e-3,
                        "critic_learning_rate": 3e-3, "buffer_size": 5_000, "seed": 0, "device": "cpu"}


def test_gumbel_sac_learns_identity() -> None:
    """Random play scores 1/4; the start offset (-2) must be handled on the way out and back in."""
    agent = GumbelSAC(DiscreteIdentity(4, start=-2), estimator="st", **FAST).learn(1_500)
    mean, _ = evaluate_policy(agent, Monitor(DiscreteIdentity(4, start=-2)), n_eval_episodes=100, deterministic=True)
    assert mean >= 0.8  # seeds 0-4 reach 1.0 at 1,500 steps; 1,000 steps leave one seed at 0.82


def test_gaussian_sac_learns_identity() -> None:
    """Random play scores E[-(a - x)^2] = -(4/3 + 1/3) ~ -1.67 on a in [-2, 2], x in [-1, 1]."""
    agent = GaussianSAC(ContinuousIdentity(), **FAST).learn(1_000)
    mean, _ = evaluate_policy(agent, Monitor(ContinuousIdentity()), n_eval_episodes=100, deterministic=True)
    assert mean >= -0.02


def test_learns_on_discrete_observations() -> None:
    """FrozenLake's observation is a cell index; the buffer must hold the network's one-hot input
    (storing the raw index crashed buffer.add)."""
    lake = GumbelSAC("FrozenLake-v1", **{**SMALL, "learning_starts": 20}).learn(80)
    stored = lake.buffer.obs[: lake.buffer.size]
    assert stored.shape == (80, 16) and torch.equal(stored.sum(1), torch.ones(80))
    assert lake.num_updates > 0


# ------------------------------------------------------------------------------- alpha="auto"
# Adam's first step moves log alpha by lr * m_hat / (sqrt(v_hat) + eps) = lr * g / (|g| + eps),
# at most lr: one update after calibration leaves log alpha within lr of the calibrated value
# (+1e-6 for float32 rounding of log alpha, ~4e-8 at these magnitudes).
LR = GumbelSAC.defaults["alpha_learning_rate"] or GumbelSAC.defaults["learning_rate"]  # log alpha's step


@pytest.mark.parametrize("env, max_entropy", [("CartPole-v1", math.log(2)), (Combinatorial(), 8 * math.log(4))])
def test_auto_alpha_is_warm_up_reward_scale_over_max_entropy(env: Any, max_entropy: float) -> None:
    agent = GumbelSAC(env, alpha="auto", **SMALL).learn(SMALL["learning_starts"])
    assert agent.num_updates == 1
    scale = float(agent.buffer.rewards[: SMALL["learning_starts"]].abs().mean())
    assert scale > 0  # CartPole pays 1 per step; Combinatorial ~1/4 at random
    assert abs(math.log(agent.alpha) - math.log(scale / max_entropy)) <= LR + 1e-6


def test_auto_alpha_without_reward_scale_stays_one() -> None:
    """FrozenLake pays only at the goal, which 20 random warm-up steps do not reach (checked)."""
    agent = GumbelSAC("FrozenLake-v1", alpha="auto", **{**SMALL, "learning_starts": 20}).learn(20)
    assert agent.num_updates == 1 and float(agent.buffer.rewards[:20].abs().sum()) == 0
    assert abs(math.log(agent.alpha)) <= LR + 1e-6


@pytest.mark.parametrize("alpha_lr", [None, 1e-2])
def test_alpha_learning_rate_sets_log_alpha_step(alpha_lr: float | None) -> None:
    """Adam's first step is exactly lr in size (see above): 1e-2 when given, else learning_rate."""
    agent = GumbelSAC("CartPole-v1", alpha=1.0, alpha_learning_rate=alpha_lr, **SMALL).learn(SMALL["learning_starts"])
    assert agent.num_updates == 1
    assert abs(abs(math.log(agent.alpha)) - (alpha_lr or GumbelSAC.defaults["learning_rate"])) <= 1e-6


def test_backup_entropy_false_drops_the_bonus_from_the_target() -> None:
    """Same weights, same buffer, same batch: the soft target exceeds the plain one by exactly
    gamma * alpha * mean((1 - terminated) * H(pi(.|s'))) (CartPole's heads critic: closed form)."""
    soft, plain = (GumbelSAC("CartPole-v1", alpha=1.0, backup_entropy=flag, **SMALL).learn(SMALL["learning_starts"] - 1)
                   for flag in (True, False))
    torch.manual_seed(1)
    batch = soft.buffer.sample(SMALL["batch_size"])
    with torch.no_grad():
        entropy = soft.distribution(batch.next_obs).entropy()
    expected = soft.hparams["gamma"] * soft.alpha * float(((1 - batch.terminated.float()) * entropy).mean())
    targets = []
    for agent in (soft, plain):
        torch.manual_seed(1)
        targets.append(float(agent.train_step()["train/target_mean"]))
    assert expected > 0.1  # alpha = 1, H up to ln 2, gamma 0.99: the difference is not lost in rounding
    assert targets[0] - targets[1] == pytest.approx(expected, rel=1e-4)


def test_auto_alpha_refused_where_entropy_is_unbounded() -> None:
    with pytest.raises(ValueError, match="alpha='auto'.*GaussianSAC.*alpha=1.0"):
        GaussianSAC("Pendulum-v1", alpha="auto", **SMALL)


@pytest.mark.parametrize("case", ["gumbel", "gaussian"])
def test_policy_delay_steps_the_actor_and_alpha_on_every_dth_update(case: str) -> None:
    agent = trained(case, 49, policy_delay=3)  # warm-up only: no update yet
    assert agent.num_updates == 0
    moved = []
    for _ in range(7):
        before = [p.clone() for p in (*agent.policy.parameters(), agent.log_alpha, *agent.critic.parameters())]
        info = agent.train_step()
        after = [*agent.policy.parameters(), agent.log_alpha, *agent.critic.parameters()]
        n_actor = len(list(agent.policy.parameters())) + 1
        same = [torch.equal(b, a) for b, a in zip(before, after, strict=True)]
        moved.append((not all(same[:n_actor]), not any(same[n_actor:]), "train/actor_loss" in info))
    actor_turns = [True, False, False, True, False, False, True]
    assert [m[0] for m in moved] == actor_turns and [m[2] for m in moved] == actor_turns
    assert all(m[1] for m in moved)  # every critic tensor moves on every update
