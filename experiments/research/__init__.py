"""Research tools beside the runner: the speed bench, the learning bench against SB3, the gradient
study of the Gumbel estimators, and counterfactual replay of a run from its own checkpoint.
The runner (``experiments/``) never needs them; ``run.py bench`` and ``run.py study`` import them lazily."""
