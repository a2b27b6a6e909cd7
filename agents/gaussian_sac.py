"""GaussianSAC: soft actor-critic for Box actions with a tanh-squashed Gaussian policy.

The action is ``tanh(mu + sigma * eps)`` with eps ~ N(0, I) drawn outside the graph, so the
actor's gradient is pathwise through the sample (Haarnoja et al. 2018, sec. 4.2). Inside the
agent actions live in [-1, 1]^d; they are mapped to the env's bounds only on the way out, so the
critics see well-scaled inputs and the default target entropy -dim(A) means the same on any Box.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor

from agents import losses
from agents.core import SoftActorCritic
from agents.distributions import SquashedGaussian
from agents.networks import (
    CriticEnsemble,
    GaussianPolicy,
    ensemble_backward,
    ensemble_forward,
    mlp_backward,
    mlp_forward,
)


class GaussianSAC(SoftActorCritic):
    """Soft actor-critic for bounded Box action spaces (see :class:`agents.core.SoftActorCritic`).

    Two implementation switches, neither of which changes the maths:

    Args:
        manual_backward: run the update with its gradients written out (:func:`critic_grads`,
            :func:`actor_grads`) instead of autograd; held equal to autograd in float64 by the tests.
            ``relu_subgradient`` other than 0, or ``prioritized_replay``, always takes autograd.
        compile: run those two functions through ``torch.compile`` (inductor): one compilation of
            ~20-60 s at the first update, then fused elementwise kernels around the matmuls. Needs
            a C++ compiler; without one the agent warns and stays eager.
    """

    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = (spaces.Box,)
    other_agent: ClassVar[str] = "GumbelSAC for Discrete and MultiDiscrete action spaces"
    defaults: ClassVar[dict[str, Any]] = {
        **SoftActorCritic.defaults,
        # The update with its backward pass written out (train_step below) instead of autograd:
        # the same maths in a fraction of the ops (issue 7; benchmarks/README.md, "Speed"). False
        # takes the autograd path, which ReLU subgradients other than 0 always use.
        "manual_backward": True,
        # Off by default: the first update then waits for a compilation, and the CPU gain is
        # modest (benchmarks/README.md, "Speed").
        "compile": False,
    }

    @classmethod
    def validate_hyperparameters(cls, hp: dict[str, Any]) -> None:
        super().validate_hyperparameters(hp)
        for key in ("manual_backward", "compile"):
            if not isinstance(hp[key], bool):
                raise ValueError(f"{key}={hp[key]!r} must be true or false")
        if hp["compile"] and not (hp["manual_backward"] and hp["relu_subgradient"] == 0.0):
            raise ValueError(f"compile=True compiles the hand-written update, which needs manual_backward=True and "
                             f"relu_subgradient=0; got manual_backward={hp['manual_backward']}, "
                             f"relu_subgradient={hp['relu_subgradient']}. Set compile=false.")

    def _check_spaces(self) -> None:
        super()._check_spaces()
        space = self.action_space
        if len(space.shape) != 1:
            raise TypeError(f"GaussianSAC needs a 1-D Box action space; got shape {space.shape}")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise TypeError(f"GaussianSAC squashes actions into the Box bounds, which must be finite; got "
                            f"low={space.low}, high={space.high}. Wrap the env with gymnasium.wrappers.ClipAction "
                            "or RescaleAction to finite bounds.")

    def _build(self) -> None:
        hp, d = self.hparams, int(self.action_space.shape[0])
        self.act_dim = d
        self.policy = GaussianPolicy(self.obs_dim, d, hp["net_arch"], hp["relu_subgradient"]).to(self.device)
        self.critic = CriticEnsemble(hp["n_critics"], self.obs_dim + d, hp["net_arch"], 1, hp["relu_subgradient"],
                                     hp["critic_layer_norm"]).to(self.device)
        self._unit_low = -torch.ones(d, device=self.device)
        self._unit_high = torch.ones(d, device=self.device)
        self._env_low = self.action_space.low.astype(np.float64)
        self._env_half = (self.action_space.high.astype(np.float64) - self._env_low) / 2

    def _default_target_entropy(self) -> float:
        return -float(self.act_dim)

    def distribution(self, obs: Tensor) -> SquashedGaussian:
        mean, log_std = self.policy(obs)
        return SquashedGaussian(mean, log_std, self._unit_low, self._unit_high)

    def _act(self, obs: Tensor, deterministic: bool, masks: Tensor | None) -> Tensor:
        dist = self.distribution(obs)
        return dist.mode() if deterministic else dist.sample()

    def _env_action(self, action: Tensor) -> np.ndarray:
        unit = action.cpu().numpy().astype(np.float64)
        return (self._env_low + (unit + 1) * self._env_half).astype(self.action_space.dtype)

    def _stored_action(self, env_action: np.ndarray) -> np.ndarray:
        a = np.asarray(env_action, dtype=np.float64).reshape(-1, self.act_dim)
        return np.clip((a - self._env_low) / self._env_half - 1, -1, 1).astype(np.float32)

    def _action_shape(self) -> tuple[tuple[int, ...], torch.dtype]:
        return (self.act_dim,), torch.float32

    def _q(self, critic: CriticEnsemble, obs: Tensor, action: Tensor, detach_params: bool = False) -> Tensor:
        return critic(torch.cat([obs, action], dim=-1), detach_params).squeeze(-1)

    def _critic_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        return self._q(self.critic, obs, actions)

    def _next_value(self, next_obs: Tensor, next_masks: Tensor | None, alpha: Tensor) -> Tensor:
        action, log_prob = self.distribution(next_obs).rsample()
        return self._q(self.critic_target, next_obs, action).min(0).values - alpha * log_prob

    def _actor_objective(self, obs: Tensor, masks: Tensor | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        action, log_prob = self.distribution(obs).rsample()
        q = self._q(self.critic, obs, action, detach_params=True).min(0).values
        return q, -log_prob, {}

    # ---------------------------------------------------------------- the update, by hand
    def train_step(self) -> dict[str, Tensor]:
        hp = self.hparams
        # Prioritized replay's weighted loss and TD errors live on the autograd path only here.
        if hp["manual_backward"] and hp["relu_subgradient"] == 0.0 and not hp["prioritized_replay"]:
            return self._manual_train_step()
        return super().train_step()

    def _manual_train_step(self) -> dict[str, Tensor]:
        """:meth:`SoftActorCritic.train_step` with every gradient written out
        (:func:`critic_grads`, :func:`actor_grads`).

        Same losses, same order (critic step, then the actor against the stepped critic, then
        alpha and Polyak), a fraction of the ops: an update at the default sizes is a few large
        matmuls, and autograd's per-op bookkeeping was much of its time on a CPU (issue 7). The
        tests hold it equal to the autograd path in float64.
        """
        hp = self.hparams
        if self.num_updates == 0 and hp["alpha"] == "auto":
            self._calibrate_alpha()
        batch = self._sample()
        p_w, p_b, c_w, c_b, t_w, t_b = self._weight_lists()
        critic_fn, actor_fn = self._update_functions()
        bounds = (self.policy.log_std_min, self.policy.log_std_max)
        alpha = self.log_alpha.detach().exp()
        actor_turn = self._actor_turn()
        n_b = batch.obs.shape[0]
        eps = torch.randn((2 if actor_turn else 1) * n_b, self.act_dim, device=self.device, dtype=batch.obs.dtype)
        with torch.no_grad():
            c_grads, saved, c_info = critic_fn(batch.obs, batch.actions, batch.rewards, batch.terminated,
                                               batch.next_obs, eps, alpha, p_w, p_b, c_w, c_b, t_w, t_b, bounds,
                                               self._discount(batch), hp["backup_entropy"], actor_turn,
                                               hp["huber_delta"], hp["critic_layer_norm"], self._target_bounds())
            self._set_grads([*c_w, *c_b], c_grads)
        info = {**c_info, "grad/critic_norm": losses.grad_norm(self.critic.parameters())}
        losses.adam_step(self.critic_optimizer)

        if actor_turn:
            with torch.no_grad():
                a_grads, a_info = actor_fn(batch.obs, saved, eps[n_b:], alpha, p_w, c_w, c_b, bounds,
                                           hp["critic_layer_norm"])
                self._set_grads([*p_w, *p_b], a_grads)
            info.update(a_info)
            if hp["learn_alpha"]:
                # log_alpha * (H - H_target): its gradient is the batch mean of H - H_target.
                g_alpha = a_info["train/entropy"] - self.target_entropy
                info.update({"train/alpha_loss": self.log_alpha.detach() * g_alpha, "train/alpha": alpha})
                self.log_alpha.grad = g_alpha.reshape(self.log_alpha.shape)
            else:
                info["train/alpha"] = alpha
            self._step_actor(info, batch, alpha)
        return self._end_update(info)

    def _update_functions(self) -> tuple[Any, Any]:
        """(critic_grads, actor_grads), compiled when ``compile`` is on and compilation works."""
        if not self.hparams["compile"] or getattr(self, "_compile_failed", False):
            return critic_grads, actor_grads
        return _compiled(critic_grads, self), _compiled(actor_grads, self)



_COMPILED: dict[str, Any] = {}


def _compiled(fn: Any, agent: GaussianSAC) -> Any:
    """``torch.compile(fn)``, shared by every agent in the process (one compilation per shape),
    falling back to ``fn`` with a warning when compilation fails (no C++ compiler, say). The
    update functions are pure, so a failed first call can simply be repeated eagerly."""
    if fn.__name__ not in _COMPILED:
        _COMPILED[fn.__name__] = torch.compile(fn, fullgraph=True, dynamic=False)
    compiled = _COMPILED[fn.__name__]

    def call(*args: Any) -> Any:
        if getattr(agent, "_compile_failed", False):
            return fn(*args)
        try:
            return compiled(*args)
        except Exception as e:  # noqa: BLE001 - inductor raises many types; eager below re-raises real errors
            first_line = str(e).splitlines()[0] if str(e) else ""
            warnings.warn(f"torch.compile of the GaussianSAC update failed ({type(e).__name__}: {first_line}); "
                          "continuing without it. Set compile=false to skip the attempt.", stacklevel=2)
            agent._compile_failed = True
            return fn(*args)
    return call


def _policy_sample(acts_out: Tensor, eps: Tensor, bounds: tuple[float, float]) -> tuple[Tensor, ...]:
    """GaussianPolicy's head output -> (action in [-1, 1], log pi, tanh(raw), std), as
    GaussianPolicy.forward, then SquashedGaussian.rsample with the unit box. (u - mean) / std in
    the log-density is the drawn eps itself."""
    mean, raw = acts_out.chunk(2, dim=-1)
    tanh_raw = torch.tanh(raw)
    log_std = (tanh_raw + 1).mul_(0.5 * (bounds[1] - bounds[0])).add_(bounds[0])
    std = log_std.exp()
    u = torch.addcmul(mean, std, eps)
    action = torch.tanh(u)  # low + (tanh(u) + 1) * half_range with low = -1, half_range = 1
    d = eps.shape[-1]
    log_prob = ((u + F.softplus(-2 * u)).mul_(2).sub_(log_std).sub_(0.5 * eps * eps).sum(-1)
                - d * (0.5 * math.log(2 * math.pi) + 2 * math.log(2)))
    return action, log_prob, tanh_raw, std


def critic_grads(obs: Tensor, actions: Tensor, rewards: Tensor, terminated: Tensor, next_obs: Tensor, eps: Tensor,
                 alpha: Tensor, p_w: list[Tensor], p_b: list[Tensor], c_w: list[Tensor], c_b: list[Tensor],
                 t_w: list[Tensor], t_b: list[Tensor], bounds: tuple[float, float], gamma: float | Tensor,
                 backup_entropy: bool, with_actor: bool = True, huber_delta: float | None = None,
                 layer_norm: bool = False, target_bounds: Tensor | None = None,
                 ) -> tuple[list[Tensor], dict[str, Tensor] | None, dict[str, Tensor]]:
    """Gradients of the critic loss (0.5 * MSE to the soft Bellman target, or Huber with
    ``huber_delta`` as :func:`losses.critic_loss`, summed over the ensemble) for weights ``c_w``
    then biases ``c_b``; what the actor step reuses; metrics.

    The policy runs once over [next_obs; obs] (``eps`` holds both halves' noise): rows :B give
    the target's next action, rows B: the actor loss's action. The actor's weights do not change
    between the two uses, so this is the same computation as two passes. ``with_actor=False``
    (an update the actor skips, ``policy_delay``) runs it over next_obs alone and saves nothing.
    ``layer_norm``: the critics' ``critic_layer_norm``; ``target_bounds``: ``bound_targets``' clamp.
    """
    n_b = obs.shape[0]
    p_acts = mlp_forward(torch.cat([next_obs, obs]) if with_actor else next_obs, p_w, p_b)
    action, log_prob, tanh_raw, std = _policy_sample(p_acts[-1], eps, bounds)
    next_q = ensemble_forward(torch.cat([next_obs, action[:n_b]], dim=-1), t_w, t_b, layer_norm)[-1].squeeze(-1)
    next_v = next_q.min(0).values
    if backup_entropy:
        next_v = next_v - alpha * log_prob[:n_b]
    target = losses.soft_bellman_target(rewards, terminated, next_v, gamma, target_bounds)
    norms: list[Tensor] = []
    c_acts = ensemble_forward(torch.cat([obs, actions], dim=-1), c_w, c_b, layer_norm, norms)
    q = c_acts[-1].squeeze(-1)
    err = q - target
    if huber_delta is None:
        loss = 0.5 * err.square().mean(1).sum()
        g_q = err
    else:
        # Huber: 0.5 e^2 within delta, delta * (|e| - delta / 2) beyond; its derivative is e clipped.
        g_q = err.clamp(-huber_delta, huber_delta)
        loss = (g_q * (err - 0.5 * g_q)).mean(1).sum()
    gw, gb, _ = ensemble_backward(c_acts, c_w, (g_q / n_b).unsqueeze(-1), norms=norms)
    saved = {"p_acts": [t[n_b:] for t in p_acts], "action": action[n_b:], "log_prob": log_prob[n_b:],
             "tanh_raw": tanh_raw[n_b:], "std": std[n_b:]} if with_actor else None
    return [*gw, *gb], saved, {"train/critic_loss": loss, "train/q_mean": q.mean(), "train/target_mean": target.mean()}


def actor_grads(obs: Tensor, saved: dict[str, Tensor], eps: Tensor, alpha: Tensor, p_w: list[Tensor],
                c_w: list[Tensor], c_b: list[Tensor], bounds: tuple[float, float], layer_norm: bool = False
                ) -> tuple[list[Tensor], dict[str, Tensor]]:
    """Gradients of the actor loss mean(alpha * log pi - min_i Q_i(s, a~)) for the policy's
    weights then biases, through the (already stepped) critic's input, never its weights."""
    n_b = obs.shape[0]
    a_pi, log_prob, std = saved["action"], saved["log_prob"], saved["std"]
    norms: list[Tensor] = []
    q_acts = ensemble_forward(torch.cat([obs, a_pi], dim=-1), c_w, c_b, layer_norm, norms)
    q_min, which = q_acts[-1].squeeze(-1).min(0)
    loss = (alpha * log_prob - q_min).mean()
    # d loss / d Q_i is -1/B on the minimizing member of each row (min's subgradient), 0 elsewhere.
    g_q = torch.zeros_like(q_acts[-1]).scatter_(0, which.view(1, -1, 1), -1.0 / n_b)
    g_in = ensemble_backward(q_acts, c_w, g_q, weight_grads=False, input_grad=True, norms=norms)[2]
    # Through tanh (d a/du = 1 - a^2) and the log-density (d log pi / du = 2 tanh(u); its Gaussian
    # term, -eps^2/2 - log_std with eps fixed, moves only with log_std).
    g_u = torch.addcmul(g_in[:, obs.shape[1]:] * (1 - a_pi * a_pi), a_pi, alpha * (2.0 / n_b))
    g_log_std = (g_u * std * eps).sub_(alpha / n_b)
    g_raw = g_log_std.mul_((1 - saved["tanh_raw"].square()).mul_(0.5 * (bounds[1] - bounds[0])))
    gw, gb = mlp_backward(saved["p_acts"], p_w, torch.cat([g_u, g_raw], dim=-1))
    return [*gw, *gb], {"train/actor_loss": loss, "train/entropy": -log_prob.mean()}
