"""TorchRL-style gradient isolation on real agents, plus exact checks of the pure loss functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from envs_for_tests import MultiDiscreteTarget
from torch import Tensor, nn

from agents import GaussianSAC, GumbelSAC, losses
from agents.sac import SoftActorCritic

SMALL: dict[str, Any] = {"net_arch": [32, 32], "batch_size": 32, "learning_starts": 32, "buffer_size": 2_000,
                         "seed": 0, "device": "cpu"}


FACTORIES: dict[str, Callable[..., SoftActorCritic]] = {
    **{f"cartpole-{est}": (lambda est=est, **kw: GumbelSAC("CartPole-v1", estimator=est, **SMALL, **kw))
       for est in ("exact", "st", "soft", "gumbel-rao", "reinmax")},
    **{f"multidiscrete-joint-{est}": (lambda est=est, **kw: GumbelSAC(MultiDiscreteTarget(), estimator=est,
                                                                     **SMALL, **kw))
       for est in ("st", "gumbel-rao")},
    "pendulum": lambda **kw: GaussianSAC("Pendulum-v1", **SMALL, **kw),
}
CASES = list(FACTORIES)


def make(case: str, **hp: Any) -> SoftActorCritic:
    return FACTORIES[case](**hp)


def _nonzero(g: Tensor | None) -> bool:
    return g is not None and bool(g.abs().sum() > 0)


@pytest.mark.parametrize("case", ["cartpole-st", "pendulum"])
def test_train_step_moves_target_by_polyak_rate(case: str) -> None:
    agent = make(case)
    agent.learn(33)
    before = [p.clone() for p in agent.critic_target.parameters()]
    agent.train_step()
    rate = agent.hparams["target_update_rate"]
    for b, t, s in zip(before, agent.critic_target.parameters(), agent.critic.parameters(), strict=True):
        assert torch.allclose(t, b + rate * (s - b), atol=1e-7)


def test_polyak_update_exact_arithmetic() -> None:
    """Parameters on a dyadic grid (k / 1024 in [-4, 4]) make every step exact in fp32."""
    torch.manual_seed(0)
    source, target = nn.Linear(6, 5), nn.Linear(6, 5)
    with torch.no_grad():
        for p in source.parameters():
            p.copy_(torch.randint(-4096, 4096, p.shape) / 1024)
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.copy_(s)
            s.add_(1.0)
    before = [t.clone() for t in target.parameters()]
    losses.polyak_update(target.parameters(), source.parameters(), 0.5)
    for b, t in zip(before, target.parameters(), strict=True):
        assert torch.equal(t - b, torch.full_like(b, 0.5))
    losses.polyak_update(target.parameters(), source.parameters(), 1.0)
    assert all(torch.equal(t, s) for t, s in zip(target.parameters(), source.parameters(), strict=True))


def test_soft_bellman_target_terminated_vs_truncated() -> None:
    r, v = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([10.0, 10.0, 10.0])
    terminated = torch.tensor([0.0, 1.0, 0.0])
    out = losses.soft_bellman_target(r, terminated, v, 0.9)
    assert torch.equal(out, torch.tensor([10.0, 1.0, 10.0]))  # the third is "truncated": it bootstraps


@pytest.mark.parametrize("flag", ["terminated", "truncated"])
def test_train_step_bootstraps_on_truncation_only(flag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rewards 0 and one shared next state: the critic's target is exactly 0 after a termination and
    exactly gamma * V(s') after a truncation (V exact for the heads critic, computed before the step;
    soft targets, so V carries the entropy bonus and is not 0 even for an untrained critic)."""
    agent = GumbelSAC("CartPole-v1", alpha=1.0, backup_entropy=True, **SMALL)
    buf = agent._ensure_buffer()
    n = 64
    obs = torch.randn(n, 4, generator=torch.Generator().manual_seed(0)).numpy()
    next_obs = obs[:1].repeat(n, 0)
    ones, zeros = torch.ones(n).numpy(), torch.zeros(n).numpy()
    buf.add(obs, zeros.reshape(-1, 1).astype(int), zeros, next_obs,
            ones if flag == "terminated" else zeros, ones if flag == "truncated" else zeros)
    with torch.no_grad():
        s1 = torch.as_tensor(next_obs[:1])
        q, entropy = agent.head.next_value(agent.policy(s1), None, agent.critic_target, s1, 1.0)
        v = q + agent.log_alpha.exp() * entropy
    captured: dict[str, Tensor] = {}
    real_critic = losses.critic_loss

    def critic_loss(q: Tensor, target: Tensor, *args: Any):
        captured["target"] = target
        return real_critic(q, target, *args)

    monkeypatch.setattr(losses, "critic_loss", critic_loss)
    agent.train_step()
    expected = torch.zeros(SMALL["batch_size"]) if flag == "terminated" else (agent.hparams["gamma"] * v).expand(32)
    assert float(v.abs()) > 0
    assert torch.allclose(captured["target"], expected, atol=1e-6, rtol=0)


def test_temperature_loss_sign_moves_alpha_toward_target() -> None:
    for entropy, target, direction in ((0.1, 1.0, +1), (2.0, 1.0, -1)):
        log_alpha = torch.tensor(0.0, requires_grad=True)
        opt = torch.optim.Adam([log_alpha], lr=0.1)
        loss, info = losses.temperature_loss(log_alpha, torch.full((8,), entropy), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert direction * float(log_alpha.detach()) > 0, (entropy, target, float(log_alpha.detach()))
        assert "train/alpha" in info


def test_critic_and_actor_loss_values_and_shape_errors() -> None:
    q = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    target = torch.tensor([1.0, 1.0])
    loss, _ = losses.critic_loss(q, target)
    assert torch.isclose(loss, torch.tensor(0.5 * (0.5 + 2.5)))  # 0.5 * per-critic MSE, summed
    with pytest.raises(ValueError, match="critics, batch"):
        losses.critic_loss(q, torch.ones(3))
    with pytest.raises(ValueError, match="critics, batch"):
        losses.critic_loss(torch.ones(2), torch.ones(2))
    # Importance weights scale each transition's term of the batch mean: errors 0, 1 / 2, 1 with
    # weights (1, 0.5): critic 1 (0 + 0.5 * 0.5) / 2, critic 2 (2 + 0.5 * 0.5) / 2.
    w_loss, _ = losses.critic_loss(q, target, weights=torch.tensor([1.0, 0.5]))
    assert torch.isclose(w_loss, torch.tensor((0.0 + 0.25) / 2 + (2.0 + 0.25) / 2))
    assert torch.isclose(losses.critic_loss(q, target, weights=torch.ones(2))[0], loss)
    a_loss, _ = losses.actor_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.5, 1.5]), torch.tensor(2.0))
    assert torch.isclose(a_loss, torch.tensor(-(2.0 + 2.0 * 1.0)))


def test_adam_step_equals_torch_optim_adam() -> None:
    """The update's foreach Adam is torch.optim.Adam's arithmetic on torch.optim.Adam's state (float64,
    three steps with different gradients, so the bias corrections and the moments are all exercised)."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.randn(3, generator=gen, dtype=torch.float64)]
    ours = [p.clone() for p in params]
    ref = [p.clone().requires_grad_() for p in params]
    opt = torch.optim.Adam(ref, lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    exp_avg, exp_avg_sq = [torch.zeros_like(p) for p in ours], [torch.zeros_like(p) for p in ours]
    steps = [torch.zeros((), dtype=torch.float64) for _ in ours]
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
        for r, g in zip(ref, grads, strict=True):
            r.grad = g.clone()
        opt.step()
        losses.adam_step(ours, grads, exp_avg, exp_avg_sq, steps, 0.01, 0.8, 0.99, 1e-6)
    for o, r in zip(ours, ref, strict=True):
        assert torch.allclose(o, r.detach(), rtol=1e-12, atol=1e-14)
    state = [opt.state[r] for r in ref]
    assert all(torch.allclose(a, s["exp_avg"]) and torch.allclose(b, s["exp_avg_sq"])
               for a, b, s in zip(exp_avg, exp_avg_sq, state, strict=True))
