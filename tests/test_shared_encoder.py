"""The shared-encoder probe (experiments/research/shared_encoder.py) on real MinAtar Breakout frames:
the actor reads the critics' encoder, only the critic loss moves it, and the actor still learns."""

from __future__ import annotations

import torch

import envs  # noqa: F401  (registers reparl/MinAtar-*)
from experiments.research.shared_encoder import SharedEncoderGumbelSAC


def agent(**hp: object) -> SharedEncoderGumbelSAC:
    return SharedEncoderGumbelSAC("reparl/MinAtar-Breakout-v0", seed=0, learning_starts=64, batch_size=16,
                                  buffer_size=1000, net_arch=[32], **hp)


def encoder_weights(model: SharedEncoderGumbelSAC) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.critic.encoder.parameters()]


def test_the_actor_owns_no_encoder_and_reads_the_critics() -> None:
    model = agent()
    assert model.policy.encoder.shared is model.critic.encoder
    names = [n for n, _ in model.policy.named_parameters()]
    assert names and not any(n.startswith("encoder.") for n in names)
    assert {id(p) for g in model.actor_optimizer.param_groups for p in g["params"]} == \
        {id(p) for p in model.policy.parameters()}


def test_only_the_critic_loss_moves_the_shared_encoder() -> None:
    frozen = agent()
    frozen.hparams["critic_learning_rate"] = 0.0  # the update reads it at its first step; > 0 is checked only
    # at construction. The actor steps, the critics (and their encoder) do not.
    before, actor_before = encoder_weights(frozen), [p.detach().clone() for p in frozen.policy.parameters()]
    frozen.learn(200)
    assert all(torch.equal(a, b) for a, b in zip(before, encoder_weights(frozen), strict=True))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(actor_before, frozen.policy.parameters(), strict=True))

    trained = agent()
    before = encoder_weights(trained)
    trained.learn(200)
    assert any(not torch.equal(a, b) for a, b in zip(before, encoder_weights(trained), strict=True))
