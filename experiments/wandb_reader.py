"""Read an offline W&B run (``run-<id>.wandb``) back from disk: config, history rows, summary.

wandb 0.31 offline writes no config or summary JSON and no longer ships a reader for its
datastore, so this parses the file itself. The layout is LevelDB's log format:
a 7-byte header ``<4sHB`` (b":W&B", 0xBEE1, 0), then 32 KiB blocks of records, each with a
``<IHB`` header (crc32, length, type) and a payload that may be split over blocks (type
1 full, 2 first, 3 middle, 4 last); a block's tail shorter than a record header is zero
padding. Each reassembled payload is a ``wandb_internal_pb2.Record``.

    run = read_run(Path("runs/x/wandb"))   # a run folder, a wandb dir or the .wandb file
    run.config["train"]["seed"], run.history[-1]["eval/mean_return"], run.summary
"""

from __future__ import annotations

import collections
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = struct.Struct("<4sHB")
MAGIC, VERSION = b":W&B", 0xBEE1
RECORD_HEADER = struct.Struct("<IHB")
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What an offline run recorded, as plain Python values."""

    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)
    """Metric name or glob -> its step metric, from ``define_metric``."""
    artifacts: list[str] = field(default_factory=list)
    """Names of the artifacts the run logged."""
    exit_code: int | None = None
    """The exit code ``run.finish`` recorded; None if the run was never finished (killed)."""


def _crc_ok(crc: int, rtype: int, payload: bytes) -> bool:
    # LevelDB checksums the type byte and the payload together; wandb keeps that convention.
    return zlib.crc32(payload, zlib.crc32(bytes([rtype]))) & 0xFFFFFFFF == crc


def iter_payloads(path: str | Path) -> Iterator[bytes]:
    """The reassembled record payloads of a ``.wandb`` file, in write order."""
    data = Path(path).read_bytes()
    if len(data) < HEADER.size:
        raise ValueError(f"{path}: too short to be a W&B datastore ({len(data)} bytes)")
    magic, version, _ = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"{path}: not a W&B datastore (header {magic!r}, version {version:#x})")
    pos, pending = HEADER.size, b""
    while pos + RECORD_HEADER.size <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < RECORD_HEADER.size:  # zero padding at the end of a block
            pos += left_in_block
            continue
        crc, length, rtype = RECORD_HEADER.unpack_from(data, pos)
        if rtype == 0 and length == 0:  # zero-filled tail: a file still being written, or padding
            pos += left_in_block
            continue
        start = pos + RECORD_HEADER.size
        payload = data[start:start + length]
        if len(payload) < length:  # the writer was killed mid-record; keep what came before
            break
        if not _crc_ok(crc, rtype, payload):
            raise ValueError(f"{path}: checksum mismatch in the record at byte {pos}")
        pos = start + length
        if rtype == FULL:
            yield payload
        elif rtype == FIRST:
            pending = payload
        elif rtype == MIDDLE:
            pending += payload
        elif rtype == LAST:
            yield pending + payload
            pending = b""
        else:
            raise ValueError(f"{path}: unknown record type {rtype} at byte {pos}")


def _set(target: dict[str, Any], item: Any) -> None:
    """Apply a config/summary item; ``nested_key`` spells a path into nested dicts."""
    keys = list(item.nested_key) or [item.key]
    for k in keys[:-1]:
        target = target.setdefault(k, {})
    target[keys[-1]] = json.loads(item.value_json)


def _history_value(item: Any) -> Any:
    if item.value_json:
        return json.loads(item.value_json)
    kind = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    return getattr(item, kind) if kind else None


def is_complete(path: str | Path) -> bool:
    """Whether the datastore ends with its exit record, which ``run.finish()`` writes last. Offline,
    ``finish()`` can return while wandb-core is still writing: on a loaded 2-core machine a run read
    straight after it lacked its last 13 history rows, which appeared a moment later."""
    from wandb.proto import wandb_internal_pb2 as pb

    last = collections.deque(iter_payloads(find_datastore(path)), maxlen=1)
    if not last:
        return False
    rec = pb.Record()
    rec.ParseFromString(last[0])
    return rec.WhichOneof("record_type") == "exit"


def wait_until_complete(path: str | Path, timeout_s: float = 60.0, poll_s: float = 0.05) -> bool:
    """Poll :func:`is_complete` for up to ``timeout_s``; returns whether the run was complete."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if is_complete(path):
                return True
        except (FileNotFoundError, ValueError):  # not created yet, or a record half written
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def find_datastore(path: str | Path, job_type: str | None = "train") -> Path:
    """A ``.wandb`` file, an ``offline-run-*`` dir, a ``wandb`` dir or a run folder -> the ``.wandb`` file.

    A run folder can hold more than one: ``eval --video`` logs its evaluation as a run of job type
    "eval" beside the training run. Among several, the one of ``job_type`` is taken."""
    path = Path(path)
    if path.is_file():
        return path
    found = sorted(path.rglob("run-*.wandb"))
    if len(found) > 1 and job_type is not None:
        found = [f for f in found if _job_type(f) == job_type]
    if len(found) != 1:
        raise FileNotFoundError(f"expected exactly one run-*.wandb{f' of job type {job_type}' if job_type else ''} "
                                f"under {path}; found {len(found)}: {found}")
    return found[0]


def _job_type(datastore: Path) -> str | None:
    """The job type in a datastore's run record (the first records of the file)."""
    from wandb.proto import wandb_internal_pb2 as pb

    for payload in iter_payloads(datastore):
        rec = pb.Record()
        rec.ParseFromString(payload)
        if rec.WhichOneof("record_type") == "run":
            return rec.run.job_type
    return None


def read_run(path: str | Path) -> OfflineRun:
    """Parse an offline run into its config (nested dicts), history rows and final summary."""
    from wandb.proto import wandb_internal_pb2 as pb

    run = OfflineRun()
    for payload in iter_payloads(find_datastore(path)):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.run_id, run.project, run.group, run.job_type = r.run_id, r.project, r.run_group, r.job_type
            run.tags = list(r.tags)
            for item in r.config.update:
                _set(run.config, item)
        elif kind == "config":
            for item in rec.config.update:
                _set(run.config, item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in rec.history.item:
                _set_history(row, item)
            run.history.append(row)
        elif kind == "summary":
            for item in rec.summary.update:
                _set(run.summary, item)
            for item in rec.summary.remove:
                run.summary.pop(item.key, None)
        elif kind == "metric":
            m = rec.metric
            if m.step_metric:
                run.metrics[m.name or m.glob_name] = m.step_metric
        elif kind == "artifact":
            run.artifacts.append(rec.artifact.name)
        elif kind == "exit":
            run.exit_code = rec.exit.exit_code
    # wandb stores config values as {"value": v, "desc": ...}; unwrap to the user's dict.
    run.config = {k: v["value"] if isinstance(v, dict) and "value" in v else v
                  for k, v in run.config.items() if k != "_wandb"}
    return run


def _set_history(row: dict[str, Any], item: Any) -> None:
    """Scalars arrive under ``key`` ("train/loss"); media as ``nested_key`` paths, rebuilt as dicts."""
    keys = list(item.nested_key) or [item.key]
    for k in keys[:-1]:
        row = row.setdefault(k, {})
    row[keys[-1]] = _history_value(item)
