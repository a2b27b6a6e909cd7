"""``run.py dashboard``: the W&B workspace every reparl user would otherwise build by hand, as code
(``wandb-workspaces``): learning curves grouped by config with the seeds as a band, the SAC
diagnostics, the Gumbel estimator's cosine, throughput and network health.

Each panel names metrics the runner logs (``experiments.train``, ``experiments.loop``); a test reads a
real offline run of each agent back from disk and checks that every panel's metric is in it. Offline,
``--dry-run`` writes the workspace's spec (JSON) instead of saving it to W&B.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.extras import require

# (section, [(panel title, [metrics])]): the metrics our agents log. GaussianSAC has no estimator cosine.
SECTIONS: list[tuple[str, list[tuple[str, list[str]]]]] = [
    ("Learning", [("Evaluation return (deterministic)", ["eval/mean_return"]),
                  ("Training episode return (last 100)", ["rollout/ep_return"]),
                  ("Episode length", ["rollout/ep_length"])]),
    ("SAC", [("Entropy weight alpha", ["train/alpha"]),
             ("Policy entropy", ["train/entropy"]),
             ("Critic loss", ["train/critic_loss"]),
             ("Q against its target", ["train/q_mean", "train/target_mean"]),
             ("Actor loss", ["train/actor_loss"]),
             ("Gradient norms", ["grad/critic_norm", "grad/actor_norm"])]),
    ("Gumbel estimator", [("Cosine to the exact gradient", ["grad/estimator_cosine"])]),
    ("Throughput", [("Env steps / s", ["time/steps_per_s"]), ("Updates / s", ["time/updates_per_s"])]),
    ("Network health", [("Dormant ReLU units (fraction)", ["net/policy_dormant", "net/critic_dormant"])]),
]
AGENT_ONLY = {"grad/estimator_cosine": "GumbelSAC"}
"""Metrics only one agent logs (its panel stays empty for the other)."""
GROUP_BY = ["agent.name", "env.id", "wandb.group"]


def panel_metrics() -> list[str]:
    return [m for _, panels in SECTIONS for _, metrics in panels for m in metrics]


def workspace(entity: str, project: str, name: str = "reparl") -> Any:
    """The ``wandb_workspaces.workspaces.Workspace`` (not saved)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    sections = [ws.Section(name=title, is_open=True,
                           panels=[wr.LinePlot(title=panel, x="global_step", y=metrics, smoothing_factor=0.0)
                                   for panel, metrics in panels])
                for title, panels in SECTIONS]
    settings = ws.WorkspaceSettings(x_axis="global_step")
    # Runs grouped by their config (the seeds of one config become one line with a band).
    runset = ws.RunsetSettings(groupby=[ws.Config(key) for key in GROUP_BY])
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections, settings=settings,
                        runset_settings=runset)


def spec(entity: str, project: str, name: str = "reparl") -> dict[str, Any]:
    """A JSON-able description of the workspace: what ``--dry-run`` writes."""
    return {"entity": entity, "project": project, "name": name, "x_axis": "global_step", "group_by": GROUP_BY,
            "sections": [{"name": title, "panels": [{"title": p, "type": "line", "metrics": m} for p, m in panels]}
                         for title, panels in SECTIONS],
            # The view model wandb-workspaces would send (its public API saves; this is what it saves).
            "workspace_model": json.loads(workspace(entity, project, name)._to_model().model_dump_json())}


def run_dashboard(entity: str, project: str, name: str, dry_run: bool, out: Path | None) -> str:
    require("dashboard", "run.py dashboard", "wandb_workspaces")
    if dry_run:
        text = json.dumps(spec(entity, project, name), indent=1)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            return f"wrote the workspace spec to {out} (nothing sent to W&B)"
        return text
    saved = workspace(entity, project, name).save()
    return f"saved W&B workspace {saved.url}"
