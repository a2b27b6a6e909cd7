"""The hand-written updates (issue 7) against autograd, and the Adam step without torch.optim's wrapper.

Equal in float64 to ~1e-15 after several updates: any wrong term in a hand-written gradient
(a missing factor, the min routed to the wrong critic, a dropped log-density path) moves the
weights by ~lr = 3e-4 per update, twelve orders above that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from envs_for_tests import ContinuousIdentity, MultiDiscreteTarget

from agents import GaussianSAC, GumbelSAC, losses
from agents.core import SoftActorCritic
from envs.combinatorial import CombinatorialMasked

SMALL: dict[str, Any] = {"net_arch": [32, 32], "batch_size": 64, "learning_starts": 400, "seed": 0, "device": "cpu"}


def _float64_agent(env: Any, cls: type[SoftActorCritic] = GaussianSAC, **hp: Any) -> SoftActorCritic:
    """300 warm-up transitions, no update yet, then everything in float64 (discrete actions stay integers)."""
    agent = cls(env, **{**SMALL, **hp})
    agent.learn(300)
    for module in (agent.policy, agent.critic, agent.critic_target):
        module.double()
    agent.log_alpha.data = agent.log_alpha.data.double()
    for k in ("obs", "next_obs", "actions", "rewards", "terminated"):
        if getattr(agent.buffer, k).is_floating_point():
            setattr(agent.buffer, k, getattr(agent.buffer, k).double())
    return agent


def _max_weight_gap(a: SoftActorCritic, b: SoftActorCritic) -> float:
    pairs = [(p, q) for m in ("policy", "critic", "critic_target")
             for p, q in zip(getattr(a, m).parameters(), getattr(b, m).parameters(), strict=True)]
    return max([(p - q).abs().max().item() for p, q in pairs] + [abs((a.log_alpha - b.log_alpha).item())])


def _run_pair(a: SoftActorCritic, b: SoftActorCritic, steps: int = 4) -> tuple[dict[str, float], dict[str, float]]:
    # One seed for all the updates, so each path must also draw the same number of random values
    # per update as the other (the batch indices, then the noise), or every later batch differs.
    state = torch.get_rng_state()
    for _ in range(steps):
        a.train_step()
    torch.set_rng_state(state)
    for _ in range(steps):
        b.train_step()
    return a.pop_train_info(), b.pop_train_info()


@pytest.mark.parametrize(("env", "hp"), [
    ("Pendulum-v1", {}),                                          # bootstrapped targets, soft backup
    ("Pendulum-v1", {"backup_entropy": False, "n_critics": 3}),  # min over three critics
    ("Pendulum-v1", {"learn_alpha": False, "alpha": 0.3}),
    ("Pendulum-v1", {"policy_delay": 2}),                         # the actor on updates 0 and 2 of 4
    ("Pendulum-v1", {"n_step": 3, "backup_entropy": False}),      # per-transition discounts
    ("Pendulum-v1", {"huber_delta": 0.05}),                       # Huber, clipping most TD errors
    ("Pendulum-v1", {"critic_layer_norm": True, "policy_delay": 2}),  # LayerNorm critics (and targets)
    ("Pendulum-v1", {"bound_targets": True, "backup_entropy": False}),  # V(s') clamped to [-1600, 0]
    (ContinuousIdentity(dim=3), {"net_arch": [16, 24, 8]}),      # 3-d actions, three hidden layers
])
def test_manual_update_equals_autograd_in_float64(env: Any, hp: dict[str, Any]) -> None:
    manual = _float64_agent(env, manual_backward=True, **hp)
    reference = _float64_agent(env, manual_backward=False, **hp)
    assert _max_weight_gap(manual, reference) == 0.0
    info_m, info_r = _run_pair(manual, reference)
    assert _max_weight_gap(manual, reference) < 1e-12
    assert info_m.keys() == info_r.keys()
    for k in info_r:
        assert info_m[k] == pytest.approx(info_r[k], rel=1e-9, abs=1e-12), k


@pytest.mark.parametrize(("env", "hp"), [
    ("CartPole-v1", {}),                                                         # the defaults: heads, st
    ("CartPole-v1", {"estimator": "exact", "backup_entropy": True, "n_critics": 3}),
    ("CartPole-v1", {"policy_delay": 2, "n_step": 3}),
    ("CartPole-v1", {"huber_delta": 0.05}),                                      # Huber, clipping most TD errors
    ("CartPole-v1", {"critic_layer_norm": True}),                                # LayerNorm critics (and targets)
    ("CartPole-v1", {"bound_targets": True}),                                    # V(s') clamped to [0, 100]
    ("CartPole-v1", {"munchausen": 0.9, "munchausen_clip": -0.6}),               # log pi at obs, policy_delay 2
    ("CartPole-v1", {"prioritized_replay": 0.6, "n_step": 3}),                   # weighted loss, TD priorities
    ("CartPole-v1", {"critic": "dueling", "estimator": "reinmax"}),             # V + A - mean A
    (MultiDiscreteTarget(), {"critic": "dueling", "estimator": "exact"}),       # ... per ragged factor
    (CombinatorialMasked(), {"critic": "joint", "munchausen": 0.5}),             # ... masked, joint actions
    (MultiDiscreteTarget(), {"critic": "joint", "critic_layer_norm": True}),     # ... and the critic's input grad
    (MultiDiscreteTarget(), {"critic": "heads", "estimator": "gumbel-rao"}),     # ragged factors
    (MultiDiscreteTarget(), {"critic": "joint", "estimator": "reinmax"}),        # input gradient of the critic
    (MultiDiscreteTarget(), {"critic": "pairwise", "estimator": "soft", "learn_alpha": False, "alpha": 0.3}),
    (CombinatorialMasked(), {"critic": "joint", "net_arch": [16, 24, 8]}),     # masks, three hidden layers
])
def test_gumbel_manual_update_equals_autograd_in_float64(env: Any, hp: dict[str, Any]) -> None:
    """Every critic form and estimator, masks, the live diagnostic (every 2nd update) and a joint
    critic that samples its target: the hand-written update is the autograd one, draw for draw."""
    hp = {"diagnostic_interval": 2, **hp}
    manual = _float64_agent(env, GumbelSAC, **hp)
    reference = _float64_agent(env if isinstance(env, str) else type(env)(), GumbelSAC, manual_backward=False, **hp)
    assert _max_weight_gap(manual, reference) == 0.0
    info_m, info_r = _run_pair(manual, reference)
    assert _max_weight_gap(manual, reference) < 1e-12
    assert info_m.keys() == info_r.keys()
    assert ("grad/estimator_cosine" in info_r) == (reference.has_exact and reference.hparams["estimator"] != "exact")
    for k in info_r:
        assert info_m[k] == pytest.approx(info_r[k], rel=1e-9, abs=1e-12), k


def test_nonzero_relu_subgradient_takes_autograd() -> None:
    """The hand-written backward masks with h > 0, which is the subgradient 0 only."""
    a = _float64_agent("Pendulum-v1", relu_subgradient=0.5)
    b = _float64_agent("Pendulum-v1", relu_subgradient=0.5, manual_backward=False)
    _run_pair(a, b, steps=2)
    assert _max_weight_gap(a, b) == 0.0


@pytest.mark.parametrize("hp", [{}, {"critic_layer_norm": True}, {"bound_targets": True, "backup_entropy": False}])
def test_compiled_update_equals_eager_in_float64(hp: dict[str, Any]) -> None:
    compiled = _float64_agent("Pendulum-v1", compile=True, **hp)
    eager = _float64_agent("Pendulum-v1", **hp)
    _run_pair(compiled, eager, steps=2)
    assert not getattr(compiled, "_compile_failed", False)
    assert _max_weight_gap(compiled, eager) < 1e-12


def test_compile_without_a_cxx_compiler_warns_and_trains_eagerly(tmp_path: Path) -> None:
    """A real failed compilation (CXX pointing nowhere), in a fresh process so no cached kernel helps."""
    code = ("import warnings, torch\nfrom agents import GaussianSAC\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    a = GaussianSAC('Pendulum-v1', net_arch=[8], batch_size=16, learning_starts=20, seed=0,\n"
            "                    compile=True)\n"
            "    a.learn(25)\n"
            "failed = 'torch.compile of the GaussianSAC update failed'\n"
            "print(a.num_updates, sum(failed in str(x.message) for x in w))\n")
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    updates, warned = out.stdout.split()
    assert int(updates) == 6 and int(warned) == 1


@pytest.mark.parametrize("bad", [{"compile": "yes"}, {"manual_backward": 1},
                                 {"compile": True, "manual_backward": False},
                                 {"compile": True, "relu_subgradient": 0.5}])
def test_bad_switches_name_the_value(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        GaussianSAC("Pendulum-v1", **bad)
    if "compile" not in bad:
        with pytest.raises(ValueError, match=next(iter(bad))):
            GumbelSAC("CartPole-v1", **bad)


def test_adam_step_equals_optimizer_step() -> None:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = torch.optim.Adam(params, lr=1e-2, fused=True)
    ours = torch.optim.Adam(twins, lr=1e-2, fused=True)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params]
        for p, q, g in zip(params, twins, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        losses.adam_step(ours)  # the first call has no state yet and goes through step()
    for p, q in zip(params, twins, strict=True):
        assert torch.equal(p, q)
    assert torch.equal(opt.state[params[0]]["step"], ours.state[twins[0]]["step"])
