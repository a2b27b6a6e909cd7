"""The pairwise-fit probe on two structures whose answer is known in closed form: Chain's reward is a
sum of neighbour-pair terms (at rank sum K the form is every pairwise function, so it holds it exactly), Triples' has no
part below order three (E[r | a_i, a_j] is constant, so the best pairwise fit is a constant)."""

from __future__ import annotations

import pytest

from envs.combinatorial_suite import CombinatorialChain, CombinatorialTriples
from experiments.research.pairwise_fit import fit


def test_a_pairwise_reward_is_held_exactly_and_its_argmax_is_optimal() -> None:
    [row] = fit(CombinatorialChain(factors=4, choices=3), ranks=[12], steps=1500)
    assert row["r2"] > 0.99 and row["argmax_over_optimum"] == pytest.approx(1.0)


def test_a_three_way_reward_has_no_pairwise_part() -> None:
    [row] = fit(CombinatorialTriples(factors=4, choices=3), ranks=[12], steps=1500)
    assert abs(row["r2"]) < 0.02
