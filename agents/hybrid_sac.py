"""HybridSAC: soft actor-critic for hybrid (parameterized) actions, trained through both of its samples.

A hybrid action is a choice k of K and continuous parameters for it (Masson et al. 2016; the space
convention is ``envs.hybrid``'s). The actor draws k by the Gumbel-max trick and every choice's
parameters as tanh(mu + sigma * eps), and is trained end to end through the Gumbel-Softmax
relaxation of k (GumbelSAC's estimators) and the Gaussian reparameterization of the parameters at
once, against critics Q(s, onehot(k), x) whose unchosen parameters are zeroed. The choice and the
parameters each have an entropy with its own target and its own learned weight (Delalleau et al.
2019). Everything action-specific is the head's, :class:`agents.hybrid_head.HybridHead`.

``predict`` returns actions in the env's own space: ``(k, (x_1, ..., x_K))`` for one observation
(``(k, x)`` when the Box is shared), and a list of those for a batch, SB3's per-copy layout, so SB3's
``evaluate_policy`` runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from gymnasium import spaces
from torch import Tensor, nn

from agents.buffer import Batch
from agents.distributions import ESTIMATORS, HybridDistribution
from agents.hybrid_head import HybridHead
from agents.networks import mlp
from agents.sac import SoftActorCritic
from agents.update import estimator_cosine

ESTIMATOR_CHOICES = ("exact", *ESTIMATORS)

__all__ = ["ESTIMATOR_CHOICES", "HybridPolicy", "HybridSAC"]


class HybridPolicy(nn.Module):
    """Observation -> (logits ``(B, K)``, mean ``(B, D)``, log_std ``(B, D)``): the choice's logits and the
    pre-tanh Gaussian of every choice's parameters, from one MLP. log_std is squashed into
    [log_std_min, log_std_max] as :class:`agents.networks.GaussianPolicy`'s. A parameter set per choice,
    as Hybrid SAC (Delalleau et al. 2019); parameters from a network conditioned on onehot(k) learned
    no better on Platform (benchmarks/archive/README.md)."""

    def __init__(self, obs_dim: int, n: int, width: int, hidden: Sequence[int], relu_c: float = 0.0,
                 log_std_min: float = -5.0, log_std_max: float = 2.0, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder if encoder is not None else nn.Identity()
        self.n, self.width = int(n), int(width)
        self.net = mlp(obs_dim, hidden, self.n + 2 * self.width, relu_c)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, mean, raw = self.net(self.encoder(obs)).split([self.n, self.width, self.width], dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1)
        return logits, mean, log_std


class HybridSAC(SoftActorCritic):
    """Soft actor-critic for hybrid action spaces: ``Tuple((Discrete(K), Tuple((Box_1, ..., Box_K))))``
    or ``Tuple((Discrete(K), Box(d)))`` (see :mod:`envs.hybrid`).

    Args (beyond :class:`agents.sac.SoftActorCritic`'s):
        estimator: the choice's gradient: ``"exact"`` (default), the expectation over the K choices
            with the parameters sampled (K critic passes per state, and every choice's parameters
            trained, weighted by its probability), or one of GumbelSAC's Gumbel-Softmax estimators
            through a sampled choice, ``"st"`` (straight-through), ``"soft"``, ``"gumbel-rao"``, ``"reinmax"``.
        temperature: the Gumbel-Softmax temperature of the choice's relaxation.
        gumbel_rao_k: conditional Gumbel draws averaged by ``"gumbel-rao"``.
        target_entropy_scale: the choice's target entropy is this times log K.
        parameter_target_entropy: the parameters' target entropy per parameter, over all K sets
            (SAC's -dim(A) is -1 per dimension). The shared ``target_entropy`` must stay unset:
            there are two targets.
        alpha: the initial weight of both entropies, or ``"auto"`` (both at mean |warm-up reward| / log K).
    """

    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = (spaces.Tuple,)
    defaults: ClassVar[dict[str, Any]] = {
        **SoftActorCritic.defaults,
        # GumbelSAC's settings for the choice, measured there (agents/gumbel_sac.py), not on hybrid tasks:
        # the entropy weights on the reward's scale (Platform's returns are at most 1, Goal's 50),
        # targets without the entropy bonus, the actor on every second update, faster targets.
        "alpha": "auto", "alpha_learning_rate": 3e-3, "backup_entropy": False, "policy_delay": 2,
        "target_update_rate": 0.02,
        # The expectation over the K choices (parameters sampled): straight-through trains only the
        # sampled choice's parameters, so a choice whose parameters start poor is rarely sampled and
        # stays poor; on reparl/HybridTarget-v0 it never learned to use the middle choice, where the
        # expectation did (DESIGN.md, "Defaults and why"). K critic passes per state, cheap at the K of
        # hybrid tasks (3 on Platform and Goal).
        "estimator": "exact", "temperature": 1.0, "gumbel_rao_k": 8, "target_entropy_scale": 0.5,
        "parameter_target_entropy": -1.0,
    }

    @classmethod
    def handles(cls, action_space: spaces.Space) -> bool:
        from envs.hybrid import hybrid_parts

        try:
            hybrid_parts(action_space)
        except TypeError:
            return False
        return True

    @classmethod
    def validate_hyperparameters(cls, hp: dict[str, Any]) -> None:
        super().validate_hyperparameters(hp)
        if hp["estimator"] not in ESTIMATOR_CHOICES:
            raise ValueError(f"estimator={hp['estimator']!r} is not one of {ESTIMATOR_CHOICES}")
        if not hp["temperature"] > 0:
            raise ValueError(f"temperature must be > 0; got {hp['temperature']}")
        if hp["estimator"] == "reinmax" and hp["temperature"] < 1.0:
            raise ValueError(f"estimator='reinmax' needs temperature >= 1 (Liu et al. 2023); got {hp['temperature']}")
        if int(hp["gumbel_rao_k"]) < 1:
            raise ValueError(f"gumbel_rao_k must be >= 1; got {hp['gumbel_rao_k']}")
        if not 0 <= hp["target_entropy_scale"] <= 1:
            raise ValueError(f"target_entropy_scale must be in [0, 1]; got {hp['target_entropy_scale']}")
        if hp["target_entropy"] is not None:
            raise ValueError(f"target_entropy={hp['target_entropy']!r}: HybridSAC has two entropy targets; set "
                             "target_entropy_scale (the choice's, times log K) and parameter_target_entropy (per "
                             "parameter) instead")

    @classmethod
    def make_head(cls, action_space: spaces.Space, hp: dict[str, Any],
                  device: torch.device | str = "cpu") -> HybridHead:
        try:
            return HybridHead(action_space, hp["estimator"], hp["gumbel_rao_k"], hp["target_entropy_scale"],
                              hp["parameter_target_entropy"], device)
        except TypeError as e:
            raise TypeError(f"HybridSAC: {e}") from None

    def _make_policy(self) -> nn.Module:
        hp = self.hparams
        return HybridPolicy(self.obs_dim, self.head.n, self.head.width, hp["net_arch"], hp["relu_subgradient"],
                            encoder=self._make_encoder())

    def _temperature(self) -> Tensor:
        return torch.tensor(float(self.hparams["temperature"]), device=self.device)

    def distribution(self, obs: Tensor) -> HybridDistribution:
        """The policy at ``obs`` (a :class:`agents.distributions.HybridDistribution`)."""
        return self.head.distribution(self.policy(obs), float(self.hparams["temperature"]))

    def _diagnostics(self, batch: Batch) -> dict[str, Tensor]:
        """The shared diagnostics, and ``grad/estimator_cosine`` against the exact expectation over k."""
        info = super()._diagnostics(batch)
        if info and self.head.estimator != "exact":
            info["grad/estimator_cosine"] = estimator_cosine(self.policy, self.critic, self.head, self._state,
                                                             batch.obs, batch.masks, self._temperature())
        return info
