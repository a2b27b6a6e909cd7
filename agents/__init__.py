"""reparl agents: soft actor-critic trained through its own sampling step.

Importable on its own (no W&B, no CLI, no file I/O beyond save/load)::

    from agents import GumbelSAC
    model = GumbelSAC("CartPole-v1", seed=0).learn(20_000)
"""

import gymnasium

from agents.distributions import ESTIMATORS, GumbelSoftmax, HybridDistribution, SquashedGaussian
from agents.gaussian_sac import GaussianSAC
from agents.gumbel_sac import GumbelSAC
from agents.hybrid_sac import HybridSAC
from agents.networks import CriticEnsemble, ReLU, mlp
from agents.sac import NonFiniteError, SoftActorCritic

AGENTS = {"GumbelSAC": GumbelSAC, "GaussianSAC": GaussianSAC, "HybridSAC": HybridSAC}


def agent_for(action_space: gymnasium.Space) -> str:
    """``use <the agent that takes action_space>``, or why none does: the fix of a wrong-space error."""
    names = [name for name, cls in AGENTS.items() if cls.handles(action_space)]
    if names:
        return f"use {' or '.join(names)}"
    if isinstance(action_space, gymnasium.spaces.Tuple):
        from envs.hybrid import hybrid_parts

        try:
            hybrid_parts(action_space)
        except TypeError as e:
            return f"HybridSAC takes hybrid actions, but {e}"
    return "no reparl agent takes it: GumbelSAC takes Discrete/MultiDiscrete, GaussianSAC Box, HybridSAC a hybrid Tuple"


__all__ = ["AGENTS", "ESTIMATORS", "CriticEnsemble", "GaussianSAC", "GumbelSAC", "GumbelSoftmax", "HybridDistribution",
           "HybridSAC", "NonFiniteError", "ReLU", "SoftActorCritic", "SquashedGaussian", "agent_for", "mlp"]
