"""The hybrid action head: a discrete choice k and continuous parameters for it, on the interface of
:mod:`agents.heads`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor

from agents.distributions import HybridDistribution
from agents.heads import Critic


class HybridHead:
    """Hybrid (parameterized) actions in ``envs.hybrid``'s convention: a choice k of K and its parameters.

    The policy gives logits for k and a tanh-Gaussian for every parameter of every choice
    (:class:`agents.distributions.HybridDistribution`); parameters live in [-1, 1] inside the agent
    and are mapped to each Box on the way out, as :class:`GaussianHead` does. The critic reads
    ``[features, onehot(k), x ⊙ m(k)]``, where m(k) is 1 on k's parameters and 0 elsewhere: the
    unchosen parameters are zeroed, so they reach neither Q nor, through Q, the actor's gradient
    (a parameter the env ignored cannot explain the return). The actor's objective is
    sum_k p_k min_i Q_i(s, e_k, x ⊙ m(k)), the expectation over k with the parameters x
    reparameterized (``estimator="exact"``, K critic passes): its gradient reaches the logits
    through p and every choice's Gaussian through x, weighted by p_k. With one of GumbelSAC's
    estimators it is instead min_i Q_i(s, y, x ⊙ m(k)), y the estimator's differentiable one-hot
    and k = argmax y (the mask, undifferentiated): the gradient reaches the logits through y and
    the sampled choice's Gaussian through x, and no other choice's parameters.

    Entropy has two parts with their own targets and weights (Delalleau et al. 2019): the choice's,
    exact, and the parameters' -sum_k log pi_k(x_k), all K sets (the policy samples them all;
    keeping the unchosen ones spread keeps them exploring for when they are chosen). Targets:
    ``target_entropy_scale * log K`` and ``parameter_target_entropy`` per parameter (SAC's -1 per
    dimension). The Bellman target is the expectation over k of the target critics at sampled
    parameters. The buffer stores ``[k, x_1, ..., x_K]`` as one float vector.
    """

    mask_size = None
    entropy_parts = ("choice", "parameters")

    def __init__(self, space: spaces.Tuple, estimator: str = "exact", gumbel_rao_k: int = 8,
                 target_entropy_scale: float = 0.5, parameter_target_entropy: float = -1.0,
                 device: torch.device | str = "cpu") -> None:
        from envs.hybrid import hybrid_parts  # the convention lives with the envs (imported lazily, as
        # agents.collect imports the env factory: `import agents` alone needs no envs)

        self.space, self.parts = space, hybrid_parts(space)
        self.n, self.dims = self.parts.n, self.parts.dims
        self.width = sum(self.dims)
        # Column k marks k's parameters in the flat layout x = (x_1, ..., x_K).
        self.owner = torch.block_diag(*(torch.ones(d, 1) for d in self.dims)).to(device)
        self.offsets = np.concatenate([[0], np.cumsum(self.dims)])
        self.estimator, self.gumbel_rao_k = estimator, int(gumbel_rao_k)
        self.max_entropy = math.log(self.n)  # the choice's; alpha="auto" scales both weights by it
        self.target_entropy = (target_entropy_scale * self.max_entropy, parameter_target_entropy * self.width)
        self.low = [b.low.astype(np.float64) for b in self.parts.boxes]
        self.half = [(b.high.astype(np.float64) - b.low.astype(np.float64)) / 2 for b in self.parts.boxes]

    def critic_dims(self, obs_dim: int) -> tuple[int, int]:
        return obs_dim + self.n + self.width, 1

    def distribution(self, out: tuple[Tensor, Tensor, Tensor], temperature: float | Tensor = 1.0) -> HybridDistribution:
        logits, mean, log_std = out
        return HybridDistribution(logits, mean, log_std, self.owner, temperature)

    # ------------------------------------------------------------------ the critic's input
    def q(self, critic: Critic, obs: Tensor, y: Tensor, x: Tensor, choice: Tensor) -> Tensor:
        """Each critic's Q ``(N, B)`` of the (relaxed) one-hot ``y`` and parameters ``x``, those of the
        choices ``choice`` (a one-hot, no gradient) does not pick zeroed."""
        return critic(torch.cat([obs, y, x * (choice @ self.owner.T)], dim=-1)).squeeze(-1)

    def critic_values(self, critic: Critic, obs: Tensor, actions: Tensor) -> Tensor:
        onehot = F.one_hot(actions[:, 0].long(), self.n).to(actions.dtype)
        return self.q(critic, obs, onehot, actions[:, 1:], onehot)

    def expected_q(self, critic: Critic, obs: Tensor, probs: Tensor, x: Tensor) -> Tensor:
        """sum_k p_k min_i Q_i(s, e_k, x ⊙ m(k)): the expectation over the choice, parameters given."""
        b, n = obs.shape[0], self.n
        eye = torch.eye(n, device=x.device, dtype=x.dtype).repeat(b, 1)  # (B * K, K): every choice per state
        q = self.q(critic, obs.repeat_interleave(n, 0), eye, x.repeat_interleave(n, 0), eye)
        return (probs * q.min(0).values.view(b, n)).sum(-1)

    def _entropy(self, dist: HybridDistribution, log_px: Tensor) -> Tensor:
        """``(B, 2)``: the choice's entropy and the parameters' estimate -sum_k log pi_k(x_k)."""
        return torch.stack([dist.choice_entropy(), -log_px.sum(-1)], dim=-1)

    def next_value(self, out: tuple[Tensor, Tensor, Tensor], masks: None, critic: Critic, obs: Tensor,
                   temperature: float | Tensor) -> tuple[Tensor, Tensor]:
        dist = self.distribution(out, temperature)
        x, log_px = dist.rsample_parameters()
        return self.expected_q(critic, obs, dist.probs, x), self._entropy(dist, log_px)

    def actor_objective(self, out: tuple[Tensor, Tensor, Tensor], masks: None, critic: Critic, obs: Tensor,
                        temperature: float | Tensor, estimator: str | None = None
                        ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        dist = self.distribution(out, temperature)
        estimator = self.estimator if estimator is None else estimator
        x, log_px = dist.rsample_parameters()
        if estimator == "exact":
            q = self.expected_q(critic, obs, dist.probs, x)
        else:
            kwargs = {"k": self.gumbel_rao_k} if estimator == "gumbel-rao" else {}
            y = dist.rsample_choice(estimator, **kwargs)
            chosen = F.one_hot(y.detach().argmax(-1), self.n).to(y.dtype)
            q = self.q(critic, obs, y, x, chosen).min(0).values
        return q, self._entropy(dist, log_px), {}

    # ------------------------------------------------------------------ acting and the env's layout
    def act(self, out: tuple[Tensor, Tensor, Tensor], masks: None, deterministic: bool) -> Tensor:
        """``(B, 1 + D)``: the choice, then every choice's parameters in [-1, 1]."""
        dist = self.distribution(out)
        k, x = dist.mode() if deterministic else dist.sample()
        return torch.cat([k.unsqueeze(-1).to(x.dtype), x], dim=-1)

    def _box(self, k: int, unit: np.ndarray) -> np.ndarray:
        box = self.parts.boxes[k]
        return np.clip(self.low[k] + (unit + 1) * self.half[k], box.low, box.high).astype(box.dtype)

    def to_env(self, action: Tensor) -> list[tuple[np.int64, Any]]:
        """One env action per row, in the env's space: ``(k, (x_1, ..., x_K))``, or ``(k, x_k)`` when the
        Box is shared. A list, SB3's batch of per-copy actions (its ``evaluate_policy`` steps copy i with
        ``actions[i]``); :func:`agents.collect.vector_actions` lays it out for a Gymnasium vector env."""
        a = action.detach().cpu().double().numpy()
        out = []
        for row in a:
            k, x = int(row[0]), row[1:]
            sets = [self._box(j, x[self.offsets[j]:self.offsets[j + 1]]) for j in range(self.n)]
            out.append((np.int64(self.parts.start + k), sets[k] if self.parts.shared else tuple(sets)))
        return out

    def from_env(self, env_action: Any) -> np.ndarray:
        """A vector env's batched hybrid action -> the stored ``[k, x_1, ..., x_K]`` rows, parameters in
        [-1, 1]. The shared form fills the chosen k's set and leaves the others 0 (the critic zeroes them)."""
        ks = np.asarray(env_action[0], dtype=np.int64).reshape(-1) - self.parts.start
        stored = np.zeros((len(ks), 1 + self.width), dtype=np.float32)
        stored[:, 0] = ks
        for j in range(self.n):
            lo, hi = self.offsets[j] + 1, self.offsets[j + 1] + 1
            if self.parts.shared:
                rows = ks == j
                values = np.asarray(env_action[1], dtype=np.float64).reshape(len(ks), -1)[rows]
            else:
                rows = slice(None)
                values = np.asarray(env_action[1][j], dtype=np.float64).reshape(len(ks), -1)
            stored[rows, lo:hi] = np.clip((values - self.low[j]) / self.half[j] - 1, -1, 1)
        return stored

    @property
    def stored_shape(self) -> tuple[tuple[int, ...], torch.dtype]:
        return (1 + self.width,), torch.float32


__all__ = ["HybridHead"]
