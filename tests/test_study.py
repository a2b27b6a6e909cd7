"""The gradient study (experiments/research/study.py): it runs from the CLI, its tables agree with
themselves, and on problems with known answers its measurements give them."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from experiments.cli import main
from experiments.research.study import Row, Settings, _fmt, estimator_label, measure, quadratic_problem

Z = 4.0  # standard errors allowed: a false alarm about once in 15,000 runs per comparison


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    out = tmp_path_factory.mktemp("study")
    assert main(["study", "--quick", "--out-dir", str(out)]) == 0
    return (json.loads((out / "gradient_study.json").read_text()), (out / "gradient_study.md").read_text(), out)


def test_quick_study_writes_every_problem_and_configuration(quick: tuple[dict[str, Any], str, Path]) -> None:
    data, _, out = quick
    rows = data["rows"]
    settings = Settings.quick()
    names = [f"quadratic-{n}" for n in settings.sizes] + ["multidiscrete-3x4", "cartpole-heads", "cartpole-joint"]
    assert list(dict.fromkeys(r["problem"] for r in rows)) == names
    # Per problem: exact, then per temperature st, soft, one gumbel-rao per K, and reinmax at t >= 1.
    per_t = 2 + len(settings.gumbel_rao_k)
    expected = 1 + per_t * len(settings.temperatures) + sum(t >= 1 for t in settings.temperatures)
    assert all(sum(r["problem"] == n for r in rows) == expected for n in names)
    assert (out / "gradient_study.png").stat().st_size > 10_000
    assert data["command"] == f"python run.py study --quick --out-dir {out}"


def test_table_numbers_are_internally_consistent(quick: tuple[dict[str, Any], str, Path]) -> None:
    data, md, _ = quick
    draws = data["settings"]["draws"]
    for r in data["rows"]:
        if r["estimator"] == "exact":
            assert (r["bias_cos"], r["rel_err"], r["variance"], r["single_cos"]) == (1.0, 0.0, 0.0, 1.0)
            continue
        # ||m - e||^2 = ||m||^2 - 2 m.e + ||e||^2, divided by ||e||^2: three columns tie together.
        n, c = r["norm_ratio"], r["bias_cos"]
        assert r["rel_err"] ** 2 == pytest.approx(n * n - 2 * n * c + 1, rel=1e-6, abs=1e-9), r
        assert r["floor"] == pytest.approx(math.sqrt(r["variance"] / draws), rel=1e-9)
        assert -1 <= r["single_cos"] <= 1 and -1 <= c <= 1 and r["variance"] >= 0 and r["cost_us"] > 0
        assert r["estimator"] != "reinmax" or r["temperature"] >= 1.0
    # The markdown is the JSON, formatted: every row appears, cell for cell, in order.
    lines = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| estimator")]
    assert len(lines) == len(data["rows"])
    for line, r in zip(lines, data["rows"], strict=True):
        cells = [estimator_label(r["estimator"], r["k"])] + [_fmt(r[c]) for c in
                                                              ("temperature", "bias_cos", "rel_err", "floor",
                                                               "variance", "single_cos", "cost_us")]
        assert line == "| " + " | ".join(cells) + " |"


def test_reinmax_is_unbiased_on_the_linear_heads_critic(quick: tuple[dict[str, Any], str, Path]) -> None:
    """The heads critic is linear in the one-hot, so ReinMax's mean gradient is the exact one
    (Liu et al. 2023) up to Monte Carlo noise, on a real trained critic."""
    for r in quick[0]["rows"]:
        if r["problem"] == "cartpole-heads" and r["estimator"] == "reinmax":
            assert r["rel_err"] <= Z * r["floor"], r


def _row(problem: Any, estimator: str, k: int | None, temperature: float, draws: int, seed: int) -> Row:
    settings = dataclasses.replace(Settings.quick(), draws=draws, cost_repeats=1, seed=seed)
    return measure(problem, estimator, k, temperature, settings)


def test_study_is_deterministic_apart_from_cost() -> None:
    problem = quadratic_problem(3, 4, seed=5)
    a, b = (dataclasses.asdict(_row(problem, "gumbel-rao", 10, 0.5, 200, seed=1)) for _ in range(2))
    a.pop("cost_us"), b.pop("cost_us")
    assert a == b


def test_reinmax_exact_for_linear_f_and_straight_through_not() -> None:
    """Through the study's pipeline (not the bare estimator, which tests/test_distributions.py
    covers): on a linear f over 8 choices ReinMax's bias is within noise, ST's is far outside it."""
    problem = quadratic_problem(1, 8, seed=3, linear=True)
    reinmax = _row(problem, "reinmax", None, 1.0, 4000, seed=2)
    st = _row(problem, "st", None, 1.0, 4000, seed=2)
    assert reinmax.rel_err <= Z * reinmax.floor, reinmax
    assert st.rel_err > Z * st.floor, st


def test_gumbel_rao_k1_is_straight_through_and_variance_falls_with_k() -> None:
    """On the MultiDiscrete quadratic (three factors, cross-factor terms): K = 1 has ST's mean and
    variance; K = 10 and K = 100 keep the mean and lower the variance (Paulus et al. 2021)."""
    problem = quadratic_problem(3, 4, seed=4)
    draws = 4000
    st = _row(problem, "st", None, 0.5, draws, seed=6)
    gr = {k: _row(problem, "gumbel-rao", k, 0.5, draws, seed=7 + k) for k in (1, 10, 100)}
    # Same mean: | ||m1 - e|| - ||m2 - e|| | <= ||m1 - m2||, which is within Z standard errors of
    # the difference of two independent means (all in units of ||exact||).
    for k in (1, 10, 100):
        se = math.sqrt((st.variance + gr[k].variance) / draws)
        assert abs(st.rel_err - gr[k].rel_err) <= Z * se, (k, st, gr[k])
    assert gr[1].variance == pytest.approx(st.variance, rel=0.15)
    assert gr[1].variance > 1.5 * gr[10].variance and gr[10].variance > gr[100].variance
