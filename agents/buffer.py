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

Observations go to a store per key (:mod:`agents.stores`): float32 rows for flat observations, and
images (uint8 or bool, 2 or more dims) in their dtype with each frame once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from agents.stores import FlatStore, FrameStore, _counter, _itemsize, _Saved, is_image

ObsShape = tuple[int, ...] | Mapping[str, tuple[int, ...]]
ObsDtype = torch.dtype | Mapping[str, torch.dtype]
Obs = np.ndarray | Mapping[str, np.ndarray]

class Batch(NamedTuple):
    obs: Tensor | dict[str, Tensor]
    """Stored observations: float32 rows for flat keys, the env's own uint8 or bool images for image
    keys (scaled inside the network), a dict of them for a Dict observation."""
    actions: Tensor
    rewards: Tensor
    next_obs: Tensor | dict[str, Tensor]
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
    """Circular buffer of transitions; every field is allocated up front.

    Args:
        capacity: number of transitions kept; the oldest are overwritten.
        obs_shape: shape of one stored observation, or a dict of them (a Dict observation: then
            ``obs_dtype`` is a dict with the same keys, or one dtype for all). :func:`agents.spaces.stored_layout`
            gives both for a Gymnasium space.
        action_shape: shape of one action as stored (integers per factor, or a float vector).
        action_dtype: ``torch.long`` for categorical, ``torch.float32`` for Box.
        mask_size: length of the flat action mask, or None when the env has none. Both ``masks``
            and ``next_masks`` default to all-True (every action allowed).
        obs_dtype: ``torch.float32`` for flat observations; ``torch.uint8`` or ``torch.bool`` with 2 or
            more dims stores images once per frame in their own dtype (:class:`FrameStore`).
        stride: rows between one env copy's consecutive transitions: the number of copies, whose
            transitions each :meth:`add` writes in the same order every time. n-step sampling reads it,
            and image observations are compared per copy.
        priority_alpha: 0 samples uniformly; above 0, prioritized replay with this exponent.
        priority_beta: exponent of the importance weights of prioritized replay (1 corrects fully).
        frames_per_transition: image observations only: frames the ring keeps per transition
            (:meth:`FrameStore.default_frames_per_transition`). Where the env needs more (very short
            episodes, an image that is not a stack but looks like one), the oldest transitions go
            early, with a warning, rather than any frame a live one uses.
    """

    PRIORITY_EPS = 1e-3  # keeps a row whose TD error is 0 sampleable (Schaul et al.'s epsilon)

    def __init__(self, capacity: int, obs_shape: ObsShape, action_shape: tuple[int, ...],
                 action_dtype: torch.dtype, device: torch.device | str = "cpu", mask_size: int | None = None,
                 obs_dtype: ObsDtype = torch.float32, stride: int = 1, priority_alpha: float = 0.0,
                 priority_beta: float = 0.4, frames_per_transition: float | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1; got {capacity}")
        self.capacity = int(capacity)
        self.stride = int(stride)
        self.device = torch.device(device)
        self.keys, layout = self._layout(obs_shape, obs_dtype)
        self.stores: dict[str | None, FlatStore | FrameStore] = {
            key: FrameStore(capacity, shape, dtype, self.device, self.stride, frames_per_transition)
            if is_image(shape, dtype) else FlatStore(capacity, shape, dtype, self.device)
            for key, (shape, dtype) in layout.items()}
        self.frame_stores = {k: s for k, s in self.stores.items() if isinstance(s, FrameStore)}
        if self.frame_stores and not 1 <= self.stride <= self.capacity:
            raise ValueError(f"image observations need 1 <= stride (env copies) <= capacity; got stride={stride}, "
                             f"capacity={capacity}")
        # One flat observation: the layout and the code paths this buffer has always had.
        self.flat_only = self.keys is None and not self.frame_stores
        self.obs, self.next_obs = ((self.stores[None].obs, self.stores[None].next_obs) if self.flat_only
                                   else (None, None))
        self.frames_per_transition = frames_per_transition
        kw = {"device": self.device}
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
        self.size = 0  # live rows: the newest ``size`` before ``pos``
        self.filled = 0  # rows ever written (their data is saved): ``size`` unless image rows were dropped early
        self.dropped = 0  # rows dropped before the ring reached them, to free frames

    @staticmethod
    def _layout(obs_shape: ObsShape, obs_dtype: ObsDtype) -> tuple[tuple[str, ...] | None,
                                                                    dict[str | None, tuple[tuple[int, ...],
                                                                                           torch.dtype]]]:
        if not isinstance(obs_shape, Mapping):
            if not isinstance(obs_dtype, torch.dtype):
                raise TypeError(f"obs_dtype must be a torch dtype for one observation; got {obs_dtype!r}")
            return None, {None: (tuple(int(d) for d in obs_shape), obs_dtype)}
        keys = tuple(obs_shape)
        if not keys or not all(isinstance(k, str) for k in keys):
            raise ValueError(f"a Dict observation needs string keys; got {list(keys)}")
        dtypes = obs_dtype if isinstance(obs_dtype, Mapping) else dict.fromkeys(keys, obs_dtype)
        if set(dtypes) != set(keys):
            raise ValueError(f"obs_dtype's keys {sorted(dtypes)} differ from obs_shape's {sorted(keys)}")
        return keys, {k: (tuple(int(d) for d in obs_shape[k]), dtypes[k]) for k in keys}

    @classmethod
    def nbytes_for(cls, capacity: int, obs_shape: ObsShape, action_shape: tuple[int, ...],
                   mask_size: int | None = None, *, obs_dtype: ObsDtype = torch.float32,
                   action_dtype: torch.dtype = torch.long, stride: int = 1, priority_alpha: float = 0.0,
                   frames_per_transition: float | None = None) -> int:
        """Bytes the buffer will allocate (:meth:`nbytes` of the buffer these arguments build), so a
        config can be refused before it runs."""
        _, layout = cls._layout(obs_shape, obs_dtype)
        per_row = (math.prod(action_shape) * _itemsize(action_dtype) + 3 * 4 + 2 * (mask_size or 0)
                   + (4 if priority_alpha > 0 else 0))
        total = capacity * per_row + 4  # + max_priority
        for shape, dtype in layout.values():
            total += (FrameStore.nbytes_for(capacity, shape, dtype, stride, frames_per_transition)
                      if is_image(shape, dtype) else FlatStore.nbytes_for(capacity, shape, dtype))
        return total

    def nbytes(self) -> int:
        """Bytes this buffer holds: its tensors and the little it keeps on the host for image observations."""
        fields = (self.actions, self.rewards, self.terminated, self.truncated, self.masks, self.next_masks,
                  self.priorities, self.max_priority)
        return sum(s.nbytes() for s in self.stores.values()) + sum(f.nbytes for f in fields if f is not None)

    def __len__(self) -> int:
        return self.size

    def _split(self, x: Obs, what: str) -> dict[str | None, Any]:
        if self.keys is None:
            return {None: x}
        if not isinstance(x, Mapping) or set(x) != set(self.keys):
            got = sorted(x) if isinstance(x, Mapping) else type(x).__name__
            raise ValueError(f"{what} must be a dict with keys {sorted(self.keys)}; got {got}")
        return {k: x[k] for k in self.keys}

    def _copies(self, copies: np.ndarray | None, n: int) -> np.ndarray:
        if copies is None:
            if n > self.stride:
                raise ValueError(f"add() got {n} transitions, more than the buffer's stride={self.stride} env "
                                 "copies; pass copies=[which copy each row is] or build it with a larger stride")
            return np.arange(n)
        c = np.asarray(copies)
        if c.shape != (n,) or c.dtype.kind not in "iu" or len(np.unique(c)) != n or \
                (n and not (0 <= c.min() and c.max() < self.stride)):
            raise ValueError(f"copies must be {n} distinct env copy indices in [0, {self.stride}); got {c!r}")
        return c.astype(np.int64)

    def _write(self, fields: list[tuple[Tensor, Any]], n: int) -> slice | Tensor:
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
        return rows

    def add(self, obs: Obs, actions: np.ndarray, rewards: np.ndarray, next_obs: Obs,
            terminated: np.ndarray, truncated: np.ndarray, masks: np.ndarray | None = None,
            next_masks: np.ndarray | None = None, copies: np.ndarray | None = None) -> None:
        """Add a batch of transitions (one per vector-env copy); masks are flat, ``(n, mask_size)``.

        ``copies``: which env copy each row is, when not all of them (NEXT_STEP autoreset skips a copy's
        reset step); default ``0, 1, ..., n - 1``. Image observations are compared per copy.
        """
        n = len(rewards)
        fields = [(self.actions, actions), (self.rewards, rewards), (self.terminated, terminated),
                  (self.truncated, truncated)]
        fields += [(dst, src) for dst, src in ((self.masks, masks), (self.next_masks, next_masks))
                   if dst is not None and src is not None]
        if self.flat_only:
            rows = self._write([(self.obs, obs), (self.next_obs, next_obs), *fields], n)
            if self.priorities is not None:
                self.priorities[rows] = self.max_priority
            self.pos = (self.pos + n) % self.capacity
            self.size = self.filled = min(self.size + n, self.capacity)
            return
        if n > self.capacity:
            raise ValueError(f"add() got {n} transitions; this buffer holds {self.capacity}")
        obs, next_obs = self._split(obs, "obs"), self._split(next_obs, "next_obs")
        plans = {}
        if self.frame_stores:
            who = self._copies(copies, n)
            plans = {k: s.plan(who, obs[k], next_obs[k]) for k, s in self.frame_stores.items()}
        live = min(self.size, self.capacity - n)  # the rows at pos .. pos + n - 1 are written over
        keep = live
        while keep > 0 and any(s.low[(self.pos - keep) % self.capacity] < plans[k].cutoff
                               for k, s in self.frame_stores.items()):
            keep -= 1  # the oldest row refers to a frame this add writes over: it goes first
        if keep < live:
            self._drop((self.pos - live + np.arange(live - keep)) % self.capacity)
        host_rows = (self.pos + np.arange(n)) % self.capacity
        for k, s in self.frame_stores.items():
            s.commit(host_rows, plans[k])
        fields += [pair for k, s in self.stores.items() if isinstance(s, FlatStore)
                   for pair in ((s.obs, obs[k]), (s.next_obs, next_obs[k]))]
        rows = self._write(fields, n)
        if self.priorities is not None:
            self.priorities[rows] = self.max_priority
        self.pos = (self.pos + n) % self.capacity
        self.size = keep + n
        self.filled = min(self.filled + n, self.capacity)

    def _drop(self, rows: np.ndarray) -> None:
        if self.priorities is not None:
            self.priorities[torch.as_tensor(rows, device=self.device)] = 0.0
        if not self.dropped:
            per = {k: s.n_frames for k, s in self.frame_stores.items()}
            warnings.warn(f"replay buffer: the image observations need more frames than its ring of {per} holds "
                          f"for {self.capacity:,} transitions (frames_per_transition="
                          f"{self.frames_per_transition or 'default'}: very short episodes, or images that are "
                          "not frame stacks), so the oldest transitions go before the capacity is reached; "
                          "raise frames_per_transition to keep them", RuntimeWarning, stacklevel=3)
        self.dropped += len(rows)

    def _obs_at(self, rows: Tensor) -> Tensor | dict[str, Tensor]:
        if self.keys is None:
            return self.stores[None].at(rows)
        return {k: self.stores[k].at(rows) for k in self.keys}

    def _next_obs_at(self, rows: Tensor) -> Tensor | dict[str, Tensor]:
        if self.keys is None:
            return self.stores[None].next_at(rows)
        return {k: self.stores[k].next_at(rows) for k in self.keys}

    def update_priorities(self, indices: Tensor, td_errors: Tensor) -> None:
        """Prioritized replay: the sampled rows' new priorities from their absolute TD errors.
        A row sampled twice in a batch keeps one of its two (equal-target) errors."""
        p = (td_errors.detach().abs().float() + self.PRIORITY_EPS) ** self.priority_alpha
        self.priorities[indices] = p
        torch.maximum(self.max_priority, p.max(), out=self.max_priority)

    def sample(self, batch_size: int, generator: torch.Generator | None = None, n_step: int = 1,
               gamma: float = 0.99) -> Batch:
        """Uniform sample with replacement (prioritized when the buffer was built so). ``generator``
        (None: torch's global one) is a CPU generator, whatever the buffer's device.

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
        if self.size < self.capacity and self.pos != self.size:  # rows were dropped early: the live ones
            idx = (idx + (self.pos - self.size)) % self.capacity  # start after them, not at row 0
        if self.device.type != "cpu":
            idx = idx.to(self.device, non_blocking=True)
        return self._gather(idx, n_step, gamma)

    def _gather(self, idx: Tensor, n_step: int, gamma: float) -> Batch:
        if n_step > 1:
            return self._sample_n_step(idx, n_step, gamma)
        return Batch(self._obs_at(idx), self.actions[idx], self.rewards[idx], self._next_obs_at(idx),
                     self.terminated[idx], self.truncated[idx],
                     *(m[idx] if m is not None else None for m in (self.masks, self.next_masks)))

    def _sample_prioritized(self, batch_size: int, generator: torch.Generator | None, n_step: int,
                            gamma: float) -> Batch:
        p = self.priorities[: self.filled]  # a row dropped early has priority 0
        # multinomial draws where its generator lives: a CPU generator for a CUDA buffer draws on a copy
        draw_on = p.device if generator is None else generator.device
        idx = torch.multinomial(p.to(draw_on), batch_size, replacement=True, generator=generator).to(p.device)
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
        return Batch(self._obs_at(idx), self.actions[idx], rewards, self._next_obs_at(last), self.terminated[last],
                     self.truncated[last], *(m[i] if m is not None else None
                                             for m, i in ((self.masks, idx), (self.next_masks, last))),
                     discount=powers[k])

    # ------------------------------------------------------------------------- checkpoints
    def _prefix(self, key: str | None) -> str:
        if self.flat_only:
            return ""
        return "obs." if key is None else f"obs.{key}."

    def state_dict(self) -> dict[str, Tensor]:
        """The written part of every field, for checkpoints."""
        n = self.filled
        out: dict[str, Tensor] = {}
        for key, store in self.stores.items():
            out.update({self._prefix(key) + name: v for name, v in store.state_dict(n).items()})
        out.update({k: getattr(self, k)[:n] for k in ("actions", "rewards", "terminated", "truncated")})
        if self.masks is not None:
            out["masks"] = self.masks[:n]
            out["next_masks"] = self.next_masks[:n]
        if self.priorities is not None:
            out["priorities"] = self.priorities[:n]
            out["max_priority"] = self.max_priority.reshape(1)
        out["pos_size"] = (torch.tensor([self.pos, self.size]) if self.flat_only else
                           torch.tensor([self.pos, self.size, self.filled, self.capacity]))
        return out

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Continue from :meth:`state_dict`'s tensors. Every tensor's shape and dtype, every position and
        every frame number is checked against this buffer before anything is written to it."""
        saved = _Saved(state)
        if self.flat_only:
            pos, size = _counter(saved.take("pos_size", (2,), torch.int64), "pos and size", 0, 2**62)
            if size > self.capacity:
                raise ValueError(f"saved buffer holds {size} transitions; this buffer's capacity is {self.capacity}")
            if pos > self.capacity or (pos != size and size != self.capacity):
                raise ValueError(f"saved buffer wrapped around at row {pos} of {size}; load it into a buffer of "
                                 f"capacity {size}")
            filled, live = size, np.arange(size)
        else:
            pos, size, filled, capacity = _counter(saved.take("pos_size", (4,), torch.int64),
                                                   "pos, size, rows written and capacity", 0, 2**62)
            if capacity != self.capacity:
                raise ValueError(f"saved buffer's capacity is {capacity}; this buffer's is {self.capacity}")
            if not (size <= filled <= capacity and pos < capacity and (filled == capacity or pos == filled)):
                raise ValueError(f"saved buffer's position {pos}, size {size} and rows written {filled} do not fit "
                                 f"a buffer of {capacity}")
            live = (pos - size + np.arange(size)) % capacity
        writes = [store.load_state_dict(saved, self._prefix(key), filled, live) if isinstance(store, FrameStore)
                  else store.load_state_dict(saved, self._prefix(key), filled) for key, store in self.stores.items()]
        fields = [(getattr(self, name), name) for name in ("actions", "rewards", "terminated", "truncated")]
        if "masks" in saved or "next_masks" in saved:
            if self.masks is None:
                raise ValueError("saved replay buffer holds action masks; this buffer has none (an env without "
                                 "action_masks())")
            fields += [(self.masks, "masks"), (self.next_masks, "next_masks")]
        values = [(dst, saved.take(name, (filled, *dst.shape[1:]), dst.dtype)) for dst, name in fields]
        priorities = None
        if self.priorities is None:
            saved.skip("priorities", "max_priority")  # a uniform buffer ignores a prioritized one's priorities
        elif "priorities" in saved:
            priorities = saved.take("priorities", (filled,), torch.float32)
            top = saved.take("max_priority", (1,), torch.float32)
            if not (bool(torch.isfinite(priorities).all()) and bool((priorities >= 0).all())
                    and math.isfinite(float(top)) and float(top) > 0):
                raise ValueError("saved replay buffer's priorities are not finite and >= 0")
        saved.finish()
        # Everything checked: now write.
        for write in writes:
            write()
        for dst, v in values:
            dst[:filled] = v.to(self.device)
        if priorities is not None:
            self.priorities[:filled] = priorities.to(self.device)
            self.max_priority.copy_(top.reshape(()))
        elif self.priorities is not None:
            # Prioritized replay turned on at a checkpoint saved without it (experiments.research.replay):
            # every stored row starts level, as a new row would.
            self.priorities[torch.as_tensor(live, device=self.device, dtype=torch.long)] = self.max_priority
        if self.priorities is not None and size < filled:  # rows dropped early are never drawn
            dead = np.setdiff1d(np.arange(filled), live)
            self.priorities[torch.as_tensor(dead, device=self.device)] = 0.0
        self.pos, self.size, self.filled = pos, size, filled
