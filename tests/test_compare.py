"""``run.py compare --wandb``: the table and the picture in a real offline W&B run, read back from disk.

The run folders are written by hand (config.yaml, metrics.jsonl and a model file, as compare reads
them), so every row of the table is known before compare computes it.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib import image

from experiments.cli import main
from experiments.compare import TABLE_COLUMNS
from experiments.wandb_reader import find_datastore, read_run

STEPS = [100, 200, 300]
# (estimator, seed) -> the eval return at STEPS. Threshold 100: soft's seeds reach it at 200, 300, 300
# and never; st's at 100, 200, 200 and 300.
CURVES = {
    ("soft", 0): [10, 150, 120], ("soft", 1): [20, 40, 200], ("soft", 2): [5, 50, 100], ("soft", 3): [0, 10, 30],
    ("st", 0): [100, 90, 500], ("st", 1): [60, 110, 400], ("st", 2): [30, 300, 300], ("st", 3): [1, 2, 100],
}


def _write_runs(root: Path) -> None:
    for (estimator, seed), values in CURVES.items():
        run = root / f"gumbel_sac-{estimator}-s{seed}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump({
            "agent": {"name": "GumbelSAC", "estimator": estimator}, "env": {"id": "CartPole-v1"},
            "train": {"seed": seed}}))
        (run / "metrics.jsonl").write_text("".join(json.dumps({"global_step": s, "eval/mean_return": v}) + "\n"
                                                   for s, v in zip(STEPS, values, strict=True)))
        (run / "model.safetensors").write_bytes(b"")  # compare only asks that the run finished


def _cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def test_compare_logs_its_table_and_picture_to_an_offline_wandb_run(tmp_path: Path) -> None:
    _write_runs(tmp_path / "runs")
    png = tmp_path / "out" / "cmp.png"
    code, text = _cli(["compare", str(tmp_path / "runs"), "--out", str(png), "--threshold", "100", "--wandb"])
    assert code == 0
    (store,) = (tmp_path / "out" / "wandb").rglob("run-*.wandb")
    assert f"upload later with `wandb sync {store.parent}`" in text
    run = read_run(find_datastore(store, job_type="compare"))
    assert (run.job_type, run.project, run.exit_code) == ("compare", "reparl", 0)
    assert run.config["metric"] == "eval/mean_return" and run.config["threshold"] == ["100"]
    (row,) = [h for h in run.history if "compare/table" in h]
    files = store.parent / "files"

    table = row["compare/table"]
    assert table["_type"] == "table-file"
    logged = json.loads((files / table["path"]).read_text())
    assert logged["columns"] == TABLE_COLUMNS
    rows = {r[1]: dict(zip(TABLE_COLUMNS, r, strict=True)) for r in logged["data"]}
    assert set(rows) == {"GumbelSAC estimator=soft", "GumbelSAC estimator=st"}
    for estimator, firsts in (("soft", [200, 300, 300, None]), ("st", [100, 200, 200, 300])):
        finals = sorted(CURVES[(estimator, s)][-1] for s in range(4))
        r = rows[f"GumbelSAC estimator={estimator}"]
        assert (r["env"], r["agent"], r["n_seeds"], r["threshold"]) == ("CartPole-v1", "GumbelSAC", 4, 100)
        assert r["final_mean"] == pytest.approx(np.mean(finals))
        assert r["final_iqm"] == pytest.approx(np.mean(finals[1:3]))  # 4 seeds: the middle two
        assert finals[0] <= r["iqm_ci95_low"] <= r["final_iqm"] <= r["iqm_ci95_high"] <= finals[-1]
        reached = [f for f in firsts if f is not None]
        assert r["reached"] == len(reached)
        # The median over the seeds with "never" as infinitely slow: soft's is the 300 of [200, 300, 300, inf].
        assert r["median_steps_to_threshold"] == float(np.median([np.inf if f is None else f for f in firsts]))
    # The same numbers as the JSON table compare writes beside the PNG.
    on_disk = {r["config"]: r for r in json.loads(png.with_suffix(".json").read_text())["rows"]}
    for label, r in rows.items():
        assert [r["iqm_ci95_low"], r["iqm_ci95_high"]] == on_disk[label]["iqm_ci95"]

    picture = row["compare/curves"]
    assert picture["_type"] == "image-file"
    logged_png = image.imread(files / picture["path"])
    assert logged_png.shape == image.imread(png).shape and (picture["width"], picture["height"]) == (
        logged_png.shape[1], logged_png.shape[0])


def test_project_and_entity_without_wandb_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write_runs(tmp_path / "runs")
    assert main(["compare", str(tmp_path / "runs"), "--out", str(tmp_path / "c.png"), "--project", "p"]) == 2
    assert "add --wandb" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()  # refused before anything is written
