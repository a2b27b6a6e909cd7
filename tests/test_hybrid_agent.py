"""HybridSAC and its parts: the hybrid distribution against enumeration and quadrature, the critic's
masking of unchosen parameters, the actor's gradient reaching both the logits and the Gaussians,
two entropy weights, actions in the env's own space (predict, SB3's evaluate_policy), save/load,
hostile headers, the wrong-space errors, and learning the one-step target env's known optimum."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, stats
from torch import Tensor

import envs  # noqa: F401  (registers the ids)
from agents import AGENTS, GaussianSAC, GumbelSAC, HybridSAC, losses
from agents.checkpoint import read_model_file, write_safetensors
from agents.distributions import HybridDistribution
from agents.header import HeaderError
from agents.hybrid_head import HybridHead
from agents.networks import CriticEnsemble
from envs import hybrid_target
from experiments.config import ConfigError, check_compatibility, load_config

TINY: dict[str, Any] = {"net_arch": [32, 32], "batch_size": 32, "learning_starts": 64, "buffer_size": 2_000,
                        "seed": 0, "device": "cpu"}
PLATFORM = gym.make("reparl/Platform-v0").action_space


# ------------------------------------------------------------------------------ the distribution
def small_distribution(batch: int = 1) -> HybridDistribution:
    """K = 3 choices of one parameter each, in float64 for the quadrature."""
    logits = torch.tensor([[0.3, -1.0, 0.8]], dtype=torch.float64).repeat(batch, 1)
    mean = torch.tensor([[0.2, -0.5, 1.0]], dtype=torch.float64).repeat(batch, 1)
    log_std = torch.tensor([[-0.3, 0.1, -0.8]], dtype=torch.float64).repeat(batch, 1)
    return HybridDistribution(logits, mean, log_std, torch.eye(3, dtype=torch.float64))


def density(dist: HybridDistribution, k: int, x: float) -> float:
    """p(k, x_k = x), through the distribution's own log_prob (the other parameters are ignored)."""
    full = torch.zeros(1, 3, dtype=torch.float64)
    full[0, k] = x
    return math.exp(float(dist.log_prob(torch.tensor([k]), full)))


def test_log_prob_integrates_to_one_over_k_and_x() -> None:
    dist = small_distribution()
    mass = [integrate.quad(lambda x, k=k: density(dist, k, x), -1, 1, epsabs=1e-12)[0] for k in range(3)]
    np.testing.assert_allclose(mass, dist.probs[0].numpy(), atol=1e-8)  # each choice's parameters: mass p_k
    assert sum(mass) == pytest.approx(1.0, abs=1e-8)


def test_entropies_match_enumeration_and_quadrature() -> None:
    """H(k) by enumeration; each choice's parameter entropy h_k and the env action's entropy
    H(k, x_k) = H(k) + sum_k p_k h_k by quadrature."""
    dist = small_distribution()
    p = torch.softmax(torch.tensor([0.3, -1.0, 0.8], dtype=torch.float64), 0).numpy()
    assert float(dist.choice_entropy()[0]) == pytest.approx(-(p * np.log(p)).sum(), abs=1e-12)

    def h(k: int) -> float:
        def f(x: float) -> float:
            q = density(dist, k, x) / p[k]
            return -q * math.log(q) if q > 0 else 0.0
        return integrate.quad(f, -1, 1, epsabs=1e-12, limit=200)[0]

    entropies = np.array([h(k) for k in range(3)])
    joint = -sum(integrate.quad(lambda x, k=k: density(dist, k, x) * math.log(density(dist, k, x)), -1, 1,
                                epsabs=1e-12, limit=200)[0] for k in range(3))
    assert joint == pytest.approx(float(dist.choice_entropy()[0]) + (p * entropies).sum(), abs=1e-7)

    # The agent's estimate of each h_k, -log pi_k(x_k) at a reparameterized sample, is unbiased:
    # a one-sample t-test per choice, seeded, at 1% over the three (Bonferroni).
    samples = small_distribution(20_000)
    _, log_px = samples.rsample_parameters(torch.Generator().manual_seed(0))
    for k in range(3):
        assert stats.ttest_1samp(-log_px[:, k].numpy(), entropies[k]).pvalue > 0.01 / 3


def test_the_sampled_log_density_is_log_prob_and_choices_follow_softmax() -> None:
    dist = small_distribution(30_000)
    gen = torch.Generator().manual_seed(1)
    x, log_px = dist.rsample_parameters(gen)
    k = dist.sample(gen)[0]
    np.testing.assert_allclose((dist.log_prob(k, x) - dist.choice.log_probs[:, 0].gather(-1, k[:, None])[:, 0]),
                               log_px.gather(-1, k[:, None])[:, 0], atol=1e-6)
    counts = np.bincount(k.numpy(), minlength=3)
    assert stats.chisquare(counts, dist.probs[0].numpy() * len(k)).pvalue > 0.01


# ------------------------------------------------------------------------------ masking and gradients
def head_and_critic(space: gym.spaces.Tuple = PLATFORM, estimator: str = "st") -> tuple[HybridHead, CriticEnsemble]:
    torch.manual_seed(0)
    head = HybridHead(space, estimator)
    in_dim, out_dim = head.critic_dims(4)
    return head, CriticEnsemble(2, in_dim, [32, 32], out_dim)


def test_unchosen_stored_parameters_change_no_q() -> None:
    head, critic = head_and_critic()
    obs = torch.randn(64, 4)
    actions = torch.cat([torch.randint(0, 3, (64, 1)).float(), torch.rand(64, 3) * 2 - 1], 1)
    changed = actions.clone()
    unchosen = F.one_hot(actions[:, 0].long(), 3) == 0
    changed[:, 1:][unchosen] = torch.rand(int(unchosen.sum())) * 2 - 1
    assert not torch.equal(changed, actions)
    assert torch.equal(head.critic_values(critic, obs, actions), head.critic_values(critic, obs, changed))


def policy_output(batch: int, shift_unchosen: Tensor | None = None) -> tuple[Tensor, ...]:
    torch.manual_seed(3)
    logits, mean, log_std = torch.randn(batch, 3), torch.randn(batch, 3) * 0.5, torch.randn(batch, 3) * 0.3 - 0.5
    if shift_unchosen is not None:
        mean = mean + shift_unchosen
    return tuple(t.requires_grad_(True) for t in (logits, mean, log_std))


def actor_grads(head: HybridHead, critic: CriticEnsemble, obs: Tensor, out: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Q and the gradients of the whole actor loss (both entropy weights 0.5) after seeding the draws."""
    torch.manual_seed(11)
    q, entropy, _ = head.actor_objective(out, None, critic, obs, torch.tensor(1.0))
    loss, _ = losses.actor_loss(q, entropy, torch.tensor([0.5, 0.5]), head.entropy_parts)
    return (q.detach(), *torch.autograd.grad(loss, out))


def test_an_unchosen_parameter_changes_neither_q_nor_the_actor_gradient() -> None:
    """Straight-through: the sampled choice's parameters get the Q gradient, the others none, and
    moving the others (same draws) leaves Q and the gradient of the logits and of the chosen
    Gaussian exactly as they were."""
    head, critic = head_and_critic()
    obs = torch.randn(16, 4)
    out = policy_output(16)
    torch.manual_seed(11)
    q, _, _ = head.actor_objective(out, None, critic, obs, torch.tensor(1.0))
    q_grad_mean = torch.autograd.grad(q.sum(), out[1])[0]
    chosen = q_grad_mean != 0
    assert (chosen.sum(1) == 1).all()  # Q's gradient reaches exactly one choice's parameter per state

    q0, g_logits0, g_mean0, g_std0 = actor_grads(head, critic, obs, out)
    moved = policy_output(16, shift_unchosen=(~chosen).float() * 0.7)
    q1, g_logits1, g_mean1, g_std1 = actor_grads(head, critic, obs, moved)
    assert torch.equal(q0, q1)
    assert torch.equal(g_logits0, g_logits1)
    assert torch.equal(g_mean0[chosen], g_mean1[chosen]) and torch.equal(g_std0[chosen], g_std1[chosen])


@pytest.mark.parametrize("estimator", ["st", "soft", "gumbel-rao", "reinmax", "exact"])
def test_the_actor_gradient_reaches_the_logits_and_the_gaussians(estimator: str) -> None:
    head, critic = head_and_critic(estimator=estimator)
    obs = torch.randn(32, 4)
    out = policy_output(32)
    torch.manual_seed(5)
    q, _, _ = head.actor_objective(out, None, critic, obs, torch.tensor(1.0))
    g_logits, g_mean, g_std = torch.autograd.grad(q.sum(), out)
    assert (g_logits.abs().sum(1) > 0).all()
    # Every state's Gaussian: the sampled choice's (a Gumbel estimator) or every choice's (exact).
    assert ((g_mean != 0).sum(1) == (3 if estimator == "exact" else 1)).all()
    assert ((g_std != 0).sum(1) == (3 if estimator == "exact" else 1)).all()


def test_two_entropy_weights_each_get_the_gradient_a_single_one_would() -> None:
    log_alpha = torch.tensor([0.1, -0.4], requires_grad=True)
    entropy = torch.tensor([[1.0, -2.0], [0.5, -3.5]])
    loss, info = losses.temperature_loss(log_alpha, entropy, (0.55, -3.0), ("choice", "parameters"))
    (grad,) = torch.autograd.grad(loss, log_alpha)
    singles = [torch.autograd.grad(losses.temperature_loss(log_alpha[i], entropy[:, i], t)[0], log_alpha)[0][i]
               for i, t in enumerate((0.55, -3.0))]
    torch.testing.assert_close(grad, torch.stack(singles))
    assert set(info) == {"train/alpha_loss", "train/alpha_choice", "train/alpha_parameters"}
    a_loss, a_info = losses.actor_loss(torch.tensor([1.0, 2.0]), entropy, log_alpha.exp(), ("choice", "parameters"))
    weighted = (log_alpha.detach().exp() * entropy).sum(1)
    assert float(a_loss) == pytest.approx(float(-(torch.tensor([1.0, 2.0]) + weighted).mean()))
    assert float(a_info["train/entropy"]) == pytest.approx(float(entropy.sum(1).mean()))


# ------------------------------------------------------------------------------ the agent
@pytest.fixture(scope="module")
def platform_agent() -> HybridSAC:
    return HybridSAC("reparl/Platform-v0", **TINY).learn(160)


def test_predict_returns_actions_in_the_env_space(platform_agent: HybridSAC) -> None:
    env = gym.make("reparl/Platform-v0")
    obs, _ = env.reset(seed=0)
    for deterministic in (True, False):
        action, state = platform_agent.predict(obs, deterministic=deterministic)
        assert state is None and isinstance(action, tuple) and env.action_space.contains(action)
    batch, _ = platform_agent.predict(np.stack([obs, obs, obs]))
    assert isinstance(batch, list) and len(batch) == 3 and all(env.action_space.contains(a) for a in batch)
    assert platform_agent.log_alpha.shape == (2,) and len(platform_agent.alpha) == 2


def test_sb3_evaluate_policy_runs_it(platform_agent: HybridSAC) -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    mean, _ = evaluate_policy(platform_agent, make_vec_env("reparl/Platform-v0", n_envs=2, seed=0), n_eval_episodes=4)
    assert 0.0 <= mean <= 1.0


def test_the_update_logs_both_entropy_parts(platform_agent: HybridSAC) -> None:
    platform_agent.learn(20)
    info = platform_agent.pop_train_info()
    assert {"train/alpha_choice", "train/alpha_parameters", "train/entropy_choice", "train/entropy_parameters",
            "train/entropy"} <= set(info) and "train/alpha" not in info
    assert info["train/entropy"] == pytest.approx(info["train/entropy_choice"] + info["train/entropy_parameters"],
                                                  rel=1e-5)


def flat(action: tuple) -> list[float]:
    """An env action (k, parameters) as one list of numbers."""
    params = action[1] if isinstance(action[1], tuple) else (action[1],)
    return [float(action[0]), *np.concatenate(params).tolist()]


@pytest.mark.parametrize(("env_id", "kwargs"), [("reparl/Platform-v0", {}), ("reparl/Goal-v0", {}),
                                                ("reparl/HybridTarget-v0", {"shared": True})])
def test_save_load_round_trip(env_id: str, kwargs: dict, tmp_path: Path) -> None:
    env = gym.make(env_id, **kwargs)
    agent = HybridSAC(env, **TINY).learn(100)
    path = agent.save(tmp_path / "model")
    _, meta = read_model_file(path)
    assert meta["action_space"]["type"] == "Tuple"
    loaded = HybridSAC.load(path, device="cpu")
    assert loaded.action_space == env.action_space and torch.equal(loaded.log_alpha, agent.log_alpha)
    obs = np.stack([env.reset(seed=s)[0] for s in range(5)])
    before, after = agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    assert [flat(a) for a in before] == [flat(a) for a in after]
    HybridSAC.load(path, env=gym.make(env_id, **kwargs), device="cpu").learn(20)  # continues learning


def test_checkpoint_restore_continues_bit_for_bit(tmp_path: Path) -> None:
    a = HybridSAC("reparl/Platform-v0", **TINY).learn(90)
    a.checkpoint(tmp_path / "ck")
    a.learn(40)
    b = HybridSAC("reparl/Platform-v0", **TINY).restore(tmp_path / "ck.safetensors").learn(40)
    for (k, v), w in zip(a.policy.state_dict().items(), b.policy.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    assert torch.equal(a.log_alpha, b.log_alpha)


def hostile_action_space(path: Path, tmp_path: Path, action_space: dict) -> Path:
    tensors, meta = read_model_file(path)
    meta = json.loads(json.dumps(meta))
    meta.pop("sha256")
    meta["action_space"] = action_space
    return write_safetensors(tmp_path / "hostile.safetensors", tensors, meta)


BOX = {"type": "Box", "shape": [1], "dtype": "float32", "low": [0.0], "high": [1.0]}


@pytest.mark.parametrize(("space", "field"), [
    ({"type": "Tuple", "spaces": [{"type": "Discrete", "n": 5000, "start": 0}, BOX]}, "action_space.spaces[0].n"),
    ({"type": "Tuple", "spaces": [{"type": "Discrete", "n": 3, "start": 0}, {"type": "Tuple", "spaces": [BOX] * 2}]},
     "action_space.spaces[1]"),
    ({"type": "Tuple", "spaces": [{"type": "Discrete", "n": 3, "start": 0},
                                  {**BOX, "shape": [2, 2], "low": [[0, 0], [0, 0]], "high": [[1, 1], [1, 1]]}]},
     "action_space.spaces[1][0].shape"),
    ({"type": "Tuple", "spaces": [BOX, BOX]}, "action_space.spaces"),
    ({"type": "Tuple", "spaces": [{"type": "Discrete", "n": 3, "start": 0},
                                  {**BOX, "shape": [2], "low": [0, 0], "high": [1, 1]}]}, "hparams.net_arch/spaces"),
])
def test_hostile_hybrid_headers_are_refused_naming_the_field(space: dict, field: str, platform_agent: HybridSAC,
                                                             tmp_path: Path) -> None:
    """Oversized or malformed spaces, and a valid shared space whose network shapes are not the file's."""
    path = hostile_action_space(platform_agent.save(tmp_path / "model"), tmp_path, space)
    with pytest.raises(HeaderError) as info:
        read_model_file(path)
    assert field in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------ wrong spaces, configs
@pytest.mark.parametrize(("cls", "env_id", "fix"), [(GumbelSAC, "reparl/Platform-v0", "use HybridSAC"),
                                                    (GaussianSAC, "reparl/Goal-v0", "use HybridSAC"),
                                                    (HybridSAC, "Pendulum-v1", "use GaussianSAC"),
                                                    (HybridSAC, "CartPole-v1", "use GumbelSAC")])
def test_a_wrong_space_names_the_right_agent(cls: type, env_id: str, fix: str) -> None:
    with pytest.raises(TypeError, match=fix):
        cls(env_id, **TINY)


def config(tmp_path: Path, agent: str, env_id: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"agent:\n  name: {agent}\nenv:\n  id: {env_id}\n")
    return path


@pytest.mark.parametrize(("agent", "env_id", "fix"), [("GumbelSAC", "reparl/Platform-v0", "use HybridSAC"),
                                                      ("HybridSAC", "CartPole-v1", "use GumbelSAC"),
                                                      ("HybridSAC", "reparl/PlatformRelaxed-v0", "use GaussianSAC"),
                                                      ("SAC", "reparl/Platform-v0", "use HybridSAC")])
def test_a_config_on_a_wrong_space_names_the_right_agent(agent: str, env_id: str, fix: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=fix) as info:
        check_compatibility(load_config(config(tmp_path, agent, env_id)))
    assert "\n" not in str(info.value)


def test_shipped_hybrid_configs_name_hybrid_ids() -> None:
    repo = Path(__file__).resolve().parents[1]
    for name in ("platform", "goal"):
        cfg = load_config(repo / f"configs/hybrid_sac/{name}.yaml")
        check_compatibility(cfg)
        assert cfg.agent.name == "HybridSAC" and AGENTS[cfg.agent.name].handles(gym.make(cfg.env.id).action_space)


def test_check_env_names_hybrid_sac() -> None:
    from experiments.check_env import check_env

    assert "agent: HybridSAC" in check_env("reparl/Platform-v0")


def test_export_refuses_a_hybrid_policy_in_one_line(platform_agent: HybridSAC, tmp_path: Path) -> None:
    from agents.export import export_policy

    with pytest.raises(ValueError, match="export writes GumbelSAC and GaussianSAC policies"):
        export_policy(platform_agent, tmp_path / "p", "torchscript")


# ------------------------------------------------------------------------------ learning
def mean_regret(agent: HybridSAC) -> float:
    """The deterministic policy's mean shortfall from the optimum on a grid of 201 states (no sampling)."""
    states = np.linspace(-1, 1, 201, dtype=np.float32)
    actions, _ = agent.predict(states[:, None], deterministic=True)
    return float(np.mean([hybrid_target.optimum(float(s))[2] - hybrid_target.reward(float(s), int(k), float(p[k][0]))
                          for s, (k, p) in zip(states, actions, strict=True)]))


@pytest.mark.slow
def test_learns_the_closed_form_optimum_of_the_target_env() -> None:
    """Seeded, 3,000 steps. A policy that is perfect except that it never uses the middle choice has mean
    regret 1/32 = 0.03125 (the integral of 1/4 - |s| over |s| < 1/4, halved), and one with every choice
    right and parameters off by e has e^2; the bound 0.01 so needs all three choices, with the
    parameters within about 0.1 (2.5% of their range). Random actions: 17/32 + 23/12 = 2.45."""
    agent = HybridSAC("reparl/HybridTarget-v0", seed=0, device="cpu").learn(3000)
    assert mean_regret(agent) < 0.01


# ------------------------------------------------------------------------------ the runner
def test_run_py_trains_saves_and_evaluates_both_configs(tmp_path: Path) -> None:
    """``run.py train`` on each shipped hybrid config, a short budget: the model file loads and
    evaluates; Goal's evaluation reports its scoring rate."""
    import subprocess
    import sys

    from experiments.eval_run import run_eval

    repo = Path(__file__).resolve().parents[1]
    for name in ("platform", "goal"):
        proc = subprocess.run([sys.executable, "run.py", "train", f"configs/hybrid_sac/{name}.yaml", "--run-dir",
                               str(tmp_path / name), "--no-progress", "--wandb", "disabled", "--set",
                               "train.total_timesteps=300", "train.eval_freq=300", "train.eval_episodes=4",
                               "agent.learning_starts=100", "agent.net_arch=[32, 32]", "agent.compile=false"],
                              cwd=repo, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (run_dir,) = (tmp_path / name).iterdir()
        evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                 if "eval/mean_return" in line]
        assert [e["global_step"] for e in evals] == [300]
        assert ("eval/success_rate" in evals[0]) == (name == "goal")
        report = run_eval(run_dir, episodes=3)
        assert len(report.result.returns) == 3


def test_conditioned_policy_probe_reads_each_choice_from_its_own_pass() -> None:
    """The conditioned-on-k probe (experiments/research/hybrid_conditioning.py): choice k's parameters
    are the first d_k outputs of the parameter network at [features, onehot(k)], laid out as
    HybridPolicy's (choice 0's, then choice 1's, ...), with ragged d_k (Goal: 2, 1, 1)."""
    from experiments.research.hybrid_conditioning import ConditionedHybridPolicy, ConditionedHybridSAC

    torch.manual_seed(0)
    policy = ConditionedHybridPolicy(5, [2, 1, 1], [16])
    obs = torch.randn(4, 5)
    logits, mean, log_std = policy(obs)
    assert logits.shape == (4, 3) and mean.shape == log_std.shape == (4, 4)
    expected = torch.cat([policy.params(torch.cat([obs, torch.eye(3)[k].expand(4, 3)], dim=-1))[:, :d]
                          for k, d in enumerate([2, 1, 1])], dim=-1)
    torch.testing.assert_close(mean, expected)
    assert ((log_std >= -5.0) & (log_std <= 2.0)).all()
    agent = ConditionedHybridSAC("reparl/Goal-v0", net_arch=[8], seed=0)
    assert isinstance(agent.policy, ConditionedHybridPolicy) and tuple(agent.head.dims) == (2, 1, 1)
