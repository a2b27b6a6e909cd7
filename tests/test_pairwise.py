"""The pairwise critic (a factorization machine over the one-hots): its value at the probabilities is
the exact expectation over joint actions, it represents pairwise functions that heads cannot, and
GumbelSAC trains with it on the 65,536-action combinatorial envs with every estimator."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium import spaces
from test_diagnostics import assert_cosine_measures_against_the_exact_gradient
from test_masks import checked_vec_env
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from agents import GumbelSAC
from agents.distributions import GumbelSoftmax
from agents.gumbel_sac import ESTIMATOR_CHOICES
from agents.heads import pairwise_q
from envs.combinatorial import Combinatorial

NVEC = [2, 3, 4]
TINY: dict[str, Any] = {"net_arch": [16, 16], "batch_size": 32, "learning_starts": 100, "buffer_size": 1_000,
                        "seed": 0, "device": "cpu", "critic": "pairwise", "pairwise_rank": 4}


def membership(nvec: list[int]) -> torch.Tensor:
    return torch.block_diag(*(torch.ones(n, 1) for n in nvec))


def joint_actions(nvec: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every joint action as choice indices (J, F) and as flat one-hots (J, sum(nvec))."""
    a = torch.cartesian_prod(*(torch.arange(n) for n in nvec)).reshape(-1, len(nvec))
    return a, torch.cat([F.one_hot(a[:, f], n) for f, n in enumerate(nvec)], -1).double()


def small_agent(**hp: Any) -> GumbelSAC:
    return GumbelSAC(observation_space=spaces.Box(-1, 1, (3,)), action_space=spaces.MultiDiscrete(NVEC),
                     **{**TINY, **hp})


# ------------------------------------------------------------------------------- exact expectation


@pytest.mark.parametrize("masked", [False, True])
def test_q_at_the_probabilities_is_the_expectation_over_joint_actions(masked: bool) -> None:
    """sum over the 24 joint actions of prod_f p_f(a_f) Q(s, a) = Q(s, p), values and d/dlogits,
    in float64; with a mask the forbidden choices have p = 0 and drop out of both sides."""
    gen = torch.Generator().manual_seed(0)
    b, total, rank = 5, sum(NVEC), 3
    out = torch.randn(2, b, total * (1 + rank), generator=gen, dtype=torch.float64)
    logits = torch.randn(b, len(NVEC), max(NVEC), generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(b, total, dtype=torch.bool)
    if masked:
        mask[:, [1, 3, 8]] = False  # one choice of every factor, so each keeps at least one
    dist = GumbelSoftmax(logits, mask=mask, nvec=NVEC)
    p = torch.cat([dist.probs[:, f, :n] for f, n in enumerate(NVEC)], -1)
    assert bool((p[~mask] == 0).all())
    closed = pairwise_q(out, p, membership(NVEC))
    actions, y = joint_actions(NVEC)
    prob = torch.stack([dist.log_prob(a.expand(b, -1)).exp() for a in actions], -1)  # (B, J)
    q = pairwise_q(out.repeat_interleave(len(actions), 1), y.repeat(b, 1), membership(NVEC)).view(2, b, -1)
    enumerated = (prob * q).sum(-1)
    assert torch.allclose(closed, enumerated, rtol=1e-12, atol=1e-12)
    grad_closed, = torch.autograd.grad(closed.sum(), logits, retain_graph=True)
    grad_enum, = torch.autograd.grad(enumerated.sum(), logits)
    assert torch.allclose(grad_closed, grad_enum, rtol=1e-10, atol=1e-12)
    assert float(grad_closed.abs().max()) > 1e-3  # not vacuous


def test_agent_exact_objective_and_target_are_min_over_critics_of_the_expectation() -> None:
    """The documented choice: min_i E_pi[Q_i] (one evaluation), >= E_pi[min_i Q_i]; the
    Bellman target uses the same quantity under the target critics and is deterministic."""
    agent = small_agent()
    obs = torch.randn(8, 3)
    dist = agent.distribution(obs)
    actions, _ = joint_actions(NVEC)
    prob = torch.stack([dist.log_prob(a.expand(8, -1)).exp() for a in actions], -1)  # (B, J)
    q = torch.stack([agent.head.critic_values(agent.critic, obs, a.expand(8, -1)) for a in actions], -1)  # (N, B, J)
    expected = agent.head.expected_q(agent.critic, obs, dist)
    assert torch.allclose(expected, (prob * q).sum(-1).min(0).values.detach(), atol=1e-5)
    assert bool((expected >= (prob * q.min(0).values).sum(-1) - 1e-5).all())
    with torch.no_grad():
        logits = agent.policy(obs)
        (v1, h1), (v2, _) = (agent.head.next_value(logits, None, agent.critic_target, obs, 1.0) for _ in range(2))
        assert torch.equal(v1, v2) and torch.allclose(h1, dist.entropy())
        assert torch.allclose(v1, agent.head.expected_q(agent.critic_target, obs, dist))


# ------------------------------------------------------------------------------- linear in the factors


def pairwise_q_by_product(out: torch.Tensor, y: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    """The O(N B R T F) form pairwise_q had: z_f for every factor by a product with the (T, F) matrix."""
    total = y.shape[-1]
    u, v = out[..., :total], out[..., total:].unflatten(-1, (total, -1))
    z = (v * y.unsqueeze(-1)).transpose(-1, -2) @ membership.to(v.dtype)
    return (u * y).sum(-1) + 0.5 * (z.sum(-1).square().sum(-1) - z.square().sum((-1, -2)))


def pairwise_q_by_pairs(out: torch.Tensor, y: torch.Tensor, nvec: list[int]) -> torch.Tensor:
    """The definition, term by term: sum_f u_f . y_f + sum_{f<g} (V_f^T y_f) . (V_g^T y_g)."""
    total = y.shape[-1]
    u, v = out[..., :total], out[..., total:].unflatten(-1, (total, -1))
    blocks = list(zip(y.split(nvec, -1), v.split(nvec, -2), strict=True))
    z = [(v_f * y_f.unsqueeze(-1)).sum(-2) for y_f, v_f in blocks]
    return (u * y).sum(-1) + sum((z[f] * z[g]).sum(-1) for f in range(len(nvec)) for g in range(f + 1, len(nvec)))


def ends(nvec: list[int]) -> torch.Tensor:
    return torch.tensor(nvec).cumsum(0) - 1


def random_inputs(nvec: list[int], rank: int, batch: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Critic outputs and a relaxed action (positive, not normalized: the formula holds for any y)."""
    gen = torch.Generator().manual_seed(seed)
    total = sum(nvec)
    out = torch.randn(2, batch, total * (1 + rank), generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.rand(batch, total, generator=gen, dtype=torch.float64, requires_grad=True)
    return out, y


@pytest.mark.parametrize("nvec", [[2, 3, 4], [4] * 8, [5, 1, 3, 2, 7], [3] * 24])
def test_running_sum_form_equals_the_product_and_the_sum_over_pairs(nvec: list[int]) -> None:
    """Values and gradients (in the critic outputs and in y), float64, with the membership matrix
    and with the factor ends, ragged factors included."""
    out, y = random_inputs(nvec, rank=3)
    forms = [pairwise_q(out, y, membership(nvec)), pairwise_q(out, y, ends(nvec)),
             pairwise_q_by_product(out, y, membership(nvec)), pairwise_q_by_pairs(out, y, nvec)]
    grads = [torch.autograd.grad(q.square().sum(), (out, y)) for q in forms]
    for q, g in zip(forms[1:], grads[1:], strict=True):
        assert torch.allclose(q, forms[0], rtol=1e-12, atol=1e-12)
        assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(g, grads[0], strict=True))
    assert float(forms[0].detach().std()) > 0.1  # not vacuous


class ElementWork(TorchDispatchMode):
    """Counts every tensor element each aten op reads or writes, plus the FLOPs of matrix products
    (whose work is not in their operands' sizes): a machine-independent measure of cost."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        result = func(*args, **(kwargs or {}))
        leaves = torch.utils._pytree.tree_leaves((args, kwargs, result))
        self.elements += sum(t.numel() for t in leaves if isinstance(t, torch.Tensor))
        return result


def work(fn: Any, *args: Any) -> int:
    with FlopCounterMode(display=False) as flops, ElementWork() as elements:
        fn(*args)
    return elements.elements + flops.get_total_flops()


def test_cost_grows_linearly_in_the_factors() -> None:
    """8 -> 64 factors of 4 choices at rank 4: the running sum's work grows 8x, the product's
    quadratically; reading the (T, F) membership adds work that does not grow with the batch, the
    ensemble or the rank."""
    def cost(fn: Any, factors: int, batch: int = 8, rank: int = 4, index: Any = ends) -> int:
        nvec = [4] * factors
        out, y = random_inputs(nvec, rank, batch)
        return work(fn, out.detach(), y.detach(), index(nvec))

    linear = cost(pairwise_q, 64) / cost(pairwise_q, 8)
    assert 7.5 <= linear <= 8.0, linear
    assert cost(pairwise_q_by_product, 64, index=membership) / cost(pairwise_q_by_product, 8, index=membership) > 30
    reading = [cost(pairwise_q, 64, batch, rank, membership) - cost(pairwise_q, 64, batch, rank)
               for batch, rank in [(8, 4), (32, 4), (8, 16)]]
    assert reading[0] > 0 and reading.count(reading[0]) == 3, reading


def test_traceable_by_compile_fullgraph_and_torch_func() -> None:
    """One graph (fullgraph: no break, no host sync), forward and backward through AOT autograd;
    torch.func.grad and vmap agree with autograd."""
    nvec = [5, 1, 3, 2, 7]
    out, y = random_inputs(nvec, rank=3)
    for index in (membership(nvec), ends(nvec)):
        eager = pairwise_q(out, y, index)
        compiled = torch.compile(pairwise_q, fullgraph=True, backend="aot_eager")(out, y, index)
        assert torch.allclose(compiled, eager, rtol=1e-12, atol=1e-12)
        g_eager = torch.autograd.grad(eager.sum(), out)[0]
        g_compiled = torch.autograd.grad(compiled.sum(), out)[0]
        g_func = torch.func.grad(lambda o, index=index: pairwise_q(o, y.detach(), index).sum())(out.detach())
        assert torch.allclose(g_compiled, g_eager, rtol=1e-12) and torch.allclose(g_func, g_eager, rtol=1e-12)
        per_critic = torch.func.vmap(lambda o, index=index: pairwise_q(o, y.detach(), index))(out.detach())
        assert torch.allclose(per_critic, eager, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------- what it can represent


def test_combinatorial_ring_reward_is_exact_at_rank_24() -> None:
    """The construction behind configs/gumbel_sac/combinatorial_pairwise.yaml: with theta = pi/2,
    1{a' - a = s (mod 4)} = 1/4 [1 + 2 cos(theta (a' - a - s)) + cos(2 theta (a' - a - s))], and each
    cosine splits into products of a function of a and one of a' (3 dimensions per ring pair)."""
    env = Combinatorial()
    env.reset(seed=0)
    factors, choices, rank = env.factors, env.choices, 24
    c = torch.arange(choices, dtype=torch.float64)
    v = torch.zeros(factors, choices, rank, dtype=torch.float64)
    for k in range(factors):
        left, right, shifted = slice(3 * k, 3 * k + 3), (k + 1) % factors, (c + int(env.shifts[k])) * math.pi / 2
        scale = 1 / math.sqrt(4 * factors)
        v[k, :, left] = scale * torch.stack([math.sqrt(2) * shifted.cos(), math.sqrt(2) * shifted.sin(),
                                             (2 * shifted).cos()], -1)
        v[right, :, left] = scale * torch.stack([math.sqrt(2) * (c * math.pi / 2).cos(),
                                                 math.sqrt(2) * (c * math.pi / 2).sin(), (c * math.pi).cos()], -1)
    u = torch.zeros(factors, choices, dtype=torch.float64)
    u[0] = 1 / 4  # the constant 1/4 of every pair, 8 x 1/32, carried by one factor's main effect
    out = torch.cat([u.reshape(-1), v.reshape(-1)]).expand(1, 1, -1)
    rows = torch.randperm(choices ** factors, generator=torch.Generator().manual_seed(0))[:4096]
    actions, y = joint_actions([choices] * factors)
    q = pairwise_q(out.expand(1, len(rows), -1), y[rows], membership([choices] * factors))[0]
    reward = torch.tensor([env.pair_score(a) for a in actions[rows].numpy()], dtype=torch.float64)
    assert torch.allclose(q, reward, atol=1e-12)


def _fit(agent: GumbelSAC, obs: torch.Tensor, actions: torch.Tensor, target: torch.Tensor, steps: int) -> float:
    opt = torch.optim.Adam(agent.critic.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = (agent.head.critic_values(agent.critic, obs, actions)[0] - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def test_pairwise_critic_fits_a_pairwise_function_that_heads_cannot() -> None:
    """A random Q(a) = sum_f m_f[a_f] + sum_{f<g} W_fg[a_f, a_g] at one state: the pairwise critic
    (rank 8; 1 + 1 + 2 = 4 after the additive parts suffice) fits all 24 joint actions to ~0 (about
    1e-13 of the variance in float32 here); the
    best heads critic (least squares on the one-hots) keeps the interaction as residual."""
    gen = torch.Generator().manual_seed(1)
    actions, y = joint_actions(NVEC)
    blocks = y.split(NVEC, -1)
    target = sum((blocks[f] @ torch.randn(NVEC[f], NVEC[g], generator=gen, dtype=torch.float64)
                  * blocks[g]).sum(-1) for f in range(3) for g in range(f + 1, 3))
    target = (target + y @ torch.randn(sum(NVEC), generator=gen, dtype=torch.float64)).float()
    obs = torch.full((len(actions), 3), 0.5)
    agent = small_agent(n_critics=1, pairwise_rank=8, net_arch=[8])
    mse = _fit(agent, obs, actions, target, 800)
    best_heads = torch.linalg.lstsq(y, target.double().unsqueeze(-1)).solution.squeeze(-1)
    heads_mse = float((y @ best_heads - target.double()).square().mean())
    variance = float(target.var(unbiased=False))
    assert mse < 1e-6 * variance, (mse, variance)
    assert heads_mse > 0.2 * variance, (heads_mse, variance)


# ------------------------------------------------------------------------------- GumbelSAC with it


@pytest.mark.parametrize("masked", [False, True], ids=["Combinatorial", "CombinatorialMasked"])
@pytest.mark.parametrize("estimator", ESTIMATOR_CHOICES)
def test_trains_on_the_combinatorial_envs_with_every_estimator(estimator: str, masked: bool) -> None:
    env = checked_vec_env() if masked else "reparl/Combinatorial-v0"  # the masked env fails on a forbidden action
    agent = GumbelSAC(env, estimator=estimator, diagnostic_interval=50, **{**TINY, "n_envs": 2}).learn(400)
    assert agent.head.kind == "pairwise" and agent.num_updates == 151
    info = agent.pop_train_info()
    assert np.isfinite(list(info.values())).all()
    # 65,536 joint actions: the live cosine against the exact gradient, for every Gumbel estimator.
    assert ("grad/estimator_cosine" in info) == (estimator != "exact")


def test_diagnostic_measures_against_the_closed_form_gradient() -> None:
    agent = GumbelSAC("reparl/Combinatorial-v0", estimator="st", diagnostic_interval=1, policy_delay=1,
                      **TINY).learn(150)
    assert_cosine_measures_against_the_exact_gradient(agent)


def test_save_load_round_trip(tmp_path: Path) -> None:
    agent = GumbelSAC("reparl/Combinatorial-v0", **{**TINY, "pairwise_rank": 3}).learn(150)
    loaded = GumbelSAC.load(agent.save(tmp_path / "model"), device="cpu")
    assert loaded.head.kind == "pairwise" and loaded.hparams["pairwise_rank"] == 3
    batch = agent.buffer.sample(16)
    values = [a.head.critic_values(a.critic, batch.obs, batch.actions) for a in (loaded, agent)]
    assert torch.equal(*values)
    obs = batch.obs.numpy()
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0])


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="one factor, so no pairs.*critic='heads'"):
        GumbelSAC("CartPole-v1", **TINY)
    with pytest.raises(ValueError, match="pairwise_rank must be >= 1"):
        small_agent(pairwise_rank=0)
    with pytest.raises(ValueError, match="'auto', 'heads', 'joint', 'pairwise'"):
        small_agent(critic="pair")


def test_auto_estimator_is_exact_with_the_pairwise_critic_and_straight_through_otherwise(tmp_path: Path) -> None:
    """estimator "auto": the closed-form expectation where the critic is pairwise, straight-through with
    heads and joint critics; the agent keeps what it chose, and a saved file loads as that choice."""
    chosen = {(env, critic): GumbelSAC(env, seed=0, net_arch=[8], critic=critic).hparams["estimator"]
              for env, critic in [("reparl/Combinatorial-v0", "auto"), ("reparl/Combinatorial-v0", "heads"),
                                  ("reparl/Combinatorial-v0", "joint"), ("CartPole-v1", "auto")]}
    assert chosen == {("reparl/Combinatorial-v0", "auto"): "exact", ("reparl/Combinatorial-v0", "heads"): "st",
                      ("reparl/Combinatorial-v0", "joint"): "st", ("CartPole-v1", "auto"): "st"}
    assert GumbelSAC.estimator_form("soft", "pairwise") == "soft"  # a named estimator is kept
    agent = GumbelSAC("reparl/Combinatorial-v0", seed=0, net_arch=[8])
    assert agent.head.estimator == "exact"
    assert GumbelSAC.load(agent.save(tmp_path / "model")).hparams["estimator"] == "exact"
    with pytest.raises(ValueError, match="estimator='stt' is not one of \\('auto', 'exact', 'st'"):
        GumbelSAC("CartPole-v1", net_arch=[8], estimator="stt")


def test_auto_picks_pairwise_for_multidiscrete_and_reads_older_files_as_joint() -> None:
    """critic "auto": heads for Discrete and one factor, pairwise for more, and the agent keeps the form
    it chose (a saved file says which). A file saved when auto meant joint (tests/data, written by
    GumbelSAC("reparl/Combinatorial-v0", seed=0, net_arch=[8]).save(...) before the change) still loads,
    as the joint critic it holds, and acts as it did."""
    assert GumbelSAC("reparl/Combinatorial-v0", seed=0, net_arch=[8]).hparams["critic"] == "pairwise"
    assert GumbelSAC("CartPole-v1", seed=0, net_arch=[8]).hparams["critic"] == "heads"
    one = spaces.MultiDiscrete([4])
    assert GumbelSAC.critic_form("auto", one) == "heads" and GumbelSAC.critic_form("joint", one) == "joint"
    old = GumbelSAC.load(Path(__file__).parent / "data" / "gumbel_auto_before_pairwise.safetensors")
    assert old.head.kind == old.hparams["critic"] == "joint"
    twin = GumbelSAC("reparl/Combinatorial-v0", seed=0, net_arch=[8], critic="joint")  # the same draws
    obs = np.random.default_rng(0).random((5, *old.observation_space.shape), dtype=np.float32)
    for a, b in zip(old.modules().values(), twin.modules().values(), strict=True):
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y)
    assert np.array_equal(old.predict(obs, deterministic=True)[0], twin.predict(obs, deterministic=True)[0])
