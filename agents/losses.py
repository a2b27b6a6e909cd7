"""Soft actor-critic losses and the optimizer step as pure functions: tensors in, tensors out.

Nothing here owns a network or an optimizer, so each piece is testable without an env.
Info values are 0-d tensors left on the device: reading them forces a host sync, so the
caller aggregates them and reads at logging intervals.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def critic_loss(q: Tensor, target: Tensor, weights: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """0.5 * MSE to the shared target, summed over the ensemble. ``q``: (N, B); ``target``: (B,).

    ``weights``: (B,) per-transition weights of the batch mean (prioritized replay's importance
    weights, Schaul et al. 2016).
    """
    if q.dim() != 2 or target.shape != q.shape[1:]:
        raise ValueError(f"critic values {tuple(q.shape)} must be (critics, batch) and the target "
                         f"{tuple(target.shape)} (batch,)")
    per = 0.5 * (q - target.detach()) ** 2
    loss = (per if weights is None else per * weights.detach()).mean(1).sum()
    return loss, {"train/critic_loss": loss.detach(), "train/q_mean": q.detach().mean(),
                  "train/target_mean": target.detach().mean()}


def soft_bellman_target(rewards: Tensor, terminated: Tensor, next_value: Tensor, gamma: float | Tensor) -> Tensor:
    """r + gamma * (1 - terminated) * V(s'). A truncated step still bootstraps. ``gamma`` may be
    per transition (gamma^k of an n-step return)."""
    return rewards + gamma * (1.0 - terminated) * next_value


def entropy_bonus(alpha: Tensor, entropy: Tensor) -> Tensor:
    """alpha * H per transition ``(B,)``. A policy with several entropy parts (a hybrid action's choice
    and parameters, Delalleau et al. 2019) gives ``entropy`` ``(B, P)`` and ``alpha`` ``(P,)``: the sum
    of each part's weighted entropy."""
    bonus = alpha * entropy
    return bonus.sum(-1) if entropy.dim() == 2 else bonus


def actor_loss(q: Tensor, entropy: Tensor, alpha: Tensor,
               parts: tuple[str, ...] = ()) -> tuple[Tensor, dict[str, Tensor]]:
    """-(Q + alpha * H), batch mean. ``q`` is the value of the policy's (relaxed or expected)
    action; ``entropy`` is exact (categorical) or the sample estimate -log pi (Gaussian), or
    ``(B, P)`` with one weight per part (:func:`entropy_bonus`; ``parts`` names them in the info,
    where ``train/entropy`` is their sum)."""
    loss = -(q + entropy_bonus(alpha.detach(), entropy)).mean()
    info = {"train/actor_loss": loss.detach(), "train/entropy": entropy.detach().reshape(len(q), -1).sum(-1).mean()}
    info.update({f"train/entropy_{p}": entropy.detach()[:, i].mean() for i, p in enumerate(parts)})
    return loss, info


def temperature_loss(log_alpha: Tensor, entropy: Tensor, target_entropy: float | tuple[float, ...],
                     parts: tuple[str, ...] = ()) -> tuple[Tensor, dict[str, Tensor]]:
    """log_alpha * (H - H_target): alpha rises while the entropy is below its target
    (Haarnoja et al. 2018b, eq. 18, in log space as in SB3 and jaxrl). With P entropy parts,
    ``log_alpha`` ``(P,)``, ``entropy`` ``(B, P)`` and P targets: the sum of P such losses, so each
    weight gets the gradient a single one would; the info names each part's ``train/alpha_<part>``."""
    if log_alpha.dim() == 0:
        loss = (log_alpha * (entropy.detach() - target_entropy)).mean()
        return loss, {"train/alpha_loss": loss.detach(), "train/alpha": log_alpha.detach().exp()}
    target = torch.as_tensor(target_entropy, dtype=entropy.dtype, device=entropy.device)
    loss = (log_alpha * (entropy.detach() - target)).sum(-1).mean()
    alphas = log_alpha.detach().exp()
    return loss, {"train/alpha_loss": loss.detach(), **{f"train/alpha_{p}": alphas[i] for i, p in enumerate(parts)}}


@torch.no_grad()
def polyak_update(target: Sequence[Tensor], source: Sequence[Tensor], rate: float) -> None:
    """target <- target + rate * (source - target), in place and in one fused call per list."""
    torch._foreach_lerp_(list(target), list(source), rate)


def global_norm(tensors: Sequence[Tensor]) -> Tensor:
    """L2 norm of all the tensors together (gradients), as a device tensor (no sync)."""
    return torch.stack([t.square().sum() for t in tensors]).sum().sqrt()


@torch.no_grad()
def adam_step(params: Sequence[Tensor], grads: Sequence[Tensor], exp_avg: Sequence[Tensor],
              exp_avg_sq: Sequence[Tensor], steps: Sequence[Tensor], lr: float, beta1: float = 0.9,
              beta2: float = 0.999, eps: float = 1e-8) -> None:
    """One Adam step in place (Kingma and Ba 2015; ``torch.optim.Adam``'s arithmetic and state).

    Written with foreach ops instead of calling the optimizer so that it traces into the compiled
    update with the losses and their backward (LeanRL's "whole update in one graph"). The state
    tensors are a ``torch.optim.Adam``'s own (``exp_avg``, ``exp_avg_sq``, ``step``), so its
    ``state_dict`` and the checkpoints see the usual format.
    """
    params, grads = list(params), list(grads)
    torch._foreach_add_(list(steps), 1)
    step = steps[0]
    bias1 = 1 - beta1 ** step
    bias2_sqrt = (1 - beta2 ** step).sqrt()
    torch._foreach_lerp_(list(exp_avg), grads, 1 - beta1)
    torch._foreach_mul_(list(exp_avg_sq), beta2)
    torch._foreach_addcmul_(list(exp_avg_sq), grads, grads, 1 - beta2)
    denom = torch._foreach_sqrt(list(exp_avg_sq))
    torch._foreach_div_(denom, bias2_sqrt)
    torch._foreach_add_(denom, eps)
    update = torch._foreach_div(list(exp_avg), denom)
    torch._foreach_mul_(update, -lr / bias1)
    torch._foreach_add_(params, update)
