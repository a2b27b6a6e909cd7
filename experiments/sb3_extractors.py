"""Image encoders for the SB3 baselines, named in a config's ``policy_kwargs``.

A config spells SB3's ``policy_kwargs`` as plain YAML, so the classes in it are names looked up in
the registries here, never import paths (a config is data; nothing read from it imports code)::

    policy_kwargs: {features_extractor_class: MinAtarCNN, net_arch: [], optimizer_class: RMSprop,
                    optimizer_kwargs: {alpha: 0.95, eps: 0.01, momentum: 0.95, centered: true}}

``net_arch: []`` puts the Q head directly on the encoder's features, as both papers' networks do
(SB3's DQN otherwise adds two hidden layers of 64 for any extractor but its own NatureCNN).
"""

from __future__ import annotations

import reprlib
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


def _image_shape(space: spaces.Space, who: str, layout: str) -> tuple[int, int, int]:
    if not isinstance(space, spaces.Box) or len(space.shape) != 3:
        raise ValueError(f"{who} takes a 3-D Box observation {layout}; got {space}")
    return tuple(int(d) for d in space.shape)  # type: ignore[return-value]


class MinAtarCNN(BaseFeaturesExtractor):
    """Young and Tian 2019's MinAtar network up to its last hidden layer: one 3 x 3 convolution of 16
    filters at stride 1, ReLU, then 128 ReLU units (a quarter of Nature DQN's filters and units).

    Takes MinAtar's channels-last (H, W, C) observation of 0/1 values, so it neither scales nor
    guesses the channel axis (Seaquest's (10, 10, 10) would defeat any guess)."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 128, filters: int = 16) -> None:
        h, w, c = _image_shape(observation_space, "MinAtarCNN", "(height, width, channels)")
        if h < 3 or w < 3:
            raise ValueError(f"MinAtarCNN's 3 x 3 convolution needs height and width >= 3; got {observation_space}")
        super().__init__(observation_space, features_dim)
        self.conv = nn.Sequential(nn.Conv2d(c, filters, kernel_size=3, stride=1), nn.ReLU(), nn.Flatten())
        self.linear = nn.Sequential(nn.Linear(filters * (h - 2) * (w - 2), features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.conv(observations.permute(0, 3, 1, 2)))


class NatureCNN(BaseFeaturesExtractor):
    """Mnih et al. 2015's Nature DQN network up to its last hidden layer: 32 8 x 8 filters at stride 4,
    64 4 x 4 at stride 2, 64 3 x 3 at stride 1, each with ReLU, then 512 ReLU units.

    Takes channels-first (C, H, W) observations, the Atari frame stack's layout. SB3 scales a uint8
    image to [0, 1] before the extractor (``normalize_images``), so this does not."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 512) -> None:
        c, h, w = _image_shape(observation_space, "NatureCNN", "(channels, height, width)")
        super().__init__(observation_space, features_dim)
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, kernel_size=8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1), nn.ReLU(),
            nn.Flatten())
        with torch.no_grad():
            n = self.conv(torch.zeros(1, c, h, w)).shape[1]
        self.linear = nn.Sequential(nn.Linear(n, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.conv(observations.float()))


EXTRACTORS: dict[str, type[BaseFeaturesExtractor]] = {"MinAtarCNN": MinAtarCNN, "NatureCNN": NatureCNN}
"""``policy_kwargs.features_extractor_class`` names."""
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"Adam": torch.optim.Adam, "RMSprop": torch.optim.RMSprop}
"""``policy_kwargs.optimizer_class`` names (the MinAtar paper's DQN uses centered RMSprop)."""
_NAMED = {"features_extractor_class": EXTRACTORS, "optimizer_class": OPTIMIZERS}


def resolve_policy_kwargs(policy_kwargs: Any) -> dict[str, Any]:
    """A config's ``policy_kwargs`` with the named classes looked up; ValueError (one line, naming the
    key, the value and the names allowed) for anything else. The input is not modified."""
    if not isinstance(policy_kwargs, dict):
        raise ValueError(f"agent.policy_kwargs: expected a mapping, got {type(policy_kwargs).__name__}")
    out = dict(policy_kwargs)
    for key, registry in _NAMED.items():
        if key not in out:
            continue
        name = out[key]
        if not isinstance(name, str) or name not in registry:
            raise ValueError(f"agent.policy_kwargs.{key}: {reprlib.repr(name)} is not one of {', '.join(registry)} "
                             "(a config names a class from experiments.sb3_extractors, never an import path)")
        out[key] = registry[name]
    return out
