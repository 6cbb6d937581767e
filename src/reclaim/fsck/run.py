"""What `reclaim fsck` does, as plain functions returning results (the CLI only shows them).

Every quarantine, restore and purge is recorded in the ledger (`state/quarantine.py`, the file
`fsck.db` in the state dir) after it is done. The batch's manifest.json is what a restore works
from, so a ledger that cannot be written (a read-only state dir, a full disk) does not undo or
block the action: the result says so (`ledger.error`) and the command exits 1.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reclaim.errors import ReclaimError
from reclaim.fsck import quarantine as q
from reclaim.fsck import scan as scanmod
from reclaim.fsck.errors import FsckRefused, PartialAction
from reclaim.state import store as state_store
from reclaim.state.quarantine import BatchRecord, ledger_file, open_ledger

DEFAULT_DATA_ROOT = "/var/lib/docker"


@dataclass
class LedgerNote:
    """Where this run's batches were recorded, or why they could not be."""

    path: str
    recorded: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "recorded": self.recorded, "error": self.error}


@dataclass
class FsckResult:
    mode: str  # report | quarantine | restore | purge
    scan: scanmod.Scan | None = None
    batches: list[q.Batch] = field(default_factory=list)
    data_root: str = ""
    # Batches of this data root still in quarantine after this run (from their manifests):
    # how a user finds the id to restore later.
    held: list[q.Batch] = field(default_factory=list)
    # batch id -> whether the ledger has it (None: the ledger could not be read)
    recorded: dict[str, bool | None] = field(default_factory=dict)
    ledger: LedgerNote | None = None

    def restore_command(self, batch_id: str) -> str:
        return (f"reclaim fsck --data-root {shlex.quote(self.data_root)} "
                f"--restore {shlex.quote(batch_id)}")

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = (self.scan.to_json() if self.scan is not None
                               else {"schema": scanmod.SCHEMA, "data_root": self.data_root,
                                     "driver": None, "findings": [], "reclaimable_bytes": 0})
        doc["mode"] = self.mode
        if self.mode != "report":
            doc["batches"] = [self._batch_json(b) for b in self.batches]
        doc["quarantined"] = [self._batch_json(b) for b in self.held]
        if self.ledger is not None:
            doc["ledger"] = self.ledger.to_json()
        return doc

    def _batch_json(self, batch: q.Batch) -> dict[str, Any]:
        out = batch.to_json()
        if self.mode in ("report", "quarantine") or batch in self.held:
            out["restore"] = self.restore_command(batch.id)
        out["recorded"] = self.recorded.get(batch.id)
        return out


def check_engine_stopped(root: str) -> None:
    """--engine-stopped is a claim; it is believed only if no dockerd on this host uses the
    data root."""
    pids = scanmod.engine_pids(root)
    if pids:
        raise FsckRefused(f"--engine-stopped, but dockerd (pid {', '.join(map(str, pids))}) "
                          f"uses {root}")


def report(data_root: str, *, engine_stopped: bool = False,
           progress: Callable[[int], None] | None = None,
           state_dir: Path | None = None) -> FsckResult:
    root = scanmod.canonical_root(data_root)
    if engine_stopped:
        check_engine_stopped(root)
    # Without --engine-stopped the engine is assumed to run: a dockerd in another pid namespace
    # (fsck run from a container) would be invisible to a process check.
    result = scanmod.scan(root, engine_running=not engine_stopped, progress=progress)
    out = FsckResult("report", result, data_root=result.data_root)
    _held(out, state_dir)
    return out


def quarantine(data_root: str, *, engine_stopped: bool = False,
               look_gap: float = scanmod.DEFAULT_LOOK_GAP,
               min_age: float = scanmod.DEFAULT_MIN_AGE,
               progress: Callable[[int], None] | None = None,
               state_dir: Path | None = None) -> FsckResult:
    root = scanmod.canonical_root(data_root)
    if engine_stopped:
        check_engine_stopped(root)
    result = scanmod.scan(root, engine_running=not engine_stopped, two_looks=True,
                          look_gap=look_gap, min_age=min_age, progress=progress)
    if engine_stopped:
        # Checked again after the look: an engine started meanwhile voids the proof.
        check_engine_stopped(root)
    out = FsckResult("quarantine", result, data_root=root)
    if any(f.action == "quarantine" for f in result.findings) or result.blockers:
        try:
            batch = q.quarantine(result)
        except PartialAction as exc:
            # Some entries moved: the ledger still gets the batch as it was left.
            _record(out, state_dir, [_record_of(b, "quarantined") for b in exc.done])
            _unrecorded_too(out, exc)
            raise
        out.batches.append(batch)
        moved = {e["from"] for e in batch.entries if e["state"] == "moved"}
        result.findings = [
            replace(f, action="quarantined") if f.path in moved else f
            for f in result.findings
        ]
        _record(out, state_dir, [_record_of(batch, "quarantined")])
    _held(out, state_dir)
    return out


def restore(data_root: str, batch_id: str, *, state_dir: Path | None = None) -> FsckResult:
    root = os.path.realpath(data_root)
    out = FsckResult("restore", None, [q.restore(root, batch_id)], data_root=root)
    _record(out, state_dir, [_record_of(b, "restored") for b in out.batches])
    _held(out, state_dir)
    return out


def purge(data_root: str, *, older_than: float | None = None,
          state_dir: Path | None = None) -> FsckResult:
    root = os.path.realpath(data_root)
    out = FsckResult("purge", None, data_root=root)
    try:
        out.batches = q.purge(root, older_than=older_than)
    except PartialAction as exc:
        _record(out, state_dir, [_record_of(b, "purged") for b in exc.done])
        _unrecorded_too(out, exc)
        raise
    _record(out, state_dir, [_record_of(b, "purged") for b in out.batches])
    _held(out, state_dir)
    return out


# --- the ledger -------------------------------------------------------------------------------


def _created(batch: q.Batch) -> datetime:
    try:
        return datetime.fromisoformat(batch.created_at.replace("Z", "+00:00"))
    except ValueError:
        # The id is the creation time too (to the microsecond).
        return datetime.strptime(batch.id, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)


def _record_of(batch: q.Batch, state: str) -> BatchRecord:
    moved_bytes = sum(int(e.get("bytes") or 0) for e in batch.entries
                      if e.get("state") in ("moved", "restored"))
    return BatchRecord(
        data_root=batch.data_root, id=batch.id, path=batch.path, created=_created(batch),
        # What was quarantined; a purge also says what it measured just before deleting.
        bytes=moved_bytes, state=state, state_at=datetime.now(UTC),
        entries=list(batch.entries), purged_bytes=batch.bytes if state == "purged" else None)


def _state_dir(state_dir: Path | None) -> Path:
    return state_dir if state_dir is not None else state_store.default_state_dir()


def _record(out: FsckResult, state_dir: Path | None, records: list[BatchRecord]) -> None:
    directory = _state_dir(state_dir)
    out.ledger = LedgerNote(str(ledger_file(directory)))
    if not records:
        out.ledger.recorded = True
        return
    out.recorded.update(dict.fromkeys((r.id for r in records), False))
    try:
        ledger = open_ledger(directory)
        try:
            for record in records:
                ledger.record(record)
        finally:
            ledger.close()
    except (ReclaimError, sqlite3.Error, OSError) as exc:
        text = exc.message if isinstance(exc, ReclaimError) else str(exc)
        out.ledger.error = text
        return
    out.ledger.recorded = True
    out.recorded.update(dict.fromkeys((r.id for r in records), True))


def _unrecorded_too(out: FsckResult, exc: PartialAction) -> None:
    """A batch cut short whose record failed as well: the one error shown says both."""
    if out.ledger is not None and out.ledger.error:
        exc.message += f"; the ledger could not record it either ({out.ledger.error})"
        exc.args = (exc.message,)


def _held(out: FsckResult, state_dir: Path | None) -> None:
    """The batches of this data root still in quarantine, and whether the ledger has each. The
    ledger is only read if it exists (a report creates no state); one that cannot be read is
    said in a report, never fatal: the manifests on disk are what restore works from."""
    out.held = [b for b in q.list_batches(out.data_root) if b.data_root == out.data_root]
    unknown = [b.id for b in out.held if b.id not in out.recorded]
    if not unknown:
        return
    path = ledger_file(_state_dir(state_dir))
    if not path.exists():
        out.recorded.update(dict.fromkeys(unknown, False))
        return
    try:
        ledger = open_ledger(path.parent)
        try:
            known = {r.id for r in ledger.batches(out.data_root, states=("quarantined",))}
        finally:
            ledger.close()
    except (ReclaimError, sqlite3.Error, OSError) as exc:
        out.recorded.update(dict.fromkeys(unknown))
        if out.ledger is None:
            out.ledger = LedgerNote(str(path), error=exc.message
                                    if isinstance(exc, ReclaimError) else str(exc))
        return
    out.recorded.update({i: i in known for i in unknown})
