"""ReLU subgradient, MLP builder and the batched critic ensemble."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.networks import CategoricalPolicy, CriticEnsemble, GaussianPolicy, ReLU, mlp, relu_subgradient


def _grad(fn, x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.clone().requires_grad_()
    y = fn(x)
    y.backward(torch.linspace(-2.0, 3.0, x.numel()).reshape(x.shape))  # non-uniform upstream gradient
    return y.detach(), x.grad


X = torch.tensor([-3.0, -1e-30, -0.0, 0.0, 1e-30, 2.5, 0.0, -7.0])
UPSTREAM = torch.linspace(-2.0, 3.0, X.numel())


@pytest.mark.parametrize("c", [0.0, 0.25, 0.5, 1.0])
def test_relu_subgradient_values(c: float) -> None:
    y, g = _grad(ReLU(c), X)
    assert torch.equal(y, torch.relu(X))
    expected_slope = torch.where(X > 0, 1.0, torch.where(X < 0, 0.0, c))
    assert torch.equal(g, UPSTREAM * expected_slope)
    _, g_fn = _grad(lambda x: relu_subgradient(x, c), X)
    assert torch.equal(g_fn, UPSTREAM * expected_slope)


def test_relu_c0_matches_torch_relu_bit_for_bit() -> None:
    x = torch.randn(64, 33, generator=torch.Generator().manual_seed(0))
    x[::3, ::2] = 0.0
    ref_y, ref_g = _grad(torch.relu, x)
    for fn in (ReLU(0.0), lambda t: relu_subgradient(t, 0.0)):
        y, g = _grad(fn, x)
        assert torch.equal(y, ref_y) and torch.equal(g, ref_g)


@pytest.mark.parametrize("c", [-0.1, 1.5, float("nan")])
def test_relu_c_outside_unit_interval_raises(c: float) -> None:
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*c="):
        ReLU(c)


def test_mlp_builder_shapes_and_activation() -> None:
    net = mlp(5, [7, 11], 3, relu_c=0.5)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 7), (7, 11), (11, 3)]
    assert [m.c for m in net if isinstance(m, ReLU)] == [0.5, 0.5]
    assert not isinstance(net[-1], ReLU), "no activation on the output"
    assert net(torch.zeros(4, 5)).shape == (4, 3)


def _separate_mlps(ens: CriticEnsemble) -> list[nn.Sequential]:
    nets = []
    for i in range(ens.n):
        layers: list[nn.Module] = []
        for j, layer in enumerate(ens.layers):
            lin = nn.Linear(layer.weight.shape[1], layer.weight.shape[2])
            with torch.no_grad():
                lin.weight.copy_(layer.weight[i].T)
                lin.bias.copy_(layer.bias[i, 0])
            layers.append(lin)
            if j < len(ens.layers) - 1:
                layers.append(nn.ReLU())
        nets.append(nn.Sequential(*layers))
    return nets


def test_critic_ensemble_equals_separate_mlps() -> None:
    torch.manual_seed(0)
    ens = CriticEnsemble(3, 6, [16, 8], 2)
    x = torch.randn(10, 6)
    out = ens(x)
    assert out.shape == (3, 10, 2)
    for i, net in enumerate(_separate_mlps(ens)):
        assert torch.allclose(out[i], net(x), atol=1e-6)
    # Per-member inputs (N, B, in) go through the batched matmul path.
    xs = torch.randn(3, 10, 6)
    out3 = ens(xs)
    for i, net in enumerate(_separate_mlps(ens)):
        assert torch.allclose(out3[i], net(xs[i]), atol=1e-6)
    # Members are independent: their initial weights differ.
    assert not torch.equal(ens.layers[0].weight[0], ens.layers[0].weight[1])


def test_policies_shapes_and_padding() -> None:
    pol = CategoricalPolicy(4, [2, 5, 3], [16])
    logits = pol(torch.randn(7, 4))
    assert logits.shape == (7, 3, 5)
    probs = torch.softmax(logits, -1)
    assert bool((probs[:, 0, 2:] == 0).all()) and bool((probs[:, 2, 3:] == 0).all())
    gp = GaussianPolicy(4, 2, [16, 16], log_std_min=-5.0, log_std_max=2.0)
    mean, log_std = gp(torch.randn(7, 4) * 1e3)
    assert mean.shape == log_std.shape == (7, 2)
    assert bool(((log_std >= -5.0) & (log_std <= 2.0)).all())


@pytest.mark.parametrize("c", [0.0, 0.5])
def test_relu_subgradient_under_func_grad_and_torchscript(c: float) -> None:
    """The subgradient is plain tensor code: ``torch.func.grad`` (the update's gradients) gives the same
    slope at 0 as autograd, and a network with it scripts (what export needs) with the same output."""
    x = torch.tensor([-1.0, 0.0, 0.0, 2.0])
    g = torch.func.grad(lambda t: (relu_subgradient(t, c) * torch.arange(1.0, 5.0)).sum())(x)
    assert torch.equal(g, torch.tensor([0.0, 2.0 * c, 3.0 * c, 4.0]))
    net = mlp(3, [8], 2, relu_c=c)
    scripted = torch.jit.script(net)
    inp = torch.randn(5, 3)
    assert torch.equal(scripted(inp), net(inp))


def test_layer_norm_critic_normalizes_hidden_features() -> None:
    """With ``layer_norm`` every hidden pre-activation has mean 0 and variance 1 over its
    features (no affine), whatever the input's scale: the bound on features it is there for."""
    torch.manual_seed(2)
    critic = CriticEnsemble(2, 4, [32, 32], 1, layer_norm=True)
    x = torch.randn(64, 4) * 1e3
    z = critic.layers[0](x)
    n = F.layer_norm(z, (32,))
    assert n.mean(-1).abs().max() < 1e-4 and (n.var(-1, unbiased=False) - 1).abs().max() < 1e-3
    h = critic.layers[1](torch.relu(n))
    out = critic.layers[2](torch.relu(F.layer_norm(h, (32,))))
    torch.testing.assert_close(critic(x), out)
    # Scaling the input by 1e3 moves the plain critic's output ~1e3-fold; the normed one stays bounded.
    assert critic(x).abs().max() < 10
