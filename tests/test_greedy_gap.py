"""The greedy-gap probe's bookkeeping, on saved untrained agents where the answer is known: with a
critic indifferent among actions the critic's best one-factor change is the greedy action itself, and
on Assign every slot of the greedy action is counted once (paid, collided, or alone unpaid)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agents import GumbelSAC
from experiments.research.greedy_gap import one_factor_changes, probe

ASSIGN = "reparl/CombinatorialAssign-v0"


def test_one_factor_changes_are_the_action_and_each_single_change() -> None:
    nvec = [3, 2, 4]
    out = one_factor_changes(np.array([1, 0, 2]), nvec)
    assert (out[0] == [1, 0, 2]).all()
    assert len(out) == 1 + sum(n - 1 for n in nvec) == len({tuple(a) for a in out})
    assert ((out != out[0]).sum(-1)[1:] == 1).all()


@pytest.fixture(scope="module")
def flat_critic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    agent = GumbelSAC(ASSIGN, seed=0)
    with torch.no_grad():  # Q(s, a) = 0 for every action: no action preferred
        for p in agent.critic.layers[-1].parameters():
            p.zero_()
    return agent.save(tmp_path_factory.mktemp("gap") / "flat.safetensors")


def test_a_flat_critic_changes_nothing_and_every_slot_is_counted_once(flat_critic_model: Path) -> None:
    out = probe(flat_critic_model, ASSIGN, episodes=1, samples=16)
    assert out["one_change"] == pytest.approx(out["actor"])
    assert out["actor"] + out["collided"] + out["alone_unpaid"] == pytest.approx(1.0)
    assert 0.0 <= out["critic"] <= 1.0 and 0.0 < out["entropy"] <= np.log(12) + 1e-6
