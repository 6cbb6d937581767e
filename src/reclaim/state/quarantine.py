"""fsck's quarantine batches in the ledger: what was moved aside from which data root, how many
bytes, and what became of each batch (restored, purged) and when.

The batch's own `manifest.json`, beside the moved entries, stays what a restore works from: it
is written before the first rename and after each one, so it is right even when the process
dies half-way or this ledger cannot be written. The ledger is the host's record of the batches,
still there after a batch is purged (its manifest goes with it).

The rows live in a file of their own in the state dir (`fsck.db`), not in an engine's ledger:
those are named by the engine's id, which only the engine API gives, and fsck reads a data root
on disk, often with the engine stopped. Each row names its data root instead. Same store, same
migrations, same conventions: one short `BEGIN IMMEDIATE` transaction per write, WAL.

`reclaim history` does not list these. It is the engine's deletion journal: it asks the engine
API who the engine is and reads that engine's ledger, and every row in it is a deletion the
engine made. A quarantine batch belongs to a data root, is made and restored with the engine
possibly stopped, and is not a deletion until it is purged; `reclaim fsck` shows the batches of
its data root, each with the command that restores it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reclaim.state.store import Store

LEDGER_FILE = "fsck.db"
STATES = ("quarantined", "restored", "purged")


def ledger_file(state_dir: Path) -> Path:
    return state_dir / LEDGER_FILE


@dataclass(frozen=True)
class BatchRecord:
    data_root: str
    id: str
    path: str
    created: datetime
    bytes: int
    state: str
    state_at: datetime
    entries: list[dict[str, Any]] = field(default_factory=list)
    purged_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"quarantine batch state {self.state!r}; one of {', '.join(STATES)}")


def _ts(t: datetime) -> float:
    return t.timestamp()


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


class QuarantineLedger:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, batch: BatchRecord) -> None:
        """Write the batch as it is now (insert, or replace the row of the same data root and
        id). A restore or purge of a batch whose quarantine was never recorded (the ledger could
        not be written then) still leaves a whole row."""
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO quarantine (data_root, id, path, created, entries, bytes, state,"
                " state_at, purged_bytes) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (data_root, id) DO UPDATE SET path = excluded.path,"
                " entries = excluded.entries, bytes = excluded.bytes, state = excluded.state,"
                " state_at = excluded.state_at, purged_bytes = excluded.purged_bytes",
                (batch.data_root, batch.id, batch.path, _ts(batch.created),
                 json.dumps(batch.entries), batch.bytes, batch.state, _ts(batch.state_at),
                 batch.purged_bytes),
            )

    def batches(self, data_root: str | None = None, *,
                states: Sequence[str] = STATES) -> list[BatchRecord]:
        """Batches, oldest first; of one data root when given."""
        marks = ",".join("?" * len(states))
        query = ("SELECT data_root, id, path, created, entries, bytes, state, state_at,"
                 f" purged_bytes FROM quarantine WHERE state IN ({marks})")
        args: list[Any] = list(states)
        if data_root is not None:
            query += " AND data_root = ?"
            args.append(data_root)
        rows = self.store.conn.execute(query + " ORDER BY created, id", args).fetchall()
        return [self._row(r) for r in rows]

    def get(self, data_root: str, batch_id: str) -> BatchRecord | None:
        row = self.store.conn.execute(
            "SELECT data_root, id, path, created, entries, bytes, state, state_at, purged_bytes"
            " FROM quarantine WHERE data_root = ? AND id = ?", (data_root, batch_id)).fetchone()
        return None if row is None else self._row(row)

    @staticmethod
    def _row(row: tuple[Any, ...]) -> BatchRecord:
        data_root, bid, path, created, entries, size, state, state_at, purged = row
        return BatchRecord(data_root, bid, path, _dt(created), int(size), state, _dt(state_at),
                           list(json.loads(entries)), None if purged is None else int(purged))

    def close(self) -> None:
        self.store.close()


def open_ledger(state_dir: Path) -> QuarantineLedger:
    return QuarantineLedger(Store(ledger_file(state_dir)))
