"""`fsck`: leaked storage under a data root: report, quarantine, restore, purge."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from reclaim.errors import UsageError
from reclaim.fsck import run as fsck_run
from reclaim.fsck.errors import LedgerNotWritten
from reclaim.fsck.run import FsckResult

DEFAULT_DATA_ROOT = fsck_run.DEFAULT_DATA_ROOT


def fsck_command(*, state_dir: Path, data_root: str | None = None, quarantine: bool = False,
                 restore: str | None = None, purge: bool = False,
                 older_than: float | None = None, engine_stopped: bool = False,
                 sized: Callable[[int], None] = lambda done: None) -> FsckResult:
    """One mode at a time: the report (default), `quarantine`, `restore` a batch, or `purge`
    batches (`older_than` seconds, with purge only). `sized` hears how many directories have
    been sized so far. The result is returned even when the fsck ledger could not record a
    batch; `ledger_failure` says so."""
    if sum((quarantine, restore is not None, purge)) > 1:
        raise UsageError("--quarantine, --restore and --purge go one at a time")
    if older_than is not None and not purge:
        raise UsageError("--older-than goes with --purge")
    root = data_root or DEFAULT_DATA_ROOT
    if restore is not None:
        return fsck_run.restore(root, restore, state_dir=state_dir)
    if purge:
        return fsck_run.purge(root, older_than=older_than, state_dir=state_dir)
    if quarantine:
        return fsck_run.quarantine(root, engine_stopped=engine_stopped, progress=sized,
                                   state_dir=state_dir)
    return fsck_run.report(root, engine_stopped=engine_stopped, progress=sized,
                           state_dir=state_dir)


def ledger_failure(result: FsckResult) -> LedgerNotWritten | None:
    """The error to end with when a quarantine, restore or purge was done but the ledger could
    not record it (what moved where is still in the batch's manifest)."""
    note = result.ledger
    if result.mode == "report" or note is None or note.error is None:
        return None
    ids = ", ".join(b.id for b in result.batches)
    return LedgerNotWritten(
        f"{result.mode} done, but the ledger {note.path} could not record batch {ids}: "
        f"{note.error}",
        hint=(f"its manifest.json still says what moved where; restore it with: "
              f"{result.restore_command(result.batches[0].id)}"
              if result.mode == "quarantine" and result.batches else None))
