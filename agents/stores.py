"""Observation stores of the replay buffer: one per observation key, in preallocated tensors.

:class:`FlatStore` keeps float32 ``obs`` and ``next_obs`` rows. :class:`FrameStore` keeps images
(uint8 or bool, 2 or more dims: Atari's (4, 84, 84) frame stacks, MinAtar's (10, 10, C)) in their
dtype with each frame once, as DQN's replay memory keeps single frames (Mnih et al. 2015) and SB3's
``optimize_memory_usage`` keeps one copy of each observation. The sharing is found in the data, not
assumed from a wrapper: a copy's new observation reuses its last next observation's frames only where
the two are equal, and a next observation is the observation shifted by one frame (one new frame)
only where that is so; everywhere else (an episode's first observation, a final observation that is
not a shift, an env that does not stack) the frames are stored whole. Each row then holds frame
numbers, not pixels. :class:`agents.buffer.ReplayBuffer` holds one store per key.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

IMAGE_DTYPES = (torch.uint8, torch.bool)
MAX_STACK = 16
"""The longest leading axis taken for a frame stack (DQN stacks 4; a wider one is an image's rows)."""


def is_image(shape: tuple[int, ...], dtype: torch.dtype) -> bool:
    """Whether observations of this shape and dtype are stored as frames: uint8 or bool, 2 or more dims."""
    return dtype in IMAGE_DTYPES and len(shape) >= 2


def stack_size(shape: tuple[int, ...]) -> int:
    """Frames along the leading axis of an image shaped like a frame stack: 2 to 16 of them, fewer than
    along the next axis (Gymnasium's ``FrameStackObservation`` of 84 x 84 frames is (4, 84, 84)). Else 1,
    and the whole image is one frame (MinAtar's (10, 10, C), a single (84, 84) frame). The shape only sets
    how frames are cut and counted; whether consecutive observations share them is checked on the data."""
    return int(shape[0]) if len(shape) >= 2 and 2 <= shape[0] <= MAX_STACK and shape[0] < shape[1] else 1


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _put(dst: Tensor, index: np.ndarray, src: np.ndarray) -> None:
    """``dst[index] = src`` from host data: straight into the memory of a CPU tensor, else one copy."""
    if dst.device.type == "cpu":
        dst.numpy()[index] = src
    else:
        dst[torch.as_tensor(index, device=dst.device)] = torch.as_tensor(src).to(dst.device)


class _Saved:
    """A saved buffer's tensors, each taken once, by name, with its shape and dtype checked before any
    of it is used; a name nothing took is refused (a file is data)."""

    def __init__(self, state: Mapping[str, Tensor]) -> None:
        self.state, self.taken = state, set()

    def __contains__(self, key: str) -> bool:
        return key in self.state

    def take(self, key: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        v = self.state.get(key)
        if not isinstance(v, Tensor):
            raise ValueError(f"saved replay buffer lacks {key!r}")
        if tuple(v.shape) != tuple(shape) or v.dtype != dtype:
            raise ValueError(f"saved replay buffer's {key!r} is {tuple(v.shape)} {v.dtype}; this buffer needs "
                             f"{tuple(shape)} {dtype} (same spaces, env copies and buffer_size)")
        self.taken.add(key)
        return v

    def skip(self, *keys: str) -> None:
        self.taken.update(keys)

    def finish(self) -> None:
        extra = sorted(set(self.state) - self.taken)
        if extra:
            raise ValueError(f"saved replay buffer holds {str(extra[0])[:60]!r}, which this buffer does not "
                             "(an observation space or action masks other than this agent's)")


def _counter(v: Tensor, what: str, low: int, high: int) -> list[int]:
    values = v.tolist()
    if not all(low <= x <= high for x in values):
        raise ValueError(f"saved replay buffer's {what} {values[:4]} are outside [{low}, {high}]")
    return values


class FlatStore:
    """One observation key as the networks' float input: ``obs`` and ``next_obs`` each a
    ``(capacity, *shape)`` tensor, written row by row with the other fields."""

    def __init__(self, capacity: int, shape: tuple[int, ...], dtype: torch.dtype,
                 device: torch.device | str = "cpu") -> None:
        self.shape, self.dtype = tuple(int(d) for d in shape), dtype
        self.obs = torch.zeros((capacity, *self.shape), dtype=dtype, device=device)
        self.next_obs = torch.zeros((capacity, *self.shape), dtype=dtype, device=device)

    @staticmethod
    def nbytes_for(capacity: int, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return 2 * capacity * math.prod(shape) * _itemsize(dtype)

    def nbytes(self) -> int:
        return self.obs.nbytes + self.next_obs.nbytes

    def at(self, rows: Tensor) -> Tensor:
        return self.obs[rows]

    def next_at(self, rows: Tensor) -> Tensor:
        return self.next_obs[rows]

    def state_dict(self, filled: int) -> dict[str, Tensor]:
        return {"obs": self.obs[:filled], "next_obs": self.next_obs[:filled]}

    def load_state_dict(self, saved: _Saved, prefix: str, filled: int) -> Callable[[], None]:
        """Check the saved tensors; the returned function writes them."""
        values = [saved.take(prefix + name, (filled, *self.shape), self.dtype) for name in ("obs", "next_obs")]

        def write() -> None:
            for dst, v in zip((self.obs, self.next_obs), values, strict=True):
                dst[:filled] = v.to(dst.device)
        return write


class _Plan(NamedTuple):
    """What one add() writes to a :class:`FrameStore`, decided before anything is written."""
    copies: np.ndarray
    obs_frames: np.ndarray  # (n, stack) frame numbers (counted from the first frame ever written)
    next_frames: np.ndarray
    new: np.ndarray  # (m, *frame_shape): the frames not stored yet, in the order they get their numbers
    next_obs: np.ndarray
    low: int  # the oldest frame number any row of this add refers to is at least this
    cutoff: int  # after this add, frames numbered below this are overwritten


def _fresh(x: np.ndarray) -> np.ndarray:
    """(n, k, d) -> (n, k) bool: frame j differs from frame j - 1 (the first always counts as fresh)."""
    out = np.ones(x.shape[:2], dtype=bool)
    out[:, 1:] = (x[:, 1:] != x[:, :-1]).any(2)
    return out


def _fill_forward(values: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """Each undefined entry takes the nearest defined one to its left (column 0 must be defined)."""
    idx = np.maximum.accumulate(np.where(defined, np.arange(values.shape[1]), 0), axis=1)
    return np.take_along_axis(values, idx, 1)


class FrameStore:
    """One image observation key, each frame stored once.

    An observation of shape ``(stack, *frame)`` (:func:`stack_size`; a single image is one frame) is
    ``stack`` frame numbers into ``frames``, a ring of ``n_frames`` frames in the observation's dtype.
    On each add, per env copy: the observation reuses the copy's last next observation's frames if it
    equals it; the next observation is the observation's last ``stack - 1`` frames plus one if it is
    that shift; any other observation stores its frames, a frame equal to the one before it (a
    reset's padding) once. Every comparison is of the data, so a row always reads back what was added.

    Rows and frames are both first in, first out. A row reuses only frames numbered ``low`` or later,
    ``low`` being the first frame number of the add ``stack`` adds before its own (a copy that adds
    every time never needs older ones: a frame leaves a stack after ``stack`` shifts; older ones are
    stored afresh), and records it; ``low`` never decreases from one row to the next. The ring holds
    ``frames_per_transition`` frames per row plus what ``stack + 1`` adds can write at most, so an add
    never overwrites a frame its own rows use, and when it would overwrite one an older row uses, that
    row is dropped first (:meth:`ReplayBuffer.add`): no live row ever reads a frame written over.
    """

    def __init__(self, capacity: int, shape: tuple[int, ...], dtype: torch.dtype,
                 device: torch.device | str = "cpu", stride: int = 1,
                 frames_per_transition: float | None = None) -> None:
        if not is_image(tuple(shape), dtype):
            raise ValueError(f"a FrameStore holds uint8 or bool images of 2 or more dims; got {tuple(shape)} {dtype}")
        self.shape, self.dtype = tuple(int(d) for d in shape), dtype
        self.np_dtype = np.dtype(np.bool_) if dtype == torch.bool else np.dtype(np.uint8)
        self.stack = k = stack_size(self.shape)
        self.frame_shape = self.shape[1:] if k > 1 else self.shape
        self.n_frames = self.frame_count(capacity, self.shape, stride, frames_per_transition)
        self.frames = torch.zeros((self.n_frames, *self.frame_shape), dtype=dtype, device=device)
        self.obs_slots = torch.zeros((capacity, k), dtype=torch.int32, device=device)
        self.next_slots = torch.zeros((capacity, k), dtype=torch.int32, device=device)
        self.low = np.zeros(capacity, dtype=np.int64)  # on the host: add() reads it without a device sync
        self.head = 0  # frames written so far: the next frame's number
        self.recent: deque[int] = deque([0] * k, maxlen=k)  # head at the start of each of the last k adds
        # Each copy's last next observation, and its frame numbers (-1: none): what the copy's next
        # observation is compared with, on the host, so an add never reads the device.
        self.last_obs = np.zeros((stride, *self.shape), dtype=self.np_dtype)
        self.last_frames = np.full((stride, k), -1, dtype=np.int64)

    @staticmethod
    def default_frames_per_transition(shape: tuple[int, ...]) -> float:
        """A stack adds one frame a step, and an episode's first observation one or two more (its
        padding stored once): 1.25 keeps every transition of episodes of 8 steps or more. A single
        image is one frame a step, and one more where an episode starts: 2 keeps them all."""
        return 1.25 if stack_size(shape) > 1 else 2.0

    @classmethod
    def frame_count(cls, capacity: int, shape: tuple[int, ...], stride: int = 1,
                    frames_per_transition: float | None = None) -> int:
        k = stack_size(shape)
        per = cls.default_frames_per_transition(shape) if frames_per_transition is None else frames_per_transition
        if not (isinstance(per, int | float) and math.isfinite(per) and 0 < per <= 2 * k):
            raise ValueError(f"frames_per_transition must be in (0, {2 * k}] for observations {tuple(shape)}; "
                             f"got {per!r}")
        # The margin: stack + 1 adds of at most 2 * stack new frames per row (obs and next_obs whole).
        return math.ceil(per * capacity) + (k + 1) * 2 * k * stride

    @classmethod
    def nbytes_for(cls, capacity: int, shape: tuple[int, ...], dtype: torch.dtype, stride: int = 1,
                   frames_per_transition: float | None = None) -> int:
        k, item = stack_size(shape), _itemsize(dtype)
        frame = math.prod(shape[1:] if k > 1 else shape)
        return (cls.frame_count(capacity, shape, stride, frames_per_transition) * frame * item
                + capacity * (2 * k * 4 + 8) + stride * (math.prod(shape) * item + 8 * k))

    def nbytes(self) -> int:
        return sum(x.nbytes for x in (self.frames, self.obs_slots, self.next_slots, self.low, self.last_obs,
                                      self.last_frames))

    def _rows(self, x: Any, n: int, what: str) -> np.ndarray:
        a = np.asarray(x)
        if a.shape != (n, *self.shape) or a.dtype != self.np_dtype:
            raise ValueError(f"{what} is {a.shape} {a.dtype}; this buffer stores image observations as "
                             f"{(n, *self.shape)} {self.np_dtype} (the env's own dtype, not scaled)")
        return a

    def plan(self, copies: np.ndarray, obs: Any, next_obs: Any) -> _Plan:
        n, k = len(copies), self.stack
        obs, next_obs = self._rows(obs, n, "obs"), self._rows(next_obs, n, "next_obs")
        a, b = obs.reshape(n, k, -1), next_obs.reshape(n, k, -1)
        low = self.recent[0]
        last = self.last_frames[copies]
        # The copy's last next observation, if it is still stored and refers to nothing older than low.
        reused = (last.min(1) >= low) & (a.reshape(n, -1) == self.last_obs[copies].reshape(n, -1)).all(1)
        shifted = (b[:, :-1] == a[:, 1:]).all((1, 2))  # a single frame (k = 1) is trivially "shifted"
        fresh_obs = _fresh(a) & ~reused[:, None]
        fresh_next = _fresh(b)
        # A shift's new frame is always stored, even if equal to the one before it: pointing it at the
        # older frame would keep that frame in the stack past ``stack`` adds, older than ``low``.
        fresh_next[shifted] = False
        fresh_next[shifted, -1] = True
        fresh = np.concatenate([fresh_obs, fresh_next], 1)
        m = int(fresh.sum())
        numbers = np.full((n, 2 * k), -1, dtype=np.int64)
        numbers[fresh] = self.head + np.arange(m)
        obs_frames = np.where(reused[:, None], last, _fill_forward(numbers[:, :k], fresh_obs))
        base = np.where(shifted[:, None], np.concatenate([obs_frames[:, 1:], numbers[:, -1:]], 1), numbers[:, k:])
        defined = fresh_next.copy()
        defined[shifted, :-1] = True
        next_frames = _fill_forward(base, defined)
        new = np.concatenate([a, b], 1)[fresh].reshape(m, *self.frame_shape)
        cutoff = self.head + m - self.n_frames
        if low < cutoff:  # frame_count's margin rules this out
            raise RuntimeError(f"frame ring of {self.n_frames} too small for an add of {m} frames")
        return _Plan(copies, obs_frames, next_frames, new, next_obs, low, cutoff)

    def commit(self, rows: np.ndarray, plan: _Plan) -> None:
        size = self.n_frames
        if len(plan.new):
            _put(self.frames, (self.head + np.arange(len(plan.new))) % size, plan.new)
        _put(self.obs_slots, rows, (plan.obs_frames % size).astype(np.int32))
        _put(self.next_slots, rows, (plan.next_frames % size).astype(np.int32))
        self.low[rows] = plan.low
        self.last_obs[plan.copies] = plan.next_obs
        self.last_frames[plan.copies] = plan.next_frames
        self.recent.append(self.head)
        self.head += len(plan.new)

    def at(self, rows: Tensor) -> Tensor:
        return self.frames[self.obs_slots[rows]].reshape(-1, *self.shape)

    def next_at(self, rows: Tensor) -> Tensor:
        return self.frames[self.next_slots[rows]].reshape(-1, *self.shape)

    def state_dict(self, filled: int) -> dict[str, Tensor]:
        gone = self.last_frames.min(1) < self.head - self.n_frames  # written over: never reused again
        last = np.where(gone[:, None], -1, self.last_frames)
        return {"frames": self.frames[: min(self.head, self.n_frames)], "obs_slots": self.obs_slots[:filled],
                "next_slots": self.next_slots[:filled], "low": torch.from_numpy(self.low[:filled].copy()),
                "counters": torch.tensor([self.n_frames, self.head, *self.recent], dtype=torch.int64),
                "last": torch.from_numpy(last)}

    def load_state_dict(self, saved: _Saved, prefix: str, filled: int, live: np.ndarray) -> Callable[[], None]:
        """Check the saved tensors (``live``: the live rows, oldest first), every frame number against the
        ring; the returned function writes them."""
        size, k = self.n_frames, self.stack
        counters = saved.take(prefix + "counters", (k + 2,), torch.int64).tolist()
        if counters[0] != size:
            raise ValueError(f"saved replay buffer's {prefix}frames ring holds {counters[0]:,} frames; this one "
                             f"{size:,} (keep buffer_size, the env copies and frames_per_transition)")
        head = _counter(torch.tensor(counters[1:2]), f"{prefix}frames written", 0, 2**62)[0]
        recent = _counter(torch.tensor(counters[2:]), f"{prefix}recent frame counts", 0, head)
        if recent != sorted(recent):
            raise ValueError(f"saved replay buffer's {prefix}recent frame counts {recent} decrease")
        written = min(head, size)
        frames = saved.take(prefix + "frames", (written, *self.frame_shape), self.dtype)
        slots = [saved.take(prefix + name, (filled, k), torch.int32) for name in ("obs_slots", "next_slots")]
        for name, s in zip(("obs_slots", "next_slots"), slots, strict=True):
            if s.numel() and not (int(s.min()) >= 0 and int(s.max()) < written):
                raise ValueError(f"saved replay buffer's {prefix}{name} point outside its {written:,} frames")
        low = saved.take(prefix + "low", (filled,), torch.int64).numpy()
        if filled and not (int(low.min()) >= 0 and int(low.max()) <= head):
            raise ValueError(f"saved replay buffer's {prefix}low is outside [0, {head}]")
        ages = low[live]
        if len(ages) and (ages[0] < head - size or (np.diff(ages) < 0).any()):
            raise ValueError(f"saved replay buffer's live transitions refer to {prefix}frames already written over")
        last = saved.take(prefix + "last", self.last_frames.shape, torch.int64).numpy()
        kept = (last.min(1) >= max(0, head - size)) & (last.max(1) < head)
        if not ((last == -1).all(1) | kept).all():
            raise ValueError(f"saved replay buffer's {prefix}last frames are outside the {written:,} it holds")

        def write() -> None:
            device = self.frames.device
            self.frames[:written] = frames.to(device)
            self.obs_slots[:filled] = slots[0].to(device)
            self.next_slots[:filled] = slots[1].to(device)
            self.low[:filled] = low
            self.head, self.recent = head, deque(recent, maxlen=k)
            self.last_frames[:] = last
            self.last_obs[:] = 0
            if kept.any():  # each copy's last next observation, read back from the frames it names
                idx = torch.as_tensor(last[kept] % size, device=device)
                self.last_obs[kept] = self.frames[idx].reshape(-1, *self.shape).cpu().numpy()
        return write
