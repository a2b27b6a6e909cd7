"""Soft actor-critic losses as pure functions: tensors in, ``(loss, info)`` out.

Nothing here owns a network or an optimizer, so each piece is testable without an env.
Info values are 0-d tensors left on the device: reading them forces a host sync, so the
caller aggregates them and reads at logging intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor


def critic_loss(q: Tensor, target: Tensor, huber_delta: float | None = None,
                weights: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """0.5 * MSE to the shared target, summed over the ensemble. ``q``: (N, B); ``target``: (B,).

    ``huber_delta``: the Huber loss instead (quadratic within delta of the target, linear beyond,
    so one transition's gradient is at most delta / B: DQN's loss, Mnih et al. 2015; SB3's
    ``smooth_l1_loss``). ``None``: 0.5 * MSE. ``weights``: (B,) per-transition weights of the
    batch mean (prioritized replay's importance weights, Schaul et al. 2016).
    """
    if q.dim() != 2 or target.shape != q.shape[1:]:
        raise ValueError(f"critic values {tuple(q.shape)} must be (critics, batch) and the target "
                         f"{tuple(target.shape)} (batch,)")
    if huber_delta is None:
        per = 0.5 * (q - target.detach()) ** 2
    else:
        per = F.huber_loss(q, target.detach().expand_as(q), reduction="none", delta=huber_delta)
    loss = (per if weights is None else per * weights.detach()).mean(1).sum()
    return loss, {"train/critic_loss": loss.detach(), "train/q_mean": q.detach().mean(),
                  "train/target_mean": target.detach().mean()}


def soft_bellman_target(rewards: Tensor, terminated: Tensor, next_value: Tensor, gamma: float | Tensor,
                        bounds: Tensor | None = None) -> Tensor:
    """r + gamma * (1 - terminated) * V(s'). A truncated step still bootstraps. ``gamma`` may be
    per transition (gamma^k of an n-step return). ``bounds``: (lo, hi) that V(s') is clamped to
    first (:func:`value_bounds`; ``bound_targets``)."""
    if bounds is not None:
        next_value = next_value.clamp(bounds[0], bounds[1])
    return rewards + gamma * (1.0 - terminated) * next_value


def value_bounds(r_min: float, r_max: float, gamma: float) -> tuple[float, float]:
    """The range of every discounted return sum_t gamma^t r_t with rewards in [r_min, r_max],
    whatever the policy and wherever the episode ends: [min(0, r_min), max(0, r_max)] / (1 - gamma).

    The 0 is the empty sum (an episode that ends at once), so a reward range of one sign still
    bounds the value on both sides. ``gamma = 1`` (no discount) leaves the side with rewards of
    its sign unbounded. A learned value outside this range is an error whatever the MDP: the
    bound of Q-learning's convergence proofs (e.g. Szepesvari 2010, ch. 1), used to clamp
    targets as He et al. (2017, "optimality tightening") do with tighter, trajectory-based ones.
    """
    def scale(r: float) -> float:
        if r == 0:
            return 0.0
        return r / (1.0 - gamma) if gamma < 1 else math.copysign(math.inf, r)
    return scale(min(0.0, r_min)), scale(max(0.0, r_max))


def actor_loss(q: Tensor, entropy: Tensor, alpha: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """-(Q + alpha * H), batch mean. ``q`` is the value of the policy's (relaxed or expected)
    action; ``entropy`` is exact (categorical) or the sample estimate -log pi (Gaussian)."""
    loss = -(q + alpha * entropy).mean()
    return loss, {"train/actor_loss": loss.detach(), "train/entropy": entropy.detach().mean()}


def temperature_loss(log_alpha: Tensor, entropy: Tensor, target_entropy: float) -> tuple[Tensor, dict[str, Tensor]]:
    """log_alpha * (H - H_target): alpha rises while the entropy is below its target
    (Haarnoja et al. 2018b, eq. 18, in log space as in SB3 and jaxrl)."""
    loss = (log_alpha * (entropy.detach() - target_entropy)).mean()
    return loss, {"train/alpha_loss": loss.detach(), "train/alpha": log_alpha.detach().exp()}


@torch.no_grad()
def polyak_update(target: Iterable[Tensor], source: Iterable[Tensor], rate: float) -> None:
    """target <- target + rate * (source - target), in place and in one fused call per list."""
    torch._foreach_lerp_(list(target), list(source), rate)


def grad_norm(params: Iterable[torch.nn.Parameter]) -> Tensor:
    """Global L2 norm of the gradients, as a device tensor (no sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def adam_step(optimizer: torch.optim.Adam) -> None:
    """``optimizer.step()`` for a fused, plain Adam, minus ``torch.optim``'s per-call Python.

    The wrapper (hooks, profiler record, grouping by device and dtype) took ~130 us of each
    ~180 us step at SAC's sizes on a 2-core CPU, three times per update (issue 7's profile).
    The kernel and the state are the optimizer's own, so checkpoints and ``state_dict`` see no
    difference. Anything unusual (first step, several groups, amsgrad, weight decay, a hook)
    takes ``optimizer.step()``.
    """
    group = optimizer.param_groups[0]
    params = [p for p in group["params"] if p.grad is not None]
    if (len(optimizer.param_groups) != 1 or not group["fused"] or group["amsgrad"] or group["maximize"]
            or group["weight_decay"] or group["differentiable"] or optimizer._optimizer_step_pre_hooks
            or optimizer._optimizer_step_post_hooks or not params or params[0] not in optimizer.state):
        optimizer.step()
        return
    states = [optimizer.state[p] for p in params]
    steps = [s["step"] for s in states]
    torch._foreach_add_(steps, 1)
    beta1, beta2 = group["betas"]
    torch._fused_adam_(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                       [s["exp_avg_sq"] for s in states], [], steps, amsgrad=False, lr=group["lr"], beta1=beta1,
                       beta2=beta2, weight_decay=0.0, eps=group["eps"], maximize=False)
