"""Image observations in the replay buffer: uint8 (or bool) storage, each frame once, against a naive
buffer that copies everything; the frame ring's bound, memory per transition, checkpoints, Dict
observations. Real Gymnasium vector envs and wrappers drive the real Collector."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.wrappers import FrameStackObservation
from safetensors.torch import load_file, save_file

from agents.buffer import ReplayBuffer
from agents.collect import Collector
from agents.spaces import stored_layout as obs_layout
from agents.stores import FlatStore, FrameStore, stack_size

ATARI = (4, 84, 84)


# ------------------------------------------------------------------------------- envs and references
class PixelEnv(gym.Env):
    """Frames of a few grey levels (so equal frames happen by chance, across steps and episodes);
    an episode lasts 1 to ``max_len`` steps and ends by termination or by truncation at random."""

    def __init__(self, shape: tuple[int, ...] = (6, 6), dtype: Any = np.uint8, levels: int = 3,
                 max_len: int = 12) -> None:
        high = 1 if dtype == np.bool_ else 255
        self.observation_space = spaces.Box(0, high, shape=shape, dtype=dtype)
        self.action_space = spaces.Discrete(2)
        self.levels, self.max_len, self.left, self.truncates = min(levels, high + 1), max_len, 0, False

    def _frame(self) -> np.ndarray:
        grey = self.np_random.integers(0, self.levels, size=self.observation_space.shape)
        if self.np_random.random() < 0.5:  # a flat frame half the time: runs of equal frames
            grey = np.full(self.observation_space.shape, grey.flat[0])
        return grey.astype(self.observation_space.dtype)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.left = int(self.np_random.integers(1, self.max_len + 1))
        self.truncates = bool(self.np_random.random() < 0.5)
        return self._frame(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.left -= 1
        done = self.left == 0
        return self._frame(), float(self.np_random.normal()), done and not self.truncates, done and self.truncates, {}


class DictPixelEnv(gym.Env):
    """A Dict observation: ``pixels``, a stack of 3 frames the env keeps itself (no wrapper), and
    ``vec``, [episode number, step in the episode] as float32; episodes as :class:`PixelEnv`'s."""

    def __init__(self) -> None:
        self.observation_space = spaces.Dict({"pixels": spaces.Box(0, 255, (3, 6, 6), np.uint8),
                                              "vec": spaces.Box(0, 1e6, (2,), np.float32)})
        self.action_space = spaces.Discrete(2)
        self.stack, self.t, self.episode, self.left = np.zeros((3, 6, 6), np.uint8), 0, -1, 0

    def _image(self) -> np.ndarray:
        return self.np_random.integers(0, 3, size=(6, 6)).astype(np.uint8)

    def _obs(self) -> dict[str, np.ndarray]:
        return {"pixels": self.stack.copy(), "vec": np.array([self.episode, self.t], dtype=np.float32)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.stack[:] = self._image()  # the first frame as padding
        self.t, self.episode, self.left = 0, self.episode + 1, int(self.np_random.integers(1, 9))
        return self._obs(), {}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        self.stack = np.concatenate([self.stack[1:], self._image()[None]])
        self.t, self.left = self.t + 1, self.left - 1
        done = self.left == 0
        return self._obs(), float(self.np_random.normal()), done and self.episode % 2 == 0, \
            done and self.episode % 2 == 1, {}


def _row(x: Any, i: int) -> Any:
    return {k: np.array(v[i]) for k, v in x.items()} if isinstance(x, dict) else np.array(x[i])


class Naive:
    """The reference: every transition as add() got it, copied whole, in write order."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, obs: Any, actions: np.ndarray, rewards: np.ndarray, next_obs: Any, terminated: np.ndarray,
            truncated: np.ndarray, masks: Any = None, next_masks: Any = None, copies: Any = None) -> None:
        copies = range(len(rewards)) if copies is None else copies
        for i, c in enumerate(copies):
            self.rows.append({"id": int(np.asarray(actions)[i].reshape(-1)[0]), "copy": int(c), "obs": _row(obs, i),
                              "next": _row(next_obs, i), "reward": float(rewards[i]),
                              "term": bool(terminated[i]), "trunc": bool(truncated[i])})


class Tee:
    """What the Collector writes to, forwarded to the buffer under test and to the reference."""

    def __init__(self, *buffers: Any) -> None:
        self.buffers = buffers

    def add(self, *args: Any, **kwargs: Any) -> None:
        for b in self.buffers:
            b.add(*args, **kwargs)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(b, dict):
        return set(a) == set(b) and all(_equal(a[k], b[k]) for k in b)
    return np.array_equal(a.reshape(b.shape), b) and (a.dtype == b.dtype or b.dtype == np.float32)


def _np(x: Any, i: int) -> Any:
    return {k: v[i].cpu().numpy() for k, v in x.items()} if isinstance(x, dict) else x[i].cpu().numpy()


def check_against_naive(buf: ReplayBuffer, naive: Naive, n_step: int, seed: int = 0, gamma: float = 0.9) -> None:
    """Every live row, drawn by sample(), is the naive buffer's transition of the same id: its
    observation, and the next observation, rewards, flags and discount of its n-step window (the same
    copy's later transitions, up to the episode's end or the newest one)."""
    live = naive.rows[len(naive.rows) - len(buf):]
    where = {r["id"]: j for j, r in enumerate(live)}
    draws = 40 * len(buf) + 200
    batch = buf.sample(draws, torch.Generator().manual_seed(seed), n_step=n_step, gamma=gamma)
    ids = batch.actions[:, 0].tolist()
    assert set(ids) == set(where), "sample() must reach every live row and no other"
    for b, i in enumerate(ids):
        j = where[i]
        steps, later = [live[j]], [r for r in live[j + 1:] if r["copy"] == live[j]["copy"]]
        while len(steps) < n_step and not (steps[-1]["term"] or steps[-1]["trunc"]) and later:
            steps.append(later.pop(0))
        assert _equal(_np(batch.obs, b), live[j]["obs"]), f"obs of transition {i}"
        assert _equal(_np(batch.next_obs, b), steps[-1]["next"]), f"next_obs of transition {i}"
        assert float(batch.terminated[b]) == steps[-1]["term"] and float(batch.truncated[b]) == steps[-1]["trunc"]
        total = sum(gamma ** t * s["reward"] for t, s in enumerate(steps))
        assert float(batch.rewards[b]) == pytest.approx(total, abs=1e-5)
        if n_step > 1:
            assert float(batch.discount[b]) == pytest.approx(gamma ** len(steps))


def check_bound(buf: ReplayBuffer) -> None:
    """The frame rings never grow, and no live row refers to a frame written over."""
    for store in buf.frame_stores.values():
        assert store.frames.shape[0] == store.n_frames
        live = (buf.pos - buf.size + np.arange(buf.size)) % buf.capacity
        assert (store.low[live] >= store.head - store.n_frames).all()
        assert (np.diff(store.low[live]) >= 0).all()


def _ids(start: list[int]) -> Any:
    """store_action for the Collector: each transition's stored action is a fresh id."""
    def store(env_action: np.ndarray) -> np.ndarray:
        n = len(np.asarray(env_action))
        out = np.arange(start[0], start[0] + n, dtype=np.int64)[:, None]
        start[0] += n
        return out
    return store


def _buffer(space: spaces.Space, capacity: int, n_envs: int, **kw: Any) -> ReplayBuffer:
    shape, dtype = obs_layout(space)
    return ReplayBuffer(capacity, shape, (1,), torch.long, obs_dtype=dtype, stride=n_envs, **kw)


# ------------------------------------------------------------------------------- the Collector drives it
STACKED = lambda: FrameStackObservation(PixelEnv(), 3)  # noqa: E731 - (3, 6, 6) uint8
SINGLE = lambda: PixelEnv((5, 5, 3), np.bool_, levels=2)  # noqa: E731 - (5, 5, 3) bool, MinAtar-like


@pytest.mark.parametrize(("mode", "n_envs", "n_step"), [("same", 1, 1), ("same", 1, 3), ("same", 3, 1),
                                                        ("same", 3, 3), ("next", 1, 1), ("next", 3, 1)])
@pytest.mark.parametrize("make", [STACKED, SINGLE], ids=["stacked_uint8", "single_bool"])
def test_collected_transitions_match_a_naive_buffer(mode: str, n_envs: int, n_step: int, make: Any) -> None:
    """The real Collector on a real vector env (SAME_STEP with final_obs, or NEXT_STEP, which skips
    reset steps), 400 vector steps into 70 rows: the buffer wraps 6 to 17 times, and is checked
    against the naive copy-everything buffer at several points on the way."""
    autoreset = gym.vector.AutoresetMode.SAME_STEP if mode == "same" else gym.vector.AutoresetMode.NEXT_STEP
    venv = gym.vector.SyncVectorEnv([make] * n_envs, autoreset_mode=autoreset)
    space = venv.single_observation_space
    buf, naive = _buffer(space, 70, n_envs), Naive()
    assert buf.frame_stores and buf.obs is None
    collector = Collector(venv, space, maskable=False, store_action=_ids([0]))
    collector.check_n_step(n_step)
    collector.reset(seed=n_envs)
    for step in range(400):
        collector.step(None, lambda m: None, Tee(buf, naive), "pixels", step)
        if step % 97 == 96:
            check_against_naive(buf, naive, n_step, seed=step)
            check_bound(buf)
    store = next(iter(buf.frame_stores.values()))
    assert buf.sample(4).obs.dtype == (torch.uint8 if make is STACKED else torch.bool)
    assert buf.sample(4).obs.shape == (4, *space.shape)
    assert store.stack == (3 if make is STACKED else 1)
    if make is STACKED:
        # The stack relation holds for every stored transition, final observations included: the
        # collector stored the real final observation, not the next episode's first.
        assert all(np.array_equal(r["next"][:-1], r["obs"][1:]) for r in naive.rows)
    # Truncations whose final observation is not the next episode's first did happen.
    pairs = [(r, s) for c in range(n_envs) for r, s in itertools.pairwise([x for x in naive.rows if x["copy"] == c])]
    assert any(r["trunc"] and not np.array_equal(r["next"], s["obs"]) for r, s in pairs)
    # Each frame once: one new frame per transition, and one more where an episode starts (the
    # reset's padding, 3 equal frames, once); none for the observation the last next_obs already holds.
    episodes = n_envs + sum(r["term"] or r["trunc"] for r in naive.rows)
    assert len(naive.rows) < store.head <= len(naive.rows) + episodes
    assert buf.dropped == 0 and len(buf) == 70


# ------------------------------------------------------------------------------- direct add() calls
def _episodes(rng: np.random.Generator, shape: tuple[int, ...], stacked: bool, max_len: int) -> Any:
    """One env copy's transitions forever: (obs, next_obs, reward, terminated, truncated). Stacked:
    ``FrameStackObservation`` semantics written out (reset or zero padding, final observations that are
    shifts). Not stacked: independent images (of the same stack-like shape, so nothing chains)."""
    k = shape[0]
    frame = lambda: rng.integers(0, 3, size=shape[1:]).astype(np.uint8)  # noqa: E731
    while True:
        if stacked:
            first = frame()
            obs = np.stack([first] * k) if rng.random() < 0.5 else np.stack([np.zeros_like(first)] * (k - 1) + [first])
        else:
            obs = rng.integers(0, 3, size=shape).astype(np.uint8)
        length = int(rng.integers(1, max_len + 1))
        truncates = rng.random() < 0.5
        for t in range(length):
            nxt = np.concatenate([obs[1:], frame()[None]]) if stacked else rng.integers(0, 3, shape).astype(np.uint8)
            end = t == length - 1
            yield obs, nxt, float(rng.normal()), end and not truncates, end and truncates
            obs = nxt


@pytest.mark.parametrize("n_envs", [1, 3])
@pytest.mark.parametrize("n_step", [1, 3])
@pytest.mark.parametrize("stacked", [True, False])
def test_direct_adds_match_a_naive_buffer(n_envs: int, n_step: int, stacked: bool) -> None:
    """Hand-made episodes through add(): random lengths, reset and zero padding, truncations whose
    final observation differs from the next reset observation; 600 adds into 50 rows."""
    rng = np.random.default_rng(n_envs * 10 + n_step)
    shape = (4, 5, 5)
    buf, naive = ReplayBuffer(50, shape, (1,), torch.long, obs_dtype=torch.uint8, stride=n_envs), Naive()
    streams = [_episodes(rng, shape, stacked, max_len=15) for _ in range(n_envs)]
    ids = itertools.count()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # not stacked: rows go early, as the next test checks
        for step in range(600):
            rows = [next(s) for s in streams]
            obs, nxt, rew, term, trunc = (np.array([r[i] for r in rows]) for i in range(5))
            Tee(buf, naive).add(obs, np.array([[next(ids)] for _ in rows]), rew, nxt, term, trunc)
            if step % 150 == 149:
                check_against_naive(buf, naive, n_step, seed=step)
                check_bound(buf)
    if stacked:
        assert buf.dropped == 0


def test_frames_stay_within_the_bound_and_rows_go_before_their_frames() -> None:
    """Observations that never chain (2 x 4 new frames per transition) in a ring sized for 1.25: the
    ring keeps its size, the oldest rows go early with a warning, and every live row still reads back
    exactly what was added (n_envs 3, prioritized, n-step 3)."""
    rng = np.random.default_rng(5)
    buf = ReplayBuffer(40, (4, 5, 5), (1,), torch.long, obs_dtype=torch.uint8, stride=3, priority_alpha=0.6)
    store = buf.frame_stores[None]
    assert store.n_frames == FrameStore.frame_count(40, (4, 5, 5), 3) == 50 + 5 * 8 * 3
    frames_before = store.frames.data_ptr()
    naive, ids = Naive(), itertools.count()
    with pytest.warns(RuntimeWarning, match="frames_per_transition"):
        for step in range(300):
            obs, nxt = (rng.integers(0, 256, size=(3, 4, 5, 5)).astype(np.uint8) for _ in range(2))
            Tee(buf, naive).add(obs, np.array([[next(ids)] for _ in range(3)]), rng.normal(size=3), nxt,
                                np.zeros(3), (rng.random(3) < 0.2).astype(np.float32))
            if step % 60 == 59:
                assert 0 < len(buf) < 40 and buf.dropped > 0
                check_against_naive(buf, naive, n_step=1 + step % 3, seed=step)
                check_bound(buf)
                dead = np.setdiff1d(np.arange(buf.capacity), (buf.pos - buf.size + np.arange(buf.size)) % 40)
                assert float(buf.priorities[torch.as_tensor(dead)].abs().sum()) == 0  # never drawn
    assert store.frames.data_ptr() == frames_before and store.head > 10 * store.n_frames


def test_a_copy_back_after_long_absence_does_not_reuse_frames_written_over() -> None:
    """Copy 1 adds once, copy 0 alone then writes the ring over several times (``copies=[0]``, as
    NEXT_STEP collection passes), and copy 1 comes back with an observation equal to its old next
    observation: equal data, but those frames are gone, so it is stored afresh."""
    rng = np.random.default_rng(3)
    image = lambda n: rng.integers(0, 256, size=(n, 4, 5, 5)).astype(np.uint8)  # noqa: E731
    buf, naive, ids = ReplayBuffer(10, (4, 5, 5), (1,), torch.long, obs_dtype=torch.uint8, stride=2), Naive(), \
        itertools.count()
    old_next = image(1)
    Tee(buf, naive).add(image(1), np.array([[next(ids)]]), np.zeros(1), old_next, np.zeros(1), np.zeros(1),
                        copies=[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # unchained random stacks: rows go early
        for _ in range(200):
            Tee(buf, naive).add(image(1), np.array([[next(ids)]]), np.zeros(1), image(1), np.zeros(1), np.zeros(1),
                                copies=[0])
        store = buf.frame_stores[None]
        assert store.head > 5 * store.n_frames
        Tee(buf, naive).add(old_next, np.array([[next(ids)]]), np.zeros(1), image(1), np.zeros(1), np.zeros(1),
                            copies=[1])
    check_against_naive(buf, naive, n_step=1)
    check_bound(buf)


def test_each_frame_is_stored_once() -> None:
    """A stack of 4 over a long episode: one new frame per transition, the reset's repeated padding
    once; next_obs costs nothing beyond it."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(1001, 5, 5)).astype(np.uint8)
    stacks = np.stack([frames[np.maximum(np.arange(t - 3, t + 1), 0)] for t in range(1001)])  # reset padding
    buf = ReplayBuffer(2000, (4, 5, 5), (1,), torch.long, obs_dtype=torch.uint8)
    for t in range(1000):
        buf.add(stacks[t:t + 1], np.array([[t]]), np.zeros(1), stacks[t + 1:t + 2], np.zeros(1), np.zeros(1))
    assert buf.frame_stores[None].head == 1001  # frames 0 .. 1000, each once
    batch = buf.sample(64, torch.Generator().manual_seed(0))
    t = batch.actions[:, 0].numpy()
    assert np.array_equal(batch.obs.numpy(), stacks[t]) and np.array_equal(batch.next_obs.numpy(), stacks[t + 1])


def test_uint8_round_trip_and_refusals() -> None:
    """Stored in the env's dtype, returned in it, every value 0..255 intact; float or mis-shaped
    images and unknown copies are refused with the fix named."""
    buf = ReplayBuffer(8, (2, 16, 16), (1,), torch.long, obs_dtype=torch.uint8, stride=2)
    obs = np.arange(2 * 2 * 16 * 16, dtype=np.int64).reshape(2, 2, 16, 16).astype(np.uint8)
    buf.add(obs, np.array([[0], [1]]), np.zeros(2), 255 - obs, np.zeros(2), np.zeros(2))
    batch = buf.sample(32, torch.Generator().manual_seed(0))
    assert batch.obs.dtype == torch.uint8 and batch.next_obs.dtype == torch.uint8
    for b, i in enumerate(batch.actions[:, 0].tolist()):
        assert np.array_equal(batch.obs[b].numpy(), obs[i]) and np.array_equal(batch.next_obs[b].numpy(), 255 - obs[i])
    with pytest.raises(ValueError, match="uint8"):
        buf.add(obs.astype(np.float32), np.zeros((2, 1)), np.zeros(2), obs, np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="copies"):
        buf.add(obs[:1], np.zeros((1, 1)), np.zeros(1), obs[:1], np.zeros(1), np.zeros(1), copies=[2])
    with pytest.raises(ValueError, match="stride"):
        buf.add(np.concatenate([obs] * 2), np.zeros((4, 1)), np.zeros(4), np.concatenate([obs] * 2), np.zeros(4),
                np.zeros(4))


def test_layout_follows_the_space() -> None:
    assert obs_layout(spaces.Box(0, 255, ATARI, np.uint8)) == (ATARI, torch.uint8)
    assert obs_layout(spaces.Box(0, 1, (10, 10, 4), bool)) == ((10, 10, 4), torch.bool)
    assert obs_layout(spaces.Box(0, 255, (128,), np.uint8)) == ((128,), torch.float32)  # Atari RAM: flat
    assert obs_layout(spaces.Box(-1, 1, (2, 3), np.float32)) == ((6,), torch.float32)
    assert obs_layout(spaces.Discrete(5)) == ((5,), torch.float32)
    assert (stack_size(ATARI), stack_size((10, 10, 4)), stack_size((10, 10, 10)), stack_size((84, 84))) == (4, 1, 1, 1)
    assert stack_size((4, 84, 84, 3)) == 4 and stack_size((4, 128)) == 4
    flat = ReplayBuffer(4, (3,), (1,), torch.long)
    assert flat.flat_only and isinstance(flat.stores[None], FlatStore) and flat.obs is flat.stores[None].obs


# ------------------------------------------------------------------------------- memory
@pytest.mark.parametrize("kw", [{}, {"mask_size": 6, "priority_alpha": 0.5},
                                {"stride": 8, "frames_per_transition": 2.0}])
def test_nbytes_for_is_the_allocation(kw: dict[str, Any]) -> None:
    """nbytes_for, which refuses a buffer larger than memory before the run, is what the buffer holds."""
    for shape, dtype in [(ATARI, torch.uint8), ((10, 10, 6), torch.bool), ((17,), torch.float32),
                         ({"pixels": ATARI, "vec": (7,)}, {"pixels": torch.uint8, "vec": torch.float32})]:
        buf = ReplayBuffer(3_000, shape, (1,), torch.long, obs_dtype=dtype, **kw)
        assert buf.nbytes() == ReplayBuffer.nbytes_for(3_000, shape, (1,), kw.get("mask_size"), obs_dtype=dtype,
                                                       **{k: v for k, v in kw.items() if k != "mask_size"}), shape


def test_atari_transition_fits_in_one_stacked_observation() -> None:
    """100k Atari transitions (4 x 84 x 84 uint8, one env) against 100k stacked observations
    (28,224 bytes each): the target is 1.2x; frames, indices, actions, rewards and flags all counted.
    Allocated for real at 10k rows (the count is linear in the rows)."""
    per_obs = int(np.prod(ATARI))
    total = ReplayBuffer.nbytes_for(100_000, ATARI, (1,), obs_dtype=torch.uint8)
    assert total <= 1.2 * 100_000 * per_obs
    assert total / 100_000 < 0.33 * per_obs  # 1.25 frames a transition: a third of one stacked observation
    small = ReplayBuffer(10_000, ATARI, (1,), torch.long, obs_dtype=torch.uint8)
    assert small.nbytes() == ReplayBuffer.nbytes_for(10_000, ATARI, (1,), obs_dtype=torch.uint8)
    # The flat float layout of the same observations, for scale: 8 stacked observations' worth.
    assert ReplayBuffer.nbytes_for(100_000, (per_obs,), (1,)) > 7.9 * 100_000 * per_obs


def test_the_runner_counts_and_prints_the_image_layout() -> None:
    """The pre-run check and the line the run prints use the image layout's bytes for an image space."""
    from pathlib import Path

    from experiments.config import load_config
    from experiments.train import buffer_line, buffer_nbytes

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs/gumbel_sac/cartpole.yaml", {"agent.buffer_size": 100_000, "env.n_envs": 2})
    nbytes = buffer_nbytes(cfg, spaces.Box(0, 255, ATARI, np.uint8), spaces.Discrete(4))
    assert nbytes == ReplayBuffer.nbytes_for(100_000, ATARI, (1,), obs_dtype=torch.uint8, stride=2)
    assert buffer_line(cfg, nbytes) == f"replay buffer: 100,000 transitions x {nbytes / 100_000:,.0f} bytes = " \
                                       f"{nbytes / 2**30:.2f} GiB on cpu"


@pytest.mark.parametrize("config", ["gumbel_sac/cartpole.yaml", "hybrid_sac/platform.yaml",
                                    "gumbel_sac/combinatorial_masked.yaml", "gaussian_sac/pendulum.yaml"])
def test_the_runner_counts_what_the_agent_allocates(config: str) -> None:
    """The memory check before a run counts the buffer the agent then allocates, byte for byte: its
    head's action layout (a hybrid action is one float row), and masks only where the env has them."""
    from pathlib import Path

    from agents import AGENTS
    from agents.collect import has_action_masks
    from envs import make_env
    from experiments.config import load_config
    from experiments.train import buffer_nbytes

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / config, {"agent.buffer_size": 1000})
    env = make_env(cfg.env)
    try:
        predicted = buffer_nbytes(cfg, env.observation_space, env.action_space, has_action_masks(env))
    finally:
        env.close()
    agent = AGENTS[cfg.agent.name](cfg.env.id, **{**cfg.agent.hyperparameters, "n_envs": cfg.env.n_envs})
    assert predicted == agent._ensure_buffer().nbytes()
    assert (agent.buffer.masks is not None) == ("masked" in config)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_on_the_device(device: str) -> None:
    """Frames, frame numbers and samples on the buffer's device; the host keeps only what add() compares."""
    rng = np.random.default_rng(7)
    buf = ReplayBuffer(40, (4, 5, 5), (1,), torch.long, device=device, obs_dtype=torch.uint8, stride=2,
                       priority_alpha=0.5)
    naive, ids, streams = Naive(), itertools.count(), [_episodes(rng, (4, 5, 5), True, 9) for _ in range(2)]
    for _ in range(150):
        rows = [next(s) for s in streams]
        obs, nxt, rew, term, trunc = (np.array([r[i] for r in rows]) for i in range(5))
        Tee(buf, naive).add(obs, np.array([[next(ids)] for _ in rows]), rew, nxt, term, trunc)
    store = buf.frame_stores[None]
    assert store.frames.device.type == device and buf.sample(3).obs.device.type == device
    check_against_naive(buf, naive, n_step=3)
    other = ReplayBuffer(40, (4, 5, 5), (1,), torch.long, device=device, obs_dtype=torch.uint8, stride=2,
                         priority_alpha=0.5)
    other.load_state_dict({k: v.cpu() for k, v in buf.state_dict().items()})
    assert _same({k: v.cpu() for k, v in other.state_dict().items()}, {k: v.cpu() for k, v in buf.state_dict().items()})
    assert np.array_equal(other.frame_stores[None].last_obs, store.last_obs)


# ------------------------------------------------------------------------------- checkpoints
def _filled(seed: int = 0, **kw: Any) -> tuple[ReplayBuffer, list[tuple]]:
    """A stacked-image buffer with masks and priorities, wrapped several times; and the adds that
    continue it."""
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(30, (3, 4, 4), (1,), torch.long, obs_dtype=torch.uint8, stride=3, mask_size=4,
                       priority_alpha=0.6, **kw)
    streams = [_episodes(rng, (3, 4, 4), True, max_len=6) for _ in range(3)]
    adds = []
    for step in range(200):
        rows = [next(s) for s in streams]
        obs, nxt, rew, term, trunc = (np.array([r[i] for r in rows]) for i in range(5))
        masks = rng.random((3, 4)) < 0.7
        adds.append((obs, np.full((3, 1), step), rew, nxt, term, trunc, masks, ~masks))
    for a in adds[:150]:
        buf.add(*a)
        if buf.size:
            batch = buf.sample(8, torch.Generator().manual_seed(len(adds)))
            buf.update_priorities(batch.indices, torch.as_tensor(rng.normal(size=8), dtype=torch.float32))
    return buf, adds[150:]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_state_dict_round_trip_continues_bit_for_bit(tmp_path: Any) -> None:
    """Through a real safetensors file: the same state, the same samples, and the same state again
    after both continue with the same adds."""
    buf, rest = _filled()
    save_file(buf.state_dict(), tmp_path / "buffer.safetensors")
    other = _filled(seed=1)[0]  # different contents, same layout: all of it must be replaced
    other.load_state_dict(load_file(tmp_path / "buffer.safetensors"))
    assert _same(other.state_dict(), buf.state_dict())
    for n_step in (1, 3):
        a, b = (x.sample(64, torch.Generator().manual_seed(n_step), n_step=n_step) for x in (buf, other))
        assert all(x is y is None or _same({"v": x}, {"v": y}) for x, y in zip(a, b, strict=True))
    for x in (buf, other):
        for a in rest:
            x.add(*a)
    assert _same(other.state_dict(), buf.state_dict())
    naive_obs = np.concatenate([a[0] for a in rest])[-30:]  # the newest 30 observations, in write order
    assert torch.equal(buf._obs_at(torch.as_tensor((buf.pos - 30 + np.arange(30)) % 30)), torch.as_tensor(naive_obs))


def _corrupt(state: dict[str, torch.Tensor], key: str, fn: Any) -> dict[str, torch.Tensor]:
    out = {k: v.clone() for k, v in state.items()}
    if fn is None:
        del out[key]
    else:
        out[key] = fn(out[key])
    return out


def _bump(i: int, by: int) -> Any:
    def f(t: torch.Tensor) -> torch.Tensor:
        t.view(-1)[i] += by
        return t
    return f


@pytest.mark.parametrize(("key", "fn", "says"), [
    ("obs.obs_slots", _bump(0, 10_000), "obs_slots point outside"),
    ("obs.next_slots", lambda t: t - 10_000, "next_slots point outside"),
    ("obs.low", lambda t: t.flip(0), "already written over|outside"),
    ("obs.counters", _bump(0, 1), "ring holds"),
    ("obs.counters", _bump(1, 2**62), "frames written"),
    ("obs.counters", _bump(2, 10**6), "recent frame counts"),
    ("obs.last", _bump(0, 10**6), "last frames"),
    ("pos_size", _bump(1, 1), "do not fit"),
    ("pos_size", _bump(0, 1), "written over"),
    ("pos_size", _bump(3, 1), "capacity"),
    ("obs.frames", lambda t: t[:-1], "needs"),
    ("obs.frames", lambda t: t.float(), "needs"),
    ("actions", None, "lacks 'actions'"),
    ("priorities", lambda t: -t, "priorities"),
    ("masks", None, "lacks 'masks'"),
])
def test_a_corrupted_state_is_refused_before_anything_is_written(key: str, fn: Any, says: str) -> None:
    buf, _ = _filled()
    state = buf.state_dict()
    target = _filled(seed=2)[0]
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=says):
        target.load_state_dict(_corrupt(state, key, fn))
    assert _same(target.state_dict(), before)  # untouched


def test_unknown_tensors_and_other_layouts_are_refused() -> None:
    buf, _ = _filled()
    state = buf.state_dict()
    with pytest.raises(ValueError, match="holds 'extra'"):
        _filled()[0].load_state_dict({**state, "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"'pos_size' is \(4,\)"):
        ReplayBuffer(30, (9,), (1,), torch.long, stride=3, mask_size=4).load_state_dict(state)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(40, (3, 4, 4), (1,), torch.long, obs_dtype=torch.uint8, stride=3, mask_size=4,
                     priority_alpha=0.6).load_state_dict(state)
    with pytest.raises(ValueError, match="action masks"):
        ReplayBuffer(30, (3, 4, 4), (1,), torch.long, obs_dtype=torch.uint8, stride=3).load_state_dict(state)


# ------------------------------------------------------------------------------- Dict observations
def test_dict_observations_through_the_collector() -> None:
    """A Dict of a stacked image and a float vector, two copies, SAME_STEP: Batch.obs is a dict of
    a uint8 (B, 3, 6, 6) and a float32 (B, 2) tensor, each equal to the naive buffer's; the vector
    (episode, step) shows that every stored next observation is the real one, final ones included;
    and the state round-trips."""
    venv = gym.vector.SyncVectorEnv([DictPixelEnv] * 2, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    space = venv.single_observation_space
    buf, naive = _buffer(space, 40, 2), Naive()
    assert set(buf.frame_stores) == {"pixels"} and isinstance(buf.stores["vec"], FlatStore)
    collector = Collector(venv, space, maskable=False, store_action=_ids([0]))
    collector.reset(seed=0)
    for step in range(150):
        collector.step(None, lambda m: None, Tee(buf, naive), "dict", step)
    for r in naive.rows:
        assert r["next"]["vec"][0] == r["obs"]["vec"][0] and r["next"]["vec"][1] == r["obs"]["vec"][1] + 1
        assert np.array_equal(r["next"]["pixels"][:-1], r["obs"]["pixels"][1:])
    check_against_naive(buf, naive, n_step=3)
    batch = buf.sample(5)
    assert batch.obs["pixels"].dtype == torch.uint8 and batch.obs["pixels"].shape == (5, 3, 6, 6)
    assert batch.obs["vec"].dtype == torch.float32 and batch.next_obs["vec"].shape == (5, 2)
    other = _buffer(space, 40, 2)
    other.load_state_dict(buf.state_dict())
    assert _same(other.state_dict(), buf.state_dict())
    assert {k for k in buf.state_dict() if k.startswith("obs.")} >= {"obs.pixels.frames", "obs.vec.obs"}
    with pytest.raises(ValueError, match="keys"):
        buf.add({"pixels": np.zeros((1, 3, 6, 6), np.uint8)}, np.zeros((1, 1)), np.zeros(1),
                {"pixels": np.zeros((1, 3, 6, 6), np.uint8)}, np.zeros(1), np.zeros(1))
