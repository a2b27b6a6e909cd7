"""Networks: a ReLU with an explicit subgradient at 0, an MLP builder, a batched critic ensemble.

ReLU is not differentiable at 0; any c in [0, 1] is a valid subgradient there (Clarke's
generalized gradient is the interval). Frameworks silently pick c = 0. Here c is a parameter,
so the choice is explicit and testable; c = 0 reproduces ``torch.relu`` bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LAYER_NORM_EPS = 1e-5
"""``nn.LayerNorm``'s default epsilon, shared by the fused and the layer-by-layer critic paths."""


class _ReLUSubgradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, c: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.c = c
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        slope = (x > 0).to(grad.dtype)
        if ctx.c != 0.0:
            slope = slope + ctx.c * (x == 0).to(grad.dtype)
        return grad * slope, None


def relu_subgradient(x: Tensor, c: float = 0.0) -> Tensor:
    """ReLU whose backward pass uses ``c`` as the derivative at exactly 0."""
    return _ReLUSubgradient.apply(x, c)


class ReLU(nn.Module):
    """ReLU with the subgradient at 0 a parameter ``c`` in [0, 1].

    ``c = 0`` (the default) is what ``torch.relu`` uses, and takes its fused kernel; any other
    value runs the explicit subgradient. Inputs at exactly 0 are common: dead units, zero padding,
    and the first layer fed one-hot actions.
    """

    def __init__(self, c: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"ReLU subgradient at 0 must lie in [0, 1] (the Clarke subdifferential); "
                             f"got c={c}. Use c=0 for torch.relu's convention.")
        self.c = float(c)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x) if self.c == 0.0 else relu_subgradient(x, self.c)

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

    def forward(self, x: Tensor, detach_params: bool = False) -> Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach_params else (self.weight, self.bias)
        if x.dim() == 2:  # the same input for every member: broadcast, no copy
            return torch.matmul(x, w) + b
        return torch.baddbmm(b, x, w)


def ensemble_forward(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], layer_norm: bool = False,
                     norms: list[Tensor] | None = None) -> list[Tensor]:
    """ReLU ensemble MLP forward, keeping what backward needs: ``[x, h1, ..., out]``.

    Weights are ``(N, in, out)``, biases ``(N, 1, out)``; ``x`` is ``(B, in)`` shared by all N
    members (broadcast, no copy) or ``(N, B, in)``. The ReLU runs in place on the matmul output,
    so each hidden layer allocates one tensor. ``layer_norm``: every hidden pre-activation is
    normalized over its features (no affine) before the ReLU, Linear -> LayerNorm -> ReLU as in
    :class:`CriticEnsemble`; the pre-norm tensor, mean and rstd of each hidden layer go to
    ``norms`` when a list is given, for :func:`ensemble_backward`.
    """
    n = weights[0].shape[0]
    h, acts = x, [x]
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = torch.baddbmm(b, h.expand(n, *h.shape) if h.dim() == 2 else h, w)
        if i < len(weights) - 1:
            if layer_norm:
                z = h
                h, mean, rstd = torch.native_layer_norm(z, [z.shape[-1]], None, None, LAYER_NORM_EPS)
                if norms is not None:
                    norms += [z, mean, rstd]
            h.clamp_min_(0)
        acts.append(h)
    return acts


def ensemble_backward(acts: Sequence[Tensor], weights: Sequence[Tensor], grad: Tensor, *,
                      weight_grads: bool = True, input_grad: bool = False, norms: Sequence[Tensor] | None = None
                      ) -> tuple[list[Tensor], list[Tensor], Tensor | None]:
    """Backward of :func:`ensemble_forward` (ReLU subgradient 0: ``h > 0`` is ``z > 0``).

    ``grad`` is dL/d(out), ``(N, B, out)``. Returns the weight and bias gradients (empty lists when
    ``weight_grads`` is False, as for an actor loss that must not reach the critic's weights) and
    dL/dx (summed over members when x was shared), or None. ``norms``: what a ``layer_norm``
    forward saved; the gradient then passes back through each LayerNorm too.
    """
    n = weights[0].shape[0]
    gw: list[Tensor] = []
    gb: list[Tensor] = []
    g, grad_x = grad, None
    for i in reversed(range(len(weights))):
        h = acts[i]
        if weight_grads:
            gw.append(torch.bmm((h.expand(n, *h.shape) if h.dim() == 2 else h).transpose(1, 2), g))
            gb.append(g.sum(1, keepdim=True))
        if i > 0:
            g = torch.ops.aten.threshold_backward(torch.bmm(g, weights[i].transpose(1, 2)), h, 0)
            if norms:
                z, mean, rstd = norms[3 * (i - 1): 3 * i]
                g = torch.ops.aten.native_layer_norm_backward(g, z, [z.shape[-1]], mean, rstd, None, None,
                                                              [True, False, False])[0]
        elif input_grad:
            grad_x = torch.bmm(g, weights[0].transpose(1, 2))
            if h.dim() == 2:  # one input shared by every member: its gradient sums over them
                grad_x = grad_x.sum(0)
    return gw[::-1], gb[::-1], grad_x


def mlp_forward(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> list[Tensor]:
    """:func:`ensemble_forward` for one ``nn.Linear`` stack (weights ``(out, in)``)."""
    acts = [x]
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = torch.addmm(b, acts[-1], w.t())
        if i < len(weights) - 1:
            h.clamp_min_(0)
        acts.append(h)
    return acts


def mlp_backward(acts: Sequence[Tensor], weights: Sequence[Tensor], grad: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Backward of :func:`mlp_forward` to the weights and biases (no input gradient)."""
    gw: list[Tensor] = []
    gb: list[Tensor] = []
    g = grad
    for i in reversed(range(len(weights))):
        gw.append(g.t().mm(acts[i]))
        gb.append(g.sum(0))
        if i > 0:
            g = torch.ops.aten.threshold_backward(g.mm(weights[i]), acts[i], 0)
    return gw[::-1], gb[::-1]


class _EnsembleMLP(torch.autograd.Function):
    """Forward and backward of a whole ReLU ensemble MLP as one autograd node (ReLU subgradient 0).

    The same maths as the layer-by-layer graph, with fewer and larger steps
    (:func:`ensemble_forward`, :func:`ensemble_backward`); weight gradients are skipped when the
    weights come in detached (the actor loss). Issue 7's profile put most of an update's
    non-matmul time in allocating and passing over these (N, B, width) activations.
    """

    @staticmethod
    def forward(ctx, x: Tensor, layer_norm: bool, *params: Tensor) -> Tensor:  # type: ignore[override]
        weights = params[0::2]
        norms: list[Tensor] = []
        acts = ensemble_forward(x, weights, params[1::2], layer_norm, norms)
        ctx.n_layers = len(weights)
        ctx.save_for_backward(*acts[:-1], *weights, *norms)
        return acts[-1]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        n_layers, saved = ctx.n_layers, ctx.saved_tensors
        acts, weights, norms = saved[:n_layers], saved[n_layers:2 * n_layers], saved[2 * n_layers:]
        needs = ctx.needs_input_grad
        gw, gb, grad_x = ensemble_backward(acts, weights, grad, weight_grads=any(needs[2:]), input_grad=needs[0],
                                           norms=norms)
        grads: list[Tensor | None] = [t for pair in zip(gw, gb, strict=True) for t in pair] or [None] * (2 * n_layers)
        return (grad_x, None, *grads)


class CriticEnsemble(nn.Module):
    """N critics evaluated together: (B, in) -> (N, B, out), one batched op per layer.

    ``detach_params=True`` evaluates the same function with the parameters cut from the graph,
    so an actor loss can differentiate through the critic's *input* without reaching its weights.
    With the default ReLU subgradient (c = 0) the whole stack is one fused autograd node
    (:class:`_EnsembleMLP`); other c take the layer-by-layer path with :class:`ReLU`.

    ``layer_norm``: Linear -> LayerNorm -> ReLU in every hidden layer, the LayerNorm without
    affine parameters (the next layer's weights can rescale). Normalized features bound how far
    one update can move Q off the data, the critic fix of RLPD (Ball et al. 2023) and of PQN's
    analysis of TD stability (Gallici et al. 2024).
    """

    def __init__(self, n: int, in_dim: int, hidden: Sequence[int], out_dim: int, relu_c: float = 0.0,
                 layer_norm: bool = False) -> None:
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.act = ReLU(relu_c)
        self.n = n
        self.layer_norm = bool(layer_norm)

    def forward(self, x: Tensor, detach_params: bool = False) -> Tensor:
        if self.act.c == 0.0:
            params = [t for layer in self.layers for t in (layer.weight, layer.bias)]
            return _EnsembleMLP.apply(x, self.layer_norm, *(t.detach() for t in params) if detach_params else params)
        for i, layer in enumerate(self.layers):
            x = layer(x, detach_params)
            if i < len(self.layers) - 1:
                if self.layer_norm:
                    x = F.layer_norm(x, x.shape[-1:], eps=LAYER_NORM_EPS)
                x = self.act(x)
        return x

    def extra_repr(self) -> str:
        return f"n={self.n}, layer_norm={self.layer_norm}"


class CategoricalPolicy(nn.Module):
    """Observation -> logits ``(batch, factors, choices)`` of independent categoricals.

    Ragged MultiDiscrete factors are padded to the widest; the padding gets a logit of -1e8 so it
    has probability exactly 0. The module is a plain ``nn.Module`` returning a tensor, so it
    scripts and exports as is; :class:`agents.distributions.GumbelSoftmax` turns the logits
    into a distribution.
    """

    def __init__(self, obs_dim: int, nvec: Sequence[int], hidden: Sequence[int], relu_c: float = 0.0) -> None:
        super().__init__()
        self.nvec = [int(n) for n in nvec]
        self.width = max(self.nvec)
        self.net = mlp(obs_dim, hidden, len(self.nvec) * self.width, relu_c)
        pad = torch.zeros(len(self.nvec), self.width)
        for f, n in enumerate(self.nvec):
            pad[f, n:] = -1e8
        self.register_buffer("padding", pad, persistent=False)

    def forward(self, obs: Tensor) -> Tensor:
        return self.logits_from(self.net(obs))

    def logits_from(self, out: Tensor) -> Tensor:
        """The MLP's output ``(batch, factors * width)`` -> padded logits ``(batch, factors, width)``."""
        return out.view(out.shape[0], len(self.nvec), self.width) + self.padding


class GaussianPolicy(nn.Module):
    """Observation -> (mean, log_std) of the pre-tanh Gaussian.

    log_std is squashed into [log_std_min, log_std_max] by tanh rather than clipped, so its
    gradient never vanishes at the bounds (as in CleanRL's and jaxrl's SAC).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], relu_c: float = 0.0,
                 log_std_min: float = -5.0, log_std_max: float = 2.0) -> None:
        super().__init__()
        self.trunk = mlp(obs_dim, hidden[:-1], hidden[-1], relu_c)
        self.act = ReLU(relu_c)
        self.head = nn.Linear(hidden[-1], 2 * act_dim)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw = self.head(self.act(self.trunk(obs))).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1)
        return mean, log_std
