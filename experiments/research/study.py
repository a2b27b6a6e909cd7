"""Gradient study: how far each Gumbel estimator's gradient is from the exact one.

On problems small enough to enumerate, the gradient of E_{a ~ softmax(logits)}[f(a)] with respect
to the logits is computed exactly, and each estimator's single-draw gradient is compared with it
over many draws:

* ``quadratic-<n>``: one factor of n choices, f(y) = y^T Q y + b^T y with random symmetric Q and
  random b. At a one-hot vertex f is linear in the action (y^T Q y = Q_aa), so the exact gradient
  sees only f's vertex values, while every estimator also sees f off the vertices, where Q's
  cross terms bend it: the situation of a critic trained only at one-hot actions.
* ``multidiscrete-3x4``: three factors of four choices, f a random quadratic over the concatenated
  one-hots, cross-factor terms included, so f is not linear even at the vertices; the exact
  gradient enumerates the 64 joint actions.
* ``cartpole-heads`` / ``cartpole-joint``: the actor loss of GumbelSAC after a short, seeded
  CartPole-v1 run, on a fixed batch of states: f = sum over states of min_i Q_i(s, y), through the
  agent's own head (``GumbelHead.policy_q``, so the study measures the code the agent runs). The heads
  critic is linear in y; the joint critic is an MLP of y. The exact gradient is the head's ``"exact"``
  objective (``GumbelHead.expected_q``). The entropy part of the actor loss is exact for every estimator
  and left out.

Per (problem, estimator, temperature), with g_1..g_n single-draw gradients, m their mean and e the
exact gradient: ``bias_cos`` = cos(m, e); ``rel_err`` = ||m - e|| / ||e|| (it cannot fall below
the Monte Carlo floor sqrt(variance / n), reported as ``floor``); ``variance`` = mean ||g_i - m||^2
/ ||e||^2; ``single_cos`` = mean cos(g_i, e), what one update sees; ``norm_ratio`` = ||m|| / ||e||;
``cost_us``: median wall time of one call (sample, f, backward) over repeats, noisy on a shared
machine. Everything but ``cost_us`` is seeded and deterministic.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from agents.distributions import GumbelSoftmax

Value = Callable[[GumbelSoftmax, str, torch.Generator, dict[str, Any]], Tensor]
"""(distribution over the rows, estimator, generator, estimator kwargs) -> f per row, for a
differentiable draw; ``"exact"`` gives the expectation instead."""


@dataclass
class Settings:
    """What the study runs; :meth:`quick` is the seconds-long version the tests use."""

    sizes: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
    temperatures: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0)
    gumbel_rao_k: tuple[int, ...] = (1, 10, 100)
    draws: int = 1000
    cost_repeats: int = 30
    cartpole_steps: int = 3000
    cartpole_states: int = 64
    seed: int = 0

    @classmethod
    def quick(cls) -> Settings:
        return cls(sizes=(2, 8), temperatures=(0.5, 1.0), gumbel_rao_k=(1, 10), draws=100, cost_repeats=3,
                   cartpole_steps=300, cartpole_states=8)


@dataclass
class Problem:
    name: str
    size: int  # joint actions
    logits: Tensor  # (rows, factors, choices)
    value: Value


@dataclass
class Row:
    problem: str
    size: int
    estimator: str
    k: int | None
    temperature: float | None  # None for the exact row
    bias_cos: float
    rel_err: float
    floor: float
    variance: float
    single_cos: float
    norm_ratio: float
    cost_us: float

    @property
    def label(self) -> str:
        return estimator_label(self.estimator, self.k)


def estimator_label(estimator: str, k: int | None) -> str:
    return f"{estimator} K={k}" if k is not None else estimator


# --------------------------------------------------------------------------------------- problems


def quadratic_value(q: Tensor, b: Tensor) -> Value:
    """f(y) = y^T Q y + b^T y over the flat concatenated one-hots, for every row."""

    def f(y: Tensor) -> Tensor:
        return ((y @ q.to(y.dtype)) * y).sum(-1) + y @ b.to(y.dtype)

    def value(dist: GumbelSoftmax, estimator: str, generator: torch.Generator, kw: dict[str, Any]) -> Tensor:
        if estimator == "exact":
            return exact_expectation(dist, f)
        return f(dist.rsample(estimator, generator, **kw).flatten(1))

    return value


def exact_expectation(dist: GumbelSoftmax, f: Callable[[Tensor], Tensor]) -> Tensor:
    """sum over every joint action a of P(a) f(onehot(a)), per row, by enumeration."""
    factors, choices = dist.logits.shape[1:]
    joint = torch.cartesian_prod(*(torch.arange(choices) for _ in range(factors))).reshape(-1, factors)
    vertices = F.one_hot(joint, choices).to(dist.logits.dtype).flatten(1)  # (M, factors * choices)
    f_v = f(vertices)
    probs = torch.stack([dist.log_prob(joint[m].expand(len(dist.logits), -1)).exp() for m in range(len(joint))], -1)
    return probs @ f_v


def quadratic_problem(factors: int, choices: int, seed: int, linear: bool = False) -> Problem:
    """Random logits N(0, 1), symmetric Q = (A + A^T) / 2 and b with N(0, 1) entries (Q = 0 if linear)."""
    g = torch.Generator().manual_seed(seed)
    d = factors * choices
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    q = torch.zeros(d, d, dtype=torch.float64) if linear else (a + a.T) / 2
    b = torch.randn(d, generator=g, dtype=torch.float64)
    logits = torch.randn(1, factors, choices, generator=g)
    name = f"quadratic-{choices}" if factors == 1 else f"multidiscrete-{factors}x{choices}"
    return Problem("linear-" + str(choices) if linear else name, choices ** factors, logits, quadratic_value(q, b))


def cartpole_problem(critic: str, settings: Settings) -> Problem:
    """GumbelSAC trained briefly on CartPole-v1 (seeded), its actor logits on a fixed batch of states."""
    from agents import GumbelSAC

    # The entropy settings are pinned to those the published study (benchmarks/gradient_study.md)
    # was trained with, GumbelSAC's defaults until "Picking the defaults"
    # (benchmarks/archive/README.md) moved them, so the problem stays fixed.
    agent = GumbelSAC("CartPole-v1", critic=critic, net_arch=[64, 64], batch_size=64, buffer_size=10_000,
                      learning_starts=min(500, settings.cartpole_steps // 3), seed=settings.seed, device="cpu",
                      diagnostic_interval=0, alpha=1.0, alpha_learning_rate=None, backup_entropy=True,
                      compile=False)  # eager: torch's own random stream, the same on any machine
    agent.learn(settings.cartpole_steps)
    obs = agent.buffer.sample(settings.cartpole_states, torch.Generator().manual_seed(settings.seed)).obs
    with torch.no_grad():
        logits = agent.policy(obs)
    critic_net = agent.critic.requires_grad_(False)  # the study differentiates the logits only

    def value(dist: GumbelSoftmax, estimator: str, generator: torch.Generator, kw: dict[str, Any]) -> Tensor:
        rows = obs.repeat(len(dist.logits) // len(obs), 1)  # draws are stacked along the rows
        extra = {**kw, "generator": generator} if estimator != "exact" else {}
        return agent.head.policy_q(critic_net, rows, dist, estimator, **extra)

    return Problem(f"cartpole-{critic}", 2, logits, value)


def problems(settings: Settings) -> Iterator[Problem]:
    for i, n in enumerate(settings.sizes):
        yield quadratic_problem(1, n, settings.seed + i)
    yield quadratic_problem(3, 4, settings.seed + 100)
    for critic in ("heads", "joint"):
        yield cartpole_problem(critic, settings)


# --------------------------------------------------------------------------------------- measuring


def exact_gradient(problem: Problem) -> Tensor:
    """d/dlogits of sum over rows of E[f], flat, in float64 (a float32 critic's values are promoted)."""
    leaf = problem.logits.detach().double().requires_grad_()
    problem.value(GumbelSoftmax(leaf), "exact", torch.Generator(), {}).sum().backward()
    return leaf.grad.flatten()


def draw_gradients(problem: Problem, estimator: str, temperature: float, draws: int,
                   generator: torch.Generator, kw: dict[str, Any]) -> Tensor:
    """(draws, rows * factors * choices): one independent gradient per draw. The draws are stacked
    as extra rows with their own copy of the logits, so one backward gives all of them."""
    rows = problem.logits.shape[0]
    leaf = problem.logits.detach().repeat(draws, 1, 1).requires_grad_()
    problem.value(GumbelSoftmax(leaf, temperature), estimator, generator, kw).sum().backward()
    return leaf.grad.double().reshape(draws, rows, -1).flatten(1)


def gradient_stats(grads: Tensor, exact: Tensor) -> dict[str, float]:
    mean = grads.mean(0)
    e2 = float(exact.square().sum())
    variance = float((grads - mean).square().sum(1).mean()) / e2
    return {"bias_cos": float(F.cosine_similarity(mean, exact, dim=0)),
            "rel_err": float((mean - exact).norm()) / math.sqrt(e2),
            "floor": math.sqrt(variance / len(grads)),
            "variance": variance,
            "single_cos": float(F.cosine_similarity(grads, exact.expand_as(grads), dim=1).mean()),
            "norm_ratio": float(mean.norm()) / math.sqrt(e2)}


def call_cost_us(problem: Problem, estimator: str, temperature: float, kw: dict[str, Any], repeats: int) -> float:
    """Median wall time of one call on the problem's rows: distribution, draw, f, backward."""
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        leaf = problem.logits.detach().clone().requires_grad_()
        start = time.perf_counter()
        problem.value(GumbelSoftmax(leaf, temperature), estimator, generator, kw).sum().backward()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:])) * 1e6


def configurations(settings: Settings) -> Iterator[tuple[str, int | None, float]]:
    """(estimator, K, temperature); ReinMax only at temperature >= 1 (Liu et al. 2023)."""
    for t in settings.temperatures:
        yield "st", None, t
        yield "soft", None, t
        for k in settings.gumbel_rao_k:
            yield "gumbel-rao", k, t
        if t >= 1.0:
            yield "reinmax", None, t


def measure(problem: Problem, estimator: str, k: int | None, temperature: float, settings: Settings,
            exact: Tensor | None = None) -> Row:
    kw = {"k": k} if k is not None else {}
    exact = exact_gradient(problem) if exact is None else exact
    generator = torch.Generator().manual_seed(settings.seed)
    grads = draw_gradients(problem, estimator, temperature, settings.draws, generator, kw)
    cost = call_cost_us(problem, estimator, temperature, kw, settings.cost_repeats)
    return Row(problem.name, problem.size, estimator, k, temperature, **gradient_stats(grads, exact), cost_us=cost)


def run_study(settings: Settings, log: Callable[[str], None] = print) -> list[Row]:
    rows: list[Row] = []
    torch.manual_seed(settings.seed)
    start = time.perf_counter()
    for problem in problems(settings):  # building a CartPole problem trains its agent: timed too
        exact = exact_gradient(problem)
        cost = call_cost_us(problem, "exact", 1.0, {}, settings.cost_repeats)
        rows.append(Row(problem.name, problem.size, "exact", None, None, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, cost))
        for estimator, k, t in configurations(settings):
            rows.append(measure(problem, estimator, k, t, settings, exact))
        log(f"{problem.name}: {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
    return rows


# --------------------------------------------------------------------------------------- reporting

COLUMNS = ("estimator", "temperature", "bias_cos", "rel_err", "floor", "variance", "single_cos", "cost_us")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def markdown(rows: list[Row], settings: Settings, command: str) -> str:
    lines = ["# Gradient study: Gumbel estimators against the exact gradient", "",
             f"Generated by `{command}` ({settings.draws} draws per row, seed {settings.seed}); "
             "definitions in `experiments/research/study.py`. `rel_err` cannot fall below `floor` "
             "(Monte Carlo noise); `cost_us` is wall time on a shared 2-core machine.", ""]
    for name in dict.fromkeys(r.problem for r in rows):
        part = [r for r in rows if r.problem == name]
        lines += [f"## {name} ({part[0].size} joint actions)", "",
                  "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for r in part:
            cells = [r.label] + [_fmt(getattr(r, c)) for c in COLUMNS[1:]]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[Row], path: Path, per_temperature: str = "multidiscrete-3x4") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r.label for r in rows if r.estimator != "exact"))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    quad = [r for r in rows if r.problem.startswith("quadratic-") and r.temperature == 1.0]
    temps = [r for r in rows if r.problem == per_temperature and r.estimator != "exact"]
    for label in labels:
        q = sorted((r for r in quad if r.label == label), key=lambda r: r.size)
        t = sorted((r for r in temps if r.label == label), key=lambda r: r.temperature)
        for ax, rs, x, y in ((axes[0, 0], q, "size", "rel_err"), (axes[0, 1], q, "size", "variance"),
                             (axes[1, 0], t, "temperature", "rel_err"), (axes[1, 1], t, "temperature", "variance")):
            if rs:
                ax.plot([getattr(r, x) for r in rs], [getattr(r, y) for r in rs], marker="o", label=label)
    titles = (("quadratic f, temperature 1: bias", "|A|", "||mean - exact|| / ||exact||"),
              ("quadratic f, temperature 1: variance", "|A|", "E||g - mean||^2 / ||exact||^2"),
              (f"{per_temperature}: bias", "temperature", "||mean - exact|| / ||exact||"),
              (f"{per_temperature}: variance", "temperature", "E||g - mean||^2 / ||exact||^2"))
    for ax, (title, xlabel, ylabel) in zip(axes.flat, titles, strict=True):
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel, yscale="log")
        ax.set_xscale("log", base=2)
        ticks = sorted({r.size for r in quad} if xlabel == "|A|" else {r.temperature for r in temps})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(rows: list[Row], settings: Settings, out_dir: Path, command: str, png: bool = True) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"command": command, "settings": asdict(settings), "rows": [asdict(r) for r in rows]}
    paths = [out_dir / "gradient_study.json", out_dir / "gradient_study.md"]
    paths[0].write_text(json.dumps(data, indent=1) + "\n")
    paths[1].write_text(markdown(rows, settings, command))
    if png:
        paths.append(plot(rows, out_dir / "gradient_study.png"))
    return paths
