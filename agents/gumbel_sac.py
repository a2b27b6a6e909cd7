"""GumbelSAC: soft actor-critic for Discrete and MultiDiscrete actions, trained through its sample.

The actor draws an exact categorical action by the Gumbel-max trick and differentiates through
a Gumbel-Softmax relaxation of it (Jang et al. 2017; Maddison et al. 2017). The critics take the
one-hot action, so the actor's gradient is pathwise: dQ(s, y)/dy times dy/dlogits, with dy/dlogits
given by the chosen estimator (``agents.distributions.ESTIMATORS``). ``estimator="exact"`` is the
expectation over all actions of discrete SAC (Christodoulou 2019): the reference.

Critic forms (``critic``):

* ``"heads"``: Q(s, y) = sum_f q_f(s) . y_f, one output per choice of every factor. Linear in the
  one-hot, so its value at a relaxed y is exactly the expectation under y, and the soft value of
  s' is computed exactly. For a Discrete space this is the usual per-action head; for
  MultiDiscrete it is a factorized critic that cannot represent interactions between factors.
* ``"dueling"``: the heads critic with the dueling split (Wang et al. 2016): outputs V(s) and an
  advantage per choice, Q(s, y) = V(s) + sum_f (A_f(s) - mean A_f(s)) . y_f. The same function
  class, but every transition trains V and every advantage of its factors (the mean moves them
  all), where a heads critic's last layer learns an action's output only from transitions that
  took it; so the small gaps between actions are learned as such, not as the difference of two
  large, separately trained outputs. Not the default: CartPole-v1 dipped on 1 of 6 seeds and one
  Acrobot-v1 seed of 5 never reached the goal (benchmarks/README.md, "The dueling critic").
* ``"joint"``: Q(s, y) = MLP([s, y_1, ..., y_F]), any function of the joint action. Trained only
  at one-hot vertices, so its slope inside the simplex is unconstrained (see FINDINGS.md). With at
  most :data:`EXACT_JOINT_MAX` joint actions, ``"exact"`` and the diagnostic enumerate them.
* ``"pairwise"`` (MultiDiscrete with >= 2 factors): a factorization machine over the factors'
  one-hots (Rendle 2010), main effects plus every pair of factors through a state-dependent
  rank-``pairwise_rank`` matrix (:func:`pairwise_q`). Multilinear in (y_1, ..., y_F), so its
  value at the probabilities is the exact expectation under the product policy: ``"exact"`` and
  the diagnostic cost one critic evaluation on any MultiDiscrete size, and its slope inside the
  simplex is fixed by its values at the vertices (unlike the joint critic's).

Action masks (sb3-contrib's ``action_masks()``, flat per copy): honoured when acting (training,
``predict(action_masks=...)`` and evaluation through :meth:`GumbelSAC._eval_masks`), in the actor
update (the stored state's mask) and in the Bellman target (the next state's mask).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor

from agents import losses
from agents.buffer import Batch
from agents.core import SoftActorCritic, _is_number
from agents.distributions import ESTIMATORS, GumbelSoftmax
from agents.networks import (
    CategoricalPolicy,
    CriticEnsemble,
    ensemble_backward,
    ensemble_forward,
    mlp_backward,
    mlp_forward,
)

ESTIMATOR_CHOICES = ("exact", *ESTIMATORS)
CRITIC_CHOICES = ("auto", "heads", "dueling", "joint", "pairwise")
EXACT_JOINT_MAX = 256
"""Joint critic: the expectation over actions ("exact") enumerates up to this many joint actions."""
SCHEDULES = ("constant", "exponential", "linear")


def gumbel_temperature(step: int, start: float, schedule: str = "constant", minimum: float = 0.5,
                       rate: float = 1e-4, anneal_steps: int = 100_000) -> float:
    """Gumbel-Softmax temperature at an env step, a pure function of the step (so resumable).

    * ``constant``: ``start``.
    * ``exponential``: ``max(minimum, start * exp(-rate * step))`` (Jang et al. 2017, sec. 4.1).
    * ``linear``: from ``start`` to ``minimum`` over ``anneal_steps``, then ``minimum``.
    """
    if schedule == "constant":
        return start
    if schedule == "exponential":
        return max(minimum, start * math.exp(-rate * step))
    if schedule == "linear":
        return start + (minimum - start) * min(1.0, step / anneal_steps)
    raise ValueError(f"unknown temperature schedule {schedule!r}; choose one of {SCHEDULES}")


def pairwise_q(out: Tensor, y: Tensor, membership: Tensor) -> Tensor:
    """The pairwise critic: a factorization machine over per-factor one-hots (Rendle 2010).

    With F factors, y_f the (relaxed) one-hot of factor f, u_f(s) and V_f(s) (K_f x R) read from
    the critic trunk's output::

        Q(s, y) = sum_f u_f . y_f + 1/2 (||sum_f z_f||^2 - sum_f ||z_f||^2),   z_f = V_f^T y_f
                = sum_f u_f . y_f + sum_{f<g} y_f^T V_f V_g^T y_g

    Every pair of distinct factors interacts through a rank-R matrix; no factor with itself. The
    self term y_f^T V_f V_f^T y_f would add nothing at a vertex (it is a function of a_f alone,
    which u_f already spans) and would make Q quadratic in y_f off the vertices.

    Exact expectation: each z_f is linear in y_f and every product z_f . z_g joins two different
    factors, so Q is multilinear, affine in each y_f with the others fixed. For a product policy
    pi = prod_f p_f, E_pi[Q(s, y)] = sum_f u_f . E[y_f] + sum_{f<g} E[y_f]^T V_f V_g^T E[y_g]
    (independence factorizes each cross moment) = Q(s, p_1, ..., p_F). One evaluation at the
    probabilities, differentiable in them, replaces the sum over prod_f K_f joint actions. The same
    multilinearity makes the slope inside the simplex the difference of vertex values:
    dQ/dy_f . (e_a - e_b) = Q(.., a_f = a, ..) - Q(.., a_f = b, ..).

    Args:
        out: trunk output ``(N, B, T + T * R)``, T = sum_f K_f: u, then V row-major (T, R).
        y: flat one-hots, relaxed samples or probabilities ``(B, T)``.
        membership: ``(T, F)``, 1 where choice t belongs to factor f.

    Returns:
        ``(N, B)``: each critic's Q.
    """
    total = y.shape[-1]
    u, v = out[..., :total], out[..., total:].unflatten(-1, (total, -1))
    linear = (u * y).sum(-1)
    z = (v * y.unsqueeze(-1)).transpose(-1, -2) @ membership.to(v.dtype)  # (N, B, R, F): z_f per column
    return linear + 0.5 * (z.sum(-1).square().sum(-1) - z.square().sum((-1, -2)))


def vector_env_masks(venv: Any) -> np.ndarray | None:
    """Every copy's action mask in sb3-contrib's flat layout, ``(n_envs, sum(nvec))`` bool, from
    the envs' ``action_masks()``; None when the env has no such method. Gymnasium's vector
    wrappers (RecordEpisodeStatistics, NormalizeObservation) do not forward ``call``, so it goes
    to the unwrapped vector env."""
    try:
        masks = getattr(venv, "unwrapped", venv).call("action_masks")
    except (AttributeError, NotImplementedError):
        return None
    return np.stack([np.asarray(m, dtype=bool).reshape(-1) for m in masks])


class GumbelSAC(SoftActorCritic):
    """Soft actor-critic for Discrete and MultiDiscrete action spaces, through Gumbel-Softmax.

    Args (beyond :class:`agents.core.SoftActorCritic`'s):
        estimator: actor gradient: ``"st"`` straight-through (default), ``"soft"``,
            ``"gumbel-rao"``, ``"reinmax"``, or ``"exact"`` (needs ``critic="heads"``, ``"dueling"`` or
            ``"pairwise"``, or a joint critic over at most :data:`EXACT_JOINT_MAX` joint actions).
        temperature: Gumbel-Softmax temperature of the relaxation, at the start of the schedule.
            Not the SAC entropy weight (that is ``alpha``).
        temperature_schedule: ``"constant"``, ``"exponential"`` or ``"linear"``.
        temperature_min: floor of the annealed temperature.
        temperature_rate: exponential decay rate per env step.
        temperature_anneal_steps: env steps of the linear schedule.
        gumbel_rao_k: conditional Gumbel draws averaged by ``"gumbel-rao"``.
        diagnostic_interval: every this many actor updates, log ``grad/estimator_cosine``, the cosine
            between the actor's gradient and the exact-expectation gradient on the same batch
            (wherever ``"exact"`` is possible; one extra actor forward/backward; 0 turns it off).
        critic: ``"heads"``, ``"dueling"``, ``"joint"``, ``"pairwise"`` (MultiDiscrete only), or ``"auto"`` (heads
            for Discrete, joint for MultiDiscrete).
        pairwise_rank: R of the pairwise critic's interaction matrices V_f V_g^T. A pair's
            interaction has rank at most min(K_f, K_g); R = sum over interacting pairs of that
            rank always suffices (one block of dimensions per pair).
        target_entropy_scale: default target entropy is this times the maximum, sum_f log n_f.
        manual_backward: run the update with the MLPs' gradients written out
            (:meth:`_manual_train_step`) instead of autograd: the same maths, held equal to the
            autograd path in float64 by the tests. ``relu_subgradient`` other than 0 always takes autograd.
        munchausen: m in [0, 1): add m * alpha * clip(log pi(a|s), munchausen_clip, 0) of the stored
            action to each critic target's reward (Munchausen RL, Vieillard et al. 2020). With pi
            near softmax(Q / alpha), alpha * log pi(a|s) is the soft advantage of a, so the critics'
            fixed point widens every action gap by up to 1 / (1 - m) (advantage learning, Bellemare
            et al. 2016) and the greedy action stops turning on critic noise in near-tie states.
            The log-policy of the current actor, without gradient; for a MultiDiscrete action, of the
            joint action (summed over factors). 0 (default) is plain SAC: 0.9 dipped on 3 of 6
            CartPole-v1 seeds where the defaults dip on none (benchmarks/README.md, "Munchausen
            targets"). Not with ``bound_targets``: the term moves the values below what the rewards
            alone bound.
        munchausen_clip: lower clip l0 < 0 of log pi in the Munchausen term (Vieillard et al. use
            -1), so an action the policy has all but ruled out does not send its target to -inf.
    """

    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = (spaces.Discrete, spaces.MultiDiscrete)
    other_agent: ClassVar[str] = "GaussianSAC for Box action spaces"
    defaults: ClassVar[dict[str, Any]] = {
        **SoftActorCritic.defaults,
        # Faster targets than SAC's usual 0.005: on CartPole-v1 (2 seeds, 20k steps) 0.005 reached
        # eval 500 then collapsed or never got there, for the exact estimator too; 0.02 reached it
        # at 7k on both seeds and held (benchmarks/README.md). Credit for a failure ~100 steps ahead
        # must pass through ~100 target refreshes, and 0.005 refreshes every ~200 updates.
        "target_update_rate": 0.02,
        # The entropy weight on the reward's scale (benchmarks/README.md, "Picking the defaults"):
        # alpha from the warm-up rewards, a controller 10x faster than the actor's lr, and critic
        # targets without the entropy bonus. Over 5 seeds each against alpha = 1 / 3e-4 / soft
        # targets: Acrobot-v1 reaches -100 at a median of 8k steps against 18k (every seed sooner),
        # Combinatorial-v0 reaches 8 on 5/5 seeds by 12k against 0/5, CartPole-v1 the same 5/5
        # at 475 (median 8k against 7k). Each of the three alone failed on Combinatorial-v0.
        "alpha": "auto", "alpha_learning_rate": 3e-3, "backup_entropy": False,
        # The actor and alpha step on every 2nd update (TD3's delayed policy updates): 1.26x the
        # updates per second (CartPole sizes, one thread), learning level within the noise on all
        # three envs (benchmarks/README.md, "policy_delay 2"). CartPole-v1, 10 seeds x 50k: first
        # 475 at a median of 9k (every update: 7.5k; permutation p = 0.15), 2/10 seeds below 400
        # after it (every update: 5/10; Fisher p = 0.35); 4/15 with seeds 10-14 added. Acrobot-v1
        # -100 at a median of 10k (8k), Combinatorial-v0 5/5 at 8 by 12k (IQM 8.4 against 8.5).
        "policy_delay": 2,
        # Straight-through: over 5 seeds on CartPole-v1, Acrobot-v1 and Combinatorial-v0, neither
        # gumbel-rao (K=8) nor reinmax nor soft nor exact beat it on any of the three (every final
        # CI overlaps), and it is the cheapest (gumbel-rao costs ~2x per actor step). Temperature
        # 0.5 against 1.0 at these defaults: every CI overlapping on all three envs, so 1.0 stays.
        "estimator": "st", "temperature": 1.0, "temperature_schedule": "constant", "temperature_min": 0.5,
        "temperature_rate": 1e-4, "temperature_anneal_steps": 100_000, "gumbel_rao_k": 8, "critic": "auto",
        "target_entropy_scale": 0.5, "diagnostic_interval": 1000,
        # R of the pairwise critic (sum(nvec) * (1 + R) outputs per critic). A pair of 4-choice
        # factors has rank <= 3 beyond its additive part, so 16 holds five such pairs in disjoint
        # blocks; Combinatorial-v0's ring of eight is exact at 24, which its pairwise config sets.
        "pairwise_rank": 16,
        # The update with the three MLPs' backward passes written out and one policy pass over
        # [next_obs; obs] (issue 7): the same maths in fewer ops. False takes the autograd path.
        "manual_backward": True,
        "munchausen": 0.0, "munchausen_clip": -1.0,
    }

    @classmethod
    def validate_hyperparameters(cls, hp: dict[str, Any]) -> None:
        super().validate_hyperparameters(hp)
        if hp["estimator"] not in ESTIMATOR_CHOICES:
            raise ValueError(f"estimator={hp['estimator']!r} is not one of {ESTIMATOR_CHOICES}")
        if hp["temperature_schedule"] not in SCHEDULES:
            raise ValueError(f"temperature_schedule={hp['temperature_schedule']!r} is not one of {SCHEDULES}")
        if not hp["temperature"] > 0 or not hp["temperature_min"] > 0:
            raise ValueError(f"temperature and temperature_min must be > 0; got {hp['temperature']}, "
                             f"{hp['temperature_min']}")
        if hp["estimator"] == "reinmax" and min(hp["temperature"], hp["temperature_min"]
                                                if hp["temperature_schedule"] != "constant" else 1.0) < 1.0:
            raise ValueError("estimator='reinmax' needs temperature >= 1 throughout (Liu et al. 2023); "
                             f"got temperature={hp['temperature']}, temperature_min={hp['temperature_min']}")
        if hp["critic"] not in CRITIC_CHOICES:
            raise ValueError(f"critic={hp['critic']!r} is not one of {CRITIC_CHOICES}")
        if int(hp["pairwise_rank"]) < 1:
            raise ValueError(f"pairwise_rank must be >= 1; got {hp['pairwise_rank']}")
        if int(hp["gumbel_rao_k"]) < 1:
            raise ValueError(f"gumbel_rao_k must be >= 1; got {hp['gumbel_rao_k']}")
        if int(hp["diagnostic_interval"]) < 0:
            raise ValueError(f"diagnostic_interval must be >= 0 (0 = off); got {hp['diagnostic_interval']}")
        if not isinstance(hp["manual_backward"], bool):
            raise ValueError(f"manual_backward={hp['manual_backward']!r} must be true or false")
        if not 0 <= hp["target_entropy_scale"] <= 1:
            raise ValueError(f"target_entropy_scale must be in [0, 1]; got {hp['target_entropy_scale']}")
        m = hp["munchausen"]
        if not _is_number(m) or not 0 <= m < 1:
            raise ValueError(f"munchausen={m!r} must be a number in [0, 1) (0 = off; Vieillard et al. 2020 use 0.9)")
        if not _is_number(hp["munchausen_clip"]) or not hp["munchausen_clip"] < 0:
            raise ValueError(f"munchausen_clip={hp['munchausen_clip']!r} must be a number < 0 (the lowest log pi "
                             "the Munchausen term uses; Vieillard et al. 2020 use -1)")
        if m and hp["bound_targets"]:
            raise ValueError(f"munchausen={m} and bound_targets=true do not combine: the Munchausen term lowers "
                             "the values below the range the rewards bound. Set one of them off.")

    # ---------------------------------------------------------------- networks
    def _build(self) -> None:
        hp = self.hparams
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            self.nvec, self.start = [int(space.n)], np.array([int(space.start)])
        else:
            if space.nvec.ndim != 1:
                raise TypeError(f"GumbelSAC needs a 1-D MultiDiscrete; got nvec of shape {space.nvec.shape}. "
                                "Flatten the action space first.")
            self.nvec, self.start = [int(n) for n in space.nvec], np.asarray(space.start, dtype=np.int64)
        self.critic_kind = hp["critic"] if hp["critic"] != "auto" else (
            "heads" if isinstance(space, spaces.Discrete) else "joint")
        if self.critic_kind == "pairwise" and len(self.nvec) < 2:
            # Refused rather than reduced to heads: it would be heads with R * n unused outputs,
            # and a run labelled "pairwise" that is not one would mislead any comparison.
            raise ValueError(f"critic='pairwise' models interactions between the factors of a MultiDiscrete "
                             f"action; {space} has one factor, so no pairs. Use critic='heads' (the same "
                             "function without the unused outputs).")
        n_joint = math.prod(self.nvec)
        # Every joint action as a row of choice indices, for the exact expectation under a joint critic.
        self.joint_actions = (torch.cartesian_prod(*(torch.arange(n) for n in self.nvec)).reshape(n_joint, -1)
                              .to(self.device) if self.critic_kind == "joint" and n_joint <= EXACT_JOINT_MAX else None)
        self.has_exact = self.critic_kind in ("heads", "dueling", "pairwise") or self.joint_actions is not None
        if hp["estimator"] == "exact" and not self.has_exact:
            raise ValueError(f"estimator='exact' sums over every action: with a joint critic that is prod(nvec) = "
                             f"{n_joint:,} terms (at most {EXACT_JOINT_MAX}). Use critic='heads' or 'pairwise' "
                             "(closed form), or a Gumbel estimator such as 'st'.")
        width = max(self.nvec)
        # Positions of the real choices in the padded (factors * width) layout.
        self.flat_index = torch.tensor([f * width + k for f, n in enumerate(self.nvec) for k in range(n)],
                                       device=self.device)
        self.ragged = any(n != width for n in self.nvec)
        total = sum(self.nvec)
        self.policy = CategoricalPolicy(self.obs_dim, self.nvec, hp["net_arch"], hp["relu_subgradient"]).to(self.device)
        # Column f marks factor f's choices in the flat layout: pairwise_q sums V_f^T y_f with it.
        self.factor_membership = torch.block_diag(*(torch.ones(n, 1) for n in self.nvec)).to(self.device)
        in_dim, out_dim = {"heads": (self.obs_dim, total), "dueling": (self.obs_dim, 1 + total),
                           "joint": (self.obs_dim + total, 1),
                           "pairwise": (self.obs_dim, total * (1 + int(hp["pairwise_rank"])))}[self.critic_kind]
        self.critic = CriticEnsemble(hp["n_critics"], in_dim, hp["net_arch"], out_dim, hp["relu_subgradient"],
                                     hp["critic_layer_norm"])
        self.critic.to(self.device)

    def _default_target_entropy(self) -> float:
        return self.hparams["target_entropy_scale"] * self._max_entropy()

    def _max_entropy(self) -> float:
        return sum(math.log(n) for n in self.nvec)  # uniform over every factor

    def current_temperature(self) -> float:
        hp = self.hparams
        return gumbel_temperature(self.num_timesteps, hp["temperature"], hp["temperature_schedule"],
                                  hp["temperature_min"], hp["temperature_rate"], hp["temperature_anneal_steps"])

    # ---------------------------------------------------------------- action layouts
    def _flat(self, y: Tensor) -> Tensor:
        """(B, factors, width) -> (B, sum(nvec)): drop the padding of ragged factors."""
        y = y.reshape(y.shape[0], -1)
        return y.index_select(1, self.flat_index) if self.ragged else y

    def _one_hot(self, actions: Tensor) -> Tensor:
        return self._flat(F.one_hot(actions.long(), max(self.nvec)).float())

    def distribution(self, obs: Tensor, masks: Tensor | None = None) -> GumbelSoftmax:
        return self._distribution_from(self.policy.net(obs), masks)

    def _distribution_from(self, net_out: Tensor, masks: Tensor | None = None) -> GumbelSoftmax:
        """The policy's distribution from its MLP's output ``(batch, factors * width)``."""
        return GumbelSoftmax(self.policy.logits_from(net_out), self.current_temperature(), masks, self.nvec)

    def _act(self, obs: Tensor, deterministic: bool, masks: Tensor | None) -> Tensor:
        dist = self.distribution(obs, masks)
        return dist.mode() if deterministic else dist.sample()

    def _env_action(self, action: Tensor) -> np.ndarray:
        a = action.cpu().numpy() + self.start
        return a[:, 0] if isinstance(self.action_space, spaces.Discrete) else a

    def _stored_action(self, env_action: np.ndarray) -> np.ndarray:
        a = np.asarray(env_action).reshape(-1, len(self.nvec))
        return a - self.start

    def _action_shape(self) -> tuple[tuple[int, ...], torch.dtype]:
        return (len(self.nvec),), torch.long

    # ---------------------------------------------------------------- action masks (sb3-contrib)
    def _mask_size(self) -> int | None:
        return sum(self.nvec) if self._env_has_masks() else None

    def _env_has_masks(self) -> bool:
        return self.env is not None and vector_env_masks(self.env) is not None

    def _env_masks(self) -> np.ndarray | None:
        if self.buffer is None or self.buffer.masks is None:
            return None
        return vector_env_masks(self.env)

    def _eval_masks(self, venv: Any) -> np.ndarray | None:
        """The masks ``experiments.evaluation.evaluate`` passes to :meth:`predict`."""
        return vector_env_masks(venv)

    def _stored_next_masks(self, next_masks: np.ndarray | None, info: dict[str, Any],
                           done: np.ndarray) -> np.ndarray | None:
        # SAME_STEP autoreset: a finished copy already shows its reset state, so its mask is the
        # reset state's. The final state's comes from info["final_info"]["action_mask"] (Gymnasium's
        # convention, as Taxi's info["action_mask"]); an env that does not report it gets all-True.
        # A terminated transition never bootstraps, so that matters only for truncations.
        if next_masks is None or not done.any():
            return next_masks
        final = info.get("final_info", {})
        reported = final.get("_action_mask", np.zeros(len(done), dtype=bool))
        out = next_masks.copy()
        for i in np.flatnonzero(done):
            out[i] = np.asarray(final["action_mask"][i], dtype=bool).reshape(-1) if reported[i] else True
        return out

    def _random_action(self, masks: np.ndarray | None) -> np.ndarray:
        if masks is None:
            return super()._random_action(masks)
        # Gymnasium batches a MultiDiscrete space into a Box, whose sample() takes no mask, so draw
        # here: per copy and factor, uniform over the allowed choices, from the global numpy RNG
        # (which checkpoints save, so a resumed warm-up draws the same actions).
        blocks = np.split(masks, np.cumsum(self.nvec)[:-1], axis=1)
        u = np.random.random((len(masks), len(blocks)))
        picks = [np.argmax(b.cumsum(1) > np.floor(u[:, f] * b.sum(1))[:, None], axis=1) for f, b in enumerate(blocks)]
        return self._env_action(torch.as_tensor(np.stack(picks, 1)))

    # ---------------------------------------------------------------- the three losses' pieces
    def _q(self, critic: CriticEnsemble, obs: Tensor, y_flat: Tensor, detach_params: bool = False) -> Tensor:
        """Q of a (possibly relaxed) flat one-hot action for every critic: (N, B)."""
        return self._head_q(critic(self._critic_input(obs, y_flat), detach_params), y_flat)

    def _critic_input(self, obs: Tensor, y_flat: Tensor) -> Tensor:
        """What the critic MLP reads: the observation, and for the joint critic the action too."""
        return torch.cat([obs, y_flat], dim=-1) if self.critic_kind == "joint" else obs

    def _head_q(self, out: Tensor, y_flat: Tensor) -> Tensor:
        """The critic MLP's output ``(N, B, out)`` and the action -> Q ``(N, B)`` (see "Critic forms")."""
        if self.critic_kind in ("heads", "dueling"):
            return (self._choice_values(out) * y_flat).sum(-1)
        if self.critic_kind == "pairwise":
            return pairwise_q(out, y_flat, self.factor_membership)
        return out.squeeze(-1)

    def _choice_values(self, out: Tensor) -> Tensor:
        """Heads and dueling critics: the MLP's output -> one value per choice ``(..., sum(nvec))``,
        whose dot product with the flat one-hot is Q. Dueling: A_f - mean A_f plus V / F per
        factor, so a y with each factor's entries summing to 1 gets V + sum_f (A_f - mean A_f) . y_f."""
        if self.critic_kind != "dueling":
            return out
        membership = self.factor_membership.to(out.dtype)
        value, adv = out[..., :1], out[..., 1:]
        mean = (adv @ membership) / membership.sum(0)  # (..., factors)
        return adv - mean @ membership.T + value / len(self.nvec)

    def _critic_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        return self._q(self.critic, obs, self._one_hot(actions))

    def _next_value(self, next_obs: Tensor, next_masks: Tensor | None, alpha: Tensor,
                    dist: GumbelSoftmax | None = None, critic: Any = None) -> Tensor:
        """Soft value of s' under the target critics (``critic``: anything called like a
        CriticEnsemble; ``dist``: the policy at s', if already computed)."""
        dist = self.distribution(next_obs, next_masks) if dist is None else dist
        critic = self.critic_target if critic is None else critic
        if self.critic_kind != "joint":
            # The soft value in closed form, with the same pessimism the exact actor objective uses
            # (see _expected_q), so the target values the policy the way the actor is trained to.
            return self._expected_q(next_obs, dist, critic) + alpha * dist.entropy()
        a = dist.sample()
        return self._q(critic, next_obs, self._one_hot(a)).min(0).values + alpha * dist.entropy()

    def _expected_q(self, obs: Tensor, dist: GumbelSoftmax, critic: CriticEnsemble | None = None) -> Tensor:
        """The policy's value under the critic ensemble (default ``self.critic``), in closed form.
        Differentiable in the logits only.

        * heads: sum over choices of p times min_i q_i per choice (Christodoulou 2019, with the
          min per choice as in CleanRL's discrete SAC); exactly E_pi[min_i Q_i] for one factor.
        * joint (small): E_pi[min_i Q_i(s, a)] by enumerating the joint actions.
        * pairwise: min_i E_pi[Q_i(s, a)] = min_i Q_i(s, p), one evaluation at the probabilities
          (:func:`pairwise_q`). E_pi[min_i Q_i] has no closed form: the min of two multilinear
          functions is not multilinear. It is >= E_pi[min_i Q_i] (less pessimistic, as
          E_pi[Q_j] >= E_pi[min_i Q_i] for every j), but it is still the clipped double-Q of TD3
          (Fujimoto et al. 2018) applied to the policy's value, and it is deterministic where the
          sampled target of the joint critic carries the variance of one joint draw.
        """
        critic = self.critic if critic is None else critic
        if self.critic_kind in ("heads", "dueling"):
            # Parameters detached: the values enter as constants, so no graph is built for them.
            values = self._choice_values(critic(obs, detach_params=True))
            return (self._flat(dist.probs) * values.min(0).values).sum(-1)
        if self.critic_kind == "pairwise":
            return self._q(critic, obs, self._flat(dist.probs), detach_params=True).min(0).values
        joint, b = self.joint_actions, obs.shape[0]
        with torch.no_grad():
            q = self._q(critic, obs.repeat_interleave(len(joint), 0), self._one_hot(joint).repeat(b, 1))
            q = q.min(0).values.view(b, len(joint))
        factor = torch.arange(len(self.nvec), device=obs.device)
        probs = dist.probs[:, factor, joint].prod(-1)  # (B, joint actions): factors are independent
        return (probs * q).sum(-1)

    def _policy_q(self, obs: Tensor, dist: GumbelSoftmax, estimator: str | None = None,
                  **estimator_kwargs: Any) -> Tensor:
        """min_i Q_i(s, y) with y the estimator's differentiable sample of ``dist``, or E_pi of it
        for ``"exact"``: the actor's objective. ``estimator`` defaults to the agent's; the gradient
        study (``experiments/study.py``) calls this with others, so it measures the agent's code."""
        estimator = self.hparams["estimator"] if estimator is None else estimator
        if estimator == "exact":
            return self._expected_q(obs, dist)
        if estimator == "gumbel-rao":
            estimator_kwargs.setdefault("k", int(self.hparams["gumbel_rao_k"]))
        y = self._flat(dist.rsample(estimator, **estimator_kwargs))
        return self._q(self.critic, obs, y, detach_params=True).min(0).values

    def _actor_objective(self, obs: Tensor, masks: Tensor | None = None,
                         dist: GumbelSoftmax | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        dist = self.distribution(obs, masks) if dist is None else dist
        info = {"train/gumbel_temperature": torch.tensor(dist.temperature)}
        return self._policy_q(obs, dist), dist.entropy(), info

    def _actor_diagnostics(self, obs: Tensor, alpha: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
        """Is the estimator pointing the right way? Cosine between the actor gradient just computed
        and the exact-expectation gradient of the same loss on the same batch (issue 6)."""
        interval = int(self.hparams["diagnostic_interval"])
        if interval == 0 or self._actor_updates() % interval or not self.has_exact \
                or self.hparams["estimator"] == "exact":
            return {}
        params = [p for p in self.policy.parameters() if p.grad is not None]
        dist = self.distribution(obs, masks)
        loss, _ = losses.actor_loss(self._expected_q(obs, dist), dist.entropy(), alpha)
        exact = torch.autograd.grad(loss, params)
        flat = lambda gs: torch.cat([g.reshape(-1) for g in gs])  # noqa: E731
        return {"grad/estimator_cosine": F.cosine_similarity(flat(p.grad for p in params), flat(exact), dim=0)}

    def _target_rewards(self, batch: Batch, alpha: Tensor,
                        policy_at_obs: Callable[[], GumbelSoftmax] | None = None) -> Tensor:
        """The reward the critic target uses: the batch's, plus the Munchausen term when
        ``munchausen`` is on (see the class docstring). ``policy_at_obs``: builds the policy at
        ``batch.obs`` from a forward pass already made (the hand-written update's)."""
        hp = self.hparams
        if not hp["munchausen"]:
            return batch.rewards
        dist = policy_at_obs() if policy_at_obs is not None else self.distribution(batch.obs, batch.masks)
        log_pi = dist.log_prob(batch.actions).clamp(hp["munchausen_clip"], 0.0)
        return batch.rewards + hp["munchausen"] * alpha * log_pi

    # ---------------------------------------------------------------- the update, by hand
    def train_step(self) -> dict[str, Tensor]:
        if self.hparams["manual_backward"] and self.hparams["relu_subgradient"] == 0.0:
            return self._manual_train_step()
        return super().train_step()

    def _manual_train_step(self) -> dict[str, Tensor]:
        """:meth:`SoftActorCritic.train_step` with the three MLPs' gradients written out.

        The policy, the critic ensemble and its target run as plain matmuls
        (:func:`~agents.networks.mlp_forward`, :func:`~agents.networks.ensemble_forward`) and
        their weight gradients come from the matching ``*_backward``, with no graph. What lies
        between the MLPs (the critic form's head, the estimator, the entropy: a few small ops on
        ``(batch, sum(nvec))`` tensors) keeps autograd on leaves cut at the MLPs' outputs, so every
        critic form, estimator and mask takes this path with the code the autograd path runs. The
        policy runs once over [next_obs; obs]: its weights do not change between the target and
        the actor step. Same losses and order as the autograd path (critic step, the actor
        against the stepped critic, alpha, Polyak) and the same random draws in the same order;
        the tests hold the two equal in float64 (issue 7: at CartPole's sizes most of an
        autograd update was bookkeeping around a few matmuls).
        """
        hp = self.hparams
        if self.num_updates == 0 and hp["alpha"] == "auto":
            self._calibrate_alpha()
        batch = self._sample()
        p_w, p_b, c_w, c_b, t_w, t_b = self._weight_lists()
        alpha = self.log_alpha.detach().exp()
        n_b = batch.obs.shape[0]
        actor_turn = self._actor_turn()
        with torch.no_grad():
            both = actor_turn or bool(hp["munchausen"])
            p_acts = mlp_forward(torch.cat([batch.next_obs, batch.obs]) if both else batch.next_obs, p_w, p_b)
            next_v = self._next_value(batch.next_obs, batch.next_masks,
                                      alpha if hp["backup_entropy"] else torch.zeros_like(alpha),
                                      dist=self._distribution_from(p_acts[-1][:n_b], batch.next_masks),
                                      critic=_EnsembleForward(t_w, t_b, hp["critic_layer_norm"]))
            rewards = self._target_rewards(batch, alpha, lambda: self._distribution_from(p_acts[-1][n_b:],
                                                                                       batch.masks))
            target = losses.soft_bellman_target(rewards, batch.terminated, next_v, self._discount(batch),
                                                self._target_bounds())
            y = self._one_hot(batch.actions)
            norms: list[Tensor] = []
            c_acts = ensemble_forward(self._critic_input(batch.obs, y), c_w, c_b, hp["critic_layer_norm"], norms)
        out = c_acts[-1].requires_grad_()
        q = self._head_q(out, y)
        c_loss, info = losses.critic_loss(q, target, hp["huber_delta"], batch.weights)
        self._update_priorities(batch, q, target)
        (g_out,) = torch.autograd.grad(c_loss, out)
        with torch.no_grad():
            gw, gb, _ = ensemble_backward(c_acts, c_w, g_out, norms=norms)
        self._set_grads([*c_w, *c_b], [*gw, *gb])
        info["grad/critic_norm"] = losses.grad_norm(self.critic.parameters())
        losses.adam_step(self.critic_optimizer)

        if actor_turn:
            head = p_acts[-1][n_b:].requires_grad_()
            dist = self._distribution_from(head, batch.masks)
            q, entropy, a_info = self._actor_objective(batch.obs, batch.masks, dist)
            a_loss, a_info2 = losses.actor_loss(q, entropy, alpha)
            info.update(a_info)
            info.update(a_info2)
            if hp["learn_alpha"]:
                t_loss, t_info = losses.temperature_loss(self.log_alpha, entropy, self.target_entropy)
                info.update(t_info)
                g_head, self.log_alpha.grad = torch.autograd.grad(a_loss + t_loss, [head, self.log_alpha])
            else:
                (g_head,) = torch.autograd.grad(a_loss, head)
                info["train/alpha"] = alpha
            with torch.no_grad():
                gw, gb = mlp_backward([a[n_b:] for a in p_acts], p_w, g_head)
            self._set_grads([*p_w, *p_b], [*gw, *gb])
            self._step_actor(info, batch, alpha)
        return self._end_update(info)

    # ---------------------------------------------------------------- save/load
    def _extra_state(self) -> dict[str, Any]:
        return {"gumbel_temperature": self.current_temperature()}


class _EnsembleForward:
    """A critic ensemble's forward pass from its weight lists, called like a
    :class:`~agents.networks.CriticEnsemble` (no graph): the target critics in the hand-written update."""

    def __init__(self, weights: list[Tensor], biases: list[Tensor], layer_norm: bool = False) -> None:
        self.weights, self.biases, self.layer_norm = weights, biases, layer_norm

    def __call__(self, x: Tensor, detach_params: bool = False) -> Tensor:
        return ensemble_forward(x, self.weights, self.biases, self.layer_norm)[-1]
