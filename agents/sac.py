"""The soft actor-critic shared by GumbelSAC and GaussianSAC (Haarnoja et al. 2018).

The agent class holds the parts and the SB3-style API (``learn``, ``predict``, ``save``, ``load``);
the parts live in small modules: the action head (:mod:`agents.heads`), the networks
(:mod:`agents.networks`), the update (:mod:`agents.update`, one pure function for every head,
compiled), collection (:mod:`agents.collect`) and persistence (:mod:`agents.checkpoint`).
An agent file supplies its head, its policy network and its defaults.
"""

from __future__ import annotations

import copy
import functools
import math
import random
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from agents import checkpoint
from agents.buffer import Batch, ReplayBuffer
from agents.callbacks import Callback, as_callback
from agents.collect import Collector, NonFiniteError, as_vector_env
from agents.encoders import make_encoder
from agents.hyperparameters import BEHAVIOUR_BEFORE, DEFAULTS, check_shared
from agents.memory import check_fits
from agents.metrics import UpdateMetrics
from agents.networks import CriticEnsemble, dormant_fraction
from agents.spaces import batch_of, obs_tensor, resolve_device, same_spaces, stored_layout, warn_threads_once
from agents.update import UpdateSettings, compile_update, sac_update, train_state

__all__ = ["NonFiniteError", "SoftActorCritic"]


def _buffer_arguments(head: Any, observation_space: spaces.Space, hp: dict[str, Any], stride: int,
                      masks: bool) -> dict[str, Any]:
    """The one source of a replay buffer's layout: the head's stored action, the observation's
    stored layout, and the masks where the env gives them."""
    shape, dtype = head.stored_shape
    obs_shape, obs_dtype = stored_layout(observation_space)
    return dict(capacity=int(hp["buffer_size"]), obs_shape=obs_shape, action_shape=shape, action_dtype=dtype,
                mask_size=head.mask_size if masks else None, obs_dtype=obs_dtype, stride=stride,
                priority_alpha=hp["prioritized_replay"])


class SoftActorCritic:
    """Off-policy soft actor-critic with twin critics, Polyak targets and a learned entropy weight.

    Shared hyperparameters (each also a field of the run config):

    Args:
        env: a Gymnasium id, ``Env`` or ``VectorEnv``; ``None`` needs ``observation_space`` and
            ``action_space`` and gives an agent that can predict but not learn.
        learning_rate: Adam step size of the actor (and of the entropy weight, unless
            ``alpha_learning_rate`` is set).
        alpha_learning_rate: Adam step size of log alpha; ``None`` uses ``learning_rate``. Adam moves
            log alpha by about this much per update whatever the entropy error.
        critic_learning_rate: Adam step size of the critics (CleanRL uses 1e-3 against 3e-4).
        adam_eps: the epsilon of all three Adam optimizers (torch's 1e-8; 1e-4 where the gradients are
            tiny, as CleanRL's discrete SAC on Atari).
        buffer_size: replay capacity in transitions.
        learning_starts: env steps of uniform random actions before updates begin.
        batch_size: transitions per gradient step.
        gamma: discount.
        n_step: rewards summed into each critic target before it bootstraps, stopping early at an
            episode's end (Rainbow's n-step returns, Hessel et al. 2018; not corrected for being
            off-policy). Above 1 needs ``backup_entropy=False`` (the soft target would also need the
            entropy bonus of every step in between).
        target_update_rate: Polyak rate of the target critics (``tau`` in most SAC code; renamed
            because ``temperature`` belongs to Gumbel-Softmax).
        train_freq: env steps (per env copy) between rounds of updates.
        gradient_steps: updates per round; the update-to-data ratio is gradient_steps / (train_freq * n_envs).
        policy_delay: the actor and alpha step on every this-many-th update, the critics on every one
            (TD3's delayed policy updates, Fujimoto et al. 2018; SB3's ``policy_delay``).
        net_arch: hidden widths of the actor and of every critic.
        n_critics: critics in the ensemble; the target takes their minimum (clipped double Q).
        critic_layer_norm: LayerNorm (no affine) before every hidden ReLU of the critics, against Q
            drifting off the data (Ball et al. 2023).
        alpha: initial entropy weight, or ``"auto"`` (a policy whose entropy has a maximum, i.e.
            GumbelSAC): at the first update, mean |reward| of the warm-up data over that maximum, so
            the uniform policy's entropy bonus starts level with the typical reward.
        learn_alpha: tune alpha toward the target entropy (Haarnoja et al. 2018b).
        target_entropy: desired policy entropy in nats; ``None`` picks the agent's default.
        backup_entropy: add the next state's entropy bonus to the critic target (soft Q). ``False``
            keeps the entropy in the actor loss only, as jaxrl's ``backup_entropy`` flag.
        prioritized_replay: 0 samples the buffer uniformly; alpha in (0, 1] samples each transition
            in proportion to (|TD error| + 1e-3) ** alpha and weights the critic loss by importance
            weights (Schaul et al. 2016, proportional; Rainbow's 0.5).
        priority_beta: exponent of those importance weights (1 corrects the sampling fully).
        relu_subgradient: derivative of ReLU used at exactly 0, in [0, 1].
        encoder: the observation encoder of the actor and of the critics (each its own): ``"auto"``
            (a CNN for images, one encoder per key of a Dict, else the flat observation), ``"flat"``,
            ``"cnn"``, or a ``torch.nn.Module`` subclass of your own (SB3's ``features_extractor_class``).
            See :mod:`agents.encoders`.
        encoder_kwargs: the CNN's ``channels``, ``kernels``, ``strides``, ``features``, ``channels_last``;
            for your own class, its keyword arguments (JSON values, so the model file can record them).
        diagnostic_interval: every this many actor updates, log network health on the update's batch:
            ``net/policy_dormant`` and ``net/critic_dormant`` (GumbelSAC adds ``grad/estimator_cosine``);
            one extra forward pass each. 0 turns them off.
        compile: run the update through ``torch.compile`` (one graph: losses, backward, Adam,
            Polyak). The first update waits for the compilation (~20-60 s on a CPU); a machine
            without a C++ compiler warns and stays eager. ``False`` is the eager update, for debugging.
        n_envs: env copies when ``env`` is an id.
        seed: seeds torch, numpy, the env and the warm-up actions.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    """

    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = ()
    defaults: ClassVar[dict[str, Any]] = dict(DEFAULTS)
    behaviour_before: ClassVar[dict[str, Any]] = dict(BEHAVIOUR_BEFORE)

    def __init__(self, env: str | gym.Env | gym.vector.VectorEnv | None = None, *,
                 observation_space: spaces.Space | None = None, action_space: spaces.Space | None = None,
                 **hyperparameters: Any) -> None:
        unknown = set(hyperparameters) - set(self.defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown hyperparameters {sorted(unknown)}; "
                            f"known: {sorted(self.defaults)}")
        hp = {**self.defaults, **hyperparameters}
        hp["net_arch"] = [int(w) for w in hp["net_arch"]]
        self.hparams = hp
        self.validate_hyperparameters(hp)
        self.device = resolve_device(hp["device"])
        warn_threads_once(self.device)
        if hp["seed"] is not None:
            random.seed(hp["seed"])
            np.random.seed(hp["seed"])
            torch.manual_seed(hp["seed"])

        self.env: gym.vector.VectorEnv | None = None
        self.env_id: str | None = env if isinstance(env, str) else getattr(getattr(env, "spec", None), "id", None)
        if env is not None:
            self.env = as_vector_env(env, hp["n_envs"])
            observation_space = self.env.single_observation_space
            action_space = self.env.single_action_space
        if observation_space is None or action_space is None:
            raise ValueError("pass an env, or both observation_space and action_space")
        if not self.handles(action_space):
            from agents import agent_for  # the registry of agents imports this module

            names = "/".join(s.__name__ for s in self.supported_action_spaces)
            raise TypeError(f"{type(self).__name__} handles {names} action spaces, not {action_space}; "
                            f"{agent_for(action_space)}")
        self.observation_space, self.action_space = observation_space, action_space
        with torch.device("meta"):  # the width of the features every network's MLP reads; allocates nothing
            self.obs_dim = self._make_encoder().features_dim

        self.head = self.make_head(action_space, hp, self.device)
        self.policy = self._make_policy().to(self.device)
        in_dim, out_dim = self.head.critic_dims(self.obs_dim)
        self.critic = CriticEnsemble(hp["n_critics"], in_dim, hp["net_arch"], out_dim, hp["relu_subgradient"],
                                     hp["critic_layer_norm"], self._make_encoder()).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        if hp["alpha"] == "auto" and self.head.max_entropy is None:
            raise ValueError(f"alpha='auto' needs a policy with a maximum entropy (GumbelSAC); "
                             f"{type(self).__name__}'s is unbounded: give alpha a number, e.g. alpha=1.0")
        # "auto" is set from the warm-up rewards at the first update (_calibrate_alpha). One weight per
        # entropy part of a head that has several (HybridHead), each starting at alpha.
        parts = getattr(self.head, "entropy_parts", ())
        self.log_alpha = torch.full((len(parts),) if parts else (), 0.0 if hp["alpha"] == "auto"
                                    else math.log(hp["alpha"]), device=self.device)
        self.target_entropy = float(hp["target_entropy"]) if hp["target_entropy"] is not None \
            else self.head.target_entropy
        lr = self._learning_rates()
        eps = hp["adam_eps"]
        self.actor_optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr["actor"], eps=eps)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=lr["critic"], eps=eps)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=lr["alpha"], eps=eps)

        self.num_timesteps = 0
        self.num_updates = 0
        self.buffer: ReplayBuffer | None = None
        self.collector = self._collector(self.env) if self.env is not None else None
        self.metrics = UpdateMetrics()
        self._state = None  # the update's aliases of the parameters and optimizer state, built at the first update
        self._update: Callable[..., Any] | None = None

    # ---------------------------------------------------------------- what an agent file supplies
    @classmethod
    def hparams_from_file(cls, hp: dict[str, Any], action_space: spaces.Space) -> dict[str, Any]:
        """Hyperparameters read from a saved file, in today's meaning (an agent whose setting changed
        meaning maps the older value here)."""
        return hp

    @classmethod
    def make_head(cls, action_space: spaces.Space, hp: dict[str, Any], device: torch.device | str = "cpu") -> Any:
        """The action head for ``action_space`` under the resolved hyperparameters ``hp``."""
        raise NotImplementedError

    def _make_policy(self) -> nn.Module:
        """The actor, reading observations through its own :meth:`_make_encoder`."""
        raise NotImplementedError

    def _make_encoder(self) -> nn.Module:
        """A new observation encoder (fresh weights) of the configured kind."""
        hp = self.hparams
        return make_encoder(self.observation_space, hp["encoder"], hp["encoder_kwargs"], hp["relu_subgradient"])

    def _temperature(self) -> Tensor:
        """The Gumbel-Softmax temperature the update passes to the head (as data, not a constant)."""
        return torch.ones((), device=self.device)

    def _diagnostics(self, batch: Batch) -> dict[str, Tensor]:
        """Network health every ``diagnostic_interval`` actor updates, on the update's batch: the
        fraction of dormant ReLU units of the policy and of the critics (:func:`dormant_fraction`)."""
        interval = int(self.hparams["diagnostic_interval"])
        if interval == 0 or -(-self.num_updates // self.hparams["policy_delay"]) % interval:
            return {}
        return {"net/policy_dormant": dormant_fraction(self.policy, lambda: self.policy(batch.obs)),
                "net/critic_dormant": dormant_fraction(
                    self.critic, lambda: self.head.critic_values(self.critic, self.critic.features(batch.obs),
                                                                 batch.actions))}

    # ---------------------------------------------------------------- construction helpers
    @classmethod
    def validate_hyperparameters(cls, hp: dict[str, Any]) -> None:
        """Raise ValueError naming every out-of-range value and what is allowed."""
        check_shared(hp)

    def _learning_rates(self) -> dict[str, float]:
        """Each optimizer's learning rate (keys of :meth:`optimizers`) from the hyperparameters."""
        hp = self.hparams
        return {"actor": hp["learning_rate"], "critic": hp["critic_learning_rate"],
                "alpha": hp["learning_rate"] if hp["alpha_learning_rate"] is None else hp["alpha_learning_rate"]}

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "critic": self.critic, "critic_target": self.critic_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer, "alpha": self.alpha_optimizer}

    @property
    def alpha(self) -> float | list[float]:
        """The entropy weight; one per entropy part (a list) for a head that has several."""
        alpha = self.log_alpha.exp()
        return float(alpha) if alpha.dim() == 0 else alpha.tolist()

    @classmethod
    def handles(cls, action_space: spaces.Space) -> bool:
        """Whether this agent takes ``action_space``."""
        return isinstance(action_space, cls.supported_action_spaces)

    # ---------------------------------------------------------------- acting
    def _act(self, obs: Tensor, deterministic: bool, masks: Tensor | None) -> Tensor:
        return self.head.act(self.policy(obs), masks, deterministic)

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                deterministic: bool = False, action_masks: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        """SB3's signature: actions for a single observation or a batch; ``state`` passes through.

        ``action_masks`` follows sb3-contrib: a flat boolean vector per observation.
        """
        batch, single = batch_of(self.observation_space, observation)
        masks = None
        if action_masks is not None:
            m = np.asarray(action_masks, dtype=bool)
            masks = torch.as_tensor(m[None] if single else m, device=self.device)
        with torch.no_grad():
            action = self.head.to_env(self._act(obs_tensor(self.observation_space, batch, self.device),
                                                deterministic, masks))
        return (action[0] if single else action), state

    def _eval_masks(self, venv: Any) -> np.ndarray | None:
        """The masks ``experiments.evaluation.evaluate`` passes to :meth:`predict`."""
        from agents.collect import vector_env_masks

        return vector_env_masks(venv) if self.head.mask_size is not None else None

    # ---------------------------------------------------------------- learning
    @classmethod
    def buffer_arguments_for(cls, observation_space: spaces.Space, action_space: spaces.Space,
                             hyperparameters: dict[str, Any], stride: int = 1, masks: bool = False) -> dict[str, Any]:
        """The :class:`ReplayBuffer` arguments (less device and priority beta) of the buffer an agent
        of this class allocates for these spaces, for ``run.py``'s memory check before a run, which
        builds no agent (only the head, which holds the action layout and draws no random numbers).
        ``stride``: env copies; ``masks``: whether the env gives action masks."""
        hp = {**cls.defaults, **hyperparameters}
        return _buffer_arguments(cls.make_head(action_space, hp), observation_space, hp, stride, masks)

    def buffer_arguments(self) -> dict[str, Any]:
        """:meth:`buffer_arguments_for` this agent's head, spaces, env copies and masks."""
        return _buffer_arguments(self.head, self.observation_space, self.hparams,
                                 self.env.num_envs if self.env is not None else 1,
                                 self.collector is not None and self.collector.use_masks)

    def _ensure_buffer(self) -> ReplayBuffer:
        if self.buffer is None:
            args = self.buffer_arguments()
            check_fits(ReplayBuffer.nbytes_for(**args), self.device,
                       f"a replay buffer of {args['capacity']:,} transitions")
            self.buffer = ReplayBuffer(**args, device=self.device, priority_beta=self.hparams["priority_beta"])
        return self.buffer

    def _collector(self, env: gym.vector.VectorEnv) -> Collector:
        return Collector(env, self.observation_space, self.head.mask_size is not None, self.head.from_env)

    def learn(self, total_timesteps: int, callback: Callback = None, progress_bar: bool = False,
              reset_num_timesteps: bool = False) -> SoftActorCritic:
        """Collect ``total_timesteps`` env steps (summed over env copies), updating as it goes.

        ``callback``: a function ``callback(agent)`` run after every vector step (returning ``False``
        stops learning), an SB3 ``BaseCallback`` (e.g. ``CheckpointCallback``, ``EvalCallback``), or a
        list of these (:mod:`agents.callbacks`).
        """
        if self.env is None:
            raise RuntimeError("this agent has no env; pass one to the constructor or to load(path, env=...)")
        if total_timesteps < 0:
            raise ValueError(f"total_timesteps must be >= 0; got {total_timesteps}")
        hp, buffer, collector = self.hparams, self._ensure_buffer(), self.collector
        collector.check_n_step(hp["n_step"])
        if reset_num_timesteps:
            self.num_timesteps = 0
        if collector.last_obs is None:
            collector.reset(hp["seed"])
        collector.masks = collector.env_masks()
        n_envs, end = self.env.num_envs, self.num_timesteps + total_timesteps
        label = self.env_id or type(self.env).__name__
        act = lambda obs, masks: self.predict(obs, action_masks=masks)[0]  # noqa: E731 - a batch from the env
        callback = as_callback(callback, self)
        bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=total_timesteps, unit="step", dynamic_ncols=True)
        if callback is not None:
            callback.on_training_start(locals(), globals())
        try:
            while self.num_timesteps < end:
                warm = self.num_timesteps < hp["learning_starts"]
                collector.step(None if warm else act, getattr(self.head, "random_actions", None), buffer,
                               label, self.num_timesteps)
                self.num_timesteps += n_envs
                steps_per_env = self.num_timesteps // n_envs
                # len(buffer): a run resumed from a checkpoint saved without its buffer starts empty.
                if self.num_timesteps >= hp["learning_starts"] and steps_per_env % hp["train_freq"] == 0 \
                        and len(buffer) > 0:
                    for _ in range(hp["gradient_steps"]):
                        self.train_step()
                if bar is not None:
                    bar.update(n_envs)
                    if collector.episode_returns and steps_per_env % 100 == 0:
                        bar.set_postfix(ep_return=f"{collector.episode_returns[-1]:.1f}", refresh=False)
                if callback is not None:
                    callback.update_locals(locals())
                    if not callback.on_step():
                        break
        finally:
            if bar is not None:
                bar.close()
        if callback is not None:
            callback.on_training_end()
        return self

    # ---------------------------------------------------------------- what SB3's callbacks read of a model
    def get_env(self) -> gym.vector.VectorEnv | None:
        return self.env

    def set_env(self, env: str | gym.Env | gym.vector.VectorEnv) -> None:
        """Learn on another env with the same spaces (SB3's ``set_env``); its episodes start afresh."""
        venv = as_vector_env(env, self.hparams["n_envs"])
        same_spaces(self, venv.single_observation_space, venv.single_action_space, "this agent was built for")
        if self.buffer is not None and venv.num_envs != self.env.num_envs and self.hparams["n_step"] > 1:
            raise ValueError(f"n_step={self.hparams['n_step']} follows each env copy's transitions in the buffer; "
                             f"keep {self.env.num_envs} copies")
        self.env, self.env_id = venv, env if isinstance(env, str) else self.env_id
        self.collector = self._collector(venv)

    def get_vec_normalize_env(self) -> None:
        return None

    @property
    def logger(self) -> Any:
        """An SB3 ``Logger`` for SB3 callbacks (``EvalCallback`` records to it); silent unless configured."""
        if getattr(self, "_logger", None) is None:
            from stable_baselines3.common.logger import configure

            self._logger = configure(None, [])
        return self._logger

    # SB3's episode statistics (its ep_info_buffer), from the collector
    @property
    def episode_returns(self) -> Sequence[float]:
        return self.collector.episode_returns if self.collector is not None else []

    @property
    def episode_lengths(self) -> Sequence[int]:
        return self.collector.episode_lengths if self.collector is not None else []

    @property
    def num_episodes(self) -> int:
        return self.collector.num_episodes if self.collector is not None else 0

    def train_step(self) -> dict[str, Tensor]:
        """One gradient step on the critics, the actor and the entropy weight, then Polyak
        (:func:`agents.update.sac_update`). With ``policy_delay`` d the actor and alpha step only on
        every d-th update."""
        hp = self.hparams
        if self.num_updates == 0 and hp["alpha"] == "auto":
            self._calibrate_alpha()
        if self._update is None:
            self._update = self._make_update()
        batch = self.buffer.sample(hp["batch_size"], n_step=hp["n_step"], gamma=hp["gamma"])
        actor_turn = self.num_updates % hp["policy_delay"] == 0
        diagnostics = self._diagnostics(batch) if actor_turn else {}
        info, td_error = self._update(self._state, batch, self._temperature(), actor_turn)
        if batch.indices is not None:
            self.buffer.update_priorities(batch.indices, td_error)
        info.update(diagnostics)
        self.num_updates += 1
        self.metrics.add(info)
        return info

    def update_settings(self) -> UpdateSettings:
        """The update's constants from the hyperparameters."""
        hp, lr = self.hparams, self._learning_rates()
        return UpdateSettings(gamma=hp["gamma"], target_update_rate=hp["target_update_rate"],
                              learn_alpha=hp["learn_alpha"], backup_entropy=hp["backup_entropy"],
                              target_entropy=self.target_entropy, actor_lr=lr["actor"], critic_lr=lr["critic"],
                              alpha_lr=lr["alpha"], eps=hp["adam_eps"],
                              entropy_parts=tuple(getattr(self.head, "entropy_parts", ())))

    def _make_update(self) -> Callable[..., Any]:
        """The update bound to this agent's networks, head and constants, compiled unless ``compile`` is off."""
        self._state = train_state(self.policy, self.critic, self.critic_target, self.log_alpha, self.optimizers())
        fn = functools.partial(sac_update, self.policy, self.critic, self.head, self.update_settings())
        return compile_update(fn, self.device) if self.hparams["compile"] else fn

    def _calibrate_alpha(self) -> None:
        """``alpha="auto"``: mean |r| of the warm-up data over the maximum entropy, so the uniform policy's
        entropy bonus starts level with the typical reward (a fixed alpha = 1 kept Combinatorial-v0's policy
        uniform for ~10k updates: benchmarks/archive/README.md). All-zero warm-up rewards: alpha stays 1."""
        n = len(self.buffer)
        scale = float(self.buffer.rewards[:n].abs().mean()) if n else 0.0
        if scale > 0:
            with torch.no_grad():
                self.log_alpha.fill_(math.log(scale / self.head.max_entropy))

    def pop_train_info(self) -> dict[str, float]:
        """Means of the update metrics since the last call (one host sync), then reset."""
        return self.metrics.pop()

    def check_finite(self, step: int | None = None) -> None:
        """Raise :class:`NonFiniteError` if an accumulated metric or a weight is NaN or inf.

        One host sync for all of them, so it is meant for log intervals and checkpoints, not every update.
        """
        named = self.metrics.named()
        named.update({f"{m}.{k}": v for m, mod in self.modules().items() for k, v in mod.state_dict().items()})
        named["log_alpha"] = self.log_alpha
        ok = torch.stack([torch.isfinite(v).all() for v in named.values()]).cpu().tolist()
        bad = [k for k, good in zip(named, ok, strict=True) if not good]
        if bad:
            where = f"at env step {self.num_timesteps if step is None else step} (update {self.num_updates})"
            raise NonFiniteError(f"non-finite values {where} in: {', '.join(bad)}")

    # ---------------------------------------------------------------- files (agents.checkpoint)
    def save(self, path: str | Path) -> Path:
        """Weights, optimizer states and metadata in one safetensors file (no pickle), with a digest."""
        return checkpoint.save_model(self, path)

    @classmethod
    def load(cls, path: str | Path, env: str | gym.Env | gym.vector.VectorEnv | None = None,
             device: str = "auto", **overrides: Any) -> SoftActorCritic:
        """Rebuild an agent from :meth:`save`'s file. Never unpickles; rejects files that do not match."""
        return checkpoint.load_model(cls, path, env, device, overrides)

    def checkpoint(self, path: str | Path, include_buffer: bool = True) -> Path:
        """Everything :meth:`restore` needs to continue exactly where this agent is (the model file's
        content plus RNG states, the env's state, episode accumulators, pending metrics and, with
        ``include_buffer``, the replay buffer), written atomically."""
        return checkpoint.write_checkpoint(self, path, include_buffer)

    def restore(self, path: str | Path, changed: Collection[str] = ()) -> SoftActorCritic:
        """Continue from :meth:`checkpoint`'s file; this agent must have the same hyperparameters
        except ``changed`` (a counterfactual continuation: ``experiments.research.replay``)."""
        checkpoint.restore_checkpoint(self, path, changed)
        return self

    def _extra_state(self) -> dict[str, Any]:
        return {}
