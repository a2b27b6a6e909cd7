"""Networks: a ReLU with an explicit subgradient at 0, an MLP builder, a batched critic ensemble.

ReLU is not differentiable at 0; any c in [0, 1] is a valid subgradient there (Clarke's
generalized gradient is the interval). Frameworks silently pick c = 0. Here c is a parameter,
so the choice is explicit and testable; c = 0 is ``torch.relu`` bit for bit.

Every module here is plain tensor code: no custom autograd node, so the same module runs under
autograd, ``torch.func`` transforms, ``torch.compile``, TorchScript and ONNX export alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LAYER_NORM_EPS = 1e-5
"""``nn.LayerNorm``'s default epsilon."""


def relu_subgradient(x: Tensor, c: float = 0.0) -> Tensor:
    """ReLU whose backward pass uses ``c`` as the derivative at exactly 0.

    The value is ``relu(x)`` exactly: ``x - x.detach()`` is 0 in value, so the second term only
    adds the slope ``c`` to the gradient where ``x == 0`` (a point of Clarke's interval [0, 1]).
    """
    y = torch.relu(x)
    if c == 0.0:
        return y
    return y + torch.where(x == 0, c * (x - x.detach()), torch.zeros_like(x))


class ReLU(nn.Module):
    """ReLU with the subgradient at 0 a parameter ``c`` in [0, 1].

    ``c = 0`` (the default) is what ``torch.relu`` uses. Inputs at exactly 0 are common: dead
    units, zero padding, and the first layer fed one-hot actions.
    """

    def __init__(self, c: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"ReLU subgradient at 0 must lie in [0, 1] (the Clarke subdifferential); "
                             f"got c={c}. Use c=0 for torch.relu's convention.")
        self.c = float(c)

    def forward(self, x: Tensor) -> Tensor:
        return relu_subgradient(x, self.c)

    def extra_repr(self) -> str:
        return f"c={self.c}"


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, relu_c: float = 0.0) -> nn.Sequential:
    """Linear-ReLU stack: in_dim -> hidden... -> out_dim, no activation on the output."""
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), ReLU(relu_c)]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """N independent linear layers applied in one batched matmul: (N, B, in) -> (N, B, out).

    Each member is initialised like ``nn.Linear`` (uniform in +-1/sqrt(in)).
    """

    def __init__(self, n: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:  # the same input for every member: broadcast, no copy
            return torch.matmul(x, self.weight) + self.bias
        return torch.baddbmm(self.bias, x, self.weight)


class CriticEnsemble(nn.Module):
    """N critics evaluated together: (B, in) -> (N, B, out), one batched op per layer.

    ``layer_norm``: Linear -> LayerNorm -> ReLU in every hidden layer, the LayerNorm without
    affine parameters (the next layer's weights can rescale). Normalized features bound how far
    one update can move Q off the data, the critic fix of RLPD (Ball et al. 2023) and of PQN's
    analysis of TD stability (Gallici et al. 2024).
    """

    def __init__(self, n: int, in_dim: int, hidden: Sequence[int], out_dim: int, relu_c: float = 0.0,
                 layer_norm: bool = False, encoder: nn.Module | None = None) -> None:
        super().__init__()
        # The observation encoder the members share (agents.encoders); forward() reads its features
        # (the update encodes once per batch and hands the features to the action head). A flat
        # observation's encoder has no parameters, so the state dict is the ensemble's alone.
        self.encoder = encoder if encoder is not None else nn.Identity()
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.act = ReLU(relu_c)
        self.n = n
        self.layer_norm = bool(layer_norm)

    def features(self, obs: Tensor | dict[str, Tensor]) -> Tensor:
        """Observations as stored -> the features ``forward`` (with the action, per the head) reads."""
        return self.encoder(obs)

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                if self.layer_norm:
                    x = F.layer_norm(x, x.shape[-1:], eps=LAYER_NORM_EPS)
                x = self.act(x)
        return x

    def extra_repr(self) -> str:
        return f"n={self.n}, layer_norm={self.layer_norm}"


class CategoricalPolicy(nn.Module):
    """Observation -> logits ``(batch, factors, choices)`` of independent categoricals.

    Ragged MultiDiscrete factors are padded to the widest; the padding gets a logit of -1e8 so it
    has probability exactly 0. A plain ``nn.Module`` returning a tensor, so it scripts and
    exports as is; :class:`agents.distributions.GumbelSoftmax` turns the logits into a distribution.
    """

    def __init__(self, obs_dim: int, nvec: Sequence[int], hidden: Sequence[int], relu_c: float = 0.0,
                 encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder if encoder is not None else nn.Identity()
        self.nvec = [int(n) for n in nvec]
        self.width = max(self.nvec)
        self.net = mlp(obs_dim, hidden, len(self.nvec) * self.width, relu_c)
        pad = torch.zeros(len(self.nvec), self.width)
        for f, n in enumerate(self.nvec):
            pad[f, n:] = -1e8
        self.register_buffer("padding", pad, persistent=False)

    def forward(self, obs: Tensor) -> Tensor:
        out = self.net(self.encoder(obs))
        return out.view(out.shape[0], len(self.nvec), self.width) + self.padding


class GaussianPolicy(nn.Module):
    """Observation -> (mean, log_std) of the pre-tanh Gaussian.

    log_std is squashed into [log_std_min, log_std_max] by tanh rather than clipped, so its
    gradient never vanishes at the bounds (as in CleanRL's and jaxrl's SAC).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], relu_c: float = 0.0,
                 log_std_min: float = -5.0, log_std_max: float = 2.0, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder if encoder is not None else nn.Identity()
        self.net = mlp(obs_dim, hidden, 2 * act_dim, relu_c)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw = self.net(self.encoder(obs)).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1)
        return mean, log_std


@torch.no_grad()
def dormant_fraction(module: nn.Module, run: Callable[[], object], tau: float = 0.0) -> Tensor:
    """Fraction of ``module``'s hidden ReLU units that are tau-dormant while ``run()`` calls it (Sokar et
    al. 2023, "The Dormant Neuron Phenomenon in Deep RL"): unit i's score is its mean |activation| over
    the batch divided by the mean of that over its layer, dormant if the score is <= tau. tau = 0 counts
    units that output exactly 0 on every input of the batch: with the subgradient c = 0 at 0 (the default),
    such a unit gets no gradient from these inputs and cannot come back by itself. Ensemble layers count
    each member's units. One forward pass; a device tensor (no sync)."""
    dormant: list[Tensor] = []
    total: list[int] = []

    def hook(_: nn.Module, __: tuple[Tensor, ...], out: Tensor) -> None:
        score = out.abs().mean(-2)  # (..., width): mean over the batch
        score = score / score.mean(-1, keepdim=True).clamp_min(torch.finfo(score.dtype).tiny)
        dormant.append((score <= tau).sum())
        total.append(score.numel())

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, ReLU)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return torch.stack(dormant).sum() / sum(total)
