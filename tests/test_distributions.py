"""Statistical and exact checks of agents.distributions.

Every statistical test is seeded (so CI is reproducible) and its tolerance comes from the sampling
distribution of the statistic, written next to it. ``ALPHA`` is the per-test false-rejection
rate the tolerance would have over random seeds; ``Z`` is the matching two-sided normal quantile
rounded up (Z = 4 rejects a correct implementation with probability 6.3e-5 per coordinate).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import (
    AffineTransform,
    Categorical,
    Independent,
    Normal,
    TanhTransform,
    TransformedDistribution,
)

from agents.distributions import (
    ESTIMATORS,
    MASKED_LOGIT,
    GumbelSoftmax,
    SquashedGaussian,
    conditional_gumbel,
    gumbel_noise,
)

ALPHA = 1e-3
Z = 4.0


# ------------------------------------------------------------------------------- test statistics


def chi2_pvalue(counts: Tensor, probs: Tensor) -> float:
    """Pearson's goodness of fit: X^2 = sum (O - E)^2 / E ~ chi^2(k - 1) under H0 for large E.

    The survival function of chi^2(df) at x is the regularized upper incomplete gamma Q(df/2, x/2).
    """
    n = counts.sum()
    expected = n * probs.double()
    assert float(expected.min()) >= 5, "chi-square needs every expected count >= 5"
    x2 = ((counts.double() - expected) ** 2 / expected).sum()
    df = counts.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), x2 / 2))


def ks_pvalue(samples: Tensor, cdf: Tensor) -> float:
    """One-sample Kolmogorov-Smirnov test; ``cdf`` is the hypothesised CDF at the sorted samples.

    sqrt(n) D_n converges to the Kolmogorov distribution, P(K > x) = 2 sum_k (-1)^(k-1) exp(-2 k^2 x^2).
    """
    n = samples.numel()
    i = torch.arange(1, n + 1, dtype=torch.float64)
    d = torch.maximum((i / n - cdf).max(), (cdf - (i - 1) / n).max())
    lam = math.sqrt(n) * float(d)
    return float(min(1.0, max(0.0, 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam)
                                               for k in range(1, 101)))))


def assert_mean_close(samples: Tensor, expected: Tensor, what: str) -> None:
    """CLT: the mean of N i.i.d. draws is within Z standard errors s / sqrt(N) of its expectation."""
    n = samples.shape[0]
    mean = samples.double().mean(0)
    se = samples.double().std(0) / math.sqrt(n)
    err = (mean - expected.double()).abs()
    assert bool((err <= Z * se + 1e-9).all()), f"{what}: mean {mean} vs exact {expected}, |err| {err} > {Z} * se {se}"


def variance_and_se(x: Tensor) -> tuple[Tensor, Tensor]:
    """Sample variance and its standard error sqrt((mu4 - sigma^4) / N) (delta method)."""
    x = x.double()
    c = x - x.mean(0)
    var = (c ** 2).mean(0)
    mu4 = (c ** 4).mean(0)
    return var, ((mu4 - var ** 2) / x.shape[0]).sqrt()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------- Gumbel-max


def test_gumbel_max_frequencies_match_softmax() -> None:
    logits = torch.tensor([0.3, -1.0, 1.2, 0.0, -0.4])
    n = 40_000
    dist = GumbelSoftmax(logits.expand(n, 1, 5))
    counts = torch.bincount(dist.sample(gen(0)).reshape(-1), minlength=5)
    assert chi2_pvalue(counts, torch.softmax(logits, -1)) > ALPHA


@pytest.mark.parametrize("estimator, temperature", [("st", 0.3), ("soft", 5.0), ("gumbel-rao", 0.5),
                                                    ("reinmax", 2.0)])
def test_rsample_argmax_is_an_exact_sample_at_any_temperature(estimator: str, temperature: float) -> None:
    logits = torch.tensor([0.3, -1.0, 1.2, 0.0])
    n = 20_000
    y = GumbelSoftmax(logits.expand(n, 1, 4), temperature=temperature).rsample(estimator, gen(1))
    counts = torch.bincount(y.argmax(-1).reshape(-1), minlength=4)
    assert chi2_pvalue(counts, torch.softmax(logits, -1)) > ALPHA


def test_masked_frequencies_and_zero_probability() -> None:
    logits = torch.tensor([0.3, 2.0, 1.2, 0.0, -0.4])
    allowed = torch.tensor([True, False, True, True, False])
    n = 30_000
    dist = GumbelSoftmax(logits.expand(n, 1, 5), mask=allowed.expand(n, 1, 5))
    assert bool((dist.probs[..., ~allowed] == 0).all())
    assert torch.isfinite(dist.log_probs).all() and torch.isfinite(dist.entropy()).all()
    a = dist.sample(gen(2)).reshape(-1)
    counts = torch.bincount(a, minlength=5)
    assert int(counts[~allowed].sum()) == 0
    assert chi2_pvalue(counts[allowed], torch.softmax(logits[allowed], -1)) > ALPHA
    for est in ESTIMATORS:
        idx = dist.rsample(est, gen(3)).argmax(-1).reshape(-1)
        assert not bool((~allowed)[idx].any()), f"{est} sampled a masked action"


def test_multidiscrete_ragged_joint_frequencies() -> None:
    """Joint counts over the 2*3*4 = 24 cells: tests each factor's marginal *and* their independence."""
    nvec = [2, 3, 4]
    torch.manual_seed(0)
    raw = 0.5 * torch.randn(3, 4)
    flat_mask = torch.ones(sum(nvec), dtype=torch.bool)
    n = 40_000
    dist = GumbelSoftmax(raw.expand(n, 3, 4), mask=flat_mask.expand(n, -1), nvec=nvec)
    a = dist.sample(gen(4))
    for f, k in enumerate(nvec):
        assert int(a[:, f].max()) < k, f"factor {f} sampled a padded choice"
    cell = (a[:, 0] * 3 + a[:, 1]) * 4 + a[:, 2]
    counts = torch.bincount(cell, minlength=24)
    p = [torch.softmax(raw[f, :k], -1) for f, k in enumerate(nvec)]
    joint = (p[0][:, None, None] * p[1][None, :, None] * p[2][None, None, :]).reshape(-1)
    assert chi2_pvalue(counts, joint) > ALPHA


def test_ragged_nvec_without_mask_never_samples_padding() -> None:
    dist = GumbelSoftmax(torch.zeros(2_000, 2, 4), nvec=[2, 4])
    assert bool((dist.probs[:, 0, 2:] == 0).all())
    assert torch.allclose(dist.probs[:, 0, :2], torch.full((2_000, 2), 0.5))
    assert int(dist.sample(gen(41))[:, 0].max()) == 1
    assert int(dist.rsample("st", gen(41)).argmax(-1)[:, 0].max()) == 1


def test_all_masked_row_raises_naming_the_row() -> None:
    mask = torch.ones(3, 1, 4, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match="row 1"):
        GumbelSoftmax(torch.zeros(3, 1, 4), mask=mask)


def test_flat_sb3_contrib_mask_equals_padded_mask() -> None:
    nvec = [2, 3]
    logits = torch.randn(4, 2, 3, generator=gen(5))
    flat = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 0, 0, 1], [1, 1, 1, 1, 1], [1, 0, 0, 1, 0]], dtype=torch.bool)
    padded = torch.zeros(4, 2, 3, dtype=torch.bool)
    padded[:, 0, :2] = flat[:, :2]
    padded[:, 1, :3] = flat[:, 2:]
    a, b = GumbelSoftmax(logits, mask=flat, nvec=nvec), GumbelSoftmax(logits, mask=padded, nvec=nvec)
    assert torch.equal(a.probs, b.probs)
    assert bool((a.probs[:, 0, 2] == 0).all()), "padding of the narrow factor must have probability 0"
    assert bool((a.probs[~padded] == 0).all())
    with pytest.raises(ValueError, match="flat layout"):
        GumbelSoftmax(logits, mask=torch.ones(4, 7, dtype=torch.bool), nvec=nvec)


# ------------------------------------------------------------------------------- relaxation


def test_soft_sample_is_softmax_of_perturbed_logits_and_st_is_exact_one_hot() -> None:
    logits = torch.randn(64, 2, 5, generator=gen(6))
    for temperature in (0.2, 1.0, 3.0):
        dist = GumbelSoftmax(logits, temperature)
        g = gumbel_noise(logits.shape, generator=gen(7))  # rsample draws exactly this noise first
        soft = dist.rsample("soft", gen(7))
        assert torch.equal(soft, torch.softmax((logits + g) / temperature, -1))
        for est in ("st", "gumbel-rao"):
            leaf = logits.clone().requires_grad_()
            y = GumbelSoftmax(leaf, temperature).rsample(est, gen(7))
            assert torch.equal(y, F.one_hot((logits + g).argmax(-1), 5).float()), f"{est} forward not one-hot"
            (y * torch.arange(5.0)).sum().backward()
            assert bool((leaf.grad.abs().sum(-1) > 0).all()), f"{est} has a zero gradient row"
        leaf = logits.clone().requires_grad_()
        y = GumbelSoftmax(leaf, temperature).rsample("st", gen(7))
        (y * torch.arange(5.0)).sum().backward()
        ref_leaf = logits.clone().requires_grad_()
        (torch.softmax((ref_leaf + g) / temperature, -1) * torch.arange(5.0)).sum().backward()
        assert torch.allclose(leaf.grad, ref_leaf.grad, atol=1e-6), "ST backward must be the relaxed Jacobian"


def test_temperature_to_zero_gives_one_hot() -> None:
    """Bound: 1 - y_max <= (K-1) exp(-gap / temperature), gap = top-two spacing of logits + G, so
    ||y - D||_inf > eps only if gap < t = temperature * log((K-1)/eps). With equal logits
    P(gap >= t) = K e^-t / (e^-t + K - 1) (shift one logit by -t and sum the Gumbel-max win
    probabilities), hence P(gap < t) <= 1 - e^-t <= t =: p0. The observed fraction of N draws
    must stay below p0 + Z sqrt(p0 (1 - p0) / N)."""
    k, n, eps = 5, 20_000, 1e-4
    for temperature in (1e-2, 1e-3):
        y = GumbelSoftmax(torch.zeros(n, 1, k), temperature).rsample("soft", gen(8))
        d = F.one_hot(y.argmax(-1), k).float()
        frac = float(((y - d).abs().amax(-1) > eps).float().mean())
        p0 = temperature * math.log((k - 1) / eps)
        assert frac <= p0 + Z * math.sqrt(p0 * (1 - p0) / n), (temperature, frac, p0)


def test_temperature_to_infinity_gives_uniform() -> None:
    """Deterministic bound: y_i / y_j = exp((z_i - z_j) / T) with z = logits + G, so every
    |y_i - 1/K| <= (exp(R / T) - 1) / K with R = max z - min z (plus fp32 rounding, 1e-6)."""
    k, n = 4, 2_000
    logits = torch.randn(n, 1, k, generator=gen(9))
    g = gumbel_noise(logits.shape, generator=gen(10))
    z = logits + g
    r = z.amax(-1) - z.amin(-1)
    dev_means = []
    for temperature in (10.0, 100.0, 1000.0):
        y = GumbelSoftmax(logits, temperature).rsample("soft", gen(10))
        dev = (y - 1 / k).abs().amax(-1)
        assert bool((dev <= (torch.exp(r / temperature) - 1) / k + 1e-6).all())
        dev_means.append(float(dev.mean()))
    assert dev_means[0] > dev_means[1] > dev_means[2] and dev_means[2] < 1e-3


def test_invalid_temperature_and_estimator() -> None:
    with pytest.raises(ValueError, match="temperature"):
        GumbelSoftmax(torch.zeros(1, 1, 3), temperature=0.0)
    with pytest.raises(ValueError, match="reinmax needs temperature >= 1"):
        GumbelSoftmax(torch.zeros(1, 1, 3), temperature=0.5).rsample("reinmax")
    with pytest.raises(ValueError, match="unknown estimator"):
        GumbelSoftmax(torch.zeros(1, 1, 3)).rsample("nope")
    with pytest.raises(ValueError, match="batch, factors, choices"):
        GumbelSoftmax(torch.zeros(2, 3))


# ------------------------------------------------------------------------------- estimator gradients


def per_sample_grads(theta: Tensor, f, estimator: str, n: int, seed: int, temperature: float = 1.0,
                     **kw: object) -> Tensor:
    """d f(y_n) / d theta for n independent samples: (n, K). Each row has its own logits leaf."""
    leaf = theta.detach().expand(n, 1, -1).clone().requires_grad_()
    y = GumbelSoftmax(leaf, temperature).rsample(estimator, gen(seed), **kw)[:, 0]
    f(y).sum().backward()
    return leaf.grad[:, 0]


def exact_grad(theta: Tensor, f) -> Tensor:
    """Gradient of E[f(D)] = sum_i softmax(theta)_i f(e_i), by enumerating the K vertices."""
    t = theta.detach().double().requires_grad_()
    vertices = torch.eye(theta.numel(), dtype=torch.float64)
    (torch.softmax(t, -1) * f(vertices)).sum().backward()
    return t.grad


THETA = torch.tensor([0.5, -0.3, 1.0, 0.0])
C = torch.tensor([1.0, -2.0, 0.5, 3.0])


def linear(y: Tensor) -> Tensor:
    return (y * C.to(y.dtype)).sum(-1)


def quadratic(y: Tensor) -> Tensor:
    a = torch.tensor([[2.0, -1.0, 0.0, 0.5], [-1.0, 1.0, 0.3, 0.0], [0.0, 0.3, -1.5, 1.0],
                      [0.5, 0.0, 1.0, 0.8]], dtype=y.dtype)
    return ((y @ a) * y).sum(-1)


def test_exact_reference_by_enumeration() -> None:
    """The agent's 'exact' actor objective sum_a pi(a) Q(a) differentiates to J(pi) q."""
    p = torch.softmax(THETA.double(), -1)
    assert torch.allclose(exact_grad(THETA, linear), p * (C.double() - (p * C.double()).sum()))
    leaf = THETA.clone().requires_grad_()
    dist = GumbelSoftmax(leaf.view(1, 1, -1))
    (dist.probs[0, 0] * quadratic(torch.eye(4))).sum().backward()
    assert torch.allclose(leaf.grad.double(), exact_grad(THETA, quadratic), atol=1e-6)


def test_reinmax_is_unbiased_for_linear_f() -> None:
    """E[2 J(pi_half) - J(pi)/2] = J(pi) at temperature 1 (Liu et al. 2023): the MC mean of
    N per-sample gradients is within Z standard errors (CLT) of the enumerated gradient."""
    g = per_sample_grads(THETA, linear, "reinmax", 100_000, seed=11)
    assert_mean_close(g, exact_grad(THETA, linear), "reinmax, linear f")


def test_estimators_on_quadratic_f_relation_to_exact() -> None:
    """No estimator but 'exact' is unbiased for a nonlinear f; what must hold is that the MC means
    are estimated well enough to tell (se << bias) and point the same way as the exact gradient."""
    exact = exact_grad(THETA, quadratic)
    for est in ("st", "gumbel-rao", "reinmax", "soft"):
        g = per_sample_grads(THETA, quadratic, est, 20_000, seed=12)
        cos = F.cosine_similarity(g.double().mean(0), exact, dim=0)
        assert float(cos) > 0, f"{est}: mean gradient points away from the exact one (cos {float(cos):.3f})"


def test_straight_through_sign_matches_exact_for_two_actions() -> None:
    """K = 2, f = c.y: each ST gradient is s1 s2 (c1 - c2) / T * (1, -1), s = relaxed sample,
    so every nonzero sample has the sign of the exact p1 p2 (c1 - c2) (1, -1)."""
    theta = torch.tensor([0.7, -0.4])
    c = torch.tensor([-1.5, 2.0])
    g = per_sample_grads(theta, lambda y: (y * c).sum(-1), "st", 5_000, seed=13, temperature=0.5)
    exact = exact_grad(theta, lambda y: (y * c.double()).sum(-1))
    nonzero = g.abs() > 0
    assert float(nonzero.float().mean()) > 0.99
    assert bool((torch.sign(g)[nonzero] == torch.sign(exact.float()).expand_as(g)[nonzero]).all())


def test_gumbel_rao_k1_matches_straight_through_in_distribution() -> None:
    """Two independent samples of N gradients: means differ by < Z sqrt(s1^2/N + s2^2/N) and
    variances by < Z sqrt(se1^2 + se2^2), se^2 = (mu4 - sigma^4) / N."""
    n = 40_000
    st = per_sample_grads(THETA, linear, "st", n, seed=14, temperature=0.7)
    gr = per_sample_grads(THETA, linear, "gumbel-rao", n, seed=15, temperature=0.7, k=1)
    se = (st.double().var(0) / n + gr.double().var(0) / n).sqrt()
    assert bool(((st.double().mean(0) - gr.double().mean(0)).abs() <= Z * se).all())
    (v1, e1), (v2, e2) = variance_and_se(st), variance_and_se(gr)
    assert bool(((v1 - v2).abs() <= Z * (e1 ** 2 + e2 ** 2).sqrt()).all()), (v1, v2)


def test_gumbel_rao_variance_falls_with_k_and_mean_stays() -> None:
    """Rao-Blackwellization keeps the mean of ST and lowers the variance: the total variance at
    K=1 exceeds K=8, which exceeds K=64, each by more than Z standard errors of the difference."""
    n = 20_000
    grads = {k: per_sample_grads(THETA, linear, "gumbel-rao", n, seed=16 + k, temperature=0.5, k=k)
             for k in (1, 8, 64)}
    tot = {}
    for k, g in grads.items():
        v, e = variance_and_se(g)
        tot[k] = (float(v.sum()), float((e ** 2).sum() ** 0.5))  # coordinates' se combined loosely
    for lo, hi in ((1, 8), (8, 64)):
        assert tot[lo][0] - tot[hi][0] > Z * (tot[lo][1] + tot[hi][1]), tot
    st = per_sample_grads(THETA, linear, "st", n, seed=99, temperature=0.5)
    se = (st.double().var(0) / n + grads[64].double().var(0) / n).sqrt()
    assert bool(((st.double().mean(0) - grads[64].double().mean(0)).abs() <= Z * se).all())


# ------------------------------------------------------------------------------- conditional Gumbel


def test_conditional_gumbel_argmax_and_marginal() -> None:
    """Given D, argmax(theta + G) = D always. Drawing D ~ Cat(softmax theta) first, G's marginal is
    i.i.d. standard Gumbel: KS test per coordinate against F(x) = exp(-exp(-x)) at level ALPHA."""
    theta = torch.tensor([1.0, -0.5, 0.2, -2.0])
    n = 20_000
    logits = theta.expand(n, 1, 4)
    d = GumbelSoftmax(logits).sample(gen(20))
    hard = F.one_hot(d, 4).float()
    g = conditional_gumbel(logits, hard, k=3, generator=gen(21))
    assert g.shape == (3, n, 1, 4)
    assert torch.equal((logits + g).argmax(-1), d.expand(3, n, 1))
    # An unlikely category is honoured too.
    rare = F.one_hot(torch.full((n, 1), 3), 4).float()
    assert bool(((logits + conditional_gumbel(logits, rare, 1, gen(22))[0]).argmax(-1) == 3).all())
    for i in range(4):
        x = g[0, :, 0, i].double().sort().values
        assert ks_pvalue(x, torch.exp(-torch.exp(-x))) > ALPHA, f"coordinate {i} is not Gumbel(0, 1)"
    # Euler-Mascheroni mean, sd pi / sqrt(6): |mean - 0.5772| < Z * pi / sqrt(6 N).
    assert abs(float(g[0].mean()) - 0.5772157) < Z * math.pi / math.sqrt(6 * 4 * n)


# ------------------------------------------------------------------------------- exact log_prob / entropy


def test_log_prob_and_entropy_are_categorical_summed_over_factors() -> None:
    nvec = [3, 2, 4]
    logits = torch.randn(16, 3, 4, generator=gen(23))
    for f, k in enumerate(nvec):
        logits[:, f, k:] = MASKED_LOGIT  # the policy's padding convention
    mask = torch.rand(16, 3, 4, generator=gen(24)) > 0.3
    mask[..., 0] = True
    for m in (None, mask):
        dist = GumbelSoftmax(logits, mask=m, nvec=nvec)
        a = dist.sample(gen(25))
        lp, ent = torch.zeros(16), torch.zeros(16)
        for f, k in enumerate(nvec):
            lf = logits[:, f, :k] if m is None else logits[:, f, :k].masked_fill(~m[:, f, :k], -float("inf"))
            ref = Categorical(logits=lf)
            lp += ref.log_prob(a[:, f])
            ent += ref.entropy()
        assert torch.allclose(dist.log_prob(a), lp, atol=1e-5)
        assert torch.allclose(dist.entropy(), ent, atol=1e-5)
        assert torch.equal(dist.mode(), dist.logits.argmax(-1))


# ------------------------------------------------------------------------------- squashed Gaussian

LOW, HIGH = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 5.0])


def reference(mean: Tensor, log_std: Tensor, low: Tensor, high: Tensor) -> Independent:
    return Independent(TransformedDistribution(Normal(mean, log_std.exp()), [
        TanhTransform(), AffineTransform(loc=(low + high) / 2, scale=(high - low) / 2)]), 1)


def test_squashed_gaussian_log_prob_matches_torch_reference_with_bounds() -> None:
    mean = 0.5 * torch.randn(256, 2, generator=gen(30))
    log_std = -0.5 + 0.3 * torch.randn(256, 2, generator=gen(31))
    dist = SquashedGaussian(mean, log_std, LOW, HIGH)
    a, logp = dist.rsample(gen(32))
    assert bool(((a >= LOW) & (a <= HIGH)).all())
    ref = reference(mean.double(), log_std.double(), LOW.double(), HIGH.double()).log_prob(a.double())
    assert torch.allclose(logp.double(), ref, atol=1e-3)
    assert torch.allclose(dist.log_prob(a).double(), ref, atol=1e-3)
    assert torch.equal(dist.mode(), LOW + (torch.tanh(mean) + 1) * (HIGH - LOW) / 2)


def test_squashed_gaussian_finite_and_exact_for_large_u() -> None:
    """At |u| ~ 20 tanh rounds to +-1 in fp32; the log-density must stay finite and equal the
    float64 formula log N(u) - log(1 - tanh(u)^2) - sum log half_range."""
    for m in (20.0, -20.0):
        mean, log_std = torch.full((8, 2), m), torch.zeros(8, 2)
        a, logp = SquashedGaussian(mean, log_std, LOW, HIGH).rsample(gen(33))
        assert torch.isfinite(logp).all()
        u = mean.double() + torch.randn(8, 2, generator=gen(33)).double()
        log_det = math.log(4) - 2 * u.abs() - 2 * torch.log1p(torch.exp(-2 * u.abs()))
        ref = (Normal(mean.double(), 1.0).log_prob(u) - log_det).sum(-1) - torch.log((HIGH - LOW) / 2).double().sum()
        assert torch.allclose(logp.double(), ref, rtol=1e-5)


def _quadrature_entropy_1d(mean: float, std: float, low: float, high: float) -> float:
    """-int phi(u) log p_a(a(u)) du on a fine grid in u (trapezoid; error << 1e-6)."""
    u = torch.linspace(mean - 10 * std, mean + 10 * std, 200_001, dtype=torch.float64)
    phi = Normal(torch.tensor(mean, dtype=torch.float64), std).log_prob(u).exp()
    log_pa = Normal(torch.tensor(mean, dtype=torch.float64), std).log_prob(u) \
        - torch.log1p(-torch.tanh(u) ** 2) - math.log((high - low) / 2)
    return float(-torch.trapezoid(phi * log_pa, u))


def test_squashed_gaussian_entropy_mc_vs_quadrature() -> None:
    """-mean(log p) over N samples vs the entropy by quadrature (independent per dimension, so
    summed); tolerance Z * sd(log p) / sqrt(N) by the CLT."""
    means, stds = [0.3, -0.6], [0.8, 0.4]
    n = 200_000
    dist = SquashedGaussian(torch.tensor(means).expand(n, 2), torch.log(torch.tensor(stds)).expand(n, 2), LOW, HIGH)
    _, logp = dist.rsample(gen(34))
    h_quad = sum(_quadrature_entropy_1d(m, s, float(lo), float(hi))
                 for m, s, lo, hi in zip(means, stds, LOW, HIGH, strict=True))
    h_mc = -float(logp.double().mean())
    assert abs(h_mc - h_quad) < Z * float(logp.double().std()) / math.sqrt(n), (h_mc, h_quad)


def test_squashed_gaussian_pathwise_gradient_matches_analytic() -> None:
    """g(a) = a on [-1, 1]: d E[tanh(u)] / d mean = E[sech^2(u)] and d / d log_std = E[sech^2(u) sigma eps],
    both by quadrature; the mean of N per-sample pathwise gradients is within Z se (CLT)."""
    n, m, s = 100_000, 0.4, 0.7
    mean = torch.full((n, 1), m, requires_grad=True)
    log_std = torch.full((n, 1), math.log(s), requires_grad=True)
    a, _ = SquashedGaussian(mean, log_std, -torch.ones(1), torch.ones(1)).rsample(gen(35))
    a.sum().backward()
    eps = torch.linspace(-10, 10, 200_001, dtype=torch.float64)
    phi = torch.exp(-eps ** 2 / 2) / math.sqrt(2 * math.pi)
    sech2 = 1 - torch.tanh(m + s * eps) ** 2
    assert_mean_close(mean.grad, torch.trapezoid(phi * sech2, eps).reshape(1), "d/d mean")
    assert_mean_close(log_std.grad, torch.trapezoid(phi * sech2 * s * eps, eps).reshape(1), "d/d log_std")


def test_distributions_are_stateless() -> None:
    mean, log_std = torch.randn(5, 2, generator=gen(36)), torch.zeros(5, 2)
    sg = SquashedGaussian(mean, log_std, LOW, HIGH)
    before = {k: v.clone() for k, v in vars(sg).items() if isinstance(v, Tensor)}
    a1, l1 = sg.rsample(gen(37))
    sg.log_prob(a1)
    a2, l2 = sg.rsample(gen(37))
    assert torch.equal(a1, a2) and torch.equal(l1, l2)
    assert all(torch.equal(before[k], getattr(sg, k)) for k in before)
    gs = GumbelSoftmax(torch.randn(5, 2, 3, generator=gen(38)), 1.3)
    before = {k: v.clone() for k, v in vars(gs).items() if isinstance(v, Tensor)}
    for est in ESTIMATORS:
        assert torch.equal(gs.rsample(est, gen(39)), gs.rsample(est, gen(39))), est
    assert torch.equal(gs.sample(gen(40)), gs.sample(gen(40)))
    gs.entropy()
    assert all(torch.equal(before[k], getattr(gs, k)) for k in before)
