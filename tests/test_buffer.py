"""Replay buffer storage, and what the agent's learn loop puts into it at episode ends."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from envs_for_tests import CounterEnv, counter_env

from agents import GaussianSAC, GumbelSAC
from agents.buffer import ReplayBuffer

SMALL: dict[str, Any] = {"net_arch": [16], "batch_size": 8, "learning_starts": 10_000, "seed": 0, "device": "cpu"}


def _fill(buf: ReplayBuffer, start: int, n: int) -> None:
    i = np.arange(start, start + n, dtype=np.float32)
    buf.add(i[:, None], (i % 3).astype(np.int64)[:, None], i, i[:, None] + 0.5, (i % 2 == 0).astype(np.float32),
            (i % 5 == 0).astype(np.float32))


def test_terminated_and_truncated_stored_apart() -> None:
    buf = ReplayBuffer(10, (1,), (1,), torch.long)
    buf.add(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros(3), np.ones((3, 1)), np.array([1, 0, 0]), np.array([0, 1, 0]))
    assert torch.equal(buf.terminated[:3], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(buf.truncated[:3], torch.tensor([0.0, 1.0, 0.0]))
    batch = buf.sample(200, torch.Generator().manual_seed(0))
    assert not bool(((batch.terminated == 1) & (batch.truncated == 1)).any())
    assert bool((batch.truncated == 1).any()) and bool((batch.terminated == 1).any())


def test_circular_overwrite() -> None:
    buf = ReplayBuffer(4, (1,), (1,), torch.long)
    _fill(buf, 0, 3)
    assert len(buf) == 3 and buf.pos == 3
    _fill(buf, 3, 3)  # 3, 4, 5 -> positions 3, 0, 1
    assert len(buf) == 4 and buf.pos == 2
    assert buf.obs[:, 0].tolist() == [4.0, 5.0, 2.0, 3.0]
    assert buf.rewards.tolist() == [4.0, 5.0, 2.0, 3.0]
    assert buf.next_obs[:, 0].tolist() == [4.5, 5.5, 2.5, 3.5]
    _fill(buf, 6, 9)  # more than the capacity in one add: the last 4 win
    assert sorted(buf.rewards.tolist()) == [11.0, 12.0, 13.0, 14.0]
    batch = buf.sample(64, torch.Generator().manual_seed(1))
    assert set(batch.rewards.tolist()) <= {11.0, 12.0, 13.0, 14.0}
    # Rows stay aligned: every field of one sample comes from the same transition.
    assert torch.equal(batch.obs[:, 0], batch.rewards) and torch.equal(batch.next_obs[:, 0], batch.rewards + 0.5)


def test_state_dict_round_trip() -> None:
    buf = ReplayBuffer(6, (1,), (1,), torch.long, mask_size=3)
    _fill(buf, 0, 6)
    rows = np.arange(2, dtype=np.float32)
    buf.add(rows[:, None], np.zeros((2, 1)), rows, rows[:, None], rows * 0, rows * 0,
            masks=np.array([[1, 0, 1], [0, 1, 1]], dtype=bool), next_masks=np.array([[0, 0, 1], [1, 1, 0]], dtype=bool))
    state = buf.state_dict()
    other = ReplayBuffer(6, (1,), (1,), torch.long, mask_size=3)
    other.load_state_dict(state)
    assert (other.pos, other.size) == (buf.pos, buf.size)
    for k in ("obs", "next_obs", "actions", "rewards", "terminated", "truncated", "masks", "next_masks"):
        assert torch.equal(getattr(other, k), getattr(buf, k)), k
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    pairs = zip(buf.sample(16, g1), other.sample(16, g2), strict=True)
    assert all(a is b is None or torch.equal(a, b) for a, b in pairs)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(3, (1,), (1,), torch.long, mask_size=3).load_state_dict(state)


def test_prioritized_sampling_follows_the_priorities_and_weights_undo_them() -> None:
    """Rows with TD errors 0, 1, 3, 7 and alpha 0.5: each is drawn with probability
    p_i / sum p, p_i = (|td| + 1e-3) ** 0.5 (Schaul et al. 2016). Each row's count over n draws is
    Binomial(n, P_i); 5 standard deviations bound it (a false failure ~6e-7 per row). The weights
    are (P_i / min over the batch) ** -beta."""
    alpha, beta = 0.5, 0.4
    buf = ReplayBuffer(8, (1,), (1,), torch.long, priority_alpha=alpha, priority_beta=beta)
    _fill(buf, 0, 4)
    assert torch.equal(buf.priorities[:4], torch.ones(4))  # new rows: the largest priority yet (1 at first)
    td = torch.tensor([0.0, 1.0, 3.0, 7.0])
    buf.update_priorities(torch.arange(4), td)
    p = (td + ReplayBuffer.PRIORITY_EPS) ** alpha
    probs = p / p.sum()
    g = torch.Generator().manual_seed(0)
    n, counts = 0, torch.zeros(4)
    for _ in range(200):
        batch = buf.sample(100, g)
        counts += torch.bincount(batch.indices, minlength=4)
        n += 100
        assert torch.equal(batch.rewards, batch.indices.float())  # the rows returned are the rows drawn
        chosen = p[batch.indices]
        assert torch.allclose(batch.weights, (chosen / chosen.min()) ** -beta)
    sd = (n * probs * (1 - probs)).sqrt()
    assert bool(((counts - n * probs).abs() < 5 * sd).all()), (counts, n * probs)
    # A new row enters at the largest priority seen so far, the TD error 7's.
    _fill(buf, 4, 1)
    assert float(buf.priorities[4]) == pytest.approx(float(p.max()))
    assert float(buf.max_priority) == pytest.approx(float(p.max()))


def test_priorities_survive_the_state_dict_and_start_level_when_turned_on() -> None:
    buf = ReplayBuffer(6, (1,), (1,), torch.long, priority_alpha=0.6)
    _fill(buf, 0, 5)
    buf.update_priorities(torch.tensor([0, 3]), torch.tensor([2.0, 9.0]))
    other = ReplayBuffer(6, (1,), (1,), torch.long, priority_alpha=0.6)
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.priorities, buf.priorities) and torch.equal(other.max_priority, buf.max_priority)
    uniform = ReplayBuffer(6, (1,), (1,), torch.long)
    uniform.load_state_dict(buf.state_dict())  # a uniform buffer ignores them
    assert uniform.priorities is None and torch.equal(uniform.rewards, buf.rewards)
    turned_on = ReplayBuffer(6, (1,), (1,), torch.long, priority_alpha=0.6)
    turned_on.load_state_dict(uniform.state_dict())  # saved without priorities: every stored row level
    assert torch.equal(turned_on.priorities[:5], torch.ones(5)) and float(turned_on.priorities[5]) == 0.0


@pytest.mark.parametrize(("agent_cls", "env"), [(GumbelSAC, "CartPole-v1"), (GaussianSAC, "Pendulum-v1")])
def test_agents_learn_with_prioritized_replay(agent_cls: type, env: str) -> None:
    """Both agents (GaussianSAC through its autograd update) train on prioritized batches and
    write the TD errors back: the priorities spread out from the level they entered at."""
    agent = agent_cls(env, **{**SMALL, "learning_starts": 64, "batch_size": 32}, prioritized_replay=0.6)
    agent.learn(300)
    p = agent.buffer.priorities[:300]
    assert agent.num_updates > 0 and float(p.std()) > 0 and bool(torch.isfinite(p).all())


def test_empty_and_invalid() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0, (1,), (1,), torch.long)
    with pytest.raises(RuntimeError, match="empty"):
        ReplayBuffer(2, (1,), (1,), torch.long).sample(1)


def _stored(agent: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    b = agent.buffer
    n = len(b)
    return (b.obs[:n, 0].numpy(), b.next_obs[:n, 0].numpy(), b.terminated[:n].numpy(), b.truncated[:n].numpy())


@pytest.mark.parametrize("agent_cls, box", [(GumbelSAC, False), (GaussianSAC, True)])
def test_learn_stores_real_final_observation_on_truncation(agent_cls: type, box: bool) -> None:
    """TimeLimit(5): the stored next_obs of the truncating step is the counter 5, not the reset 0."""
    agent = agent_cls(counter_env(5, box_actions=box), **SMALL)
    agent.learn(23)
    obs, nxt, term, trunc = _stored(agent)
    assert len(obs) == 23
    assert np.array_equal(nxt, obs + 1), "every transition must go from counter t to t + 1"
    assert np.array_equal(trunc, (nxt == 5).astype(np.float32)) and not term.any()
    assert list(agent.episode_lengths) == [5, 5, 5, 5] and agent.num_episodes == 4


def test_learn_keeps_termination_apart_from_truncation() -> None:
    agent = GumbelSAC(counter_env(5, terminate_at=3), **SMALL)
    agent.learn(9)
    obs, nxt, term, trunc = _stored(agent)
    assert np.array_equal(nxt, obs + 1)
    assert np.array_equal(term, (nxt == 3).astype(np.float32)) and not trunc.any()


def test_learn_skips_reset_transition_in_next_step_autoreset() -> None:
    """NEXT_STEP autoreset: the step after a done only resets; it must not be stored as a transition."""
    venv = gym.vector.SyncVectorEnv([lambda: counter_env(4), lambda: counter_env(3)],
                                    autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    agent = GumbelSAC(venv, **SMALL)
    agent.learn(2 * 20)
    obs, nxt, term, trunc = _stored(agent)
    assert np.array_equal(nxt, obs + 1), "a reset transition (final obs -> 0) was stored"
    # 20 steps each: env 0 (limit 4) ends at steps 4, 9, 14, 19 and resets on the step after each,
    # env 1 (limit 3) ends at 3, 7, 11, 15, 19: 9 reset steps out of 40, 9 truncations stored.
    assert len(obs) == 40 - 9 and int(trunc.sum()) == 9 and not term.any()
    assert set(nxt[trunc == 1].tolist()) == {3.0, 4.0}


def test_episode_lengths_in_next_step_autoreset() -> None:
    """The NEXT_STEP reset step belongs to no episode: it must not lengthen the next one."""
    venv = gym.vector.SyncVectorEnv([lambda: counter_env(4)], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    agent = GumbelSAC(venv, **SMALL)
    agent.learn(15)
    assert list(agent.episode_lengths) == [4, 4, 4] and agent.num_episodes == 3


def test_same_step_vector_env_matches_counter() -> None:
    venv = gym.vector.SyncVectorEnv([lambda: gym.wrappers.TimeLimit(CounterEnv(), 3)] * 2,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    agent = GumbelSAC(venv, **SMALL)
    agent.learn(12)
    obs, nxt, _, trunc = _stored(agent)
    assert len(obs) == 12 and np.array_equal(nxt, obs + 1)
    assert np.array_equal(trunc == 1, nxt == 3)


def _n_step_reference(log: list[dict[str, Any]], t: int, n: int, gamma: float) -> tuple[float, int, int, float]:
    """From the write-ordered log: (n-step reward sum, id of the last transition used, its
    terminated flag, gamma ** k), following transition ``t``'s env copy."""
    first = next(i for i, x in enumerate(log) if x["id"] == t)
    copy = log[first]["copy"]
    steps = [log[first]]
    later = [x for x in log[first + 1:] if x["copy"] == copy]
    while len(steps) < n and not (steps[-1]["term"] or steps[-1]["trunc"]) and later:
        steps.append(later.pop(0))
    total = sum(gamma ** j * x["reward"] for j, x in enumerate(steps))
    return total, steps[-1]["id"], steps[-1]["term"], gamma ** len(steps)


@pytest.mark.parametrize("n_step", [2, 3, 5])
def test_n_step_sample_matches_each_copy_s_own_trajectory(n_step: int) -> None:
    """Two env copies with episodes that end by termination and by truncation, in a buffer of 13
    rows (not a multiple of the stride) that has wrapped around several times, sampled right up to
    the newest transitions, whose later steps do not exist yet."""
    rng = np.random.default_rng(0)
    gamma, copies = 0.9, 2
    buf = ReplayBuffer(13, (1,), (1,), torch.long, stride=copies)
    log: list[dict[str, Any]] = []
    next_id = 0
    for _ in range(40):
        ids = np.arange(next_id, next_id + copies)
        next_id += copies
        rewards = rng.normal(size=copies).astype(np.float32)
        term = (rng.random(copies) < 0.15).astype(np.float32)
        trunc = ((rng.random(copies) < 0.1) & (term == 0)).astype(np.float32)
        buf.add(ids[:, None].astype(np.float32), np.zeros((copies, 1), dtype=np.int64), rewards,
                ids[:, None].astype(np.float32) + 0.5, term, trunc)
        log += [{"id": int(i), "copy": c, "reward": float(r), "term": int(a), "trunc": int(b)}
                for c, (i, r, a, b) in enumerate(zip(ids, rewards, term, trunc, strict=True))]
    log = log[-13:]  # what the buffer still holds
    batch = buf.sample(400, torch.Generator().manual_seed(1), n_step=n_step, gamma=gamma)
    seen_short = 0
    for obs, reward, next_obs, terminated, discount in zip(batch.obs[:, 0].tolist(), batch.rewards.tolist(),
                                                          batch.next_obs[:, 0].tolist(), batch.terminated.tolist(),
                                                          batch.discount.tolist(), strict=True):
        total, last, last_term, disc = _n_step_reference(log, int(obs), n_step, gamma)
        assert reward == pytest.approx(total, abs=1e-5) and next_obs == last + 0.5
        assert terminated == last_term and discount == pytest.approx(disc)
        seen_short += disc > gamma ** n_step * 1.0001
    assert 0 < seen_short < 400  # both cut-short and full windows were drawn


def test_one_step_sample_is_unchanged_by_the_n_step_path() -> None:
    buf = ReplayBuffer(10, (1,), (1,), torch.long, stride=2)
    _fill(buf, 0, 8)
    a = buf.sample(50, torch.Generator().manual_seed(0))
    b = buf.sample(50, torch.Generator().manual_seed(0), n_step=1, gamma=0.5)
    assert b.discount is None and all(torch.equal(x, y) for x, y in zip(a[:6], b[:6], strict=True))


def test_n_step_agents_learn_and_refuse_what_they_cannot_do() -> None:
    agent = GumbelSAC("CartPole-v1", **{**SMALL, "learning_starts": 50, "n_envs": 2}, n_step=3)
    agent.learn(120)
    assert agent.num_updates > 0 and agent.buffer.stride == 2
    with pytest.raises(ValueError, match="n_step"):  # the soft target would miss the entropy of the steps between
        GaussianSAC("Pendulum-v1", **SMALL, n_step=3)
    next_step = gym.make_vec("CartPole-v1", 2, vectorization_mode="sync",
                             vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP})
    with pytest.raises(ValueError, match="SAME_STEP"):
        GumbelSAC(next_step, **SMALL, n_step=3).learn(10)
