"""Policies as standalone artifacts: ONNX, TorchScript or a ``torch.export`` program.

The exported module maps a raw observation (and, for a maskable action space, a flat sb3-contrib
mask) to the deterministic action in the env's own layout, plus the logits (Gumbel) or the mean
(Gaussian) for users who want them. Everything between the env and the action is inside: the
one-hot of a Discrete observation, the frozen observation normalization of the run (gymnasium's
``(obs - mean) / sqrt(var + eps)``), the masking, the argmax or the tanh squash and the Box bounds.
So ``predict(obs, deterministic=True)`` and the artifact give the same actions (tested with
onnxruntime and TorchScript).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from agents.distributions import MASKED_LOGIT
from agents.encoders import is_image
from agents.spaces import stored_layout

if TYPE_CHECKING:
    from agents.sac import SoftActorCritic

FORMATS = ("onnx", "torchscript", "exported-program")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}


class _Observation(nn.Module):
    """Raw env observations -> the network's flat float input (one-hot, normalization)."""

    def __init__(self, space: spaces.Space, normalization: dict[str, Any] | None) -> None:
        super().__init__()
        if isinstance(space, spaces.Dict):
            raise ValueError("export takes one observation tensor; a Dict observation space has several. Export "
                             "agent.policy yourself (torch.export takes a dict of tensors)")
        # An image goes in as the env gives it (uint8): the policy's encoder scales it (agents.encoders).
        self.image = is_image(space)
        self.n = int(space.n) if isinstance(space, spaces.Discrete) else 0
        self.start = int(space.start) if isinstance(space, spaces.Discrete) else 0
        shape = (int(np.prod(space.shape)),) if not self.n else (self.n,)
        mean, scale = torch.zeros(shape), torch.ones(shape)
        if normalization is not None:
            mean = torch.as_tensor(np.asarray(normalization["mean"], dtype=np.float64).reshape(-1), dtype=torch.float32)
            var = np.asarray(normalization["var"], dtype=np.float64).reshape(-1)
            scale = torch.as_tensor(1.0 / np.sqrt(var + float(normalization.get("epsilon", 1e-8))), dtype=torch.float32)
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)

    def forward(self, obs: Tensor) -> Tensor:
        if self.image:
            return obs
        if self.n:
            return nn.functional.one_hot(obs.long().reshape(-1) - self.start, self.n).float()
        return (obs.reshape(obs.shape[0], -1).float() - self.mean) * self.scale


class GumbelPolicyExport(nn.Module):
    """(obs, mask) -> (action, logits): the most probable allowed choice of every factor."""

    def __init__(self, agent: SoftActorCritic, normalization: dict[str, Any] | None) -> None:
        super().__init__()
        head = agent.head
        self.observation = _Observation(agent.observation_space, normalization)
        self.policy = copy.deepcopy(agent.policy).cpu().eval()
        self.nvec = [int(n) for n in head.nvec]
        width = max(self.nvec)
        index = torch.full((len(self.nvec), width), sum(self.nvec), dtype=torch.long)  # the padding's slot
        offset = 0
        for f, n in enumerate(self.nvec):
            index[f, :n] = torch.arange(offset, offset + n)
            offset += n
        self.register_buffer("index", index)  # flat mask position of (factor, choice); padding -> an extra False
        self.register_buffer("start", torch.as_tensor(np.asarray(head.start).reshape(-1), dtype=torch.long))
        self.discrete = isinstance(agent.action_space, spaces.Discrete)
        self.masked_logit = float(MASKED_LOGIT)

    def forward(self, obs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.policy(self.observation(obs))
        padded = torch.cat([mask.to(torch.bool), torch.zeros_like(mask[:, :1], dtype=torch.bool)], dim=1)
        allowed = padded[:, self.index]  # (B, factors, width)
        logits = logits.masked_fill(~allowed, self.masked_logit)
        action = logits.argmax(-1) + self.start
        return (action[:, 0] if self.discrete else action), logits


class GaussianPolicyExport(nn.Module):
    """obs -> (action, mean): tanh of the mean, mapped to the Box's bounds."""

    def __init__(self, agent: SoftActorCritic, normalization: dict[str, Any] | None) -> None:
        super().__init__()
        head = agent.head
        self.observation = _Observation(agent.observation_space, normalization)
        self.policy = copy.deepcopy(agent.policy).cpu().eval()
        self.register_buffer("low", torch.as_tensor(head.env_low, dtype=torch.float32))
        self.register_buffer("half_range", torch.as_tensor(head.env_half, dtype=torch.float32))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean, _ = self.policy(self.observation(obs))
        return self.low + (torch.tanh(mean) + 1) * self.half_range, mean


def policy_module(agent: SoftActorCritic, normalization: dict[str, Any] | None = None) -> nn.Module:
    """The standalone deterministic policy of ``agent`` (see the module docstring)."""
    from agents.gaussian_sac import GaussianSAC
    from agents.gumbel_sac import GumbelSAC

    if not isinstance(agent, GumbelSAC | GaussianSAC):
        raise ValueError(f"export writes GumbelSAC and GaussianSAC policies; a {type(agent).__name__}'s action is "
                         "a tuple no single output tensor holds. Export agent.policy yourself (its outputs are the "
                         "choice's logits and the parameters' mean and log_std)")
    cls = GumbelPolicyExport if isinstance(agent, GumbelSAC) else GaussianPolicyExport
    return cls(agent, normalization).eval()


def example_inputs(agent: SoftActorCritic, batch: int = 2) -> tuple[Tensor, ...]:
    space = agent.observation_space
    obs = torch.zeros((batch,), dtype=torch.long) + int(space.start) if isinstance(space, spaces.Discrete) \
        else torch.zeros((batch, *space.shape), dtype=stored_layout(space)[1] if is_image(space) else torch.float32)
    if agent.head.mask_size is None:
        return (obs,)
    return obs, torch.ones((batch, agent.head.mask_size), dtype=torch.bool)


def export_policy(agent: SoftActorCritic, path: str | Path, fmt: str = "onnx",
                  normalization: dict[str, Any] | None = None) -> Path:
    """Write ``agent``'s deterministic policy to ``path`` as ``fmt`` (one of :data:`FORMATS`).

    Inputs ``obs`` (batch first, any batch size) and, for Discrete/MultiDiscrete actions, ``mask``
    (bool, ``(batch, sum(nvec))``: all True where the env has no masks); outputs ``action`` and
    ``logits`` or ``mean``. ``normalization``: the run's observation statistics (``obs_rms.json``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(SUFFIXES[fmt])
    path.parent.mkdir(parents=True, exist_ok=True)
    module = policy_module(agent, normalization)
    inputs = example_inputs(agent)
    names = ["obs", "mask"][: len(inputs)]
    outputs = ["action", "logits" if len(inputs) == 2 else "mean"]
    with torch.no_grad():
        if fmt == "torchscript":
            torch.jit.script(module).save(str(path))
        elif fmt == "exported-program":
            batch = torch.export.Dim("batch", min=1)
            program = torch.export.export(module, inputs, dynamic_shapes=tuple({0: batch} for _ in inputs))
            torch.export.save(program, str(path))
        else:
            torch.onnx.export(module, inputs, str(path), input_names=names, output_names=outputs,
                              dynamic_axes={n: {0: "batch"} for n in names + outputs}, dynamo=False)
    return path
