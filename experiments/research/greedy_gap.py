"""Research probe: does a trained GumbelSAC fall short of a combinatorial task's optimum through its
critic or through its actor?

On a task of ``envs/combinatorial_suite.py`` each step's state is drawn afresh, so the future part of
Q(s, a) does not depend on a, and a critic that is right ranks the joint actions of a state as the
reward does. For the states a saved model meets (its greedy policy's episodes), this enumerates every
joint action and compares the true one-step reward of

* the actor's greedy action (what evaluation plays),
* the critic's greedy action, argmax over all joint actions of the twin critics' min, and
* the best single-factor change to the actor's action by the critic (a coordinate ascent step,
  which the factorized actor could reach by changing one slot),

and splits the actor's shortfall into slots that chose a non-paying item alone and slots that collided,
where the task has those (Assign). If the critic's greedy action earns near the optimum while the
actor's does not, the critic holds what the actor fails to extract; if both fall short, the critic is
where to look:

    python run.py train configs/gumbel_sac/combinatorial_assign.yaml --set train.total_timesteps=20000
    python -m experiments.research.greedy_gap runs/<run>/model.reparl --episodes 20
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401  (registers the reparl/ ids)
from agents import GumbelSAC
from experiments.research.pairwise_fit import MAX_JOINT, joint_actions  # larger tasks get only the local measures


def correlation(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")


def one_factor_changes(action: np.ndarray, nvec: list[int]) -> np.ndarray:
    """``action`` and every joint action that differs from it in exactly one factor."""
    out = [action]
    for f, n in enumerate(nvec):
        for c in range(n):
            if c != action[f]:
                changed = action.copy()
                changed[f] = c
                out.append(changed)
    return np.stack(out)


def q_values(agent: GumbelSAC, feats: torch.Tensor, actions: np.ndarray) -> np.ndarray:
    """The twin critics' min for one state's features and each of ``actions`` (env layout)."""
    y = agent.head.one_hot(torch.as_tensor(agent.head.from_env(actions)))
    return agent.head.q(agent.critic, feats.expand(len(actions), -1), y).min(0).values.numpy()


def probe(model: str | Path, env_id: str, episodes: int = 20, samples: int = 256,
          seed: int = 10_000) -> dict[str, float]:
    """Mean per step over ``episodes`` greedy episodes: the true reward of the actor's greedy and
    sampled actions, of the critic's best one-factor change to the greedy action and (where the joint
    actions can be enumerated) of the critic's argmax; the correlation of Q with the reward over
    each of those sets and over ``samples`` policy samples; the policy's entropy per factor; and on
    Assign, the greedy action's slots that collided or sat alone on a non-paying item."""
    agent = GumbelSAC.load(model, device="cpu")
    head = agent.head
    env = gym.make(env_id).unwrapped
    if not hasattr(env, "rewards"):
        raise SystemExit(f"{env_id} has no rewards(actions); pick a task of envs/combinatorial_suite.py")
    nvec = [int(n) for n in env.action_space.nvec]
    joint = None
    if math.prod(nvec) <= MAX_JOINT:
        joint = joint_actions(nvec)
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        for _ in range(env.horizon):
            o = torch.as_tensor(obs, dtype=torch.float32)[None]
            with torch.no_grad():
                feats = agent.critic.features(o)
                logits = agent.policy(o)
                dist = head.distribution(logits, None)
                greedy = head.to_env(dist.mode())[0]
                # The actions the critic is trained on: the policy's own samples.
                drawn = head.to_env(head.distribution(logits.expand(samples, -1, -1), None).sample())
                add("entropy", dist.entropy().item() / len(nvec))
                near = one_factor_changes(greedy, nvec)
                q_near, q_drawn = q_values(agent, feats, near), q_values(agent, feats, drawn)
                q_all = q_values(agent, feats, joint) if joint is not None else None
            r_near, r_drawn = env.rewards(near), env.rewards(drawn)
            add("actor", float(r_near[0]))
            add("sampled", float(r_drawn.mean()))
            add("one_change", float(r_near[q_near.argmax()]))
            add("corr_near", correlation(q_near, r_near))
            add("corr_policy", correlation(q_drawn, r_drawn))
            if q_all is not None:
                r_all = env.rewards(joint)
                add("critic", float(r_all[q_all.argmax()]))
                add("corr", correlation(q_all, r_all))
            if hasattr(env, "paying_slots"):
                alone = (greedy[:, None] == greedy[None, :]).sum(-1) == 1
                add("collided", float((~alone).mean()))
                add("alone_unpaid", float((alone & ~env.paying_slots(greedy)).mean()))
            obs, _, terminated, truncated, _ = env.step(greedy)
            if terminated or truncated:
                break
    # A correlation is undefined (NaN) where Q or r is constant over the set: left out of the mean.
    finite = {k: np.array(v)[~np.isnan(v)] for k, v in rows.items()}
    return {k: float(v.mean()) if v.size else float("nan") for k, v in finite.items()}


def supervised_critic(env_id: str, out: str | Path, samples: int = 20_000, updates: int = 20_000,
                      seed: int = 0) -> Path:
    """A fresh GumbelSAC (the shipped defaults) whose critics are fitted by regression to the one-step
    reward of ``samples`` uniform-random transitions, ``updates`` Adam steps of the agent's batch size
    and critic learning rate, saved to ``out`` for :func:`probe`. It asks whether the critic's form
    and network learn the task's reward from as many samples as the agent sees, with no bootstrapping,
    entropy or policy in the way."""
    torch.manual_seed(seed)
    agent = GumbelSAC(env_id, seed=seed)
    env = gym.make(env_id).unwrapped
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    o, a, r = [], [], []
    for _ in range(samples):
        action = env.action_space.sample()
        o.append(obs)
        a.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        r.append(reward)
        if terminated or truncated:
            obs, _ = env.reset()
    o_t, r_t = torch.as_tensor(np.array(o), dtype=torch.float32), torch.as_tensor(np.array(r), dtype=torch.float32)
    y = agent.head.one_hot(torch.as_tensor(agent.head.from_env(np.array(a))))
    hp = agent.hparams
    opt = torch.optim.Adam(agent.critic.parameters(), lr=hp["critic_learning_rate"])
    gen = torch.Generator().manual_seed(seed)
    for _ in range(updates):
        i = torch.randint(samples, (hp["batch_size"],), generator=gen)
        q = agent.head.q(agent.critic, agent.critic.features(o_t[i]), y[i])  # (critics, batch)
        loss = (q - r_t[i]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return agent.save(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a saved GumbelSAC model (a run folder's model file); with --supervised, "
                   "where to save the fitted one")
    p.add_argument("--env", default="reparl/CombinatorialAssign-v0")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--samples", type=int, default=256, help="policy samples per state")
    p.add_argument("--supervised", type=int, default=0, metavar="N",
                   help="first fit a fresh agent's critics to N uniform-random transitions' rewards "
                   "(N Adam steps), save it to MODEL, and probe that")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.supervised:
        supervised_critic(a.env, a.model, a.supervised, a.supervised)
    out = probe(a.model, a.env, a.episodes, a.samples)
    print(f"{a.env}, {a.model}: per-step true reward (optimum 1), {a.episodes} greedy episodes\n")
    print("| actor greedy | actor sampled | critic greedy (all joint actions) | best one-factor change by the critic "
          "| corr(Q, r): all joint actions | one-factor changes | policy samples | policy entropy per factor (nats) |")
    print("|---|---|---|---|---|---|---|---|")
    cell = {k: f"{v:.3f}" for k, v in out.items()}
    print(f"| {cell['actor']} | {cell['sampled']} | {cell.get('critic', 'n/a')} | {cell['one_change']} "
          f"| {cell.get('corr', 'n/a')} | {cell['corr_near']} | {cell['corr_policy']} | {cell['entropy']} |")
    if "collided" in out:
        print(f"\nactor greedy's slots: {out['collided']:.3f} collided, {out['alone_unpaid']:.3f} alone on a "
              f"non-paying item, {out['actor']:.3f} paid")


if __name__ == "__main__":
    main()
