"""Research probe: HybridSAC's parameters from a network conditioned on the choice, against one set per choice.

HybridSAC's policy (:class:`agents.hybrid_sac.HybridPolicy`) gives the choice's logits and a
tanh-Gaussian for every choice's parameters from one MLP, as Hybrid SAC does (Delalleau et al.
2019). The alternative tried here gives the parameters of choice k from a second MLP that reads the
features and onehot(k), evaluated once per choice (so its hidden layers differ with k, and the K
parameter sets share its weights). Both give the same distribution family (every choice's
parameters independent of the draw of k), so the head, the critic input and the estimators are
unchanged and the two compare at equal footing. The comparison runs the ``platform`` suite's
HybridSAC job of :mod:`experiments.research.learning_bench` with this policy:

    python -m experiments.research.learning_bench --suite platform --only HybridSAC --seeds 0 1 2 3 4 \
        --total 10000 \
        --variant "HybridSAC conditioned on k=experiments.research.hybrid_conditioning:ConditionedHybridSAC"

and its table sits beside the suite's own HybridSAC rows at the same seeds and budget. It measured no
gain (benchmarks/archive/README.md), so HybridSAC keeps one parameter set per choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from agents.hybrid_sac import HybridSAC
from agents.networks import mlp


class ConditionedHybridPolicy(nn.Module):
    """Observation -> (logits ``(B, K)``, mean ``(B, D)``, log_std ``(B, D)``) as HybridPolicy's, the
    logits from one MLP and choice k's parameters from ``params([features, onehot(k)])``, the first
    d_k of its outputs."""

    def __init__(self, obs_dim: int, dims: Sequence[int], hidden: Sequence[int], relu_c: float = 0.0,
                 log_std_min: float = -5.0, log_std_max: float = 2.0, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder if encoder is not None else nn.Identity()
        self.dims, self.n, widest = [int(d) for d in dims], len(dims), max(int(d) for d in dims)
        self.choice = mlp(obs_dim, hidden, self.n, relu_c)
        self.params = mlp(obs_dim + self.n, hidden, 2 * widest, relu_c)
        self.register_buffer("onehots", torch.eye(self.n))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f = self.encoder(obs)
        b = f.shape[0]
        per_k = self.params(torch.cat([f.unsqueeze(1).expand(b, self.n, -1),
                                       self.onehots.unsqueeze(0).expand(b, -1, -1)], dim=-1))  # (B, K, 2w)
        mean_k, raw_k = per_k.chunk(2, dim=-1)
        mean = torch.cat([mean_k[:, k, :d] for k, d in enumerate(self.dims)], dim=-1)
        raw = torch.cat([raw_k[:, k, :d] for k, d in enumerate(self.dims)], dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1)
        return self.choice(f), mean, log_std


class ConditionedHybridSAC(HybridSAC):
    """HybridSAC with :class:`ConditionedHybridPolicy`; everything else HybridSAC's."""

    def _make_policy(self) -> nn.Module:
        hp = self.hparams
        return ConditionedHybridPolicy(self.obs_dim, self.head.dims, hp["net_arch"], hp["relu_subgradient"],
                                       encoder=self._make_encoder())

