"""The deletion journal: every deletion reclaim made, what it was, why, and what it was
predicted to free. Written in the same store as the usage ledger.

A deletion is written twice: as an intent just before the engine is asked, and completed
once the engine confirms. A process killed in between leaves the intent, and the next apply
(or history) settles it against what the engine holds: an object gone was deleted ("confirmed
after an interruption"), one still there was not, and its intent is dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from reclaim.state.store import Store

INTERRUPTED_NOTE = "deleted; confirmed after an interruption"


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str
    object_id: str
    refs: tuple[str, ...]
    rule: str
    detail: str
    predicted_bytes: int
    plan_created: datetime | None
    # Which object of that id (a volume's instance; see Volume.instance).
    instance: str = ""


_COLUMNS = "at, kind, object_id, refs, rule, detail, predicted_bytes, plan_created, instance"


def _row(entry: Entry, state: str) -> tuple[object, ...]:
    return (entry.at.timestamp(), entry.kind, entry.object_id, json.dumps(list(entry.refs)),
            entry.rule, entry.detail, entry.predicted_bytes,
            entry.plan_created.timestamp() if entry.plan_created else None, entry.instance,
            state)


def _entry(row: tuple[object, ...]) -> Entry:
    at, kind, oid, refs, rule, detail, predicted, created, instance = row
    return Entry(datetime.fromtimestamp(float(at), UTC),  # type: ignore[arg-type]
                 str(kind), str(oid), tuple(json.loads(str(refs))), str(rule), str(detail),
                 int(predicted),  # type: ignore[call-overload]
                 None if created is None
                 else datetime.fromtimestamp(float(created), UTC),  # type: ignore[arg-type]
                 str(instance))


class Journal:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, entry: Entry) -> None:
        """A deletion already done."""
        with self.store.transaction() as db:
            db.execute(f"INSERT INTO journal ({_COLUMNS}, state) VALUES (?,?,?,?,?,?,?,?,?,?)",
                       _row(entry, "done"))

    def intend(self, entry: Entry) -> int:
        """A deletion about to be asked of the engine; returns the row to complete."""
        with self.store.transaction() as db:
            cursor = db.execute(
                f"INSERT INTO journal ({_COLUMNS}, state) VALUES (?,?,?,?,?,?,?,?,?,?)",
                _row(entry, "intent"))
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def intend_all(self, entries: list[Entry]) -> list[int]:
        """`intend` for several deletions, in one transaction; their rows, in order."""
        rows = []
        with self.store.transaction() as db:
            for entry in entries:
                cursor = db.execute(
                    f"INSERT INTO journal ({_COLUMNS}, state) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    _row(entry, "intent"))
                assert cursor.lastrowid is not None
                rows.append(cursor.lastrowid)
        return rows

    def complete(self, row: int, entry: Entry) -> None:
        """The engine confirmed the deletion. If the intent was settled meanwhile (a history
        that took it for interrupted), the deletion is written anew: never lost."""
        with self.store.transaction() as db:
            done = db.execute(
                "UPDATE journal SET state = 'done', at = ?, detail = ? WHERE id = ?",
                (entry.at.timestamp(), entry.detail, row)).rowcount
            if not done:
                db.execute(f"INSERT INTO journal ({_COLUMNS}, state) "
                           "VALUES (?,?,?,?,?,?,?,?,?,?)", _row(entry, "done"))

    def abandon(self, row: int) -> None:
        """The deletion did not happen (skipped, refused, failed)."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM journal WHERE id = ? AND state = 'intent'", (row,))

    def abandon_all(self, rows: list[int]) -> None:
        """`abandon` for several rows, in one transaction."""
        if not rows:
            return
        with self.store.transaction() as db:
            db.executemany("DELETE FROM journal WHERE id = ? AND state = 'intent'",
                           [(row,) for row in rows])

    def intents(self) -> list[tuple[int, Entry]]:
        """Deletions asked of the engine whose outcome was never written."""
        rows = self.store.conn.execute(
            f"SELECT id, {_COLUMNS} FROM journal WHERE state = 'intent' ORDER BY id").fetchall()
        return [(int(r[0]), _entry(tuple(r[1:]))) for r in rows]

    def settle(self, row: int, entry: Entry | None) -> None:
        """An interrupted deletion, found done (`entry`, as it is to be recorded) or not
        done (None)."""
        with self.store.transaction() as db:
            if entry is None:
                db.execute("DELETE FROM journal WHERE id = ? AND state = 'intent'", (row,))
            else:
                db.execute("UPDATE journal SET state = 'done', refs = ?, detail = ?,"
                           " predicted_bytes = ? WHERE id = ? AND state = 'intent'",
                           (json.dumps(list(entry.refs)), entry.detail,
                            entry.predicted_bytes, row))

    def entries(self, limit: int | None = None) -> list[Entry]:
        query = (f"SELECT {_COLUMNS} FROM journal WHERE state = 'done'"
                 " ORDER BY at DESC, id DESC")
        rows = self.store.conn.execute(query + (" LIMIT ?" if limit else ""),
                                       (limit,) if limit else ()).fetchall()
        return [_entry(tuple(r)) for r in rows]


def interrupted(entry: Entry, *, gone: bool, tags_now: tuple[str, ...] | None) -> Entry | None:
    """What an intent left by an interruption records, given what the engine holds now:
    `gone` whether the object is gone; for an image still there, `tags_now` its tags."""
    if entry.kind == "build-cache":
        return replace(entry, detail=f"{entry.detail}; interrupted: whether the engine's prune "
                       "ran is not known", predicted_bytes=0)
    if gone:
        return replace(entry, detail=f"{entry.detail}; {INTERRUPTED_NOTE}")
    removed = tuple(t for t in entry.refs if tags_now is not None and t not in tags_now)
    if entry.kind == "image" and removed:
        return replace(entry, refs=removed, predicted_bytes=0,
                       detail=f"{entry.detail}; interrupted after removing these tags; the "
                       "image itself is still there")
    return None
