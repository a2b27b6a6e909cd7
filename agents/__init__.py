"""reparl agents: soft actor-critic trained through its own sampling step.

Importable on its own (no W&B, no CLI, no file I/O beyond save/load)::

    from agents import GumbelSAC
    model = GumbelSAC("CartPole-v1", seed=0).learn(20_000)
"""

from agents.distributions import ESTIMATORS, GumbelSoftmax, SquashedGaussian
from agents.gaussian_sac import GaussianSAC
from agents.gumbel_sac import GumbelSAC
from agents.networks import CriticEnsemble, ReLU, mlp
from agents.sac import NonFiniteError, SoftActorCritic

AGENTS = {"GumbelSAC": GumbelSAC, "GaussianSAC": GaussianSAC}

__all__ = ["AGENTS", "ESTIMATORS", "CriticEnsemble", "GaussianSAC", "GumbelSAC", "GumbelSoftmax", "NonFiniteError",
           "ReLU", "SoftActorCritic", "SquashedGaussian", "mlp"]
