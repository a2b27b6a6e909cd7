"""Metrics sink: ``metrics.jsonl`` in the run folder always, W&B when enabled.

Every event is one dict with ``global_step`` (env steps) and namespaced metrics (``train/``,
``grad/``, ``rollout/``, ``eval/``, ``time/``). W&B is told ``define_metric("*",
step_metric="global_step")`` so every chart's x-axis is env steps, never W&B's own ``_step``.

A W&B failure must never cost a training run: any exception from ``wandb`` (at init, log,
media or artifact time) is reported once as a warning and W&B is switched off for the rest of
the run, while ``metrics.jsonl`` keeps being written.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

from experiments.config import Config, resolved_hyperparameters
from experiments.wandb_reader import wait_until_complete

WANDB_ID_FILE = "wandb_run_id.txt"  # in the run folder: what --resume continues


def wandb_tags(cfg: Config) -> list[str]:
    tags = [cfg.agent.name, cfg.env.id]
    if cfg.agent.name in ("GumbelSAC", "HybridSAC"):
        tags.append(f"estimator={resolved_hyperparameters(cfg).get('estimator')}")
    return list(dict.fromkeys(tags + list(cfg.wandb.tags)))


def wandb_config(cfg: Config) -> dict[str, Any]:
    """The full resolved config W&B receives: the agent section carries every hyperparameter in force."""
    d = cfg.to_dict()
    d["agent"] = {"name": cfg.agent.name, **resolved_hyperparameters(cfg)}
    return d


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them visible instead of failing the write
    return v


class Tracker:
    """Writes metric events to ``metrics.jsonl`` and, unless disabled or broken, to W&B."""

    def __init__(self, run_dir: Path, cfg: Config, job_type: str | None = None,
                 metrics_file: str = "metrics.jsonl", name: str | None = None, resume: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.name = name or self.run_dir.name
        self.metrics_path = self.run_dir / metrics_file
        self._file = self.metrics_path.open("a")
        self.run: Any = None
        self.wandb_dir: Path | None = None
        self.wandb_error: str | None = None
        self.resume = resume
        if cfg.wandb.mode != "disabled":
            self._init_wandb(job_type or cfg.wandb.job_type)
        self.tensorboard: Any = None
        if cfg.train.tensorboard:
            from tensorboardX import SummaryWriter

            self.tensorboard = SummaryWriter(str(self.run_dir / "tensorboard" / (job_type or cfg.wandb.job_type)))

    # ------------------------------------------------------------------ W&B plumbing
    def _init_wandb(self, job_type: str) -> None:
        # wandb mistakes our `agents` package for OpenAI's Agents SDK and advertises Weave on every run.
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        try:
            import wandb

            w = self.cfg.wandb
            id_file = self.run_dir / WANDB_ID_FILE
            # A resumed training continues its W&B run: online, the server appends to it; offline,
            # wandb writes a second offline-run-*-<id> folder with the same id (its own _step counts
            # from 0, which is why every chart uses global_step) and `wandb sync` uploads both.
            resume_id = id_file.read_text().strip() if self.resume and id_file.is_file() else None
            self.run = wandb.init(
                id=resume_id, resume="allow" if resume_id else None,
                mode=w.mode, project=w.project, entity=w.entity, group=w.group or self.cfg.env.id,
                tags=wandb_tags(self.cfg), job_type=job_type, name=self.name, dir=str(self.run_dir),
                config=wandb_config(self.cfg), reinit="create_new",
                # No system-metrics sampler, console capture or code snapshot: they cost CPU and
                # disk on a 2-core box and add nothing the run folder lacks.
                settings=wandb.Settings(x_disable_stats=True, console="off", save_code=False, silent=True),
            )
            self.run.define_metric("global_step")
            self.run.define_metric("*", step_metric="global_step")
            self.wandb_dir = Path(self.run.dir).parent
            if job_type == "train" and not resume_id:
                tmp = id_file.with_name(id_file.name + ".tmp")
                tmp.write_text(self.run.id + "\n")
                tmp.replace(id_file)
        except Exception as e:  # wandb raises many types (UsageError, CommError, ValueError...)
            self._disable("init", e)

    def _disable(self, what: str, e: BaseException) -> None:
        self.wandb_error = f"{type(e).__name__}: {e}"
        warnings.warn(f"W&B {what} failed ({self.wandb_error}); continuing with W&B disabled. "
                      f"Metrics still go to {self.metrics_path}.", RuntimeWarning, stacklevel=3)
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # already broken; nothing more to save
                pass

    @property
    def wandb_enabled(self) -> bool:
        return self.run is not None

    # ------------------------------------------------------------------ events
    def log(self, metrics: dict[str, Any], step: int) -> None:
        """One event at env step ``step``; written to disk first so W&B can never lose it."""
        event = {"global_step": int(step), **{k: _jsonable(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(event) + "\n")
        self._file.flush()
        if self.tensorboard is not None:
            for k, v in metrics.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    self.tensorboard.add_scalar(k, v, int(step))
        if self.run is not None:
            try:
                self.run.log({"global_step": int(step), **metrics})
            except Exception as e:
                self._disable("log", e)

    def log_video(self, path: Path, step: int, key: str = "eval/video") -> None:
        if self.run is None:
            return
        try:
            import wandb

            self.run.log({"global_step": int(step), key: wandb.Video(str(path), format="mp4")})
        except Exception as e:
            self._disable("video", e)

    def log_model(self, path: Path, aliases: list[str] | None = None) -> None:
        """The final model as a W&B artifact (type ``model``)."""
        if self.run is None:
            return
        try:
            import wandb

            art = wandb.Artifact(f"model-{self.run.id}", type="model",
                                 metadata={"agent": self.cfg.agent.name, "env": self.cfg.env.id})
            art.add_file(str(path))
            self.run.log_artifact(art, aliases=aliases or ["latest"])
        except Exception as e:
            self._disable("artifact", e)

    def record_choices(self, hparams: dict[str, Any]) -> None:
        """What the agent chose for the settings its config leaves at ``"auto"`` (GumbelSAC's critic and
        estimator), into the W&B config and the ``estimator=`` tag, so a dashboard groups runs by what
        ran. The run folder's config.yaml keeps ``"auto"``: it is the input a resume rebuilds from."""
        agent = wandb_config(self.cfg)["agent"]
        chosen = {k: hparams[k] for k, v in agent.items() if v == "auto" and hparams.get(k, "auto") != "auto"}
        if self.run is None or not chosen:
            return
        try:
            self.run.config.update({"agent": {**agent, **chosen}}, allow_val_change=True)
            if "estimator" in chosen:
                self.run.tags = tuple(f"estimator={chosen['estimator']}" if t.startswith("estimator=") else t
                                      for t in self.run.tags)
        except Exception as e:
            self._disable("config update", e)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(values)
        except Exception as e:
            self._disable("summary", e)

    def finish(self, exit_code: int | None = None) -> str | None:
        """Close everything; returns the ``wandb sync`` hint for offline runs."""
        self._file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.run is None:
            return None
        hint = None
        try:
            offline = self.cfg.wandb.mode == "offline"
            self.run.finish(exit_code=exit_code)
            if offline and self.wandb_dir is not None:
                hint = f"wandb sync {self.wandb_dir}"
                # finish() can return before wandb-core has written the last records; whoever
                # reads the run next (compare, a test, `wandb sync`) must see all of it.
                if not wait_until_complete(self.wandb_dir):
                    warnings.warn(f"W&B offline run {self.wandb_dir} has no exit record after 60 s; "
                                  "it may lack its last records", RuntimeWarning, stacklevel=2)
        except Exception as e:
            self._disable("finish", e)
        self.run = None
        return hint
