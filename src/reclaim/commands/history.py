"""`history`: the deletion journal, with what an interrupted apply left settled first."""

from __future__ import annotations

from reclaim.apply import settle_interrupted
from reclaim.commands.session import Session
from reclaim.lock import LockBusy, apply_lock
from reclaim.runtimes.base import Runtime
from reclaim.state.journal import Entry, Journal


def history_command(session: Session, *, limit: int | None = None) -> list[Entry]:
    """The newest `limit` deletions first (None: all; 0: none)."""
    runtime = session.open_runtime()
    try:
        ledger = session.open_ledger(runtime.info())
        try:
            journal = Journal(ledger.store)
            if journal.intents():
                _settle_if_idle(session, runtime, journal)
            if limit == 0:
                return []
            # A limit past what SQLite counts to is every deletion.
            return journal.entries(None if limit is None else min(limit, 2**63 - 1))
        finally:
            ledger.store.close()
    finally:
        runtime.close()


def _settle_if_idle(session: Session, runtime: Runtime, journal: Journal) -> None:
    """Settle an interrupted apply's intents, unless an apply runs now (its intents are in
    flight, not interrupted): only with the apply lock, never waiting for it."""
    try:
        with apply_lock(session.state_directory, wait=False):
            settle_interrupted(journal, runtime.inventory())
    except LockBusy:
        session.notify("an apply is running: its deletions in flight are not shown yet")
