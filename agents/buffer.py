"""Replay storage in preallocated tensors.

``terminated`` and ``truncated`` are stored apart: the critic target bootstraps through a
truncation (a time limit is not a property of the MDP; Pardo et al. 2018, "Time Limits in RL"),
and only a true termination cuts the return. Action masks are stored for both states: ``masks``
(the stored observation's) keeps the actor's update off actions that were illegal where it acted,
and ``next_masks`` keeps the Bellman target off actions illegal in the next state.

Prioritized replay (``priority_alpha > 0``; Schaul et al. 2016, proportional variant) samples row i
with probability p_i / sum p, p_i = (|TD error_i| + eps) ** alpha, a new row at the largest
priority so far, and returns importance weights (N P(i)) ** -beta / max over the batch for the
loss. Sampling is O(size) (one ``torch.multinomial`` over the filled rows), not a sum tree.

n-step returns (``sample(n_step=n)``) follow each env copy's own transitions, which sit ``stride``
(the number of env copies) rows apart, and stop at the episode's end or at the newest transition.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


def _memory(device: torch.device | str, field: str) -> int | None:
    """``field`` "available" or "total" bytes on ``device``: the GPU's (torch.cuda.mem_get_info), else
    /proc/meminfo's MemAvailable / MemTotal, else ``os.sysconf``'s pages; None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0 if field == "available" else 1])
    key, pages = ("MemAvailable:", "SC_AVPHYS_PAGES") if field == "available" else ("MemTotal:", "SC_PHYS_PAGES")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device``; None if unknown."""
    return _memory(device, "available")


def total_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes of memory on ``device`` in all; None if unknown."""
    return _memory(device, "total")


def safety_margin(device: torch.device | str = "cpu") -> int:
    """Memory a buffer must leave free: 512 MiB, or 10% of the device where that is less. The run
    needs memory beyond the buffer (networks, the batch and its gradients, the env, the allocator's
    slack, other processes), and a buffer that takes the last of it does not fail cleanly: on Linux
    the OOM killer ends the run (or a neighbour) with no error to catch, and on a GPU the first
    update fails instead of the allocation. 10% keeps small machines usable."""
    total = total_memory(device)
    return min(512 * 2**20, total // 10) if total is not None else 512 * 2**20


def check_fits(nbytes: int, device: torch.device | str, what: str) -> None:
    """Refuse an allocation that cannot fit, with :func:`safety_margin` to spare, before it is
    attempted (and before a run starts)."""
    available = available_memory(device)
    if available is None:
        return
    margin = safety_margin(device)
    if nbytes > available:
        raise MemoryError(f"{what} needs {nbytes / 2**30:,.2f} GiB ({nbytes:,} bytes) on {torch.device(device)}, "
                          f"but only {available / 2**30:,.2f} GiB is available; lower agent.buffer_size")
    if available - nbytes < margin:
        raise MemoryError(f"{what} needs {nbytes / 2**30:,.2f} GiB ({nbytes:,} bytes) on {torch.device(device)}, "
                          f"which would leave {(available - nbytes) / 2**20:,.0f} MiB of the "
                          f"{available / 2**30:,.2f} GiB available, less than the {margin / 2**20:,.0f} MiB the "
                          "rest of the run needs; lower agent.buffer_size")


class Batch(NamedTuple):
    obs: Tensor
    actions: Tensor
    rewards: Tensor
    next_obs: Tensor
    terminated: Tensor
    truncated: Tensor
    masks: Tensor | None
    next_masks: Tensor | None
    discount: Tensor | None = None
    """Per transition, gamma ** k for the k rewards summed into ``rewards`` (``sample(n_step > 1)``
    only; with one step the agent's gamma applies)."""
    indices: Tensor | None = None
    """Rows sampled (prioritized replay only: where :meth:`ReplayBuffer.update_priorities` writes)."""
    weights: Tensor | None = None
    """Importance weights of the rows (prioritized replay only), at most 1."""


class ReplayBuffer:
    """Circular buffer of transitions; every field is one tensor allocated up front.

    Args:
        capacity: number of transitions kept; the oldest are overwritten.
        obs_shape: shape of one observation.
        action_shape: shape of one action as stored (integers per factor, or a float vector).
        action_dtype: ``torch.long`` for categorical, ``torch.float32`` for Box.
        mask_size: length of the flat action mask, or None when the env has none. Both ``masks``
            and ``next_masks`` default to all-True (every action allowed).
        stride: rows between one env copy's consecutive transitions: the number of copies, whose
            transitions each :meth:`add` writes in the same order every time. Only n-step sampling
            reads it.
        priority_alpha: 0 samples uniformly; above 0, prioritized replay with this exponent.
        priority_beta: exponent of the importance weights of prioritized replay (1 corrects fully).
    """

    PRIORITY_EPS = 1e-3  # keeps a row whose TD error is 0 sampleable (Schaul et al.'s epsilon)

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...],
                 action_dtype: torch.dtype, device: torch.device | str = "cpu", mask_size: int | None = None,
                 obs_dtype: torch.dtype = torch.float32, stride: int = 1, priority_alpha: float = 0.0,
                 priority_beta: float = 0.4) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1; got {capacity}")
        self.capacity = int(capacity)
        self.stride = int(stride)
        self.device = torch.device(device)
        kw = {"device": self.device}
        self.obs = torch.zeros((capacity, *obs_shape), dtype=obs_dtype, **kw)
        self.next_obs = torch.zeros((capacity, *obs_shape), dtype=obs_dtype, **kw)
        self.actions = torch.zeros((capacity, *action_shape), dtype=action_dtype, **kw)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, **kw)
        self.terminated = torch.zeros(capacity, dtype=torch.float32, **kw)
        self.truncated = torch.zeros(capacity, dtype=torch.float32, **kw)
        self.masks, self.next_masks = ((torch.ones((capacity, mask_size), dtype=torch.bool, **kw),
                                        torch.ones((capacity, mask_size), dtype=torch.bool, **kw))
                                       if mask_size is not None else (None, None))
        self.priority_alpha, self.priority_beta = float(priority_alpha), float(priority_beta)
        # p_i ** alpha per row, and the largest p ** alpha yet (what a new row gets): device tensors, no sync.
        self.priorities = torch.zeros(capacity, dtype=torch.float32, **kw) if self.priority_alpha > 0 else None
        self.max_priority = torch.ones((), dtype=torch.float32, **kw)
        self.pos = 0
        self.size = 0

    @staticmethod
    def nbytes_for(capacity: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...],
                   mask_size: int | None = None, obs_dtype: torch.dtype = torch.float32) -> int:
        """Bytes the buffer will allocate, so a config can be refused before it runs."""
        obs_bytes = torch.empty((), dtype=obs_dtype).element_size() * int(np.prod(obs_shape))
        per = 2 * obs_bytes + 8 * int(np.prod(action_shape)) + 3 * 4 + 2 * (mask_size or 0)
        return capacity * per

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
            terminated: np.ndarray, truncated: np.ndarray, masks: np.ndarray | None = None,
            next_masks: np.ndarray | None = None) -> None:
        """Add a batch of transitions (one per vector-env copy); masks are flat, ``(n, mask_size)``."""
        n = len(rewards)
        fields = [(self.obs, obs), (self.next_obs, next_obs), (self.actions, actions), (self.rewards, rewards),
                  (self.terminated, terminated), (self.truncated, truncated)]
        fields += [(dst, src) for dst, src in ((self.masks, masks), (self.next_masks, next_masks))
                   if dst is not None and src is not None]
        if self.device.type == "cpu" and self.pos + n <= self.capacity:
            # The common case, once per env step: numpy writes straight into the tensors' memory,
            # ~1 us a field against ~30 us for index_put through torch (measured with torch.profiler).
            rows: slice | Tensor = slice(self.pos, self.pos + n)
            for dst, src in fields:
                view = dst.numpy()[rows]
                view[...] = np.asarray(src).reshape(view.shape)
        else:
            rows = ((torch.arange(n) + self.pos) % self.capacity).to(self.device)
            for dst, src in fields:
                dst[rows] = torch.as_tensor(np.asarray(src), device=self.device).to(dst.dtype).reshape(dst[rows].shape)
        if self.priorities is not None:
            self.priorities[rows] = self.max_priority
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def update_priorities(self, indices: Tensor, td_errors: Tensor) -> None:
        """Prioritized replay: the sampled rows' new priorities from their absolute TD errors.
        A row sampled twice in a batch keeps one of its two (equal-target) errors."""
        p = (td_errors.detach().abs().float() + self.PRIORITY_EPS) ** self.priority_alpha
        self.priorities[indices] = p
        torch.maximum(self.max_priority, p.max(), out=self.max_priority)

    def sample(self, batch_size: int, generator: torch.Generator | None = None, n_step: int = 1,
               gamma: float = 0.99) -> Batch:
        """Uniform sample with replacement (prioritized when the buffer was built so).

        With ``n_step`` n > 1, each sampled transition t carries the discounted sum of the rewards
        of t, t+1, ..., t+k-1 of its env copy, and the next observation, next mask and
        ``terminated`` of t+k-1, with ``discount`` gamma ** k. k is n, or fewer where the episode
        ends (terminated or truncated) or the buffer holds no later transition of that copy yet.
        The Bellman target r + discount * (1 - terminated) * V(s') is then the n-step one (Sutton
        & Barto 2018, sec. 7.1; Rainbow's n = 3). Rewards after t come from the behaviour policy,
        not corrected for being off-policy, as in Rainbow and R2D2.
        """
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        if self.priorities is not None:
            return self._sample_prioritized(batch_size, generator, n_step, gamma)
        idx = torch.randint(0, self.size, (batch_size,), generator=generator, device="cpu")
        if self.device.type != "cpu":
            idx = idx.to(self.device, non_blocking=True)
        return self._gather(idx, n_step, gamma)

    def _gather(self, idx: Tensor, n_step: int, gamma: float) -> Batch:
        if n_step > 1:
            return self._sample_n_step(idx, n_step, gamma)
        return Batch(self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx],
                     self.terminated[idx], self.truncated[idx],
                     *(m[idx] if m is not None else None for m in (self.masks, self.next_masks)))

    def _sample_prioritized(self, batch_size: int, generator: torch.Generator | None, n_step: int,
                            gamma: float) -> Batch:
        p = self.priorities[: self.size]
        idx = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        # (N P(i)) ** -beta normalized by the batch's largest: the smallest priority has weight 1.
        chosen = p[idx]
        weights = (chosen.min() / chosen) ** self.priority_beta
        return self._gather(idx, n_step, gamma)._replace(indices=idx, weights=weights)

    def _sample_n_step(self, idx: Tensor, n_step: int, gamma: float) -> Batch:
        offsets = torch.arange(n_step, device=idx.device) * self.stride
        rows = (idx.unsqueeze(1) + offsets) % self.capacity  # (B, n): t, t+1, ... of the same copy
        written_after = (self.pos - 1 - idx) % self.capacity  # rows written since t (the newest is pos - 1)
        exists = offsets <= written_after.unsqueeze(1)
        ended = (self.terminated[rows] + self.truncated[rows]) > 0
        # Step j counts if it exists and no earlier step ended the episode: a prefix of each row.
        alive = torch.cumprod(torch.cat([torch.ones_like(ended[:, :1]), ~ended[:, :-1]], 1).to(torch.int8), 1)
        counted = exists & alive.bool()
        k = counted.sum(1)
        last = rows.gather(1, (k - 1).unsqueeze(1)).squeeze(1)
        powers = gamma ** torch.arange(n_step + 1, device=idx.device, dtype=self.rewards.dtype)
        rewards = (self.rewards[rows] * powers[:n_step] * counted).sum(1)
        return Batch(self.obs[idx], self.actions[idx], rewards, self.next_obs[last], self.terminated[last],
                     self.truncated[last], *(m[i] if m is not None else None
                                             for m, i in ((self.masks, idx), (self.next_masks, last))),
                     discount=powers[k])

    def state_dict(self) -> dict[str, Tensor]:
        """The filled part of every field, for checkpoints."""
        out = {k: getattr(self, k)[: self.size] for k in
               ("obs", "next_obs", "actions", "rewards", "terminated", "truncated")}
        if self.masks is not None:
            out["masks"] = self.masks[: self.size]
            out["next_masks"] = self.next_masks[: self.size]
        if self.priorities is not None:
            out["priorities"] = self.priorities[: self.size]
            out["max_priority"] = self.max_priority.reshape(1)
        out["pos_size"] = torch.tensor([self.pos, self.size])
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        pos, size = (int(v) for v in state["pos_size"])
        if size > self.capacity:
            raise ValueError(f"saved buffer holds {size} transitions; this buffer's capacity is {self.capacity}")
        for k, v in state.items():
            if k == "pos_size" or (k in ("priorities", "max_priority") and self.priorities is None):
                continue  # a uniform buffer ignores a prioritized one's priorities
            if k == "max_priority":
                self.max_priority.copy_(v.reshape(()))
            else:
                getattr(self, k)[:size] = v.to(self.device)
        if self.priorities is not None and "priorities" not in state:
            # Prioritized replay turned on at a checkpoint saved without it (experiments.research.replay):
            # every stored row starts level, as a new row would.
            self.priorities[:size] = self.max_priority
        self.pos, self.size = pos, size
