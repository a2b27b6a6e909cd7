"""GumbelSAC: soft actor-critic for Discrete and MultiDiscrete actions, trained through its sample.

The actor draws an exact categorical action by the Gumbel-max trick and differentiates through a
Gumbel-Softmax relaxation of it (Jang et al. 2017; Maddison et al. 2017). The critics take the
one-hot action, so the actor's gradient is pathwise: dQ(s, y)/dy times dy/dlogits, with dy/dlogits
given by the chosen estimator (``agents.distributions.ESTIMATORS``). ``estimator="exact"`` is the
expectation over all actions of discrete SAC (Christodoulou 2019): the reference, and the default
with the pairwise critic, whose expectation is one evaluation at the probabilities. The critic forms
and the estimators live in the head, :class:`agents.heads.GumbelHead`.

Action masks (sb3-contrib's ``action_masks()``, flat per copy) are honoured when acting (training,
``predict(action_masks=...)`` and evaluation), in the actor update (the stored state's mask) and in
the Bellman target (the next state's mask).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from gymnasium import spaces
from torch import Tensor, nn

from agents.buffer import Batch
from agents.distributions import ESTIMATORS
from agents.heads import CRITIC_FORMS, GumbelHead, pairwise_q
from agents.hyperparameters import saved_critic_form
from agents.networks import CategoricalPolicy
from agents.sac import SoftActorCritic
from agents.update import estimator_cosine

ESTIMATOR_CHOICES = ("exact", *ESTIMATORS)
CRITIC_CHOICES = ("auto", *CRITIC_FORMS)
SCHEDULES = ("constant", "exponential", "linear")

__all__ = ["CRITIC_CHOICES", "ESTIMATOR_CHOICES", "GumbelSAC", "gumbel_temperature", "pairwise_q"]


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


class GumbelSAC(SoftActorCritic):
    """Soft actor-critic for Discrete and MultiDiscrete action spaces, through Gumbel-Softmax.

    Args (beyond :class:`agents.sac.SoftActorCritic`'s):
        estimator: actor gradient: ``"st"`` straight-through, ``"soft"``, ``"gumbel-rao"``,
            ``"reinmax"``, ``"exact"`` (heads or pairwise critics, or a joint critic over at most
            256 joint actions), or ``"auto"`` (default: ``"exact"`` with the pairwise critic, ``"st"``
            with the others). The agent's ``hparams`` and the files it saves hold the one it chose.
        temperature: Gumbel-Softmax temperature of the relaxation, at the start of the schedule.
            Not the SAC entropy weight (that is ``alpha``).
        temperature_schedule: ``"constant"``, ``"exponential"`` or ``"linear"``.
        temperature_min: floor of the annealed temperature.
        temperature_rate: exponential decay rate per env step.
        temperature_anneal_steps: env steps of the linear schedule.
        gumbel_rao_k: conditional Gumbel draws averaged by ``"gumbel-rao"``.
        diagnostic_interval: as :class:`agents.sac.SoftActorCritic`'s, plus ``grad/estimator_cosine``, the
            cosine between the actor's gradient and the exact-expectation gradient on the same batch
            (wherever ``"exact"`` is possible).
        critic: ``"heads"``, ``"joint"``, ``"pairwise"`` (MultiDiscrete only), or ``"auto"`` (heads
            for Discrete and a one-factor MultiDiscrete, pairwise for more factors). See
            :class:`agents.heads.GumbelHead`. The agent's ``hparams`` and the files it saves hold the
            form ``"auto"`` chose; ``"auto"`` read from a file saved before it meant pairwise is the
            older rule (joint for MultiDiscrete).
        pairwise_rank: R of the pairwise critic's interaction matrices V_f V_g^T. A pair's interaction
            has rank at most min(K_f, K_g); R = the sum of that over interacting pairs always suffices.
        target_entropy_scale: default target entropy is this times the maximum, sum_f log n_f.
    """

    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = (spaces.Discrete, spaces.MultiDiscrete)
    # The head the agent builds; a subclass with another critic (a research probe) names its own here
    # and keeps make_head's choice of form and estimator.
    head_class: ClassVar[type[GumbelHead]] = GumbelHead
    defaults: ClassVar[dict[str, Any]] = {
        **SoftActorCritic.defaults,
        # Faster targets than SAC's usual 0.005, with which CartPole-v1 reached its maximum return and
        # then collapsed, or never reached it: credit for a failure ~100 steps ahead must pass through
        # ~100 target refreshes (benchmarks/archive/README.md).
        "target_update_rate": 0.02,
        # The entropy weight on the reward's scale: alpha from the warm-up rewards, a controller 10x
        # faster than the actor's lr, critic targets without the entropy bonus. Against alpha = 1, a
        # 3e-4 controller and soft targets these learned Acrobot-v1 and Combinatorial-v0 faster and
        # CartPole-v1 as fast (benchmarks/archive/README.md, "Picking the defaults").
        "alpha": "auto", "alpha_learning_rate": 3e-3, "backup_entropy": False,
        # The actor and alpha step on every 2nd update (TD3's delayed policy updates): fewer actor
        # passes, learning level within the noise on CartPole, Acrobot and Combinatorial ("policy_delay 2").
        "policy_delay": 2,
        # "auto": straight-through, except the exact expectation with the pairwise critic. On
        # CartPole-v1, Acrobot-v1 and Combinatorial-v0 (heads and joint critics) neither gumbel-rao nor
        # reinmax nor soft nor exact beat straight-through, so the Gumbel path stays there. The
        # pairwise critic's E_pi[Q] is one evaluation at the probabilities (Rendle 2010's factorization
        # is multilinear), and across the combinatorial suite exact ended above straight-through on
        # four tasks and below it on none, at the same cost (benchmarks/README.md, "Critic forms
        # across the suite"). Temperature 0.5 measured no gain over 1.0.
        "estimator": "auto", "temperature": 1.0, "temperature_schedule": "constant", "temperature_min": 0.5,
        "temperature_rate": 1e-4, "temperature_anneal_steps": 100_000, "gumbel_rao_k": 8,
        # "auto": pairwise for MultiDiscrete. Across the eight combinatorial structures it ended level
        # with the joint MLP critic on five, above it on Triples and Assign, below it on the masked
        # Assign, learned faster overall (curve means), and never fell back after learning where the
        # joint critic did (Assign, Triples, the ring). Above the factorized heads critic on the ring,
        # Chain, Triples and Assign, below it on the masked ring, at 1.6-2.9x its wall-clock: heads
        # has no interaction term. The straight-through gradient reads the critic's
        # slope at the sampled one-hot: a multilinear Q's slope there is the difference of its values at
        # the other choices, a joint MLP's is unconstrained (benchmarks/README.md, "Critic forms across
        # the suite").
        "critic": "auto",
        "target_entropy_scale": 0.5,
        # R of the pairwise critic (sum(nvec) * (1 + R) outputs per critic). A pair of 4-choice
        # factors has rank <= 3 beyond its additive part, so 16 holds five such pairs in disjoint
        # blocks; Combinatorial-v0's ring of eight is exact at 24, which its pairwise config sets.
        # Across the eight suite tasks 16 ended above 4 on the ring and Pairs and below it on none;
        # 64 ended level with 16 on Assign at 3x the update cost (benchmarks/README.md).
        "pairwise_rank": 16,
    }

    @classmethod
    def validate_hyperparameters(cls, hp: dict[str, Any]) -> None:
        super().validate_hyperparameters(hp)
        if hp["estimator"] not in ("auto", *ESTIMATOR_CHOICES):
            raise ValueError(f"estimator={hp['estimator']!r} is not one of {('auto', *ESTIMATOR_CHOICES)}")
        if hp["temperature_schedule"] not in SCHEDULES:
            raise ValueError(f"temperature_schedule={hp['temperature_schedule']!r} is not one of {SCHEDULES}")
        if not hp["temperature"] > 0 or not hp["temperature_min"] > 0:
            raise ValueError(f"temperature and temperature_min must be > 0; got {hp['temperature']}, "
                             f"{hp['temperature_min']}")
        lowest = hp["temperature_min"] if hp["temperature_schedule"] != "constant" else hp["temperature"]
        if hp["estimator"] == "reinmax" and min(hp["temperature"], lowest) < 1.0:
            raise ValueError("estimator='reinmax' needs temperature >= 1 throughout (Liu et al. 2023); "
                             f"got temperature={hp['temperature']}, temperature_min={hp['temperature_min']}")
        if hp["critic"] not in CRITIC_CHOICES:
            raise ValueError(f"critic={hp['critic']!r} is not one of {CRITIC_CHOICES}")
        for key, low in (("pairwise_rank", 1), ("gumbel_rao_k", 1)):
            if int(hp[key]) < low:
                raise ValueError(f"{key} must be >= {low}; got {hp[key]}")
        if not 0 <= hp["target_entropy_scale"] <= 1:
            raise ValueError(f"target_entropy_scale must be in [0, 1]; got {hp['target_entropy_scale']}")

    def __init__(self, env: Any = None, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        # What each "auto" chose, so a saved file says which.
        self.hparams["critic"], self.hparams["estimator"] = self.head.kind, self.head.estimator

    @staticmethod
    def critic_form(critic: str, action_space: spaces.Space) -> str:
        """The critic form ``critic`` names on ``action_space``: itself, or what ``"auto"`` picks."""
        if critic != "auto":
            return critic
        return "pairwise" if isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.size > 1 \
            else "heads"

    @staticmethod
    def estimator_form(estimator: str, critic: str) -> str:
        """The estimator ``estimator`` names with the critic form ``critic``: itself, or what ``"auto"`` picks."""
        if estimator != "auto":
            return estimator
        return "exact" if critic == "pairwise" else "st"

    @classmethod
    def hparams_from_file(cls, hp: dict[str, Any], action_space: spaces.Space) -> dict[str, Any]:
        if "critic" not in hp:
            return hp
        kind = "Discrete" if isinstance(action_space, spaces.Discrete) else "MultiDiscrete"
        return {**hp, "critic": saved_critic_form(hp["critic"], kind)}

    @classmethod
    def make_head(cls, action_space: spaces.Space, hp: dict[str, Any],
                  device: torch.device | str = "cpu") -> GumbelHead:
        critic = cls.critic_form(hp["critic"], action_space)
        return cls.head_class(action_space, critic, cls.estimator_form(hp["estimator"], critic),
                          hp["pairwise_rank"], hp["gumbel_rao_k"], hp["target_entropy_scale"], device)

    def _make_policy(self) -> nn.Module:
        hp = self.hparams
        return CategoricalPolicy(self.obs_dim, self.head.nvec, hp["net_arch"], hp["relu_subgradient"],
                                 encoder=self._make_encoder())

    def current_temperature(self) -> float:
        hp = self.hparams
        return gumbel_temperature(self.num_timesteps, hp["temperature"], hp["temperature_schedule"],
                                  hp["temperature_min"], hp["temperature_rate"], hp["temperature_anneal_steps"])

    def _temperature(self) -> Tensor:
        return torch.tensor(self.current_temperature(), device=self.device)

    def distribution(self, obs: Tensor, masks: Tensor | None = None) -> Any:
        """The policy at ``obs`` (a :class:`agents.distributions.GumbelSoftmax`)."""
        return self.head.distribution(self.policy(obs), masks, self.current_temperature())

    def _diagnostics(self, batch: Batch) -> dict[str, Tensor]:
        """The shared diagnostics, and ``grad/estimator_cosine`` where the exact gradient exists."""
        info = super()._diagnostics(batch)
        if info and self.head.has_exact and self.head.estimator != "exact":
            info["grad/estimator_cosine"] = estimator_cosine(self.policy, self.critic, self.head, self._state,
                                                             batch.obs, batch.masks, self._temperature())
        return info

    def _extra_state(self) -> dict[str, Any]:
        return {"gumbel_temperature": self.current_temperature()}
