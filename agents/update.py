"""The soft actor-critic update, written once, for every action head.

:func:`sac_update` is a pure function in jaxrl's shape: networks' parameters, optimizer state and a
batch in; the same state updated in place and an info dict of device tensors out. Gradients come
from ``torch.func.grad_and_value`` over exactly the parameters each loss trains, so the actor loss
cannot reach the critics' weights nor the critic loss the actor's (TorchRL's isolation, by
construction). Everything action-space specific is the head's (:mod:`agents.heads`).

No host syncs: no ``.item()``, no data-dependent Python branch. So ``torch.compile`` takes the whole
update, losses, backward, Adam and Polyak, as one graph (LeanRL's recipe), and a CUDA graph can
capture it. :func:`compile_update` does that, with an eager fallback.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value

from agents import losses
from agents.buffer import Batch


class AdamState(NamedTuple):
    """A ``torch.optim.Adam``'s state tensors, in its parameters' order."""

    exp_avg: list[Tensor]
    exp_avg_sq: list[Tensor]
    step: list[Tensor]


class TrainState(NamedTuple):
    """What the update reads and writes in place: aliases of the agent's parameters and of its
    optimizers' state (no copies), so the agent's modules and ``torch.optim`` objects see every step."""

    actor: dict[str, Tensor]
    critic: dict[str, Tensor]
    target: dict[str, Tensor]
    log_alpha: Tensor
    adam: dict[str, AdamState]


@dataclass(frozen=True)
class UpdateSettings:
    """The update's constants (a compiled update specializes on them)."""

    gamma: float
    target_update_rate: float
    learn_alpha: bool
    backup_entropy: bool
    target_entropy: float | tuple[float, ...]
    """One target, or one per entropy part of the head (``entropy_parts``), with a log alpha each."""
    actor_lr: float
    critic_lr: float
    alpha_lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    entropy_parts: tuple[str, ...] = ()
    """The head's names of its entropy parts, for the info; empty for a single entropy."""


def train_state(policy: nn.Module, critic: nn.Module, critic_target: nn.Module, log_alpha: Tensor,
                optimizers: dict[str, torch.optim.Adam]) -> TrainState:
    """Aliases (``detach()`` shares storage) of the parameters and of each optimizer's state,
    creating the state ``torch.optim.Adam`` would create at its first step."""
    adam = {}
    for name, opt in optimizers.items():
        params = [p for g in opt.param_groups for p in g["params"]]
        for p in params:
            if p not in opt.state or not opt.state[p]:
                opt.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        adam[name] = AdamState(*([opt.state[p][k] for p in params] for k in ("exp_avg", "exp_avg_sq", "step")))
    alias = lambda m: {k: v.detach() for k, v in m.named_parameters()}  # noqa: E731
    return TrainState(alias(policy), alias(critic), alias(critic_target), log_alpha.detach(), adam)


def _adam(params: dict[str, Tensor], grads: dict[str, Tensor], state: AdamState, lr: float,
          s: UpdateSettings) -> None:
    losses.adam_step(list(params.values()), [grads[k] for k in params], state.exp_avg, state.exp_avg_sq,
                     state.step, lr, *s.betas, s.eps)


def features(critic: nn.Module, params: dict[str, Tensor], obs: Tensor | dict[str, Tensor]) -> Tensor:
    """The critic ensemble's observation features under ``params`` (its encoder's, prefixed ``encoder.``):
    what the head passes to the critic with the action. A flat observation's encoder has no parameters."""
    own = {k[len("encoder."):]: v for k, v in params.items() if k.startswith("encoder.")}
    return functional_call(critic.encoder, own, (obs,))


def sac_update(policy: nn.Module, critic: nn.Module, head: Any, s: UpdateSettings, state: TrainState,
               batch: Batch, temperature: Tensor, actor_turn: bool) -> tuple[dict[str, Tensor], Tensor]:
    """One SAC step: the critics, then (``actor_turn``) the actor against the stepped critics and the
    entropy temperature, then Polyak. Order as jaxrl and SB3. Returns (info, per-transition |TD error|)."""
    pi = lambda params, obs: functional_call(policy, params, (obs,))  # noqa: E731
    q_with = lambda params: lambda x: functional_call(critic, params, (x,))  # noqa: E731
    alpha = state.log_alpha.exp()

    with torch.no_grad():
        next_v, next_entropy = head.next_value(pi(state.actor, batch.next_obs), batch.next_masks,
                                               q_with(state.target), features(critic, state.target, batch.next_obs),
                                               temperature)
        if s.backup_entropy:
            next_v = next_v + losses.entropy_bonus(alpha, next_entropy)
        discount = s.gamma if batch.discount is None else batch.discount
        target = losses.soft_bellman_target(batch.rewards, batch.terminated, next_v, discount)

    def critic_loss(params: dict[str, Tensor]) -> tuple[Tensor, tuple[dict[str, Tensor], Tensor]]:
        q = head.critic_values(q_with(params), features(critic, params, batch.obs), batch.actions)
        loss, info = losses.critic_loss(q, target, batch.weights)
        return loss, (info, (q.detach() - target).abs().mean(0))

    c_grads, (_, (info, td_error)) = grad_and_value(critic_loss, has_aux=True)(state.critic)
    info["grad/critic_norm"] = losses.global_norm(list(c_grads.values()))
    _adam(state.critic, c_grads, state.adam["critic"], s.critic_lr, s)

    if actor_turn:
        with torch.no_grad():  # the stepped critics' features: constants of the actor's loss
            feats = features(critic, state.critic, batch.obs)

        def actor_loss(params: dict[str, Tensor], log_alpha: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            q, entropy, a_info = head.actor_objective(pi(params, batch.obs), batch.masks, q_with(state.critic),
                                                      feats, temperature)
            loss, l_info = losses.actor_loss(q, entropy, log_alpha.exp(), s.entropy_parts)
            # The temperature loss sees the entropy detached and the actor loss alpha detached: one
            # gradient of the sum gives each its own.
            t_loss, t_info = losses.temperature_loss(log_alpha, entropy, s.target_entropy, s.entropy_parts)
            return loss + t_loss, {**a_info, **l_info, **t_info}

        (a_grads, g_alpha), (_, a_info) = grad_and_value(actor_loss, argnums=(0, 1), has_aux=True)(
            state.actor, state.log_alpha)
        if not s.learn_alpha:
            del a_info["train/alpha_loss"]
        info.update(a_info)
        info["grad/actor_norm"] = losses.global_norm(list(a_grads.values()))
        _adam(state.actor, a_grads, state.adam["actor"], s.actor_lr, s)
        if s.learn_alpha:
            _adam({"log_alpha": state.log_alpha}, {"log_alpha": g_alpha}, state.adam["alpha"], s.alpha_lr, s)
    losses.polyak_update(list(state.target.values()), list(state.critic.values()), s.target_update_rate)
    return info, td_error


def estimator_cosine(policy: nn.Module, critic: nn.Module, head: Any, state: TrainState, obs: Tensor,
                     masks: Tensor | None, temperature: Tensor) -> Tensor:
    """Cosine between the actor's gradient with the head's estimator and with the exact expectation
    over actions, on the same states: is the estimator pointing the right way? (Gumbel heads with
    a closed form only.) Eager, at a diagnostic interval: two extra actor passes."""
    critic_fn = lambda x: functional_call(critic, state.critic, (x,))  # noqa: E731
    alpha = state.log_alpha.exp()
    with torch.no_grad():
        feats = features(critic, state.critic, obs)

    def loss(params: dict[str, Tensor], estimator: str) -> Tensor:
        out = functional_call(policy, params, (obs,))
        q, entropy, _ = head.actor_objective(out, masks, critic_fn, feats, temperature, estimator)
        return losses.actor_loss(q, entropy, alpha)[0]

    flat = lambda g: torch.cat([v.reshape(-1) for v in g.values()])  # noqa: E731
    sampled, exact = (flat(grad(loss)(state.actor, e)) for e in (head.estimator, "exact"))
    return torch.nn.functional.cosine_similarity(sampled, exact, dim=0)


UPDATE_CACHE_LIMIT = 64
"""Compiled graphs of the update one process may hold (torch's default per function is 8)."""


def compile_update(fn: Callable[..., Any], device: torch.device) -> Callable[..., Any]:
    """``torch.compile`` of the whole update (inductor, one graph), falling back to ``fn`` with a
    warning when compilation fails (no C++ compiler, say): the update is pure up to its in-place
    writes, which happen only once it has run, so a failed first call can run again eagerly.

    On a CPU the generated code is called through inductor's C++ wrapper: at SAC's sizes the
    Python wrapper's per-kernel overhead is a large share of an update."""
    import torch._dynamo.config as dynamo_config

    options = {"cpp_wrapper": True} if device.type == "cpu" else {}
    compiled = torch.compile(fn, fullgraph=True, dynamic=False, options=options)
    failed = False

    def call(*args: Any) -> Any:
        nonlocal failed
        if failed:
            return fn(*args)
        # Every agent in a process shares ``sac_update``'s code object, so its graphs (one per
        # network shape, settings and actor turn) share dynamo's per-function cache. torch's limit of
        # 8 entries made the fifth agent with new settings in one process (a notebook, a test run)
        # fail to compile; the limit is raised for this call only.
        limit = dynamo_config.recompile_limit
        dynamo_config.recompile_limit = max(limit, UPDATE_CACHE_LIMIT)
        try:
            return compiled(*args)
        except Exception as e:  # noqa: BLE001 - inductor raises many types; eager below re-raises real errors
            first = str(e).splitlines()[0] if str(e) else ""
            warnings.warn(f"torch.compile of the update failed ({type(e).__name__}: {first[:200]}); continuing "
                          "without it. Set compile=false to skip the attempt.", RuntimeWarning, stacklevel=2)
            failed = True
            return fn(*args)
        finally:
            dynamo_config.recompile_limit = limit
    return call
