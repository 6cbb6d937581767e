"""The deletion journal: every deletion reclaim made, what it was, why, and what it was
predicted to free. Written in the same store as the usage ledger."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from reclaim.state.store import Store


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


class Journal:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, entry: Entry) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO journal (at, kind, object_id, refs, rule, detail, predicted_bytes,"
                " plan_created) VALUES (?,?,?,?,?,?,?,?)",
                (entry.at.timestamp(), entry.kind, entry.object_id, json.dumps(list(entry.refs)),
                 entry.rule, entry.detail, entry.predicted_bytes,
                 entry.plan_created.timestamp() if entry.plan_created else None),
            )

    def entries(self, limit: int | None = None) -> list[Entry]:
        query = ("SELECT at, kind, object_id, refs, rule, detail, predicted_bytes, plan_created"
                 " FROM journal ORDER BY at DESC, id DESC")
        rows = self.store.conn.execute(query + (" LIMIT ?" if limit else ""),
                                       (limit,) if limit else ()).fetchall()
        return [
            Entry(datetime.fromtimestamp(at, UTC), kind, oid, tuple(json.loads(refs)), rule,
                  detail, int(predicted),
                  None if created is None else datetime.fromtimestamp(created, UTC))
            for at, kind, oid, refs, rule, detail, predicted, created in rows
        ]
