"""The value-split probe's critic form (experiments/research/value_split.py): one shared v(s) and main
effects centred per factor, the pairwise part unchanged. Checked against its formula on a ragged
MultiDiscrete: a constant added to one factor's main effects moves no Q, and Q at a product policy's
probabilities is still the policy's expected Q (the closed form the agent's actor and target use)."""

from __future__ import annotations

import itertools

import pytest
import torch
from gymnasium import spaces

from experiments.research.value_split import ValueSplitHead

NVEC = [3, 2, 4]
T = sum(NVEC)


def head(rank: int = 3) -> ValueSplitHead:
    return ValueSplitHead(spaces.MultiDiscrete(NVEC), "pairwise", "st", pairwise_rank=rank)


def critic_of(out: torch.Tensor):  # a "critic" that returns a fixed output for every state
    return lambda obs: out.expand(1, obs.shape[0], -1)


def test_one_extra_output_and_a_shifted_factor_moves_no_q() -> None:
    h = head()
    assert h.critic_dims(5) == (5, T * (1 + 3) + 1)
    torch.manual_seed(0)
    out = torch.randn(1, 1, T * 4 + 1, dtype=torch.float64)
    shifted = out.clone()
    shifted[..., 1 + 3:1 + 5] += 7.0  # every main effect of the second factor (flat positions 3, 4)
    y = h.one_hot(torch.tensor(list(itertools.product(*(range(n) for n in NVEC)))))
    obs = torch.zeros(len(y), 1, dtype=torch.float64)
    h.factor_mean = h.factor_mean.double()
    assert torch.allclose(h.q(critic_of(out), obs, y.double()), h.q(critic_of(shifted), obs, y.double()))


def test_q_at_the_probabilities_is_the_expected_q() -> None:
    h = head()
    h.factor_mean = h.factor_mean.double()
    torch.manual_seed(1)
    out = torch.randn(1, 1, T * 4 + 1, dtype=torch.float64)
    joint = torch.tensor(list(itertools.product(*(range(n) for n in NVEC))))
    probs = [torch.softmax(torch.randn(n, dtype=torch.float64), 0) for n in NVEC]
    weight = torch.stack([torch.prod(torch.stack([probs[f][a[f]] for f in range(len(NVEC))])) for a in joint])
    q_joint = h.q(critic_of(out), torch.zeros(len(joint), 1), h.one_hot(joint).double())[0]
    at_probs = h.q(critic_of(out), torch.zeros(1, 1), torch.cat(probs)[None])[0, 0]
    assert at_probs.item() == pytest.approx((weight * q_joint).sum().item(), rel=1e-10)
