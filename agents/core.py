"""The soft actor-critic core shared by GumbelSAC and GaussianSAC.

The core owns what does not depend on the action distribution: the vector env, the replay
buffer, the collect/update loop, the twin critics' optimizer and Polyak targets, the entropy
temperature, ``predict``, ``save``/``load`` (model files) and ``checkpoint``/``restore`` (exact
resume). An agent file supplies five small pieces: ``_build`` (networks), ``_act``
(observation -> env action), ``_critic_values`` (Q of the stored actions), ``_next_value``
(soft value of s') and ``_actor_objective`` (Q of the policy's differentiable action, and the
entropy).
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from agents import losses
from agents.buffer import Batch, ReplayBuffer, check_fits
from agents.checkpoint import (
    FORMAT,
    env_state,
    jsonify,
    numpy_state,
    read_checkpoint,
    read_model_file,
    set_env_state,
    tensors_digest,
    tuplify,
    write_safetensors,
)

__all__ = ["NonFiniteError", "SoftActorCritic", "read_checkpoint", "read_model_file"]


class NonFiniteError(ValueError):
    """NaN or inf in env data, a loss or the weights: the run cannot continue meaningfully."""

# ---------------------------------------------------------------------------- spaces and envs


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A JSON description of the spaces reparl supports (no pickle anywhere)."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist()}
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": space.low.tolist(), "high": space.high.tolist()}
    raise TypeError(f"cannot describe space {space}")


def space_from_json(d: dict[str, Any]) -> spaces.Space:
    kind = d.get("type")
    if kind == "Discrete":
        return spaces.Discrete(int(d["n"]), start=int(d["start"]))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.array(d["nvec"], dtype=np.int64), start=np.array(d["start"], dtype=np.int64))
    if kind == "Box":
        return spaces.Box(np.array(d["low"], dtype=d["dtype"]), np.array(d["high"], dtype=d["dtype"]),
                          shape=tuple(d["shape"]), dtype=d["dtype"])
    raise ValueError(f"unknown space type {kind!r} in saved metadata")


def obs_dim(space: spaces.Space) -> int:
    """Width of the flat float vector the networks see."""
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    raise TypeError(f"observation space {space} is not supported: use a Box or Discrete space, "
                    "or flatten it with gymnasium.wrappers.FlattenObservation")


def make_vec_env(env: str | gym.Env | gym.vector.VectorEnv, n_envs: int = 1) -> gym.vector.VectorEnv:
    """An env id, an env or a vector env -> a Gymnasium vector env.

    Ids get ``SAME_STEP`` autoreset, so the final observation of an episode arrives with the
    step that ended it (in ``info["final_obs"]``) and no step is spent on a reset.
    """
    if isinstance(env, gym.vector.VectorEnv):
        return env
    if isinstance(env, str):
        try:
            return gym.make_vec(env, num_envs=n_envs, vectorization_mode="sync",
                                vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
        except gym.error.Error as e:
            raise ValueError(f"cannot make env {env!r}: {e}") from e
    if isinstance(env, gym.Env):
        if n_envs != 1:
            raise ValueError(f"an env instance gives one copy; got n_envs={n_envs}. Pass the env id instead.")
        return gym.vector.SyncVectorEnv([lambda: env], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    raise TypeError(f"env must be a Gymnasium id, Env or VectorEnv; got {type(env).__name__}. "
                    "For an SB3 VecEnv, pass the env id instead.")


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device; use device='cpu' or 'auto'")
    return device


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# ------------------------------------------------------------------------------- the core


class SoftActorCritic:
    """Off-policy soft actor-critic (Haarnoja et al. 2018) with twin critics, Polyak targets and
    a learned entropy temperature. Subclasses define the action distribution.

    Shared hyperparameters (each also a field of the run config):

    Args:
        env: a Gymnasium id, ``Env`` or ``VectorEnv``; ``None`` needs ``observation_space`` and
            ``action_space`` and gives an agent that can predict but not learn.
        learning_rate: Adam step size of the actor (and of the entropy temperature, unless
            ``alpha_learning_rate`` is set).
        alpha_learning_rate: Adam step size of log alpha; ``None`` uses ``learning_rate``. Adam
            moves log alpha by about this much per update whatever the entropy error, so it sets
            how many updates alpha takes to change by a factor e (1 / rate: 3,333 at 3e-4).
        critic_learning_rate: Adam step size of the critics (CleanRL uses 1e-3 against 3e-4).
        buffer_size: replay capacity in transitions.
        learning_starts: env steps of uniform random actions before updates begin.
        batch_size: transitions per gradient step.
        gamma: discount.
        n_step: rewards summed into each critic target before it bootstraps: r_t + ... +
            gamma^(n-1) r_(t+n-1) + gamma^n V(s_(t+n)), stopping early at an episode's end
            (:meth:`agents.buffer.ReplayBuffer.sample`). Not corrected for being off-policy, as in
            Rainbow (Hessel et al. 2018, n = 3). Values above 1 need ``backup_entropy=False`` (the
            soft target would also need the entropy bonus of every step in between).
        target_update_rate: Polyak rate of the target critics (``tau`` in most SAC code; renamed
            here because ``temperature`` belongs to Gumbel-Softmax).
        train_freq: env steps (per env copy) between rounds of updates.
        gradient_steps: updates per round; the update-to-data ratio is gradient_steps / (train_freq * n_envs).
        policy_delay: the actor and alpha step on every this-many-th update, the critics on every
            one (TD3's delayed policy updates, Fujimoto et al. 2018, sec. 5.2; SB3's ``policy_delay``).
        net_arch: hidden widths of the actor and of every critic.
        n_critics: critics in the ensemble; the target takes their minimum (clipped double Q).
        critic_layer_norm: LayerNorm (no affine) before every hidden ReLU of the critics, against
            Q drifting off the data (Ball et al. 2023); see :class:`agents.networks.CriticEnsemble`.
            Off: on GumbelSAC's CartPole dips it measured 5/15 seeds against 4/15, at 0.91x the
            updates/s (benchmarks/README.md, "LayerNorm in the critics").
        alpha: initial entropy weight, or ``"auto"`` (agents whose entropy has a maximum, i.e.
            GumbelSAC): at the first update, mean |reward| of the warm-up data divided by that
            maximum, so the uniform policy's entropy bonus starts level with the typical reward.
        learn_alpha: tune alpha toward ``target_entropy`` (Haarnoja et al. 2018b).
        target_entropy: desired policy entropy in nats; ``None`` picks the agent's default.
        backup_entropy: add the next state's entropy bonus to the critic target (soft Q, Haarnoja
            et al. 2018). ``False`` keeps the entropy in the actor loss only, as jaxrl's
            ``backup_entropy`` flag: the critic then learns the reward's Q alone.
        huber_delta: the critics' loss is Huber with this delta (linear beyond it, so a few
            surprising transitions cannot yank the critic) instead of ``None``'s 0.5 * MSE.
        bound_targets: clamp the bootstrapped value V(s') of the critic target to the range a
            discounted sum of the rewards seen so far can take, [min(0, r_min), max(0, r_max)] /
            (1 - gamma) (:func:`agents.losses.value_bounds`). Any value outside it is an error of the
            critics, which the targets would pass on. Replayed from the defaults' own checkpoints it
            removed 4 of 5 CartPole-v1 dips; over 15 fresh seeds it dipped as often (5/15 against
            4/15), so it is off by default (benchmarks/README.md, "Bounded targets"). Needs
            ``backup_entropy=False``: the soft value's entropy bonus has no bound the rewards give.
        prioritized_replay: 0 samples the buffer uniformly; alpha in (0, 1] samples each
            transition in proportion to (|TD error| + 1e-3) ** alpha, a new one at the largest
            priority yet, and weights the critic loss by importance weights (Schaul et al. 2016,
            proportional; Rainbow's alpha 0.5). The TD error is the critics' mean |Q - target|.
            Off: on GumbelSAC's CartPole-v1 it dipped on 3 of 6 seeds where the defaults dip on
            none (benchmarks/README.md, "Prioritized replay").
        priority_beta: exponent of those importance weights, (N P(i)) ** -beta over the batch's
            largest; constant (Schaul et al. anneal it from 0.4 to 1).
        relu_subgradient: derivative of ReLU used at exactly 0, in [0, 1].
        n_envs: env copies when ``env`` is an id.
        seed: seeds torch, numpy, the env and the warm-up actions.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    """

    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = ()
    other_agent: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {
        "learning_rate": 3e-4, "alpha_learning_rate": None, "critic_learning_rate": 1e-3, "buffer_size": 1_000_000,
        "learning_starts": 1000, "batch_size": 256, "gamma": 0.99, "n_step": 1, "target_update_rate": 0.005,
        "train_freq": 1, "gradient_steps": 1, "policy_delay": 1, "net_arch": [256, 256], "n_critics": 2,
        "critic_layer_norm": False, "alpha": 1.0,
        "learn_alpha": True, "target_entropy": None, "backup_entropy": True, "huber_delta": None,
        "bound_targets": False, "prioritized_replay": 0.0, "priority_beta": 0.4,
        "relu_subgradient": 0.0, "n_envs": 1, "seed": None, "device": "auto",
    }
    # What a run saved before each of these hyperparameters existed ran with: the behaviour they
    # were added to switch off, not today's default (which may move on, as GumbelSAC's did).
    # experiments.compare fills them into older run configs so those group with the runs that
    # set the same behaviour explicitly.
    behaviour_before: ClassVar[dict[str, Any]] = {"alpha_learning_rate": None, "backup_entropy": True,
                                                   "policy_delay": 1, "n_step": 1,
                                                   "critic_layer_norm": False, "bound_targets": False}

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
        seed = hp["seed"]
        if seed is not None:
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)

        self.env: gym.vector.VectorEnv | None = None
        self.env_id: str | None = env if isinstance(env, str) else getattr(getattr(env, "spec", None), "id", None)
        if env is not None:
            self.env = make_vec_env(env, hp["n_envs"])
            observation_space = self.env.single_observation_space
            action_space = self.env.single_action_space
        if observation_space is None or action_space is None:
            raise ValueError("pass an env, or both observation_space and action_space")
        self.observation_space, self.action_space = observation_space, action_space
        self._check_spaces()
        self.obs_dim = obs_dim(observation_space)

        self._build()
        if hp["alpha"] == "auto" and self._max_entropy() is None:
            raise ValueError(f"alpha='auto' needs a policy with a maximum entropy (GumbelSAC); "
                             f"{type(self).__name__}'s is unbounded: give alpha a number, e.g. alpha=1.0")
        self.critic_target = self._copy_frozen(self.critic)
        # "auto" is set from the warm-up rewards at the first update (_calibrate_alpha).
        self.log_alpha = torch.tensor(0.0 if hp["alpha"] == "auto" else math.log(hp["alpha"]),
                                      device=self.device, requires_grad=hp["learn_alpha"])
        self.target_entropy = float(hp["target_entropy"]) if hp["target_entropy"] is not None \
            else self._default_target_entropy()
        # bound_targets: the smallest and largest reward seen, on the host (compared once per env
        # step, no sync) and as the device tensor of value bounds the targets are clamped to.
        self.reward_range = (math.inf, -math.inf)
        self.target_bounds = torch.tensor([-math.inf, math.inf], device=self.device)
        lr = self._learning_rates()
        self.actor_optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr["actor"], fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=lr["critic"], fused=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=lr["alpha"], fused=True)

        self.num_timesteps = 0
        self.num_updates = 0
        self.buffer: ReplayBuffer | None = None
        self._info_sums: dict[tuple[str, ...], Tensor] = {}  # metric sums per set of metric names
        self._info_counts: dict[tuple[str, ...], int] = {}
        # The last 100 episodes, as SB3's ep_info_buffer; num_episodes counts them all.
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self.num_episodes = 0
        self._last_obs: np.ndarray | None = None

    # ---------------------------------------------------------------- pieces an agent supplies
    def _build(self) -> None:
        """Create ``self.policy`` and ``self.critic`` (a CriticEnsemble) on ``self.device``."""
        raise NotImplementedError

    def _act(self, obs: Tensor, deterministic: bool, masks: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _critic_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        raise NotImplementedError

    def _next_value(self, next_obs: Tensor, next_masks: Tensor | None, alpha: Tensor) -> Tensor:
        raise NotImplementedError

    def _actor_objective(self, obs: Tensor, masks: Tensor | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(Q of the policy's action, entropy, info) at ``obs``; ``masks``: the obs' action masks."""
        raise NotImplementedError

    def _default_target_entropy(self) -> float:
        raise NotImplementedError

    def _max_entropy(self) -> float | None:
        """The policy's largest possible entropy in nats; ``None`` if unbounded (no ``alpha="auto"``)."""
        return None

    def _actor_diagnostics(self, obs: Tensor, alpha: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
        """Extra metrics computed with the actor's gradient in place (before the optimizer step)."""
        return {}

    def _env_action(self, action: Tensor) -> np.ndarray:
        raise NotImplementedError

    def _stored_action(self, env_action: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _action_shape(self) -> tuple[tuple[int, ...], torch.dtype]:
        raise NotImplementedError

    # ---------------------------------------------------------------- construction helpers
    @classmethod
    def validate_hyperparameters(cls, hp: dict[str, Any]) -> None:
        """Raise ValueError naming every out-of-range value and what is allowed."""
        checks = {
            "learning_rate": (hp["learning_rate"] > 0, "> 0"),
            "critic_learning_rate": (hp["critic_learning_rate"] > 0, "> 0"),
            "alpha_learning_rate": (hp["alpha_learning_rate"] is None or hp["alpha_learning_rate"] > 0, "> 0 or null"),
            "buffer_size": (hp["buffer_size"] >= 1, ">= 1"),
            "learning_starts": (hp["learning_starts"] >= 0, ">= 0"),
            "batch_size": (hp["batch_size"] >= 1, ">= 1"),
            "gamma": (0 <= hp["gamma"] <= 1, "in [0, 1]"),
            "target_update_rate": (0 < hp["target_update_rate"] <= 1, "in (0, 1]"),
            "train_freq": (hp["train_freq"] >= 1, ">= 1"),
            "gradient_steps": (hp["gradient_steps"] >= 0, ">= 0"),
            "policy_delay": (_is_int(hp["policy_delay"]) and hp["policy_delay"] >= 1, "an integer >= 1"),
            "n_step": (_is_int(hp["n_step"]) and hp["n_step"] >= 1
                       and (hp["n_step"] == 1 or not hp["backup_entropy"]),
                       "an integer >= 1, and 1 unless backup_entropy is false: the soft target would need every "
                       "intermediate step's entropy bonus; set backup_entropy: false or n_step: 1"),
            "n_critics": (hp["n_critics"] >= 1, ">= 1"),
            "critic_layer_norm": (isinstance(hp["critic_layer_norm"], bool), "true or false"),
            "bound_targets": (isinstance(hp["bound_targets"], bool)
                              and not (hp["bound_targets"] and hp["backup_entropy"]),
                              "true or false, and false unless backup_entropy is false: the entropy bonus of a "
                              "soft target has no bound the rewards give; set backup_entropy: false"),
            "alpha": (hp["alpha"] == "auto" if isinstance(hp["alpha"], str) else hp["alpha"] > 0,
                      '> 0 or "auto"'),
            "huber_delta": (hp["huber_delta"] is None or (not isinstance(hp["huber_delta"], (bool, str))
                                                         and hp["huber_delta"] > 0), "> 0 or null (0.5 * MSE)"),
            "prioritized_replay": (_is_number(hp["prioritized_replay"]) and 0 <= hp["prioritized_replay"] <= 1,
                                   "a number in [0, 1]: 0 samples uniformly; Schaul et al. 2016 use 0.6"),
            "priority_beta": (_is_number(hp["priority_beta"]) and 0 <= hp["priority_beta"] <= 1,
                              "a number in [0, 1]: 1 corrects prioritized sampling fully"),
            "relu_subgradient": (0 <= hp["relu_subgradient"] <= 1, "in [0, 1]"),
            "n_envs": (hp["n_envs"] >= 1, ">= 1"),
            "net_arch": (len(hp["net_arch"]) >= 1 and min(hp["net_arch"]) >= 1, "a non-empty list of widths >= 1"),
        }
        bad = [f"{k}={hp[k]!r} (must be {allowed})" for k, (ok, allowed) in checks.items() if not ok]
        if bad:
            raise ValueError("invalid hyperparameters: " + ", ".join(bad))

    def _check_spaces(self) -> None:
        if not isinstance(self.action_space, self.supported_action_spaces):
            names = "/".join(s.__name__ for s in self.supported_action_spaces)
            raise TypeError(f"{type(self).__name__} handles {names} action spaces, not {self.action_space}; "
                            f"use {self.other_agent}")
        obs_dim(self.observation_space)  # raises for unsupported observation spaces

    def _copy_frozen(self, module: nn.Module) -> nn.Module:
        import copy

        target = copy.deepcopy(module)
        for p in target.parameters():
            p.requires_grad_(False)
        return target

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    # ---------------------------------------------------------------- observations
    def _obs_tensor(self, obs: np.ndarray) -> Tensor:
        """Batched env observations -> (B, obs_dim) float tensor on the device."""
        t = torch.as_tensor(np.asarray(obs), device=self.device)
        if isinstance(self.observation_space, spaces.Discrete):
            return nn.functional.one_hot(t.long().reshape(-1) - int(self.observation_space.start),
                                         int(self.observation_space.n)).float()
        return t.reshape(t.shape[0], -1).float()

    def _stored_obs(self, obs: np.ndarray) -> np.ndarray:
        """The buffer keeps the network's flat float input (a Discrete observation as its one-hot)."""
        if isinstance(self.observation_space, spaces.Discrete):
            return self._obs_tensor(obs).cpu().numpy()
        return obs

    # ---------------------------------------------------------------- acting
    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                deterministic: bool = False, action_masks: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        """SB3's signature: actions for a single observation or a batch; ``state`` passes through.

        ``action_masks`` follows sb3-contrib: a flat boolean vector per observation.
        """
        obs = np.asarray(observation)
        if isinstance(self.observation_space, spaces.Discrete):
            single = obs.ndim == 0
        else:
            single = obs.shape == self.observation_space.shape
            if not single and obs.shape[1:] != self.observation_space.shape:
                raise ValueError(f"observation shape {obs.shape} fits neither {self.observation_space.shape} "
                                 f"nor a batch of it")
        batch = obs[None] if single else obs
        masks = None
        if action_masks is not None:
            m = np.asarray(action_masks, dtype=bool)
            masks = torch.as_tensor(m[None] if single else m, device=self.device)
        with torch.no_grad():
            action = self._env_action(self._act(self._obs_tensor(batch), deterministic, masks))
        return (action[0] if single else action), state

    # ---------------------------------------------------------------- learning
    def _ensure_buffer(self) -> ReplayBuffer:
        if self.buffer is None:
            shape, dtype = self._action_shape()
            mask_size = self._mask_size()
            check_fits(ReplayBuffer.nbytes_for(self.hparams["buffer_size"], (self.obs_dim,), shape, mask_size),
                       self.device, f"a replay buffer of {self.hparams['buffer_size']:,} transitions")
            self.buffer = ReplayBuffer(self.hparams["buffer_size"], (self.obs_dim,), shape, dtype,
                                       self.device, mask_size=mask_size,
                                       stride=self.env.num_envs if self.env is not None else 1,
                                       priority_alpha=self.hparams["prioritized_replay"],
                                       priority_beta=self.hparams["priority_beta"])
        return self.buffer

    def _mask_size(self) -> int | None:
        return None

    def _env_masks(self) -> np.ndarray | None:
        return None

    def _stored_next_masks(self, next_masks: np.ndarray | None, info: dict[str, Any],
                           done: np.ndarray) -> np.ndarray | None:
        """The masks of the stored next observations (with SAME_STEP autoreset a finished copy's
        env already shows its reset state, whose mask is not the final observation's)."""
        return next_masks

    def learn(self, total_timesteps: int, callback: Callable[[SoftActorCritic], bool | None] | None = None,
              progress_bar: bool = False, reset_num_timesteps: bool = False) -> SoftActorCritic:
        """Collect ``total_timesteps`` env steps (summed over env copies), updating as it goes.

        ``callback(agent)`` runs after every vector step; returning ``False`` stops learning.
        """
        if self.env is None:
            raise RuntimeError("this agent has no env; pass one to the constructor or to load(path, env=...)")
        if total_timesteps < 0:
            raise ValueError(f"total_timesteps must be >= 0; got {total_timesteps}")
        hp, env, buffer = self.hparams, self.env, self._ensure_buffer()
        if reset_num_timesteps:
            self.num_timesteps = 0
        n_envs = env.num_envs
        if self._last_obs is None:
            self._last_obs, _ = env.reset(seed=hp["seed"])
            env.action_space.seed(hp["seed"])
            self._returns = np.zeros(n_envs)
            self._lengths = np.zeros(n_envs, dtype=np.int64)
            self._prev_done = np.zeros(n_envs, dtype=bool)
        autoreset = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        next_step_mode = autoreset in (gym.vector.AutoresetMode.NEXT_STEP, "NextStep")
        if next_step_mode and hp["n_step"] > 1:
            # The reset steps of NEXT_STEP autoreset store nothing, so one copy's transitions are no
            # longer a fixed number of rows apart, which n-step sampling relies on.
            raise ValueError(f"n_step={hp['n_step']} needs a vector env with SAME_STEP autoreset (what env ids get "
                             "here); this one resets on the next step. Pass the env id, build the vector env "
                             "with autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, or set n_step=1.")
        prev_done = self._prev_done
        end = self.num_timesteps + total_timesteps
        bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=total_timesteps, unit="step", dynamic_ncols=True)
        obs = self._last_obs
        masks = self._env_masks()
        try:
            while self.num_timesteps < end:
                if self.num_timesteps < hp["learning_starts"]:
                    env_action = self._random_action(masks)
                else:
                    with torch.no_grad():
                        mt = torch.as_tensor(masks, device=self.device) if masks is not None else None
                        env_action = self._env_action(self._act(self._obs_tensor(obs), False, mt))
                next_obs, rewards, terminated, truncated, info = env.step(env_action)
                done = np.logical_or(terminated, truncated)
                real_next = next_obs
                if not next_step_mode and done.any():
                    real_next = np.array(next_obs, copy=True)
                    for i in np.flatnonzero(done):
                        real_next[i] = info["final_obs"][i]
                # Three tiny arrays: microseconds, and a NaN never reaches the buffer or the critics.
                if not (np.isfinite(rewards).all() and np.isfinite(real_next).all() and np.isfinite(next_obs).all()):
                    what = "reward" if not np.isfinite(rewards).all() else "observation"
                    raise NonFiniteError(f"env {self.env_id or type(env).__name__} returned a non-finite {what} at "
                                         f"env step {self.num_timesteps + n_envs}: rewards={rewards!r}")
                next_masks = self._env_masks()
                if next_step_mode:  # the step after a done only resets: nothing to store
                    keep = ~prev_done
                    if keep.any():
                        fields = (self._stored_obs(obs), self._stored_action(env_action), rewards,
                                  self._stored_obs(real_next), terminated, truncated)
                        buffer.add(*(np.asarray(x)[keep] for x in fields),
                                   *(m[keep] if m is not None else None for m in (masks, next_masks)))
                    prev_done = self._prev_done = done
                else:
                    buffer.add(self._stored_obs(obs), self._stored_action(env_action), rewards,
                               self._stored_obs(real_next), terminated, truncated, masks,
                               self._stored_next_masks(next_masks, info, done))
                if hp["bound_targets"]:
                    self._observe_rewards(rewards)
                self._track_episodes(rewards, done, counted=keep if next_step_mode else None)
                obs, masks = next_obs, next_masks
                self._last_obs = obs  # current for a callback that checkpoints
                self.num_timesteps += n_envs
                steps_per_env = self.num_timesteps // n_envs
                # len(buffer): a run resumed from a checkpoint saved without its buffer starts empty.
                if self.num_timesteps >= hp["learning_starts"] and steps_per_env % hp["train_freq"] == 0 \
                        and len(buffer) > 0:
                    for _ in range(hp["gradient_steps"]):
                        self.train_step()
                if bar is not None:
                    bar.update(n_envs)
                    if self.episode_returns and steps_per_env % 100 == 0:
                        bar.set_postfix(ep_return=f"{self.episode_returns[-1]:.1f}", refresh=False)
                if callback is not None and callback(self) is False:
                    break
        finally:
            self._last_obs = obs
            if bar is not None:
                bar.close()
        return self

    def _random_action(self, masks: np.ndarray | None) -> np.ndarray:
        """A warm-up action per copy, uniform over the (allowed) actions."""
        return self.env.action_space.sample()

    def _track_episodes(self, rewards: np.ndarray, done: np.ndarray, counted: np.ndarray | None = None) -> None:
        """``counted``: copies whose step belongs to an episode (False on a NEXT_STEP reset step)."""
        self._returns += rewards
        self._lengths += 1 if counted is None else counted
        for i in np.flatnonzero(done):
            self.episode_returns.append(float(self._returns[i]))
            self.episode_lengths.append(int(self._lengths[i]))
            self.num_episodes += 1
            self._returns[i] = 0.0
            self._lengths[i] = 0

    def _sample(self) -> Batch:
        hp = self.hparams
        return self.buffer.sample(hp["batch_size"], n_step=hp["n_step"], gamma=hp["gamma"])

    def _discount(self, batch: Batch) -> float | Tensor:
        """What multiplies V(s') in the target: gamma, or gamma^k per transition for n-step returns."""
        return self.hparams["gamma"] if batch.discount is None else batch.discount

    def _actor_turn(self) -> bool:
        """Whether this update steps the actor and alpha too (``policy_delay``)."""
        return self.num_updates % self.hparams["policy_delay"] == 0

    def _actor_updates(self) -> int:
        """Actor steps taken before this update (``policy_delay`` counts only every d-th update)."""
        return -(-self.num_updates // self.hparams["policy_delay"])

    def train_step(self) -> dict[str, Tensor]:
        """One gradient step on the critics, the actor and the entropy temperature, then Polyak.

        Order as in jaxrl and SB3: the actor is improved against the freshly updated critics.
        With ``policy_delay`` d > 1 the actor and alpha step only on every d-th update.
        """
        hp = self.hparams
        if self.num_updates == 0 and hp["alpha"] == "auto":
            self._calibrate_alpha()
        batch = self._sample()
        alpha = self.log_alpha.detach().exp()

        with torch.no_grad():
            next_v = self._next_value(batch.next_obs, batch.next_masks,
                                      alpha if hp["backup_entropy"] else torch.zeros_like(alpha))
            target = losses.soft_bellman_target(self._target_rewards(batch, alpha), batch.terminated, next_v,
                                                self._discount(batch), self._target_bounds())
        q = self._critic_values(batch.obs, batch.actions)
        c_loss, info = losses.critic_loss(q, target, hp["huber_delta"], batch.weights)
        self._update_priorities(batch, q, target)
        self.critic_optimizer.zero_grad(set_to_none=True)
        c_loss.backward()
        info["grad/critic_norm"] = losses.grad_norm(self.critic.parameters())
        losses.adam_step(self.critic_optimizer)

        if self._actor_turn():
            q, entropy, a_info = self._actor_objective(batch.obs, batch.masks)
            a_loss, a_info2 = losses.actor_loss(q, entropy, alpha)
            info.update(a_info)
            info.update(a_info2)
            self.actor_optimizer.zero_grad(set_to_none=True)
            if hp["learn_alpha"]:
                # The temperature loss sees the entropy detached and the actor loss sees alpha detached,
                # so their parameters are disjoint: one backward through the sum gives both gradients.
                t_loss, t_info = losses.temperature_loss(self.log_alpha, entropy, self.target_entropy)
                info.update(t_info)
                self.alpha_optimizer.zero_grad(set_to_none=True)
                (a_loss + t_loss).backward()
            else:
                a_loss.backward()
                info["train/alpha"] = alpha
            self._step_actor(info, batch, alpha)
        return self._end_update(info)

    def _step_actor(self, info: dict[str, Tensor], batch: Batch, alpha: Tensor) -> None:
        """With the actor's (and alpha's) gradients in place: their metrics, then the Adam steps."""
        info["grad/actor_norm"] = losses.grad_norm(self.policy.parameters())
        info.update(self._actor_diagnostics(batch.obs, alpha, batch.masks))
        losses.adam_step(self.actor_optimizer)
        if self.hparams["learn_alpha"]:
            losses.adam_step(self.alpha_optimizer)

    def _end_update(self, info: dict[str, Tensor]) -> dict[str, Tensor]:
        """Polyak-average the targets, count the update, keep its metrics."""
        losses.polyak_update(self.critic_target.parameters(), self.critic.parameters(),
                             self.hparams["target_update_rate"])
        self.num_updates += 1
        self._accumulate(info)
        return info

    def _weight_lists(self) -> tuple[list[Tensor], ...]:
        """Policy weights, biases; critic weights, biases; target weights, biases. Loading a
        checkpoint copies into the same Parameter objects, so the lists stay valid."""
        if getattr(self, "_weights", None) is None:
            linears = [m for m in self.policy.modules() if isinstance(m, nn.Linear)]
            c_layers, t_layers = self.critic.layers, self.critic_target.layers
            self._weights = ([m.weight for m in linears], [m.bias for m in linears], [x.weight for x in c_layers],
                             [x.bias for x in c_layers], [x.weight for x in t_layers], [x.bias for x in t_layers])
        return self._weights

    @staticmethod
    def _set_grads(params: list[Tensor], grads: list[Tensor]) -> None:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.view_as(p)

    def _calibrate_alpha(self) -> None:
        """``alpha="auto"``: alpha = mean |r| over the buffer (the warm-up data) / maximum entropy.

        A fixed alpha = 1 assumes rewards of order 1 per step per nat: on Combinatorial-v0 (11 nats,
        rewards <= 1) it kept the policy uniform for ~10k updates while Adam walked log alpha down at
        ~lr per step (benchmarks/README.md). Matching the uniform policy's bonus to the typical reward
        gives 0.25 / 11.09 = 0.023 there, the order where the learned alpha settled (0.04-0.09),
        and leaves CartPole (1 / ln 2 = 1.44) and Acrobot (1 / ln 3 = 0.91) near 1. All-zero
        warm-up rewards carry no scale: alpha stays 1. Measured there, it does not work alone:
        the entropy collapsed to 0 within 2k updates while log alpha climbed back at the default
        rate; with ``alpha_learning_rate=3e-3`` and ``backup_entropy=False`` it held the target
        entropy and learned (benchmarks/README.md, "Why the joint critic sat flat").
        """
        n = len(self.buffer)
        scale = float(self.buffer.rewards[:n].abs().mean()) if n else 0.0
        if scale > 0:
            with torch.no_grad():
                self.log_alpha.fill_(math.log(scale / self._max_entropy()))

    def _observe_rewards(self, rewards: np.ndarray) -> None:
        """Widen :attr:`reward_range` to ``rewards`` and, when it moved, the target bounds."""
        lo, hi = float(np.min(rewards)), float(np.max(rewards))
        if lo < self.reward_range[0] or hi > self.reward_range[1]:
            self.reward_range = (min(lo, self.reward_range[0]), max(hi, self.reward_range[1]))
            self.target_bounds.copy_(torch.tensor(losses.value_bounds(*self.reward_range, self.hparams["gamma"])))

    def _update_priorities(self, batch: Batch, q: Tensor, target: Tensor) -> None:
        """Prioritized replay: the sampled rows' priorities from this update's TD errors, the
        critics' mean |Q - target| (before the critics step, as Schaul et al. 2016)."""
        if batch.indices is not None:
            self.buffer.update_priorities(batch.indices, (q.detach() - target).abs().mean(0))

    def _target_rewards(self, batch: Batch, alpha: Tensor) -> Tensor:
        """The reward in the critic target: the batch's (GumbelSAC may add its Munchausen term)."""
        return batch.rewards

    def _target_bounds(self) -> Tensor | None:
        """What the critic target's bootstrapped value is clamped to, or None (``bound_targets`` off)."""
        return self.target_bounds if self.hparams["bound_targets"] else None

    def _accumulate(self, info: dict[str, Tensor]) -> None:
        # One stack and one add per update, keyed by the set of metric names (diagnostics
        # appear only every N updates), instead of an add per metric: fewer small ops (issue 7).
        keys = tuple(info)
        values = torch.stack([v.detach().float().reshape(()) for v in info.values()])
        if keys in self._info_sums:
            self._info_sums[keys] += values
            self._info_counts[keys] += 1
        else:
            self._info_sums[keys], self._info_counts[keys] = values, 1

    def pop_train_info(self) -> dict[str, float]:
        """Means of the update metrics since the last call (one host sync), then reset."""
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for keys, values in self._info_sums.items():
            for k, v in zip(keys, values.cpu().tolist(), strict=True):
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + self._info_counts[keys]
        self._info_sums, self._info_counts = {}, {}
        return {k: sums[k] / counts[k] for k in sums}

    # ---------------------------------------------------------------- save / load
    def _learning_rates(self) -> dict[str, float]:
        """Each optimizer's learning rate (keys of :meth:`_optimizers`) from the hyperparameters."""
        hp = self.hparams
        return {"actor": hp["learning_rate"], "critic": hp["critic_learning_rate"],
                "alpha": hp["learning_rate"] if hp["alpha_learning_rate"] is None else hp["alpha_learning_rate"]}

    def _modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "critic": self.critic, "critic_target": self.critic_target}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer, "alpha": self.alpha_optimizer}

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Every tensor of the agent (flat names) and the JSON-able rest: the save format."""
        tensors: dict[str, Tensor] = {}
        for name, module in self._modules().items():
            for k, v in module.state_dict().items():
                tensors[f"{name}.{k}"] = v
        tensors["log_alpha"] = self.log_alpha.detach().reshape(1)
        if self.reward_range[0] <= self.reward_range[1]:  # bound_targets has seen rewards
            tensors["reward_range"] = torch.tensor(self.reward_range, dtype=torch.float64)
        optim_meta = {}
        for name, opt in self._optimizers().items():
            sd = opt.state_dict()
            optim_meta[name] = sd["param_groups"]
            for idx, st in sd["state"].items():
                for k, v in st.items():
                    tensors[f"optim.{name}.{idx}.{k}"] = torch.as_tensor(v).reshape(-1) if v.dim() == 0 else v
        meta = {"format": FORMAT, "agent": type(self).__name__, "hparams": self.hparams,
                "observation_space": space_to_json(self.observation_space),
                "action_space": space_to_json(self.action_space), "num_timesteps": self.num_timesteps,
                "num_updates": self.num_updates, "optimizers": optim_meta, "extra": self._extra_state(),
                "env_id": self.env_id}
        return tensors, meta

    def save(self, path: str | Path) -> Path:
        """Write weights, optimizer states and metadata to one safetensors file (no pickle)."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors, meta = self.state_tensors()
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"reparl": json.dumps(meta)})
        tmp.replace(path)  # atomic: a crash mid-write never leaves a half file under `path`
        return path

    @classmethod
    def load(cls, path: str | Path, env: str | gym.Env | gym.vector.VectorEnv | None = None,
             device: str = "auto", **overrides: Any) -> SoftActorCritic:
        """Rebuild an agent from :meth:`save`'s file. Never unpickles; rejects files that do not match."""
        tensors, meta = read_model_file(path)
        if meta.get("agent") != cls.__name__:
            raise ValueError(f"{path} holds a {meta.get('agent')} model; load it with {meta.get('agent')}.load")
        hp = {**meta["hparams"], "device": device, **overrides}
        obs_space = space_from_json(meta["observation_space"])
        act_space = space_from_json(meta["action_space"])
        if env is not None:
            agent = cls(env, **hp)
            for what, mine, theirs in (("observation", agent.observation_space, obs_space),
                                       ("action", agent.action_space, act_space)):
                if mine != theirs:
                    raise ValueError(f"{path} was trained with {what} space {theirs}; this env has {mine}")
        else:
            agent = cls(None, observation_space=obs_space, action_space=act_space, **hp)
        agent.load_state_tensors(tensors, meta, source=str(path))
        return agent

    def load_state_tensors(self, tensors: dict[str, Tensor], meta: dict[str, Any], source: str = "state") -> None:
        for name, module in self._modules().items():
            prefix = f"{name}."
            sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            own = module.state_dict()
            missing, extra = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
            wrong = [f"{k}: file {tuple(sd[k].shape)}/{sd[k].dtype}, agent {tuple(own[k].shape)}/{own[k].dtype}"
                     for k in set(own) & set(sd) if sd[k].shape != own[k].shape or sd[k].dtype != own[k].dtype]
            if missing or extra or wrong:
                raise ValueError(f"{source} does not match this {type(self).__name__} ({name}): "
                                 f"missing {missing}, unexpected {extra}, mismatched {sorted(wrong)}")
            module.load_state_dict(sd)
        with torch.no_grad():
            self.log_alpha.copy_(tensors["log_alpha"].reshape(()))
        # A file without a reward range (bound_targets off, or older than it): none seen yet.
        self.reward_range = (math.inf, -math.inf)
        self.target_bounds.copy_(torch.tensor([-math.inf, math.inf]))
        if "reward_range" in tensors:
            self._observe_rewards(tensors["reward_range"].numpy())
        for name, opt in self._optimizers().items():
            groups = meta["optimizers"][name]
            state: dict[int, dict[str, Tensor]] = {}
            params = [p for g in opt.param_groups for p in g["params"]]  # state_dict's index order
            for k, v in tensors.items():
                if k.startswith(f"optim.{name}."):
                    _, _, idx, key = k.split(".", 3)
                    # save() widened 0-d state to (1,): 'step', and Adam's moments of the 0-d log_alpha
                    shape = () if key == "step" else params[int(idx)].shape
                    state.setdefault(int(idx), {})[key] = v.reshape(shape)
            opt.load_state_dict({"state": state, "param_groups": groups})
        self.num_timesteps = int(meta["num_timesteps"])
        self.num_updates = int(meta.get("num_updates", 0))
        self._load_extra_state(meta.get("extra", {}))

    # ---------------------------------------------------------------- checkpoint / restore
    def check_finite(self, step: int | None = None) -> None:
        """Raise :class:`NonFiniteError` if an accumulated loss/metric or a weight is NaN or inf.

        One host sync for all of them, so it is meant for log intervals and checkpoints, not every update.
        """
        params = {f"{m}.{k}": v for m, mod in self._modules().items() for k, v in mod.state_dict().items()}
        params["log_alpha"] = self.log_alpha.detach()
        metrics = {k: v[i] for keys, v in self._info_sums.items() for i, k in enumerate(keys)}
        named = {**metrics, **params}
        ok = torch.stack([torch.isfinite(v).all() for v in named.values()]).cpu().tolist()
        bad = [k for k, good in zip(named, ok, strict=True) if not good]
        if bad:
            where = f"at env step {self.num_timesteps if step is None else step} (update {self.num_updates})"
            raise NonFiniteError(f"non-finite values {where} in: {', '.join(bad)}")

    def checkpoint(self, path: str | Path, include_buffer: bool = True) -> Path:
        """Everything :meth:`restore` needs to continue learning exactly where this agent is: the model
        file's content plus RNG states, the vector env's state, the current observation, episode
        accumulators, pending metrics and (``include_buffer``) the replay buffer. One safetensors file,
        its JSON in the header, a SHA-256 of the tensors against silent corruption; written atomically."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        tensors, meta = self.state_tensors()
        for i, v in enumerate(self._info_sums.values()):
            tensors[f"info.{i}"] = v.detach()
        if include_buffer and self.buffer is not None:
            tensors.update({f"buffer.{k}": v for k, v in self.buffer.state_dict().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, st in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = st
        resume: dict[str, Any] = {
            "info_groups": [[list(keys), n] for keys, n in self._info_counts.items()],
            "num_episodes": self.num_episodes,
            "episode_returns": list(self.episode_returns), "episode_lengths": list(self.episode_lengths),
            "python_random": jsonify(random.getstate()),
            "numpy_random": jsonify(np.random.get_state(legacy=False)),
        }
        if self.env is not None and self._last_obs is not None:
            tensors["env.last_obs"] = torch.as_tensor(np.ascontiguousarray(self._last_obs))
            for name in ("_returns", "_lengths", "_prev_done"):
                tensors[f"env.{name}"] = torch.as_tensor(np.asarray(getattr(self, name)))
            resume["env"] = env_state(self.env)
        meta["checkpoint"] = resume
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        meta["sha256"] = tensors_digest(tensors)
        return write_safetensors(path, tensors, meta)

    def restore(self, path: str | Path, changed: Collection[str] = ()) -> SoftActorCritic:
        """Continue from :meth:`checkpoint`'s file: this agent must have been built with the same
        hyperparameters (and an env of the same kind, whose state is then restored).

        ``changed``: hyperparameters this agent may hold at other values than the checkpoint, for
        a counterfactual continuation (``experiments.replay``: the same run from the same state
        with one setting changed). Their state must still fit: a change of network shapes fails.
        """
        tensors, meta = read_checkpoint(path)
        if meta.get("agent") != type(self).__name__:
            raise ValueError(f"{path} is a {meta.get('agent')} checkpoint, not {type(self).__name__}")
        # A key the checkpoint predates ran with its behaviour_before value, or else today's default
        # (the key was added with the old behaviour as its default: policy_delay, n_step, ...).
        saved = {k: meta["hparams"].get(k, self.behaviour_before.get(k, self.defaults[k])) for k in self.hparams}
        differ = sorted(k for k in self.hparams if k not in {"device", *changed} and saved[k] != self.hparams[k])
        if differ:
            raise ValueError(f"{path} was written with other hyperparameters: "
                             + ", ".join(f"{k}={saved[k]!r} (here {self.hparams[k]!r})" for k in differ))
        self.load_state_tensors(tensors, meta, source=str(path))
        if changed:  # the optimizers' saved groups carry the old rates
            for name, lr in self._learning_rates().items():
                self._optimizers()[name].param_groups[0]["lr"] = lr
        resume = meta["checkpoint"]
        groups = [tuple(keys) for keys, _ in resume["info_groups"]]
        self._info_sums = {keys: tensors[f"info.{i}"].to(self.device) for i, keys in enumerate(groups)}
        self._info_counts = {keys: int(n) for keys, (_, n) in zip(groups, resume["info_groups"], strict=True)}
        self.num_episodes = int(resume["num_episodes"])
        self.episode_returns.clear()
        self.episode_returns.extend(resume["episode_returns"])
        self.episode_lengths.clear()
        self.episode_lengths.extend(resume["episode_lengths"])
        if "buffer.pos_size" in tensors:
            self._ensure_buffer().load_state_dict({k[len("buffer."):]: v for k, v in tensors.items()
                                                   if k.startswith("buffer.")})
            if self.hparams["bound_targets"] and len(self.buffer):
                # A run that turns bound_targets on at this checkpoint (experiments.replay) has no
                # reward range saved: the buffer's rewards give it.
                self._observe_rewards(self.buffer.rewards[:len(self.buffer)].cpu().numpy())
        if self.env is not None and "env" in resume:
            n = self.env.num_envs
            if tensors["env._returns"].shape[0] != n:
                raise ValueError(f"{path} was written with {tensors['env._returns'].shape[0]} env copies; "
                                 f"this env has {n}")
            self.env.reset(seed=self.hparams["seed"])  # builds the vector env's buffers; then its state
            exact = set_env_state(self.env, resume["env"])
            if exact:
                self._last_obs = tensors["env.last_obs"].numpy().copy()
                self._returns = tensors["env._returns"].numpy().copy()
                self._lengths = tensors["env._lengths"].numpy().copy()
                self._prev_done = tensors["env._prev_done"].numpy().copy()
            else:  # opaque simulator state: start fresh episodes from the restored RNGs
                import warnings

                warnings.warn(f"{self.env_id}: the env's state is not plain data, so its episodes restart on "
                              "resume (the interrupted episodes are lost)", RuntimeWarning, stacklevel=2)
                self._last_obs, _ = self.env.reset()
                self._returns, self._lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
                self._prev_done = np.zeros(n, dtype=bool)
                if self.buffer is not None and len(self.buffer) >= n:
                    # Each copy's last stored step now ends its episode (a truncation: it still
                    # bootstraps from its own next observation), so n-step windows stop there
                    # instead of running on into the fresh episode.
                    self.buffer.truncated[(self.buffer.pos - n + torch.arange(n)) % self.buffer.capacity] = 1.0
        # RNGs last: nothing above may consume them after they are set.
        random.setstate(tuplify(resume["python_random"]))
        np.random.set_state(numpy_state(resume["numpy_random"]))
        torch.set_rng_state(tensors["rng.torch"])
        cuda = [tensors[f"rng.cuda.{i}"] for i in range(len(tensors)) if f"rng.cuda.{i}" in tensors]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        return self
