"""Action heads: everything that depends on the action space, and nothing else.

A head turns the policy network's output into a distribution and knows how the critics read an
action. The update (:mod:`agents.update`) is written once against this small interface:

* ``critic_dims(obs_dim)``: the critic ensemble's input and output widths.
* ``critic_values(critic, obs, actions)``: Q of stored actions, ``(N, B)``.
* ``next_value(policy_out, masks, critic, obs, temperature)``: the policy's value at s' under the
  target critics and its entropy, ``(B,)`` each (the soft Bellman target adds ``alpha * H``).
* ``actor_objective(policy_out, masks, critic, obs, temperature)``: Q of the policy's
  differentiable action and its entropy, ``(B,)`` each, plus info.
* ``act``, ``to_env``, ``from_env``, ``random_actions``: acting and the env's action layout.

A head whose policy has several entropy terms (:class:`agents.hybrid_head.HybridHead`: the choice's and
the parameters')
names them in ``entropy_parts`` and returns entropies ``(B, P)``, one column per part; the agent then
learns one entropy weight per part, toward ``target_entropy``, a tuple of P targets.

``critic`` is any callable ``x -> (N, B, out)``: the ensemble evaluated with some parameters (the
update passes its functional calls, so the actor objective never reaches the critic's weights).
``obs`` is what the critic's encoder made of the observations (:mod:`agents.encoders`): the flat
observation itself for vector spaces, CNN features for images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor

from agents.distributions import ESTIMATORS, GumbelSoftmax, SquashedGaussian

Critic = Callable[[Tensor], Tensor]
EXACT_JOINT_MAX = 256
"""Joint critic: the expectation over actions ("exact") enumerates up to this many joint actions."""
CRITIC_FORMS = ("heads", "joint", "pairwise")


def pairwise_q(out: Tensor, y: Tensor, membership: Tensor) -> Tensor:
    """The pairwise critic: a factorization machine over per-factor one-hots (Rendle 2010).

    With F factors, y_f the (relaxed) one-hot of factor f, u_f(s) and V_f(s) (K_f x R) read from
    the critic trunk's output::

        Q(s, y) = sum_f u_f . y_f + 1/2 (||sum_f z_f||^2 - sum_f ||z_f||^2),   z_f = V_f^T y_f
                = sum_f u_f . y_f + sum_{f<g} y_f^T V_f V_g^T y_g

    Every pair of distinct factors interacts through a rank-R matrix; no factor with itself (that
    term is a function of a_f alone at a vertex, which u_f spans, and would make Q quadratic in y_f).

    Exact expectation: Q is multilinear (affine in each y_f with the others fixed), so for a
    product policy E_pi[Q(s, y)] = Q(s, p_1, ..., p_F): one evaluation at the probabilities,
    differentiable in them, replaces the sum over prod_f K_f joint actions. Its slope inside the
    simplex is then the difference of its vertex values, unlike the joint critic's.

    Cost: O(N B T R), linear in the number of factors at a fixed rank and choices. Each factor's
    choices are contiguous in the flat layout, so z_f is a difference of the running sum of the
    rows y_t V_t at the factor's last choice and at the previous factor's; a product with the
    (T, F) membership matrix instead costs O(N B R T F), quadratic in F. One running sum rather than
    a scatter-add (index_add) per factor: one op, and in float32 as close to a float64 reference as
    the product was (random inputs, up to 128 factors). On CUDA it is bit-reproducible only under
    ``torch.use_deterministic_algorithms`` (torch lists cumsum and index_add alike as nondeterministic
    on CUDA otherwise).

    Args:
        out: trunk output ``(N, B, T + T * R)``, T = sum_f K_f: u, then V row-major (T, R).
        y: flat one-hots, relaxed samples or probabilities ``(B, T)``.
        membership: ``(T, F)``, 1 where choice t belongs to factor f; or, skipping the O(T F)
            reduction that reads that matrix once per call, the ``(F,)`` integer index of each
            factor's last choice in the flat layout, ``cumsum(nvec) - 1``.
    """
    total = y.shape[-1]
    u, v = out[..., :total], out[..., total:].unflatten(-1, (total, -1))
    linear = (u * y).sum(-1)
    ends = membership if membership.ndim == 1 else membership.sum(0).cumsum(0).long() - 1
    upto = (v * y.unsqueeze(-1)).cumsum(-2).index_select(-2, ends)  # (N, B, F, R): z_0 + ... + z_f
    z = upto - F.pad(upto[..., :-1, :], (0, 0, 1, 0))  # (N, B, F, R): z_f, one row per factor
    return linear + 0.5 * (upto[..., -1, :].square().sum(-1) - z.square().sum((-1, -2)))


class GumbelHead:
    """Discrete and MultiDiscrete actions: Gumbel-max to act, a Gumbel-Softmax estimator to learn.

    Critic forms (``critic``), each Q(s, y) of the flat one-hot y = (y_1, ..., y_F):

    * ``"heads"``: sum_f q_f(s) . y_f, one output per choice. Linear in y, so its value at the
      probabilities is the expectation, and the soft value of s' is exact (Christodoulou 2019, with
      the per-choice min over critics as in CleanRL). Cannot represent interactions of factors.
    * ``"joint"``: MLP([s, y]), any function of the joint action. Trained only at one-hot vertices,
      so its slope inside the simplex is unconstrained; its target takes one sampled action.
    * ``"pairwise"``: :func:`pairwise_q`, every pair of factors at rank ``pairwise_rank``; exact
      expectation at any size (MultiDiscrete with >= 2 factors).

    ``estimator``: ``"exact"`` (the expectation over actions; heads, pairwise, or a joint critic
    over at most :data:`EXACT_JOINT_MAX` joint actions) or a key of :data:`ESTIMATORS`.
    """

    def __init__(self, space: spaces.Discrete | spaces.MultiDiscrete, critic: str, estimator: str,
                 pairwise_rank: int = 16, gumbel_rao_k: int = 8, target_entropy_scale: float = 0.5,
                 device: torch.device | str = "cpu") -> None:
        self.space = space
        if isinstance(space, spaces.Discrete):
            self.nvec, self.start = [int(space.n)], np.array([int(space.start)])
        else:
            if space.nvec.ndim != 1:
                raise TypeError(f"GumbelSAC needs a 1-D MultiDiscrete; got nvec of shape {space.nvec.shape}. "
                                "Flatten the action space first.")
            self.nvec, self.start = [int(n) for n in space.nvec], np.asarray(space.start, dtype=np.int64)
        if critic == "pairwise" and len(self.nvec) < 2:
            # Refused rather than reduced to heads: a run labelled "pairwise" that is not one would mislead.
            raise ValueError(f"critic='pairwise' models interactions between the factors of a MultiDiscrete "
                             f"action; {space} has one factor, so no pairs. Use critic='heads' (the same "
                             "function without the unused outputs).")
        self.kind, self.estimator = critic, estimator
        self.rank, self.gumbel_rao_k = int(pairwise_rank), int(gumbel_rao_k)
        n_joint = math.prod(self.nvec)
        self.joint_actions = (torch.cartesian_prod(*(torch.arange(n) for n in self.nvec)).reshape(n_joint, -1)
                              .to(device) if critic == "joint" and n_joint <= EXACT_JOINT_MAX else None)
        self.has_exact = critic != "joint" or self.joint_actions is not None
        if estimator == "exact" and not self.has_exact:
            raise ValueError(f"estimator='exact' sums over every action: with a joint critic that is prod(nvec) = "
                             f"{n_joint:,} terms (at most {EXACT_JOINT_MAX}). Use critic='heads' or 'pairwise' "
                             "(closed form), or a Gumbel estimator such as 'st'.")
        width = max(self.nvec)
        # Positions of the real choices in the padded (factors * width) layout.
        self.flat_index = torch.tensor([f * width + k for f, n in enumerate(self.nvec) for k in range(n)],
                                       device=device)
        self.ragged = any(n != width for n in self.nvec)
        # The flat position of each factor's last choice: pairwise_q reads its running sum of V^T y there
        # (the per-factor z_f in O(T R), not a (T, F) product that grows with F^2).
        self.membership = torch.tensor(self.nvec, device=device).cumsum(0) - 1
        self.max_entropy = sum(math.log(n) for n in self.nvec)  # uniform over every factor
        self.target_entropy = target_entropy_scale * self.max_entropy
        self.mask_size = sum(self.nvec)

    def critic_dims(self, obs_dim: int) -> tuple[int, int]:
        total = sum(self.nvec)
        return {"heads": (obs_dim, total), "joint": (obs_dim + total, 1),
                "pairwise": (obs_dim, total * (1 + self.rank))}[self.kind]

    # ------------------------------------------------------------------ layouts
    def flat(self, y: Tensor) -> Tensor:
        """(B, factors, width) -> (B, sum(nvec)): drop the padding of ragged factors."""
        y = y.reshape(y.shape[0], -1)
        return y.index_select(1, self.flat_index) if self.ragged else y

    def one_hot(self, actions: Tensor) -> Tensor:
        return self.flat(F.one_hot(actions.long(), max(self.nvec)).float())

    def distribution(self, logits: Tensor, masks: Tensor | None, temperature: float | Tensor = 1.0,
                     check_mask: bool = True) -> GumbelSoftmax:
        return GumbelSoftmax(logits, temperature, masks, self.nvec, check_mask=check_mask)

    # ------------------------------------------------------------------ critic forms
    def q(self, critic: Critic, obs: Tensor, y: Tensor) -> Tensor:
        """Each critic's Q of a (possibly relaxed) flat one-hot action: ``(N, B)``."""
        if self.kind == "joint":
            return critic(torch.cat([obs, y], dim=-1)).squeeze(-1)
        out = critic(obs)
        return (out * y).sum(-1) if self.kind == "heads" else pairwise_q(out, y, self.membership)

    def critic_values(self, critic: Critic, obs: Tensor, actions: Tensor) -> Tensor:
        return self.q(critic, obs, self.one_hot(actions))

    def expected_q(self, critic: Critic, obs: Tensor, dist: GumbelSoftmax) -> Tensor:
        """The policy's value under the ensemble in closed form, differentiable in the logits.

        * heads: sum over choices of p times the per-choice min over critics.
        * pairwise: min_i Q_i(s, p) = min_i E_pi[Q_i], one evaluation at the probabilities. It is
          >= E_pi[min_i Q_i] (which has no closed form: a min of multilinear functions is not
          multilinear), still the clipped double-Q of TD3 (Fujimoto et al. 2018) on the policy's value.
        * joint (small): E_pi[min_i Q_i(s, a)] by enumerating the joint actions.
        """
        if self.kind == "heads":
            return (self.flat(dist.probs) * critic(obs).min(0).values).sum(-1)
        if self.kind == "pairwise":
            return self.q(critic, obs, self.flat(dist.probs)).min(0).values
        joint, b = self.joint_actions, obs.shape[0]
        q = self.q(critic, obs.repeat_interleave(len(joint), 0), self.one_hot(joint).repeat(b, 1))
        q = q.detach().min(0).values.view(b, len(joint))
        factor = torch.arange(len(self.nvec), device=obs.device)
        probs = dist.probs[:, factor, joint].prod(-1)  # (B, joint actions): the factors are independent
        return (probs * q).sum(-1)

    def policy_q(self, critic: Critic, obs: Tensor, dist: GumbelSoftmax, estimator: str | None = None,
                 **estimator_kwargs: Any) -> Tensor:
        """min_i Q_i(s, y), y the estimator's differentiable sample of ``dist``, or E_pi of it for
        ``"exact"``: the actor's objective. The gradient study (``experiments/research/study.py``)
        calls this with other estimators, so it measures the code the agent runs."""
        estimator = self.estimator if estimator is None else estimator
        if estimator == "exact":
            return self.expected_q(critic, obs, dist)
        if estimator == "gumbel-rao":
            estimator_kwargs.setdefault("k", self.gumbel_rao_k)
        return self.q(critic, obs, self.flat(dist.rsample(estimator, **estimator_kwargs))).min(0).values

    def next_value(self, logits: Tensor, masks: Tensor | None, critic: Critic, obs: Tensor,
                   temperature: float | Tensor) -> tuple[Tensor, Tensor]:
        dist = self.distribution(logits, masks, temperature, check_mask=False)
        if self.kind != "joint":
            # The closed form, with the pessimism the exact actor objective uses, so the target
            # values the policy the way the actor is trained to.
            return self.expected_q(critic, obs, dist), dist.entropy()
        return self.q(critic, obs, self.one_hot(dist.sample())).min(0).values, dist.entropy()

    def actor_objective(self, logits: Tensor, masks: Tensor | None, critic: Critic, obs: Tensor,
                        temperature: float | Tensor, estimator: str | None = None
                        ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        dist = self.distribution(logits, masks, temperature, check_mask=False)
        return self.policy_q(critic, obs, dist, estimator), dist.entropy(), {}

    # ------------------------------------------------------------------ acting and the env's layout
    def act(self, logits: Tensor, masks: Tensor | None, deterministic: bool) -> Tensor:
        dist = self.distribution(logits, masks)
        return dist.mode() if deterministic else dist.sample()

    def to_env(self, action: Tensor) -> np.ndarray:
        a = action.cpu().numpy() + self.start
        return a[:, 0] if isinstance(self.space, spaces.Discrete) else a

    def from_env(self, env_action: np.ndarray) -> np.ndarray:
        return np.asarray(env_action).reshape(-1, len(self.nvec)) - self.start

    @property
    def stored_shape(self) -> tuple[tuple[int, ...], torch.dtype]:
        return (len(self.nvec),), torch.long

    def random_actions(self, masks: np.ndarray) -> np.ndarray:
        """Warm-up actions under action masks, per copy and factor uniform over the allowed choices.
        Gymnasium batches a MultiDiscrete space into a Box, whose sample() takes no mask, so they are
        drawn here, from the global numpy RNG (which checkpoints save: a resumed warm-up draws the
        same actions)."""
        blocks = np.split(masks, np.cumsum(self.nvec)[:-1], axis=1)
        u = np.random.random((len(masks), len(blocks)))
        picks = [np.argmax(b.cumsum(1) > np.floor(u[:, f] * b.sum(1))[:, None], axis=1) for f, b in enumerate(blocks)]
        return self.to_env(torch.as_tensor(np.stack(picks, 1)))


class GaussianHead:
    """Box actions: ``tanh(mu + sigma * eps)`` in [-1, 1]^d, mapped to the Box only on the way out,
    so the critics see well-scaled inputs and the target entropy -dim(A) means the same on any Box."""

    max_entropy = None  # unbounded: no alpha="auto"
    mask_size = None

    def __init__(self, space: spaces.Box, device: torch.device | str = "cpu") -> None:
        if len(space.shape) != 1:
            raise TypeError(f"GaussianSAC needs a 1-D Box action space; got shape {space.shape}")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise TypeError(f"GaussianSAC squashes actions into the Box bounds, which must be finite; got "
                            f"low={space.low}, high={space.high}. Wrap the env with gymnasium.wrappers.ClipAction "
                            "or RescaleAction to finite bounds.")
        self.space, self.dim = space, int(space.shape[0])
        self.target_entropy = -float(self.dim)
        self.low, self.high = -torch.ones(self.dim, device=device), torch.ones(self.dim, device=device)
        self.env_low = space.low.astype(np.float64)
        self.env_half = (space.high.astype(np.float64) - self.env_low) / 2

    def critic_dims(self, obs_dim: int) -> tuple[int, int]:
        return obs_dim + self.dim, 1

    def distribution(self, out: tuple[Tensor, Tensor]) -> SquashedGaussian:
        return SquashedGaussian(out[0], out[1], self.low, self.high)

    def critic_values(self, critic: Critic, obs: Tensor, actions: Tensor) -> Tensor:
        return critic(torch.cat([obs, actions], dim=-1)).squeeze(-1)

    def next_value(self, out: tuple[Tensor, Tensor], masks: None, critic: Critic, obs: Tensor,
                   temperature: Any = None) -> tuple[Tensor, Tensor]:
        action, log_prob = self.distribution(out).rsample()
        return self.critic_values(critic, obs, action).min(0).values, -log_prob

    def actor_objective(self, out: tuple[Tensor, Tensor], masks: None, critic: Critic, obs: Tensor,
                        temperature: Any = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        action, log_prob = self.distribution(out).rsample()
        return self.critic_values(critic, obs, action).min(0).values, -log_prob, {}

    def act(self, out: tuple[Tensor, Tensor], masks: None, deterministic: bool) -> Tensor:
        dist = self.distribution(out)
        return dist.mode() if deterministic else dist.sample()

    def to_env(self, action: Tensor) -> np.ndarray:
        unit = action.cpu().numpy().astype(np.float64)
        return (self.env_low + (unit + 1) * self.env_half).astype(self.space.dtype)

    def from_env(self, env_action: np.ndarray) -> np.ndarray:
        a = np.asarray(env_action, dtype=np.float64).reshape(-1, self.dim)
        return np.clip((a - self.env_low) / self.env_half - 1, -1, 1).astype(np.float32)

    @property
    def stored_shape(self) -> tuple[tuple[int, ...], torch.dtype]:
        return (self.dim,), torch.float32


__all__ = ["CRITIC_FORMS", "ESTIMATORS", "EXACT_JOINT_MAX", "GaussianHead", "GumbelHead", "pairwise_q"]
