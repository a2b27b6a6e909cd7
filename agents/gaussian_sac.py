"""GaussianSAC: soft actor-critic for Box actions with a tanh-squashed Gaussian policy.

The action is ``tanh(mu + sigma * eps)`` with eps ~ N(0, I) drawn outside the graph, so the actor's
gradient is pathwise through the sample (Haarnoja et al. 2018, sec. 4.2). Inside the agent actions
live in [-1, 1]^d (:class:`agents.heads.GaussianHead`), mapped to the env's bounds on the way out.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from gymnasium import spaces
from torch import nn

from agents.heads import GaussianHead
from agents.networks import GaussianPolicy
from agents.sac import SoftActorCritic


class GaussianSAC(SoftActorCritic):
    """Soft actor-critic for bounded 1-D Box action spaces (see :class:`agents.sac.SoftActorCritic`).

    The defaults are SAC's (Haarnoja et al. 2018, as SB3 and CleanRL): alpha 1 learned toward a
    target entropy of -dim(A), soft targets, Polyak 0.005.
    """

    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = (spaces.Box,)
    defaults: ClassVar[dict[str, Any]] = dict(SoftActorCritic.defaults)

    @classmethod
    def make_head(cls, action_space: spaces.Space, hp: dict[str, Any],
                  device: torch.device | str = "cpu") -> GaussianHead:
        return GaussianHead(action_space, device)

    def _make_policy(self) -> nn.Module:
        hp = self.hparams
        return GaussianPolicy(self.obs_dim, self.head.dim, hp["net_arch"], hp["relu_subgradient"],
                              encoder=self._make_encoder())
