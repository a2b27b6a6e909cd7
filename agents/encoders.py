"""Observation encoders: what turns an observation into the flat feature vector the networks' MLPs read.

The encoder is chosen from the observation space (``encoder: auto``):

* a flat ``Box`` (any shape that is not an image) or a ``Discrete`` (one-hot): :class:`Flatten`, no
  parameters, so a flat-observation agent computes exactly what it computed before encoders existed;
* an image (a ``Box`` of ``uint8`` or ``bool`` with 3 dims, or 2 dims of at least 8 each): a CNN
  (:class:`CNN`). Channel order is detected from the shape; integer images are scaled to [0, 1]
  inside the network (uint8 divided by 255), so the replay buffer keeps the env's bytes;
* a ``Dict``: one encoder per key by the same rules, their features concatenated in sorted key order.

The CNN defaults by image size: at least 36 pixels a side, the Nature DQN network (Mnih et al.
2015: 32 8x8/4, 64 4x4/2, 64 3x3/1, then 512 units), the standard for 84x84 Atari frames; smaller,
the MinAtar network (Young and Tian 2019: 16 3x3/1, flattened; the agent's ``net_arch`` supplies the
128-unit layer the paper puts after it). ``encoder_kwargs`` overrides ``channels``, ``kernels``,
``strides``, ``features`` (0: no linear layer after the convolutions) and ``channels_last``.

Your own encoder (the role of SB3's ``features_extractor_class``): pass a ``torch.nn.Module``
subclass as ``encoder``. It is built as ``cls(observation_space, **encoder_kwargs)``, must set a
``features_dim`` attribute, and receives observations preprocessed as SB3's extractors do: float,
images scaled to [0, 1] in the env's channel order, Discrete one-hot, a Dict as a dict of these.
An SB3 ``BaseFeaturesExtractor`` subclass therefore works as is. A model file records the class's
name and its ``features_dim`` only; ``load`` rebuilds it from the class you pass (``encoder=``),
never by importing a name read from a file.

The actor and the critics have separate encoders of the same architecture (each trained by its own
loss), as CleanRL's discrete SAC on Atari (``sac_atari.py``) and SB3's SAC with
``share_features_extractor=False`` do; the critics of an ensemble share theirs. Measured against one
encoder trained by the critic loss and read by the actor with the gradient stopped (SAC-AE, Yarats et
al. 2021; DrQ, Kostrikov et al. 2021) on MinAtar Breakout and SpaceInvaders, the shared layout learned
no faster on either game, and it needs the eager update, so separate stays (the figures:
benchmarks/README.md, "Shared or separate encoders on MinAtar").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from agents.networks import ReLU

__all__ = ["CNN", "CNN_KEYS", "ENCODER_KINDS", "CustomEncoder", "DictEncoder", "Flatten", "ObsEncoder",
           "channels_last", "cnn_spec", "encoder_shapes", "is_image", "make_encoder", "preprocess"]

ENCODER_KINDS = ("auto", "flat", "cnn")
CNN_KEYS = ("channels", "kernels", "strides", "features", "channels_last")
NATURE = {"channels": [32, 64, 64], "kernels": [8, 4, 3], "strides": [4, 2, 1], "features": 512}
MINATAR = {"channels": [16], "kernels": [3], "strides": [1], "features": 0}


def is_image(space: spaces.Space) -> bool:
    """An image: a Box of uint8 or bool with 3 dims (channels first or last), or 2 dims (one channel)
    of at least 8 each. A small 2-D array (a board of a few cells) stays a flat vector."""
    if not isinstance(space, spaces.Box) or space.dtype not in (np.uint8, np.bool_):
        return False
    return len(space.shape) == 3 or (len(space.shape) == 2 and min(space.shape) >= 8)


def channels_last(shape: Sequence[int]) -> bool:
    """Where a 3-D image keeps its channels: (H, W, C) when H == W != C or C is the strictly smallest
    dim; (C, H, W) when H == W != C or C is; a cube (10, 10, 10, MinAtar's Seaquest) is read as (H, W, C),
    gymnasium's image convention. ``encoder_kwargs.channels_last`` overrides."""
    a, b, c = shape
    if a == b != c:
        return True
    if b == c != a:
        return False
    if a == b == c:
        return True
    return int(np.argmin(shape)) == 2


def cnn_spec(space: spaces.Box, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The CNN's settings: the size rule above, then ``encoder_kwargs``, checked."""
    hw = space.shape[:2] if len(space.shape) == 2 else None
    last = channels_last(space.shape) if len(space.shape) == 3 else True
    spec: dict[str, Any] = {**(NATURE if min(hw or _spatial(space.shape, last)) >= 36 else MINATAR),
                            "channels_last": last}
    unknown = sorted(set(kwargs or {}) - set(CNN_KEYS))
    if unknown:
        raise ValueError(f"encoder_kwargs has unknown key(s) {unknown}; a CNN takes {list(CNN_KEYS)}")
    spec.update(kwargs or {})
    n = len(spec["channels"])
    if not (1 <= n <= 8 and len(spec["kernels"]) == n and len(spec["strides"]) == n
            and all(isinstance(v, int) and 1 <= v <= 1024 for k in ("channels", "kernels", "strides")
                    for v in spec[k])):
        raise ValueError(f"encoder_kwargs channels/kernels/strides must be lists of 1 to 8 integers in [1, 1024] "
                         f"of one length; got {spec['channels']}, {spec['kernels']}, {spec['strides']}")
    if not (isinstance(spec["features"], int) and 0 <= spec["features"] <= 65536):
        raise ValueError("encoder_kwargs.features must be an integer in [0, 65536] (0: none); "
                         f"got {spec['features']!r}")
    if not isinstance(spec["channels_last"], bool):
        raise ValueError(f"encoder_kwargs.channels_last must be true or false; got {spec['channels_last']!r}")
    return spec


def _spatial(shape: Sequence[int], last: bool) -> tuple[int, int]:
    return (shape[0], shape[1]) if last else (shape[1], shape[2])


def _scale(space: spaces.Box) -> float:
    """uint8 images to [0, 1]: divided by their upper bound (255); bool images are already 0/1."""
    return 1.0 / float(np.max(space.high)) if space.dtype == np.uint8 and float(np.max(space.high)) > 1 else 1.0


def preprocess(space: spaces.Space, obs: Tensor | dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
    """What an encoder's core reads (SB3's ``preprocess_obs``): float, images scaled to [0, 1].

    Observations arrive as the buffer stores them (:func:`agents.spaces.obs_tensor`): a Discrete
    already one-hot, images in the env's dtype."""
    if isinstance(space, spaces.Dict):
        return {k: preprocess(s, obs[k]) for k, s in space.spaces.items()}
    if is_image(space):
        scale = _scale(space)
        x = obs.float()
        return x * scale if scale != 1.0 else x
    return obs.reshape(obs.shape[0], -1).float()


class Flatten(nn.Module):
    """A flat Box or a Discrete's one-hot: the features are the observation itself."""

    def __init__(self, features_dim: int) -> None:
        super().__init__()
        self.features_dim = int(features_dim)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)


class CNN(nn.Module):
    """Convolutions (no padding) with ReLUs, flattened, then optionally one linear layer and ReLU.

    Input: float images in [0, 1], ``(B, H, W, C)`` when ``channels_last`` else ``(B, C, H, W)``; a
    2-D image is one channel."""

    def __init__(self, shape: Sequence[int], spec: Mapping[str, Any], relu_c: float = 0.0) -> None:
        super().__init__()
        self.channels_last, self.two_d = bool(spec["channels_last"]), len(shape) == 2
        if self.two_d:
            c, hw = 1, tuple(shape)
        else:
            c, hw = (shape[2], _spatial(shape, True)) if self.channels_last else (shape[0], _spatial(shape, False))
        layers: list[nn.Module] = []
        for out, k, s in zip(spec["channels"], spec["kernels"], spec["strides"], strict=True):
            hw = tuple((d - k) // s + 1 for d in hw)
            if min(hw) < 1:
                raise ValueError(f"the CNN's {k}x{k}/{s} convolution leaves no pixels of a {tuple(shape)} image; "
                                 "set smaller encoder_kwargs.kernels/strides")
            layers += [nn.Conv2d(c, out, k, s), ReLU(relu_c)]
            c = out
        layers.append(nn.Flatten())
        flat = c * math.prod(hw)
        if spec["features"]:
            layers += [nn.Linear(flat, spec["features"]), ReLU(relu_c)]
        self.net = nn.Sequential(*layers)
        self.features_dim = int(spec["features"] or flat)

    def forward(self, x: Tensor) -> Tensor:
        if self.two_d:
            x = x.unsqueeze(1)
        elif self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return self.net(x)


class ObsEncoder(nn.Module):
    """A Box or Discrete observation as stored -> ``(B, features_dim)``: float, integer images scaled
    to [0, 1] (:func:`preprocess`, written out so that TorchScript takes it), then the core."""

    def __init__(self, space: spaces.Space, core: nn.Module) -> None:
        super().__init__()
        self.image = is_image(space)
        self.scale = _scale(space) if self.image else 1.0
        self.core = core
        self.features_dim = int(core.features_dim)

    def forward(self, obs: Tensor) -> Tensor:
        x = obs.float()
        if self.image:
            x = x * self.scale if self.scale != 1.0 else x
        else:
            x = x.reshape(x.shape[0], -1)
        return self.core(x)


class DictEncoder(nn.Module):
    """A Dict observation: one :class:`ObsEncoder` per key, features concatenated in sorted key order."""

    def __init__(self, encoders: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.keys = sorted(encoders)
        self.encoders = nn.ModuleDict({k: encoders[k] for k in self.keys})
        self.features_dim = sum(int(m.features_dim) for m in self.encoders.values())

    def forward(self, obs: dict[str, Tensor]) -> Tensor:
        return torch.cat([self.encoders[k](obs[k]) for k in self.keys], dim=-1)


class CustomEncoder(nn.Module):
    """A user's module, fed :func:`preprocess`'s output as SB3 feeds its features extractors."""

    def __init__(self, space: spaces.Space, core: nn.Module) -> None:
        super().__init__()
        self.space, self.core = space, core
        self.features_dim = int(core.features_dim)

    def forward(self, obs: Tensor | dict[str, Tensor]) -> Tensor:
        return self.core(preprocess(self.space, obs))


def _build(space: spaces.Space, kind: str, kwargs: Mapping[str, Any] | None, relu_c: float) -> nn.Module:
    if isinstance(space, spaces.Dict):
        bad = [k for k in space.spaces if not k or "." in k]
        if bad:
            raise ValueError(f"Dict observation key {bad[0]!r} cannot name a module (empty or with '.'); rename it "
                             "with gymnasium.wrappers.TransformObservation")
        return DictEncoder({k: _build(s, kind, kwargs, relu_c) for k, s in space.spaces.items()})
    if isinstance(space, spaces.Discrete):
        return ObsEncoder(space, Flatten(int(space.n)))
    if not isinstance(space, spaces.Box):
        raise TypeError(f"observation space {space} is not supported: use a Box, Discrete or Dict of them, or "
                        "flatten it with gymnasium.wrappers.FlattenObservation")
    if kind == "cnn" or (kind == "auto" and is_image(space)):
        if len(space.shape) not in (2, 3):
            raise ValueError(f"encoder 'cnn' needs an image observation (2 or 3 dims); got shape {space.shape}")
        return ObsEncoder(space, CNN(space.shape, cnn_spec(space, kwargs), relu_c))
    return ObsEncoder(space, Flatten(int(np.prod(space.shape))))


def make_encoder(space: spaces.Space, encoder: str | type[nn.Module] = "auto",
                 kwargs: Mapping[str, Any] | None = None, relu_c: float = 0.0) -> nn.Module:
    """The encoder ``encoder`` names for ``space`` (see the module docstring)."""
    if isinstance(encoder, type):
        core = encoder(space, **dict(kwargs or {}))
        if not isinstance(core, nn.Module) or not isinstance(getattr(core, "features_dim", None), int):
            raise TypeError(f"encoder {encoder.__name__} must be a torch.nn.Module subclass that sets an int "
                            "features_dim (as SB3's BaseFeaturesExtractor does)")
        return CustomEncoder(space, core)
    if encoder not in ENCODER_KINDS:
        raise ValueError(f"encoder={encoder!r} is not one of {ENCODER_KINDS} or a torch.nn.Module subclass")
    return _build(space, encoder, kwargs, relu_c)


def encoder_shapes(space: spaces.Space, encoder: str, kwargs: Mapping[str, Any] | None) -> tuple[int, dict[str, tuple]]:
    """(features_dim, parameter shapes) of a built-in encoder, built on the meta device: no memory."""
    with torch.device("meta"):
        enc = make_encoder(space, encoder, kwargs)
    return enc.features_dim, {k: tuple(v.shape) for k, v in enc.state_dict().items()}

