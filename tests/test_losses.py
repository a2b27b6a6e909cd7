"""TorchRL-style gradient isolation on real agents, plus exact checks of the pure loss functions."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from envs_for_tests import MultiDiscreteTarget
from torch import Tensor, nn

from agents import GaussianSAC, GumbelSAC, losses
from agents.core import SoftActorCritic

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


@pytest.mark.parametrize("case", CASES)
def test_gradient_isolation_inside_train_step(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each loss, as train_step builds it, reaches only its own parameters (the autograd path: the
    hand-written updates build no graph through the networks, and equal this path in float64,
    tests/test_manual_update.py)."""
    agent = make(case, manual_backward=False, policy_delay=1)  # the actor steps on the update spied on
    if case.startswith("multidiscrete"):
        assert agent.critic_kind == "joint"
    agent.learn(40)  # fills the buffer, a few real updates
    policy, critic = list(agent.policy.parameters()), list(agent.critic.parameters())
    watched = [*policy, *critic, agent.log_alpha]
    seen: dict[str, list[Tensor | None]] = {}

    def spy(name: str, fn):
        def wrapped(*args: Tensor, **kw: Any):
            loss, info = fn(*args, **kw)
            if name == "critic":
                assert not args[1].requires_grad, "the Bellman target must be a constant"
            if name == "actor":
                assert not args[2].requires_grad, "alpha must be detached in the actor loss"
            seen[name] = list(torch.autograd.grad(loss, watched, retain_graph=True, allow_unused=True))
            return loss, info
        return wrapped

    for name in ("critic", "actor", "temperature"):
        monkeypatch.setattr(losses, f"{name}_loss", spy(name, getattr(losses, f"{name}_loss")))
    agent.train_step()
    n_pol, n_cri = len(policy), len(critic)
    split = {k: (g[:n_pol], g[n_pol:n_pol + n_cri], g[-1]) for k, g in seen.items()}
    pol, cri, alpha = split["critic"]
    assert all(g is None for g in pol) and alpha is None and any(_nonzero(g) for g in cri)
    pol, cri, alpha = split["actor"]
    assert all(g is None for g in cri) and alpha is None and any(_nonzero(g) for g in pol)
    pol, cri, alpha = split["temperature"]
    assert all(g is None for g in [*pol, *cri]) and _nonzero(alpha)

    for p in agent.critic_target.parameters():
        assert not p.requires_grad and p.grad is None
    assert all(p.grad is not None for p in policy) and all(p.grad is not None for p in critic)


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


@pytest.mark.parametrize(("r_min", "r_max", "gamma", "bounds"), [
    (1.0, 1.0, 0.99, (0.0, 100.0)),        # CartPole: an episode may end at once, so 0 is the floor
    (-1.0, 0.0, 0.99, (-100.0, 0.0)),      # Acrobot
    (-2.0, 3.0, 0.9, (-20.0, 30.0)),
    (0.5, 2.0, 1.0, (0.0, math.inf)),      # undiscounted: the side with rewards of its sign is open
    (0.0, 0.0, 1.0, (0.0, 0.0)),
])
def test_value_bounds(r_min: float, r_max: float, gamma: float, bounds: tuple[float, float]) -> None:
    assert losses.value_bounds(r_min, r_max, gamma) == pytest.approx(bounds)


def test_value_bounds_hold_every_discounted_return() -> None:
    """Returns of random reward sequences in [r_min, r_max], cut at random lengths, lie in the bounds,
    and the all-r_max infinite sequence reaches the upper one: the bound is tight, not just safe."""
    g = torch.Generator().manual_seed(0)
    gamma, r_min, r_max = 0.95, -0.5, 2.0
    lo, hi = losses.value_bounds(r_min, r_max, gamma)
    rewards = r_min + (r_max - r_min) * torch.rand(2000, 400, generator=g, dtype=torch.float64)
    alive = torch.arange(400) < torch.randint(1, 401, (2000, 1), generator=g)
    returns = (rewards * alive * gamma ** torch.arange(400, dtype=torch.float64)).sum(1)
    assert lo <= float(returns.min()) and float(returns.max()) <= hi
    assert float((r_max * gamma ** torch.arange(2000, dtype=torch.float64)).sum()) == pytest.approx(hi)


def test_soft_bellman_target_clamps_the_bootstrapped_value_only() -> None:
    """The bound is on V(s'), not on the target: r + gamma * clamp(V) (a reward may exceed it)."""
    r, v = torch.tensor([5.0, 1.0, 1.0, 1.0]), torch.tensor([150.0, -30.0, 50.0, 150.0])
    terminated = torch.tensor([0.0, 0.0, 0.0, 1.0])
    out = losses.soft_bellman_target(r, terminated, v, 0.9, torch.tensor([0.0, 100.0]))
    assert torch.equal(out, torch.tensor([95.0, 1.0, 46.0, 1.0]))


@pytest.mark.parametrize("manual_backward", [True, False])
@pytest.mark.parametrize("bound", [True, False])
def test_bound_targets_caps_an_overestimating_critic(bound: bool, manual_backward: bool) -> None:
    """Target critics that value every CartPole state at 1e4: with bound_targets the critic is
    trained toward at most 1 + gamma * 100 = 100 (rewards are 1), without it toward ~1e4; on the
    hand-written update and the autograd one."""
    agent = GumbelSAC("CartPole-v1", bound_targets=bound, manual_backward=manual_backward, **SMALL)
    agent.learn(SMALL["learning_starts"])
    if bound:
        assert agent.reward_range == (1.0, 1.0)
        assert agent.target_bounds.tolist() == pytest.approx([0.0, 100.0])
    agent.pop_train_info()  # the update learn() ran at its last step
    with torch.no_grad():
        agent.critic_target.layers[-1].bias.fill_(1e4)
    agent.train_step()
    target = agent.pop_train_info()["train/target_mean"]  # terminal transitions' targets are 1
    assert (90.0 < target <= 100.0 + 1e-4) if bound else target > 5000.0


@pytest.mark.parametrize("manual_backward", [True, False])
def test_munchausen_term_is_the_clipped_scaled_log_policy_of_the_stored_action(manual_backward: bool,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Rewards 0 and every transition terminal: the critic target is exactly the Munchausen term
    m * alpha * clip(log pi(a|s), l0, 0) of the stored action. The policy is set to pi(0) = 0.9,
    pi(1) = 0.1, so action 0's log pi (-0.105) passes and action 1's (-2.30) is clipped to l0 = -1."""
    m, alpha = 0.9, 0.3
    agent = GumbelSAC("CartPole-v1", munchausen=m, alpha=alpha, learn_alpha=False,
                      manual_backward=manual_backward, **SMALL)
    with torch.no_grad():
        last = agent.policy.net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([math.log(0.9), math.log(0.1)]))
    buf = agent._ensure_buffer()
    n = SMALL["batch_size"]
    obs = torch.randn(n, 4, generator=torch.Generator().manual_seed(0)).numpy()
    actions = (torch.arange(n) % 2).reshape(-1, 1).numpy()
    ones, zeros = torch.ones(n).numpy(), torch.zeros(n).numpy()
    buf.add(obs, actions, zeros, obs, ones, zeros)
    captured: dict[str, Tensor] = {}
    real_critic = losses.critic_loss

    def critic_loss(q: Tensor, target: Tensor, *args: Any):
        captured.setdefault("target", target)
        return real_critic(q, target, *args)

    real_sample = agent._sample

    def sample():
        captured["batch"] = real_sample()
        return captured["batch"]

    monkeypatch.setattr(losses, "critic_loss", critic_loss)
    monkeypatch.setattr(agent, "_sample", sample)
    agent.train_step()
    sampled = captured["batch"].actions.reshape(-1)
    expected = torch.where(sampled == 0, m * alpha * math.log(0.9), m * alpha * -1.0)
    assert 0 < int(sampled.sum()) < n  # both actions in the batch
    assert torch.allclose(captured["target"], expected.float(), atol=1e-6, rtol=0)


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
        v = agent._next_value(torch.as_tensor(next_obs[:1]), None, agent.log_alpha.exp())
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
    # Huber, delta 1: errors 0, 1 (quadratic: 0.5) and 2, 1 (linear: 1 * (2 - 0.5) = 1.5; 0.5).
    h_loss, _ = losses.critic_loss(q, target, huber_delta=1.0)
    assert torch.isclose(h_loss, torch.tensor((0.0 + 0.5) / 2 + (1.5 + 0.5) / 2))
    # Its gradient is the error clipped to delta, over the batch: one outlier moves Q by at most delta / B.
    q_grad = torch.tensor([[0.0, 100.0]], requires_grad=True)
    losses.critic_loss(q_grad, torch.zeros(2), huber_delta=1.0)[0].backward()
    assert torch.equal(q_grad.grad, torch.tensor([[0.0, 0.5]]))
    # Importance weights scale each transition's term of the batch mean: errors 0, 1 / 2, 1 with
    # weights (1, 0.5): critic 1 (0 + 0.5 * 0.5) / 2, critic 2 (2 + 0.5 * 0.5) / 2.
    w_loss, _ = losses.critic_loss(q, target, weights=torch.tensor([1.0, 0.5]))
    assert torch.isclose(w_loss, torch.tensor((0.0 + 0.25) / 2 + (2.0 + 0.25) / 2))
    assert torch.isclose(losses.critic_loss(q, target, weights=torch.ones(2))[0], loss)
    a_loss, _ = losses.actor_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.5, 1.5]), torch.tensor(2.0))
    assert torch.isclose(a_loss, torch.tensor(-(2.0 + 2.0 * 1.0)))
