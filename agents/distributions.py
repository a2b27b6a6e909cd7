"""Action distributions that can be differentiated through their own samples.

The classes are stateless views over the network's outputs: constructing one does the
work, and no call changes it, so the same object gives the same answers every time.

* :class:`GumbelSoftmax` — categorical actions (Discrete, MultiDiscrete, masked). Exact
  samples come from the Gumbel-max trick; differentiable one-hot samples come from a
  pluggable *estimator* of the gradient through the argmax (see :data:`ESTIMATORS`).
* :class:`SquashedGaussian` — Box actions: ``low + (tanh(mu + sigma * eps) + 1) * (high - low) / 2``.
* :class:`HybridDistribution` — hybrid (parameterized) actions: a choice by the first, and every
  choice's parameters by the second.

Layout convention for categorical actions: logits are ``(batch, factors, choices)``. A Discrete
space is one factor. MultiDiscrete factors with fewer choices than the widest are padded, and
padded or masked choices carry :data:`MASKED_LOGIT`, whose probability underflows to exactly 0
in float32 while its log-probability stays finite (so ``p * log p`` is 0, not NaN).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

MASKED_LOGIT = -1e8
"""Logit given to invalid choices: exp() of it relative to any valid logit is exactly 0 in fp32."""


def gumbel_noise(shape: torch.Size | tuple[int, ...], device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard Gumbel(0, 1) noise, G = -log(E) with E ~ Exp(1).

    Clamping E away from 0 keeps G finite; the clamp changes the distribution only on an event
    of probability about 1e-38.
    """
    e = torch.empty(shape, device=device, dtype=dtype).exponential_(generator=generator)
    return -torch.log(e.clamp_min(torch.finfo(dtype).tiny))


# --------------------------------------------------------------------------------------------
# Gradient estimators. Each maps (logits, exact one-hot sample D, Gumbel noise G, temperature)
# to a tensor whose *value* is the action fed to the critic and whose *gradient* w.r.t. the
# logits is the estimator's. All act along the last axis, so MultiDiscrete factors are
# independent for free.
# --------------------------------------------------------------------------------------------


def _relaxed(logits: Tensor, gumbel: Tensor, temperature: float | Tensor) -> Tensor:
    return torch.softmax((logits + gumbel) / temperature, dim=-1)


def straight_through(logits: Tensor, hard: Tensor, gumbel: Tensor, temperature: float | Tensor,
                     **_: object) -> Tensor:
    """Straight-through Gumbel-Softmax (Jang et al. 2017, sec. 2.2; Bengio et al. 2013).

    Forward: the exact one-hot sample D = onehot(argmax(logits + G)).
    Backward: d softmax((logits + G) / temperature) / d logits, the relaxed sample's Jacobian.
    """
    soft = _relaxed(logits, gumbel, temperature)
    return hard + (soft - soft.detach())  # (x - x) is exactly 0, so the forward is exactly D


def relaxed(logits: Tensor, hard: Tensor, gumbel: Tensor, temperature: float | Tensor, **_: object) -> Tensor:
    """Gumbel-Softmax / Concrete relaxation (Jang et al. 2017; Maddison et al. 2017).

    Forward and backward: y = softmax((logits + G) / temperature), a point inside the simplex.
    Its argmax is the Gumbel-max sample, so the env still receives an exact categorical sample.
    """
    return _relaxed(logits, gumbel, temperature)


def conditional_gumbel(logits: Tensor, hard: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """K draws of Gumbel noise G with argmax(logits + G) equal to the given one-hot `hard`.

    Paulus et al. 2021 (Rao-Blackwellizing the straight-through Gumbel-Softmax), app. A: with
    normalized log-probabilities theta, the top value theta_D + G_D is a standard Gumbel
    Z = -log E_D, and every other theta_i + G_i is Gumbel(theta_i) truncated below Z:
    -log(exp(-Z) + exp(-theta_i) * E_i), E ~ Exp(1). Returns G with shape (k, *logits.shape).
    """
    log_p = torch.log_softmax(logits.detach(), dim=-1)
    shape = (k, *logits.shape)
    e = torch.empty(shape, device=logits.device, dtype=logits.dtype).exponential_(generator=generator)
    e = e.clamp_min(torch.finfo(logits.dtype).tiny)
    e_top = (e * hard).sum(-1, keepdim=True)  # the Exp(1) draw used for the top coordinate
    top = -torch.log(e_top)  # Z ~ Gumbel(0): max of theta + G when theta is normalized
    others = -torch.log(torch.exp(-top) + torch.exp(-log_p) * e)
    perturbed = torch.where(hard.bool(), top, others)
    return perturbed - log_p


def gumbel_rao(logits: Tensor, hard: Tensor, gumbel: Tensor, temperature: float | Tensor, k: int = 8,
               generator: torch.Generator | None = None, **_: object) -> Tensor:
    """Gumbel-Rao straight-through (Paulus et al. 2021, eq. 7).

    Forward: D. Backward: (1/K) sum_k d softmax_tau(theta + G_k) / d theta with G_k ~ Gumbel
    conditioned on argmax(theta + G_k) = D. Same mean as straight-through, lower variance;
    K = 1 is straight-through in distribution.
    """
    g = conditional_gumbel(logits, hard, k, generator)
    soft = torch.softmax((logits.unsqueeze(0) + g) / temperature, dim=-1).mean(0)
    return hard + (soft - soft.detach())


def _with_jacobian_of(p: Tensor, logits: Tensor) -> Tensor:
    """A tensor equal to p whose Jacobian w.r.t. logits is J(p) = diag(p) - p p^T."""
    log_p = torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
    return torch.softmax(logits + (log_p - logits).detach(), dim=-1)


def reinmax(logits: Tensor, hard: Tensor, gumbel: Tensor, temperature: float | Tensor, **_: object) -> Tensor:
    """ReinMax, a second-order straight-through estimator (Liu et al. 2023, alg. 2).

    Forward: D ~ Cat(softmax theta). Backward: 2 J(pi_half) g - 1/2 J(pi_0) g with
    pi_0 = softmax(theta), pi_half = (softmax(theta / tau) + D) / 2, J(p) = diag(p) - p p^T,
    and g the incoming gradient. Needs tau >= 1. For f linear in D its expectation is the exact
    gradient (E[J(pi_half)] = 3/4 J(pi_0) at tau = 1).
    """
    if not isinstance(temperature, Tensor) and temperature < 1.0:  # the agent checks its schedule up front
        raise ValueError(f"reinmax needs temperature >= 1 (Liu et al. 2023); got {temperature}. "
                         "Set temperature to 1.0 or use estimator='st'.")
    pi_0 = torch.softmax(logits, dim=-1)
    pi_half = (torch.softmax(logits / temperature, dim=-1) + hard) / 2
    surrogate = 2 * _with_jacobian_of(pi_half, logits) - 0.5 * pi_0
    return hard + (surrogate - surrogate.detach())


ESTIMATORS: dict[str, Callable[..., Tensor]] = {
    "st": straight_through,
    "soft": relaxed,
    "gumbel-rao": gumbel_rao,
    "reinmax": reinmax,
}
"""Differentiable-sample estimators by name. ``"exact"`` (the expectation over actions) is not a
sample and lives in the agent's actor loss."""


class GumbelSoftmax:
    """Independent categorical factors, sampled by Gumbel-max, relaxed by Gumbel-Softmax.

    Args:
        logits: ``(batch, factors, choices)`` unnormalized log-probabilities.
        temperature: Gumbel-Softmax temperature of the relaxation (not the SAC entropy weight).
        mask: optional boolean ``(batch, factors, choices)`` or flat ``(batch, sum(nvec))`` with
            True for allowed choices. A masked choice has probability exactly 0.
        nvec: choices per factor, for a flat mask or ragged MultiDiscrete; defaults to equal widths.
    """

    def __init__(self, logits: Tensor, temperature: float | Tensor = 1.0, mask: Tensor | None = None,
                 nvec: list[int] | None = None, check_mask: bool = True) -> None:
        if logits.dim() != 3:
            raise ValueError(f"logits must be (batch, factors, choices); got shape {tuple(logits.shape)}")
        if not isinstance(temperature, Tensor):
            if not temperature > 0:
                raise ValueError(f"temperature must be > 0; got {temperature}")
            temperature = float(temperature)
        # A tensor temperature (the update's, which an annealing schedule changes every step) stays
        # a tensor, so a compiled update reads it as data instead of recompiling for each value.
        self.temperature = temperature
        self.nvec = list(nvec) if nvec is not None else [logits.shape[-1]] * logits.shape[1]
        if mask is None and any(n != logits.shape[-1] for n in self.nvec):  # ragged: mask the padding
            mask = torch.ones(logits.shape[0], sum(self.nvec), dtype=torch.bool, device=logits.device)
        if mask is not None:
            mask = self._padded_mask(mask, logits)
            blocked = ~mask.any(-1)
            # check_mask=False: masks the env already gave (the replay buffer's), where the check's
            # host sync would stall a compiled update for nothing.
            if check_mask and bool(blocked.any()):
                row, factor = (int(i) for i in blocked.nonzero()[0])
                raise ValueError(f"action mask row {row} (factor {factor}) allows no action; "
                                 "every row needs at least one True entry")
            logits = logits.masked_fill(~mask, MASKED_LOGIT)
        self.logits = logits
        self.log_probs = torch.log_softmax(logits, dim=-1)
        self.probs = self.log_probs.exp()

    def _padded_mask(self, mask: Tensor, logits: Tensor) -> Tensor:
        mask = mask.to(device=logits.device, dtype=torch.bool)
        if mask.shape == logits.shape:
            return mask
        if mask.dim() == 2 and mask.shape[-1] == sum(self.nvec):
            padded = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
            for f, part in enumerate(mask.split(self.nvec, dim=-1)):
                padded[:, f, : part.shape[-1]] = part
            return padded
        raise ValueError(f"mask shape {tuple(mask.shape)} fits neither logits {tuple(logits.shape)} "
                         f"nor the flat layout (batch, {sum(self.nvec)}) of sb3-contrib")

    # Exact categorical quantities (not those of the relaxation).
    def log_prob(self, actions: Tensor) -> Tensor:
        """Log-probability of integer actions ``(batch, factors)``, summed over factors."""
        return self.log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1).sum(-1)

    def entropy(self) -> Tensor:
        """Exact entropy, summed over factors: ``(batch,)``."""
        return -(self.probs * self.log_probs).sum(-1).sum(-1)

    def mode(self) -> Tensor:
        """Most probable choice per factor, ``(batch, factors)``."""
        return self.logits.argmax(-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Exact sample by the Gumbel-max trick: argmax(logits + G), ``(batch, factors)``."""
        g = gumbel_noise(self.logits.shape, self.logits.device, generator, self.logits.dtype)
        return (self.logits.detach() + g).argmax(-1)

    def rsample(self, estimator: str = "st", generator: torch.Generator | None = None,
                **estimator_kwargs: object) -> Tensor:
        """A differentiable one-hot-like sample ``(batch, factors, choices)``.

        Its argmax is always an exact categorical sample (the same Gumbel draw decides it);
        ``estimator`` picks the forward value and the gradient (see :data:`ESTIMATORS`).
        """
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose one of {sorted(ESTIMATORS)}")
        g = gumbel_noise(self.logits.shape, self.logits.device, generator, self.logits.dtype)
        # Gumbel-max: D ~ Cat(softmax logits). Dividing by the temperature would not move the argmax.
        index = (self.logits.detach() + g).argmax(-1)
        hard = F.one_hot(index, self.logits.shape[-1]).to(self.logits.dtype)
        return ESTIMATORS[estimator](self.logits, hard, g, self.temperature,
                                     generator=generator, **estimator_kwargs)


class SquashedGaussian:
    """``low + (tanh(u) + 1) * (high - low) / 2`` with ``u ~ N(mean, exp(log_std)^2)``.

    The log-density includes the exact change of variables; the tanh term uses the identity
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), which stays finite for large |u|
    (the naive form gives log(0) once tanh rounds to 1).
    """

    def __init__(self, mean: Tensor, log_std: Tensor, low: Tensor, high: Tensor) -> None:
        if mean.shape != log_std.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and log_std {tuple(log_std.shape)} differ in shape")
        self.mean = mean
        self.log_std = log_std
        self.std = log_std.exp()
        self.low = low
        self.half_range = (high - low) / 2
        self._log_scale = torch.log(self.half_range).sum()

    def _squash(self, u: Tensor) -> Tensor:
        return self.low + (torch.tanh(u) + 1) * self.half_range

    def _log_prob_pre_tanh(self, u: Tensor) -> Tensor:
        normal = -0.5 * ((u - self.mean) / self.std) ** 2 - self.log_std - 0.5 * math.log(2 * math.pi)
        log_det = 2 * (math.log(2) - u - F.softplus(-2 * u))
        return (normal - log_det).sum(-1) - self._log_scale

    def rsample(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Reparameterized sample and its log-density: u = mean + std * eps, eps ~ N(0, I)."""
        eps = torch.randn(self.mean.shape, device=self.mean.device, dtype=self.mean.dtype, generator=generator)
        u = self.mean + self.std * eps
        return self._squash(u), self._log_prob_pre_tanh(u)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """An action without its log-density: acting needs only this, once per env step."""
        with torch.no_grad():
            eps = torch.randn(self.mean.shape, device=self.mean.device, dtype=self.mean.dtype, generator=generator)
            return self._squash(self.mean + self.std * eps)

    def log_prob(self, action: Tensor) -> Tensor:
        """Log-density of an action in the Box. Inverting tanh loses precision at the bounds;
        prefer the log-density returned by :meth:`rsample`."""
        y = ((action - self.low) / self.half_range - 1).clamp(-1 + 1e-6, 1 - 1e-6)
        return self._log_prob_pre_tanh(torch.atanh(y))

    def mode(self) -> Tensor:
        return self._squash(self.mean)


class HybridDistribution:
    """A hybrid (parameterized) action: a choice k of K and continuous parameters for every choice.

    k ~ Cat(softmax(logits)), drawn by Gumbel-max and relaxed by Gumbel-Softmax (:class:`GumbelSoftmax`),
    and, independently of k, every parameter j of every choice x_j = tanh(u_j), u_j ~ N(mean_j, std_j^2),
    in [-1, 1] (:class:`SquashedGaussian`, one dimension per parameter). The env reads the chosen
    k's parameters x_k. Drawing all K sets keeps the two parts independent, so each part has an
    entropy of its own with its own weight, as Delalleau et al. (2019) tune two.

    Args:
        logits: ``(batch, K)``.
        mean, log_std: ``(batch, D)``, D = sum_k d_k, the parameters of choice 0, then choice 1, ...
        owner: ``(D, K)``, 1 where parameter j belongs to choice k.
        temperature: the Gumbel-Softmax temperature of the relaxation.
    """

    def __init__(self, logits: Tensor, mean: Tensor, log_std: Tensor, owner: Tensor,
                 temperature: float | Tensor = 1.0) -> None:
        if logits.dim() != 2 or mean.shape != log_std.shape or mean.shape[-1] != owner.shape[0] \
                or logits.shape[-1] != owner.shape[1]:
            raise ValueError(f"logits {tuple(logits.shape)}, mean {tuple(mean.shape)}, log_std {tuple(log_std.shape)} "
                             f"do not fit the parameter layout (D, K) = {tuple(owner.shape)}")
        self.choice = GumbelSoftmax(logits.unsqueeze(1), temperature, check_mask=False)
        bound = torch.ones((), device=mean.device, dtype=mean.dtype)
        # A trailing axis of 1 makes each parameter its own squashed Gaussian: log-densities per parameter.
        self.parameters = SquashedGaussian(mean.unsqueeze(-1), log_std.unsqueeze(-1), -bound, bound)
        self.owner = owner.to(mean.dtype)

    @property
    def probs(self) -> Tensor:
        """p(k), ``(batch, K)``."""
        return self.choice.probs[:, 0]

    def per_choice(self, per_parameter: Tensor) -> Tensor:
        """``(batch, D)`` -> ``(batch, K)``: sums over each choice's parameters."""
        return per_parameter @ self.owner

    def choice_entropy(self) -> Tensor:
        """H(k), exact: ``(batch,)``."""
        return self.choice.entropy()

    def log_prob(self, k: Tensor, x: Tensor) -> Tensor:
        """log p(k) + log pi_k(x_k), the log-density of the action the env reads: choice ``k``
        ``(batch,)`` and its parameters, taken from ``x`` ``(batch, D)`` in (-1, 1) (the others are ignored)."""
        index = k.long().unsqueeze(-1)
        log_px = self.per_choice(self.parameters.log_prob(x.unsqueeze(-1)))
        return (self.choice.log_probs[:, 0].gather(-1, index) + log_px.gather(-1, index)).squeeze(-1)

    def rsample_parameters(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Reparameterized parameters of every choice ``(batch, D)`` and each choice's log-density
        log pi_k(x_k) ``(batch, K)`` (its negative estimates the choice's parameter entropy)."""
        x, log_p = self.parameters.rsample(generator)
        return x.squeeze(-1), self.per_choice(log_p)

    def rsample_choice(self, estimator: str = "st", generator: torch.Generator | None = None,
                       **estimator_kwargs: object) -> Tensor:
        """A differentiable one-hot-like choice ``(batch, K)`` whose argmax is an exact sample of k
        (:meth:`GumbelSoftmax.rsample`)."""
        return self.choice.rsample(estimator, generator, **estimator_kwargs)[:, 0]

    def sample(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(k ``(batch,)``, x ``(batch, D)``), without gradients."""
        return self.choice.sample(generator)[:, 0], self.parameters.sample(generator).squeeze(-1)

    def mode(self) -> tuple[Tensor, Tensor]:
        """The most probable choice and every parameter's tanh(mean)."""
        return self.choice.mode()[:, 0], self.parameters.mode().squeeze(-1)
