"""Research probe: one observation encoder for the actor and the critics, trained by the critic loss.

reparl's agents give the actor and the critic ensemble separate encoders of the same architecture,
each trained by its own loss (``agents/encoders.py``). The alternative of SAC-AE (Yarats et al. 2021)
and DrQ (Kostrikov et al. 2021) shares one encoder: the critics' TD loss trains it, and the actor
reads its features with the gradient stopped, so the actor's loss cannot pull the representation
toward whatever makes its own objective easy. Issue 21 asks which of the two to ship, measured on
MinAtar; this class is the shared arm, run beside the default's kept jobs:

    python -m experiments.research.learning_bench --suite minatar --only GumbelSAC --seeds 0 1 \\
        --total 100000 --variant "GumbelSAC shared encoder=experiments.research.shared_encoder:SharedEncoderGumbelSAC"

The update runs eagerly (``compile: false``): the actor reads the critics' encoder parameters, which
the critic step changes in place, and the compiled update assumes the actor's and the critics'
parameters do not alias. Learning is the same maths either way; its wall-clock is the eager path's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from agents import GumbelSAC


class DetachedEncoder(nn.Module):
    """The critics' encoder, seen by the actor with the gradient stopped: no parameters of its own
    (the actor's optimizer never steps the shared weights; the critic's does)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "shared", encoder)  # not a submodule: its parameters stay the critics'
        self.features_dim = int(encoder.features_dim)

    def forward(self, obs: Tensor | dict[str, Tensor]) -> Tensor:
        return self.shared(obs).detach()


class SharedEncoderGumbelSAC(GumbelSAC):
    """GumbelSAC whose actor reads the online critics' encoder (:class:`DetachedEncoder`)."""

    defaults = {**GumbelSAC.defaults, "compile": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.hparams["compile"]:
            raise ValueError("the shared encoder runs the eager update; drop compile=true")
        self.policy.encoder = DetachedEncoder(self.critic.encoder)
        self.actor_optimizer = torch.optim.Adam(self.policy.parameters(), lr=self._learning_rates()["actor"],
                                                eps=self.hparams["adam_eps"])
