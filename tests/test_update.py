"""The single update (agents.update.sac_update): each loss reaches only its own parameters, its
gradients are autograd's of the losses written out by hand, the target critics move only by Polyak,
and the compiled update computes what the eager one does."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from envs_for_tests import MultiDiscreteTarget
from test_masks import checked_vec_env

from agents import GaussianSAC, GumbelSAC, HybridSAC
from agents.sac import SoftActorCritic
from agents.update import UpdateSettings, sac_update
from envs.hybrid_target import HybridTarget

SMALL: dict[str, Any] = {"net_arch": [32, 32], "batch_size": 32, "learning_starts": 32, "buffer_size": 2_000,
                         "seed": 0, "device": "cpu", "policy_delay": 1}
FACTORIES: dict[str, Callable[..., SoftActorCritic]] = {
    "cartpole-exact": lambda **kw: GumbelSAC("CartPole-v1", estimator="exact", **{**SMALL, **kw}),
    "cartpole-st": lambda **kw: GumbelSAC("CartPole-v1", **{**SMALL, **kw}),
    "cartpole-reinmax": lambda **kw: GumbelSAC("CartPole-v1", estimator="reinmax", **{**SMALL, **kw}),
    "joint-gumbel-rao": lambda **kw: GumbelSAC(MultiDiscreteTarget(), estimator="gumbel-rao", **{**SMALL, **kw}),
    "pairwise-masked-st": lambda **kw: GumbelSAC(checked_vec_env(), critic="pairwise", pairwise_rank=4,
                                                 **{**SMALL, **kw}),
    "pendulum": lambda **kw: GaussianSAC("Pendulum-v1", **{**SMALL, **kw}),
    "platform-hybrid": lambda **kw: HybridSAC("reparl/Platform-v0", **{**SMALL, **kw}),
    "shared-hybrid-st": lambda **kw: HybridSAC(HybridTarget(shared=True), estimator="st", **{**SMALL, **kw}),
}


def ready(case: str, **hp: Any) -> SoftActorCritic:
    """An agent with a filled buffer and its update built (one real update done)."""
    agent = FACTORIES[case](**hp)
    agent.learn(SMALL["learning_starts"])
    assert agent.num_updates == 1
    return agent


def settings(agent: SoftActorCritic, **changes: Any) -> UpdateSettings:
    return dataclasses.replace(agent.update_settings(), **changes)


def snapshot(agent: SoftActorCritic) -> dict[str, list[torch.Tensor]]:
    return {"actor": [p.clone() for p in agent.policy.parameters()], "alpha": [agent.log_alpha.clone()],
            "critic": [p.clone() for p in agent.critic.parameters()],
            "target": [p.clone() for p in agent.critic_target.parameters()]}


def moved(before: list[torch.Tensor], after: list[torch.Tensor]) -> list[bool]:
    return [not torch.equal(b, a) for b, a in zip(before, after, strict=True)]


def run_update(agent: SoftActorCritic, s: UpdateSettings, batch: Any) -> dict[str, torch.Tensor]:
    return sac_update(agent.policy, agent.critic, agent.head, s, agent._state, batch, agent._temperature(), True)[0]


@pytest.mark.parametrize("case", list(FACTORIES))
def test_each_loss_reaches_only_its_own_parameters(case: str) -> None:
    """TorchRL's isolation test, on the update itself: with the actor's and alpha's step sizes at 0
    nothing but the critics moves (so the critic loss reaches no actor parameter), with the critics'
    at 0 the critics stay put while the actor and alpha move (the actor loss reaches no critic
    weight), and the targets move exactly by Polyak toward the stepped critics, never by a gradient."""
    agent = ready(case)
    batch = agent.buffer.sample(SMALL["batch_size"])
    rate = agent.hparams["target_update_rate"]

    before = snapshot(agent)
    run_update(agent, settings(agent, actor_lr=0.0, alpha_lr=0.0), batch)
    after = snapshot(agent)
    assert not any(moved(before["actor"], after["actor"]) + moved(before["alpha"], after["alpha"]))
    assert all(moved(before["critic"], after["critic"]))
    for b, t, c in zip(before["target"], after["target"], after["critic"], strict=True):
        assert torch.allclose(t, torch.lerp(b, c, rate), rtol=0, atol=1e-7)

    before = snapshot(agent)
    run_update(agent, settings(agent, critic_lr=0.0), batch)
    after = snapshot(agent)
    assert not any(moved(before["critic"], after["critic"]))
    assert all(moved(before["actor"], after["actor"])) and all(moved(before["alpha"], after["alpha"]))


def test_gradients_are_autograds_of_the_losses_written_out() -> None:
    """On a fresh optimizer Adam's first moment after one step is (1 - beta1) * gradient, so the
    update's gradients can be read back and set against torch.autograd of the SAC losses written
    out here from the head's pieces (CartPole, heads critic, exact estimator: no sampling anywhere).
    The actor's is taken against the critics the update had just stepped, as the update orders it."""
    agent = FACTORIES["cartpole-exact"]()
    agent.learn(SMALL["learning_starts"] - 1)
    assert agent.num_updates == 0
    agent._update = agent._make_update()
    batch = agent.buffer.sample(SMALL["batch_size"])
    policy, critic, target = (copy.deepcopy(m) for m in (agent.policy, agent.critic, agent.critic_target))
    alpha, s = agent.log_alpha.exp(), settings(agent)
    info = run_update(agent, s, batch)

    with torch.no_grad():
        dist_next = agent.head.distribution(policy(batch.next_obs), None)
        y = batch.rewards + s.gamma * (1 - batch.terminated) * agent.head.expected_q(target, batch.next_obs, dist_next)
    q = agent.head.critic_values(critic, batch.obs, batch.actions)
    c_grads = torch.autograd.grad(0.5 * ((q - y) ** 2).mean(1).sum(), list(critic.parameters()))
    dist = agent.head.distribution(policy(batch.obs), None)
    stepped = agent.critic.requires_grad_(False)
    a_loss = -(agent.head.expected_q(stepped, batch.obs, dist) + alpha * dist.entropy()).mean()
    a_grads = torch.autograd.grad(a_loss, list(policy.parameters()))
    for name, grads in (("critic", c_grads), ("actor", a_grads)):
        for g, m in zip(grads, agent._state.adam[name].exp_avg, strict=True):
            assert torch.allclose(m / (1 - s.betas[0]), g, rtol=1e-4, atol=1e-6), name
    entropy = float(dist.entropy().mean().detach())
    assert float(info["train/entropy"]) == pytest.approx(entropy, rel=1e-5)
    g_alpha = agent._state.adam["alpha"].exp_avg[0] / (1 - s.betas[0])  # d/dlog_alpha of log_alpha (H - target)
    assert float(g_alpha) == pytest.approx(entropy - agent.target_entropy, rel=1e-4)
    assert float(info["train/actor_loss"]) == pytest.approx(float(a_loss.detach()), rel=1e-5)


@pytest.mark.parametrize("case", ["cartpole-st", "pairwise-masked-st", "pendulum", "platform-hybrid"])
def test_compiled_update_equals_eager(case: str) -> None:
    """torch.compile (the default) changes how the update runs, not what it computes: the same seeds,
    the same batches and the same random draws (inductor's ``fallback_random`` takes torch's own
    generator instead of its Philox stream) give the same weights after a few updates, up to float32
    reassociation. The compiled path must also not fall back to eager (a warning says it did).
    Dynamo's cache is reset first: a graph an earlier test compiled for the same settings was
    compiled without ``fallback_random``, and reusing it would draw different noise."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    agents = []
    for compiled in (False, True):
        agent = FACTORIES[case](compile=compiled, policy_delay=2)
        with warnings.catch_warnings(), inductor_config.patch(fallback_random=True):
            warnings.simplefilter("error", RuntimeWarning)  # "torch.compile of the update failed"
            agent.learn(SMALL["learning_starts"] + 6)
        agents.append(agent)
    eager, compiled = agents
    assert compiled.num_updates == eager.num_updates >= 4
    for name, module in eager.modules().items():
        theirs = compiled.modules()[name].state_dict()
        for k, v in module.state_dict().items():
            assert torch.allclose(v, theirs[k], rtol=1e-4, atol=1e-5), (name, k)
    assert torch.allclose(eager.log_alpha, compiled.log_alpha, rtol=1e-5)
    assert eager.pop_train_info().keys() == compiled.pop_train_info().keys()


def test_agents_with_new_settings_compile_past_dynamos_per_function_limit() -> None:
    """All agents share ``sac_update``'s code object, so each new settings' graph is one more entry of
    one dynamo cache. A limit of 1 stands in for torch's 8 (four agents' two graphs each): the second
    agent's graph must still compile, and the process's own limit comes back unchanged."""
    import torch._dynamo.config as dynamo_config

    torch._dynamo.reset()
    with warnings.catch_warnings(), dynamo_config.patch(recompile_limit=1):
        warnings.simplefilter("error", RuntimeWarning)  # "torch.compile of the update failed"
        for lr in (3e-4, 1e-3):
            agent = GumbelSAC("CartPole-v1", **{**SMALL, "learning_rate": lr, "compile": True, "policy_delay": 1})
            agent.learn(SMALL["learning_starts"] + 2)
            assert agent.num_updates >= 2
        assert dynamo_config.recompile_limit == 1


def test_polyak_inside_the_update_is_exact_arithmetic() -> None:
    """TorchRL's Polyak check through the update: critics at 1 + the targets, rate 0.5, critic step
    size 0: every target moves by exactly 0.5 (dyadic values, exact in float32)."""
    agent = ready("cartpole-st")
    with torch.no_grad():
        for t, c in zip(agent.critic_target.parameters(), agent.critic.parameters(), strict=True):
            t.copy_(torch.randint(-4096, 4096, t.shape) / 1024)
            c.copy_(t + 1.0)
    before = [t.clone() for t in agent.critic_target.parameters()]
    run_update(agent, settings(agent, critic_lr=0.0, target_update_rate=0.5), agent.buffer.sample(32))
    for b, t in zip(before, agent.critic_target.parameters(), strict=True):
        assert torch.equal(t - b, torch.full_like(b, 0.5))
