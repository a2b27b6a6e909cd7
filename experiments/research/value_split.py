"""Research probe: the pairwise critic with a shared state value, on the combinatorial suite.

:func:`agents.heads.pairwise_q` has no term for the state's value: every one of the sum(nvec) main
effects u_f[k] carries its share of V(s) (near 10 early in a 16-step episode) and learns it only from
the transitions that chose k, so two choices' Q differ by the difference of two separately trained
outputs near that value, on a reward whose choices differ by 0.25 (Assign). The dueling split of
Wang et al. (2016) trains one V(s) on every transition and keeps only differences in the rest:

    Q(s, y) = v(s) + sum_f (u_f - mean_k u_f[k]) . y_f + sum_{f<g} y_f^T V_f V_g^T y_g

One extra output per critic; the same multilinear form, so the closed-form expectation and the
straight-through slope are unchanged. Run as a research variant of learning_bench:

    python -m experiments.research.learning_bench --suite combinatorial --only GumbelSAC \
        --envs reparl/CombinatorialAssign-v0 --seeds 0 1 2 --total 20000 --set estimator=st \
        --variant "GumbelSAC pairwise r16, value split=experiments.research.value_split:ValueSplitGumbelSAC"
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from agents import GumbelSAC
from agents.heads import GumbelHead, pairwise_q


class ValueSplitHead(GumbelHead):
    """:class:`agents.heads.GumbelHead`'s pairwise critic with one shared v(s) and centred main effects."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.kind != "pairwise":
            raise ValueError(f"the value split is a pairwise-critic probe; got critic={self.kind!r}")
        factor = torch.repeat_interleave(torch.arange(len(self.nvec)), torch.tensor(self.nvec))
        # (T, T): row t averages the choices of t's factor, so u - u @ mean is u centred per factor.
        same = (factor[:, None] == factor[None, :]).float()
        self.factor_mean = (same / same.sum(0, keepdim=True)).to(self.membership.device)

    def critic_dims(self, obs_dim: int) -> tuple[int, int]:
        in_dim, out_dim = super().critic_dims(obs_dim)
        return in_dim, out_dim + 1

    def q(self, critic: Any, obs: Tensor, y: Tensor) -> Tensor:
        out = critic(obs)
        value, out = out[..., 0], out[..., 1:]
        total = y.shape[-1]
        u = out[..., :total]
        centred = torch.cat([u - u @ self.factor_mean, out[..., total:]], dim=-1)
        return value + pairwise_q(centred, y, self.membership)


class ValueSplitGumbelSAC(GumbelSAC):
    """GumbelSAC whose pairwise critic has a shared state value (:class:`ValueSplitHead`)."""

    head_class = ValueSplitHead
