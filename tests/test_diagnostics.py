"""grad/estimator_cosine: the live check that a Gumbel estimator points where the exact gradient does."""

import itertools

import pytest
import torch
from envs_for_tests import MultiDiscreteTarget

from agents import GaussianSAC, GumbelSAC, losses
from agents.update import estimator_cosine

SMALL = {"net_arch": [16, 16], "batch_size": 32, "learning_starts": 40, "buffer_size": 1_000, "seed": 0,
         "device": "cpu"}


def _agent(**hp: object) -> GumbelSAC:
    agent = GumbelSAC("CartPole-v1", **{**SMALL, **hp})
    agent.learn(60)
    return agent


def _exact_actor_loss(agent: GumbelSAC, obs: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    dist = agent.distribution(obs)
    return losses.actor_loss(agent.head.expected_q(agent.critic, obs, dist), dist.entropy(), alpha)[0]


def assert_cosine_measures_against_the_exact_gradient(agent: GumbelSAC) -> None:
    """The diagnostic's exact side is the exact gradient computed independently (autograd through the
    policy module): with the head's estimator set to "exact", the cosine is 1; straight-through's is
    a sampled gradient, below 1."""
    agent.train_step()  # the update's state exists
    obs = agent.buffer.sample(32).obs

    def cosine() -> float:
        return estimator_cosine(agent.policy, agent.critic, agent.head, agent._state, obs, None,
                                agent._temperature()).item()

    try:
        agent.head.estimator = "exact"
        assert cosine() == pytest.approx(1.0, abs=1e-5)
    finally:
        agent.head.estimator = "st"
    assert -1.0 <= cosine() < 1.0 - 1e-4


def test_cosine_is_one_against_the_exact_gradient_itself() -> None:
    agent = _agent(diagnostic_interval=1, policy_delay=1)
    assert_cosine_measures_against_the_exact_gradient(agent)


def test_cosine_is_below_one_for_straight_through_and_is_logged_at_its_interval() -> None:
    agent = _agent(diagnostic_interval=5, estimator="st", policy_delay=1)
    agent.pop_train_info()
    seen = []
    for _ in range(10):
        info = agent.train_step()
        seen.append("grad/estimator_cosine" in info)
        if seen[-1]:
            assert -1.0 <= info["grad/estimator_cosine"].item() < 1.0 - 1e-4  # a sampled gradient, not the exact one
    assert sum(seen) == 2  # num_updates hits a multiple of 5 twice in 10 updates
    popped = agent.pop_train_info()
    # Averaged over the 2 updates that logged it, not over all 10 (per-key counts).
    assert -1.0 <= popped["grad/estimator_cosine"] <= 1.0


def test_interval_counts_actor_updates_under_policy_delay() -> None:
    """With the actor on every 2nd update, interval 3 means actor updates 0, 3, 6: updates 0, 6, 12."""
    agent = GumbelSAC("CartPole-v1", **{**SMALL, "learning_starts": 60}, policy_delay=2, diagnostic_interval=3)
    agent.learn(59)  # warm-up only
    logged = [u for u in range(14) if "grad/estimator_cosine" in agent.train_step()]
    assert logged == [0, 6, 12]


def test_no_diagnostic_for_exact_joint_critic_or_when_off() -> None:
    for hp in ({"estimator": "exact"}, {"diagnostic_interval": 0}):
        agent = _agent(**hp)
        assert all("grad/estimator_cosine" not in agent.train_step() for _ in range(3)), hp
    with pytest.raises(ValueError, match="diagnostic_interval"):
        GumbelSAC("CartPole-v1", diagnostic_interval=-1)


def test_joint_critic_exact_expectation_enumerates_joint_actions_and_feeds_the_diagnostic() -> None:
    """sum over the 2 x 3 x 4 joint actions of prod_f pi_f(a_f) min_i Q_i(s, a), by an explicit loop."""
    agent = GumbelSAC(MultiDiscreteTarget(), critic="joint", diagnostic_interval=1, policy_delay=1, **SMALL).learn(60)
    obs = agent.buffer.sample(8).obs
    dist = agent.distribution(obs)
    expected = torch.zeros(8)
    for a in itertools.product(range(2), range(3), range(4)):
        act = torch.tensor([a] * 8)
        expected += dist.log_prob(act).exp() * agent.head.critic_values(agent.critic, obs, act).min(0).values
    assert torch.allclose(agent.head.expected_q(agent.critic, obs, dist), expected.detach(), atol=1e-5)
    assert "grad/estimator_cosine" in agent.train_step()


def test_dormant_fraction_counts_units_silent_on_the_whole_batch() -> None:
    """Two of four hidden units get a bias no input of the batch overcomes: 2/4 at tau 0. In a critic
    ensemble every member's units count: three of member 0's four silenced, none of member 1's: 3/8."""
    from agents.networks import CriticEnsemble, dormant_fraction, mlp

    net = mlp(3, [4], 2)
    with torch.no_grad():
        net[0].weight.abs_()  # positive inputs, weights and bias: a live unit
        net[0].bias[:2] = -100.0
        net[0].bias[2:] = 1.0
    x = torch.rand(64, 3)
    assert dormant_fraction(net, lambda: net(x)).item() == pytest.approx(0.5)
    ens = CriticEnsemble(2, 3, [4], 1)
    with torch.no_grad():
        ens.layers[0].bias[0, 0, :3] = -100.0
        ens.layers[0].bias[1, 0, :] = 1.0  # positive inputs and bias: every unit of member 1 is live
        ens.layers[0].weight[1] = ens.layers[0].weight[1].abs()
    assert dormant_fraction(ens, lambda: ens(x)).item() == pytest.approx(3 / 8)


def test_dormant_fractions_are_logged_at_the_diagnostic_interval() -> None:
    for cls, env in ((GumbelSAC, "CartPole-v1"), (GaussianSAC, "Pendulum-v1")):
        agent = cls(env, **{**SMALL, "diagnostic_interval": 3, "policy_delay": 1}).learn(60)
        info = agent.pop_train_info()
        assert 0.0 <= info["net/policy_dormant"] <= 1.0 and 0.0 <= info["net/critic_dormant"] <= 1.0
