"""Action masks (sb3-contrib's convention) on reparl/CombinatorialMasked-v0: never a forbidden
action when acting, exactly zero probability in the actor, the right mask stored for each state."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from agents import GumbelSAC
from envs.combinatorial import CombinatorialMasked
from experiments.evaluation import evaluate, make_eval_env

TINY: dict[str, Any] = {"net_arch": [32, 32], "batch_size": 32, "learning_starts": 100, "buffer_size": 1_000,
                        "seed": 0, "device": "cpu", "n_envs": 2}
MASK_START = 37  # the observation ends with the flat mask (32 entries after shifts, key and time)
ENV_ID = "reparl/CombinatorialMasked-v0"


class AssertAllowed(gym.Wrapper):
    """Fails the test at the first forbidden choice the env receives."""

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        allowed = self.env.unwrapped.mask[np.arange(8), np.asarray(action)]
        assert allowed.all(), f"forbidden action {action} under mask {self.env.unwrapped.mask.astype(int)}"
        return self.env.step(action)


def checked_vec_env(n: int = 2) -> gym.vector.VectorEnv:
    """With the runner's vector wrapper on top, which does not forward ``call``."""
    return RecordEpisodeStatistics(make_eval_env(ENV_ID, n, wrappers=[AssertAllowed]))


@pytest.fixture(scope="module")
def trained() -> GumbelSAC:
    """500 env steps over 2 copies: the 100-step masked warm-up, then the policy (201 updates, one per vector step)."""
    return GumbelSAC(checked_vec_env(), **TINY).learn(500)


def test_training_and_evaluation_never_take_a_masked_action(trained: GumbelSAC) -> None:
    assert trained.num_updates == 201 and trained.num_episodes == 30  # one update per vector step; 250 / 16 x 2
    assert np.isfinite(list(trained.pop_train_info().values())).all()
    for deterministic in (True, False):  # AssertAllowed raises inside evaluate on any violation
        result = evaluate(trained, checked_vec_env(3), n_episodes=3, deterministic=deterministic, seed=1)
        assert len(result.returns) == 3 and (result.returns > 0).all()


def test_buffer_masks_belong_to_the_stored_observations(trained: GumbelSAC) -> None:
    """masks[i] is obs[i]'s mask and next_masks[i] next_obs[i]'s, also where the episode ended
    and SAME_STEP autoreset had already moved the env on (the mask then comes from final_info)."""
    buf, n = trained.buffer, len(trained.buffer)
    assert bool(buf.terminated[:n].sum() == 30)
    assert torch.equal(buf.masks[:n], buf.obs[:n, MASK_START:] > 0.5)
    assert torch.equal(buf.next_masks[:n], buf.next_obs[:n, MASK_START:] > 0.5)
    taken = torch.nn.functional.one_hot(buf.actions[:n], 4).reshape(n, -1).bool()
    assert not bool((taken & ~buf.masks[:n]).any())


def test_masked_choices_have_probability_exactly_zero_in_the_actor_update(trained: GumbelSAC) -> None:
    seen: list[torch.Tensor | None] = []
    head = trained.head
    objective = head.actor_objective

    def spy(logits: torch.Tensor, masks: torch.Tensor | None, critic: Any, obs: torch.Tensor, temperature: Any,
            estimator: str | None = None) -> Any:
        seen.append(masks)
        assert torch.equal(masks, obs[:, MASK_START:] > 0.5)  # the sampled states' own masks
        probs = head.distribution(logits, masks, temperature).probs
        assert bool((probs.reshape(len(masks), -1)[~masks] == 0).all())
        return objective(logits, masks, critic, obs, temperature, estimator)

    while trained.num_updates % trained.hparams["policy_delay"]:  # reach an update that steps the actor
        trained.train_step()
    head.actor_objective = spy
    try:
        trained.train_step()
    finally:
        del head.actor_objective
    assert len(seen) == 1 and seen[0] is not None
    batch = trained.buffer.sample(64, torch.Generator().manual_seed(0))
    for masks in (batch.masks, batch.next_masks):
        dist = trained.distribution(batch.next_obs if masks is batch.next_masks else batch.obs, masks)
        probs = dist.probs.reshape(64, -1)
        assert bool((probs[~masks] == 0).all()) and bool((probs[masks] > 0).all())
        y = dist.rsample("st").reshape(64, -1)
        assert bool((y[~masks] == 0).all())


def test_predict_honours_masks_single_and_batch(trained: GumbelSAC) -> None:
    env = CombinatorialMasked()
    obs, _ = env.reset(seed=3)
    mode = trained.predict(obs, deterministic=True)[0]
    mask = env.action_masks().reshape(8, 4)
    mask[np.arange(8), mode] = False  # forbid the unmasked mode, keeping another choice per factor
    mask[np.arange(8), (mode + 1) % 4] = True
    action = trained.predict(obs, deterministic=True, action_masks=mask.reshape(-1))[0]
    assert mask[np.arange(8), action].all()
    batch = np.stack([obs] * 50)
    actions = trained.predict(batch, action_masks=np.stack([mask.reshape(-1)] * 50))[0]
    assert all(mask[np.arange(8), a].all() for a in actions)
