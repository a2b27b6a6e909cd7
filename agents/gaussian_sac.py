"""GaussianSAC: soft actor-critic for Box actions with a tanh-squashed Gaussian policy.

The action is ``tanh(mu + sigma * eps)`` with eps ~ N(0, I) drawn outside the graph, so the
actor's gradient is pathwise through the sample (Haarnoja et al. 2018, sec. 4.2). Inside the
agent actions live in [-1, 1]^d; they are mapped to the env's bounds only on the way out, so the
critics see well-scaled inputs and the default target entropy -dim(A) means the same on any Box.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from agents.core import SoftActorCritic
from agents.distributions import SquashedGaussian
from agents.networks import CriticEnsemble, GaussianPolicy


class GaussianSAC(SoftActorCritic):
    """Soft actor-critic for bounded Box action spaces (see :class:`agents.core.SoftActorCritic`)."""

    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = (spaces.Box,)
    other_agent: ClassVar[str] = "GumbelSAC for Discrete and MultiDiscrete action spaces"

    def _check_spaces(self) -> None:
        super()._check_spaces()
        space = self.action_space
        if len(space.shape) != 1:
            raise TypeError(f"GaussianSAC needs a 1-D Box action space; got shape {space.shape}")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise TypeError(f"GaussianSAC squashes actions into the Box bounds, which must be finite; got "
                            f"low={space.low}, high={space.high}. Wrap the env with gymnasium.wrappers.ClipAction "
                            "or RescaleAction to finite bounds.")

    def _build(self) -> None:
        hp, d = self.hparams, int(self.action_space.shape[0])
        self.act_dim = d
        self.policy = GaussianPolicy(self.obs_dim, d, hp["net_arch"], hp["relu_subgradient"]).to(self.device)
        self.critic = CriticEnsemble(hp["n_critics"], self.obs_dim + d, hp["net_arch"], 1,
                                     hp["relu_subgradient"]).to(self.device)
        self._unit_low = -torch.ones(d, device=self.device)
        self._unit_high = torch.ones(d, device=self.device)
        self._env_low = self.action_space.low.astype(np.float64)
        self._env_half = (self.action_space.high.astype(np.float64) - self._env_low) / 2

    def _default_target_entropy(self) -> float:
        return -float(self.act_dim)

    def distribution(self, obs: Tensor) -> SquashedGaussian:
        mean, log_std = self.policy(obs)
        return SquashedGaussian(mean, log_std, self._unit_low, self._unit_high)

    def _act(self, obs: Tensor, deterministic: bool, masks: Tensor | None) -> Tensor:
        dist = self.distribution(obs)
        return dist.mode() if deterministic else dist.sample()

    def _env_action(self, action: Tensor) -> np.ndarray:
        unit = action.cpu().numpy().astype(np.float64)
        return (self._env_low + (unit + 1) * self._env_half).astype(self.action_space.dtype)

    def _stored_action(self, env_action: np.ndarray) -> np.ndarray:
        a = np.asarray(env_action, dtype=np.float64).reshape(-1, self.act_dim)
        return np.clip((a - self._env_low) / self._env_half - 1, -1, 1).astype(np.float32)

    def _action_shape(self) -> tuple[tuple[int, ...], torch.dtype]:
        return (self.act_dim,), torch.float32

    def _q(self, critic: CriticEnsemble, obs: Tensor, action: Tensor, detach_params: bool = False) -> Tensor:
        return critic(torch.cat([obs, action], dim=-1), detach_params).squeeze(-1)

    def _critic_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        return self._q(self.critic, obs, actions)

    def _next_value(self, next_obs: Tensor, next_masks: Tensor | None, alpha: Tensor) -> Tensor:
        action, log_prob = self.distribution(next_obs).rsample()
        return self._q(self.critic_target, next_obs, action).min(0).values - alpha * log_prob

    def _actor_objective(self, obs: Tensor, masks: Tensor | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        action, log_prob = self.distribution(obs).rsample()
        q = self._q(self.critic, obs, action, detach_params=True).min(0).values
        return q, -log_prob, {}
