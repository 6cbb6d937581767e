"""What `reclaim fsck` does, as plain functions returning results (the CLI only shows them)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from reclaim.fsck import quarantine as q
from reclaim.fsck import scan as scanmod
from reclaim.fsck.errors import FsckRefused

DEFAULT_DATA_ROOT = "/var/lib/docker"


@dataclass
class FsckResult:
    mode: str  # report | quarantine | restore | purge
    scan: scanmod.Scan | None = None
    batches: list[q.Batch] = field(default_factory=list)
    data_root: str = ""

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = (self.scan.to_json() if self.scan is not None
                               else {"schema": scanmod.SCHEMA, "data_root": self.data_root,
                                     "driver": None, "findings": [], "reclaimable_bytes": 0})
        doc["mode"] = self.mode
        if self.mode != "report":
            doc["batches"] = [b.to_json() for b in self.batches]
        return doc


def check_engine_stopped(root: str) -> None:
    """--engine-stopped is a claim; it is believed only if no dockerd on this host uses the
    data root."""
    pids = scanmod.engine_pids(root)
    if pids:
        raise FsckRefused(f"--engine-stopped, but dockerd (pid {', '.join(map(str, pids))}) "
                          f"uses {root}")


def report(data_root: str, *, engine_stopped: bool = False,
           progress: Callable[[int], None] | None = None) -> FsckResult:
    root = scanmod.canonical_root(data_root)
    if engine_stopped:
        check_engine_stopped(root)
    # Without --engine-stopped the engine is assumed to run: a dockerd in another pid namespace
    # (fsck run from a container) would be invisible to a process check.
    result = scanmod.scan(root, engine_running=not engine_stopped, progress=progress)
    return FsckResult("report", result, data_root=result.data_root)


def quarantine(data_root: str, *, engine_stopped: bool = False,
               look_gap: float = scanmod.DEFAULT_LOOK_GAP,
               min_age: float = scanmod.DEFAULT_MIN_AGE,
               progress: Callable[[int], None] | None = None) -> FsckResult:
    root = scanmod.canonical_root(data_root)
    if engine_stopped:
        check_engine_stopped(root)
    result = scanmod.scan(root, engine_running=not engine_stopped, two_looks=True,
                          look_gap=look_gap, min_age=min_age, progress=progress)
    if engine_stopped:
        # Checked again after the look: an engine started meanwhile voids the proof.
        check_engine_stopped(root)
    batches = []
    if any(f.action == "quarantine" for f in result.findings) or result.blockers:
        batch = q.quarantine(result)
        batches.append(batch)
        moved = {e["from"] for e in batch.entries if e["state"] == "moved"}
        result.findings = [
            replace(f, action="quarantined") if f.path in moved else f
            for f in result.findings
        ]
    return FsckResult("quarantine", result, batches, data_root=root)


def restore(data_root: str, batch_id: str) -> FsckResult:
    root = os.path.realpath(data_root)
    return FsckResult("restore", None, [q.restore(root, batch_id)], data_root=root)


def purge(data_root: str, *, older_than: float | None = None) -> FsckResult:
    root = os.path.realpath(data_root)
    return FsckResult("purge", None, q.purge(root, older_than=older_than), data_root=root)
