"""The hyperparameters both agents share: their defaults and their checks."""

from __future__ import annotations

from typing import Any

from agents.encoders import ENCODER_KINDS

DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-4, "alpha_learning_rate": None, "critic_learning_rate": 1e-3, "buffer_size": 1_000_000,
    "learning_starts": 1000, "batch_size": 256, "gamma": 0.99, "n_step": 1, "target_update_rate": 0.005,
    "train_freq": 1, "gradient_steps": 1, "policy_delay": 1, "net_arch": [256, 256], "n_critics": 2,
    "critic_layer_norm": False, "alpha": 1.0, "learn_alpha": True, "target_entropy": None,
    "backup_entropy": True, "prioritized_replay": 0.0, "priority_beta": 0.4, "relu_subgradient": 0.0,
    "diagnostic_interval": 1000,
    # torch's Adam epsilon. Where the actor's gradients are far below it per weight (pixels with sparse
    # rewards: Atari), 1e-8 lets Adam take full-size steps on noise; 1e-4 is CleanRL's discrete SAC on
    # Atari, and the Atari config's (benchmarks/README.md, "Atari Breakout at the 100k budget").
    "adam_eps": 1e-8,
    # The observation encoder (agents.encoders): "auto" picks it from the observation space.
    "encoder": "auto", "encoder_kwargs": None,
    # The whole update compiled: 2.1x SB3 SAC's updates/s where its eager form gives 0.84x
    # (benchmarks/archive/update_paths.md).
    "compile": True,
    "n_envs": 1, "seed": None, "device": "auto",
}
"""SAC's defaults (Haarnoja et al. 2018; CleanRL's critic learning rate). An agent overrides its own."""

BEHAVIOUR_BEFORE: dict[str, Any] = {"alpha_learning_rate": None, "backup_entropy": True, "policy_delay": 1,
                                    "n_step": 1, "critic_layer_norm": False}
"""What a run saved before each of these hyperparameters existed ran with: the behaviour they were
added to switch off, not today's default. experiments.compare fills them into older run configs so
those group with the runs that set the same behaviour explicitly."""


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_shared(hp: dict[str, Any]) -> None:
    """Raise ValueError naming every out-of-range shared value and what is allowed."""
    checks = {
        "learning_rate": (hp["learning_rate"] > 0, "> 0"),
        "critic_learning_rate": (hp["critic_learning_rate"] > 0, "> 0"),
        "alpha_learning_rate": (hp["alpha_learning_rate"] is None or hp["alpha_learning_rate"] > 0, "> 0 or null"),
        "buffer_size": (hp["buffer_size"] >= 1, ">= 1"),
        "learning_starts": (hp["learning_starts"] >= 0, ">= 0"),
        "batch_size": (hp["batch_size"] >= 1, ">= 1"),
        "gamma": (0 <= hp["gamma"] <= 1, "in [0, 1]"),
        "target_update_rate": (0 < hp["target_update_rate"] <= 1, "in (0, 1]"),
        "train_freq": (hp["train_freq"] >= 1, ">= 1"),
        "gradient_steps": (hp["gradient_steps"] >= 0, ">= 0"),
        "policy_delay": (is_int(hp["policy_delay"]) and hp["policy_delay"] >= 1, "an integer >= 1"),
        "n_step": (is_int(hp["n_step"]) and hp["n_step"] >= 1
                   and (hp["n_step"] == 1 or not hp["backup_entropy"]),
                   "an integer >= 1, and 1 unless backup_entropy is false: the soft target would need every "
                   "intermediate step's entropy bonus; set backup_entropy: false or n_step: 1"),
        "n_critics": (hp["n_critics"] >= 1, ">= 1"),
        "critic_layer_norm": (isinstance(hp["critic_layer_norm"], bool), "true or false"),
        "compile": (isinstance(hp["compile"], bool), "true or false"),
        "adam_eps": (is_number(hp["adam_eps"]) and 0 < hp["adam_eps"] <= 1,
                     "a number in (0, 1]: torch's default is 1e-8, CleanRL's discrete SAC on Atari uses 1e-4"),
        "alpha": (hp["alpha"] == "auto" if isinstance(hp["alpha"], str) else hp["alpha"] > 0, '> 0 or "auto"'),
        "prioritized_replay": (is_number(hp["prioritized_replay"]) and 0 <= hp["prioritized_replay"] <= 1,
                               "a number in [0, 1]: 0 samples uniformly; Schaul et al. 2016 use 0.6"),
        "priority_beta": (is_number(hp["priority_beta"]) and 0 <= hp["priority_beta"] <= 1,
                          "a number in [0, 1]: 1 corrects prioritized sampling fully"),
        "relu_subgradient": (0 <= hp["relu_subgradient"] <= 1, "in [0, 1]"),
        "diagnostic_interval": (is_int(hp["diagnostic_interval"]) and hp["diagnostic_interval"] >= 0,
                                "an integer >= 0 (0 turns the diagnostics off)"),
        "n_envs": (hp["n_envs"] >= 1, ">= 1"),
        "encoder": (hp["encoder"] in ENCODER_KINDS or isinstance(hp["encoder"], type),
                    f"one of {ENCODER_KINDS}, or (from Python) a torch.nn.Module subclass"),
        "encoder_kwargs": (hp["encoder_kwargs"] is None or isinstance(hp["encoder_kwargs"], dict),
                           "null or a mapping of the encoder's settings"),
        "net_arch": (len(hp["net_arch"]) >= 1 and min(hp["net_arch"]) >= 1, "a non-empty list of widths >= 1"),
    }
    bad = [f"{k}={hp[k]!r} (must be {allowed})" for k, (ok, allowed) in checks.items() if not ok]
    if bad:
        raise ValueError("invalid hyperparameters: " + ", ".join(bad))


CUSTOM_ENCODER = "custom:"
"""How a model file records a user's encoder class: by name only (``custom:MyEncoder``); ``load`` needs
the class itself (``encoder=MyEncoder``) and never imports a name read from a file."""


def hparams_json(hp: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters as a model file records them: a custom encoder class by its name."""
    enc = hp.get("encoder")
    return {**hp, "encoder": CUSTOM_ENCODER + enc.__name__} if isinstance(enc, type) else dict(hp)


def custom_encoder(saved: dict[str, Any], given: Any, path: str) -> Any:
    """The encoder to rebuild a saved agent with: the saved kind, or the user's class whose name the file
    recorded, which ``load`` must receive as ``encoder=``."""
    name = saved.get("encoder")
    if not (isinstance(name, str) and name.startswith(CUSTOM_ENCODER)):
        return given if given is not None else name
    want = name[len(CUSTOM_ENCODER):]
    if not isinstance(given, type):
        raise ValueError(f"{path} was trained with your encoder class {want!r}; pass it to load (encoder={want}); "
                         "reparl never imports code named in a file")
    if given.__name__ != want:
        raise ValueError(f"{path} was trained with encoder class {want!r}, not {given.__name__!r}; pass "
                         f"encoder={want} to load")
    return given


def saved_critic_form(critic: str, action_type: str) -> str:
    """The critic a GumbelSAC file's ``critic`` setting built, for the action space type it names
    (``"Discrete"``, ``"MultiDiscrete"``). A file holds the form ``auto`` chose; ``auto`` itself is only
    in one saved before that, when ``auto`` meant heads for Discrete and joint otherwise."""
    if critic != "auto":
        return critic
    return "heads" if action_type == "Discrete" else "joint"
