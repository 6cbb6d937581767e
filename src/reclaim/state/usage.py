"""The usage ledger: when reclaim first saw each image, when it was last used and how we know.

Only evidence of use sets `last_used`: an engine event (a container created, started, exec'd
into, stopped) or a container's own timestamps. An image never used keeps `last_used` NULL;
its age for policy is counted from its local tag time or from `first_seen`, whichever is later
(`age_basis`), never from its build time, so being unknown never makes it "the oldest".
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

from reclaim.lastuse import LastUse, Usage, container_uses
from reclaim.model import Inventory
from reclaim.state.store import Store

CHECKPOINT_EVENTS = "events_since"


class Use(NamedTuple):
    image_id: str
    when: datetime
    source: str  # "event" or "container"
    detail: str = ""


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class Ledger:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- writing -------------------------------------------------------------------------

    def observe(self, inventory: Inventory, now: datetime) -> None:
        """Reconcile with what the engine holds now: every image gets a `first_seen`, every
        container's timestamps count as uses of its image, and what is gone is marked so.

        Every command does this first, on every object of the host, so only what changed is
        written: rows are compared with what the ledger holds, and `last_seen` is the time a
        container's row was last written, not the last time it was looked at."""
        with self.store.transaction() as db:
            last_used = self._observe_images(db, inventory, now)
            self._observe_containers(db, inventory, now)
            # Only a use later than the one recorded changes anything (see _record): the
            # others, most of them on every run, are not sent to the database at all.
            uses = [
                Use(image_id, last.when, last.source, last.detail)
                for image_id, last in container_uses(inventory, now).items()
                if image_id not in last_used or _later(last.when, last_used[image_id])
            ]
            self._observe_volumes(db, inventory, now)
            self._record(db, uses, now)

    def record_uses(self, uses: Iterable[Use], now: datetime) -> None:
        with self.store.transaction() as db:
            self._record(db, list(uses), now)

    def note_image(self, image_id: str, when: datetime, *, tagged: bool = False,
                   gone: bool = False) -> None:
        with self.store.transaction() as db:
            self.note_image_in(db, image_id, when, tagged=tagged, gone=gone)

    def note_image_in(self, db: sqlite3.Connection, image_id: str, when: datetime, *,
                      tagged: bool = False, gone: bool = False) -> None:
        """An image arrived (pull, load, import), was tagged, or was deleted."""
        db.execute(
            "INSERT INTO images (image_id, first_seen) VALUES (?, ?)"
            " ON CONFLICT (image_id) DO NOTHING",
            (image_id, _ts(when)),
        )
        if tagged:
            db.execute("UPDATE images SET tagged_at = MAX(COALESCE(tagged_at, 0), ?),"
                       " gone_at = NULL WHERE image_id = ?", (_ts(when), image_id))
        if gone:
            db.execute("UPDATE images SET gone_at = ? WHERE image_id = ?", (_ts(when), image_id))

    def record_in(self, db: sqlite3.Connection, uses: list[Use], now: datetime) -> None:
        self._record(db, uses, now)

    def set_checkpoint_in(self, db: sqlite3.Connection, since: datetime) -> None:
        db.execute(
            "INSERT INTO checkpoint (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (CHECKPOINT_EVENTS, repr(_ts(since))),
        )

    def forget_container_in(self, db: sqlite3.Connection, container_id: str,
                            when: datetime) -> None:
        db.execute("UPDATE containers SET gone_at = ? WHERE container_id = ?",
                   (_ts(when), container_id))

    def remember_container_in(self, db: sqlite3.Connection, container_id: str, image_id: str,
                              name: str, when: datetime) -> None:
        db.execute(
            "INSERT INTO containers (container_id, image_id, name, last_seen) VALUES (?,?,?,?)"
            " ON CONFLICT (container_id) DO UPDATE SET last_seen = excluded.last_seen",
            (container_id, image_id, name, _ts(when)),
        )

    # -- reading -------------------------------------------------------------------------

    def images(self) -> dict[str, Usage]:
        rows = self.store.conn.execute(
            "SELECT image_id, first_seen, last_used, last_source, last_detail, tagged_at,"
            " refs, gone_at FROM images"
        ).fetchall()
        result = {}
        for image_id, first, last, source, detail, tagged, refs, gone in rows:
            use = None if last is None else LastUse(_dt(last), source, detail or "")  # type: ignore[arg-type]
            result[image_id] = Usage(
                image_id=image_id, first_seen=_dt(first),  # type: ignore[arg-type]
                last_use=use, tagged_at=_dt(tagged), refs=tuple(json.loads(refs)),
                gone_at=_dt(gone),
            )
        return result

    def checkpoint(self) -> datetime | None:
        row = self.store.conn.execute(
            "SELECT value FROM checkpoint WHERE key = ?", (CHECKPOINT_EVENTS,)
        ).fetchone()
        return None if row is None else _dt(float(row[0]))

    def container_image(self, container_id: str) -> tuple[str, str] | None:
        """(image id, name) of a container reclaim has seen."""
        row = self.store.conn.execute(
            "SELECT image_id, name FROM containers WHERE container_id = ?", (container_id,)
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def ref_index(self) -> dict[str, str]:
        """Every tag of every image still present, to the image it names."""
        rows = self.store.conn.execute(
            "SELECT json_each.value, image_id FROM images, json_each(images.refs)"
            " WHERE gone_at IS NULL"
        ).fetchall()
        return {str(ref): str(image_id) for ref, image_id in rows}

    def volume_dangling_since(self) -> dict[str, datetime]:
        """When each volume was first seen dangling (still dangling now)."""
        rows = self.store.conn.execute(
            "SELECT name, dangling_since FROM volumes"
            " WHERE dangling_since IS NOT NULL AND gone_at IS NULL"
        ).fetchall()
        return {str(name): _dt(since) for name, since in rows}  # type: ignore[misc]

    # -- internals -----------------------------------------------------------------------

    def _observe_volumes(self, db: sqlite3.Connection, inventory: Inventory,
                         now: datetime) -> None:
        # A volume's dangling time starts when reclaim first sees it without users, and
        # ends whenever a container uses it again. A volume of a known name but another
        # instance was removed and created again: a new volume, whose time starts now. (So
        # does a row from before instances were recorded: its clock restarts once.)
        db.executemany(
            "INSERT INTO volumes (name, first_seen, dangling_since, instance) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET gone_at = NULL,"
            " first_seen = CASE WHEN volumes.instance = excluded.instance"
            " THEN volumes.first_seen ELSE excluded.first_seen END,"
            " dangling_since = CASE WHEN excluded.dangling_since IS NULL THEN NULL"
            " WHEN volumes.instance <> excluded.instance THEN excluded.dangling_since"
            " ELSE COALESCE(volumes.dangling_since, excluded.dangling_since) END,"
            " instance = excluded.instance",
            [(v.name, _ts(now), _ts(now) if v.dangling else None, v.instance)
             for v in inventory.volumes],
        )
        present = {v.name for v in inventory.volumes}
        held = [str(row[0]) for row in
                db.execute("SELECT name FROM volumes WHERE gone_at IS NULL")]
        _mark_gone(db, "volumes", "name", [n for n in held if n not in present], now)

    def _observe_images(self, db: sqlite3.Connection, inventory: Inventory,
                        now: datetime) -> dict[str, float | None]:
        """Writes what changed of the images; returns every known image's last use."""
        held: dict[str, tuple[float | None, str, float | None]] = {}
        last_used: dict[str, float | None] = {}
        for image_id, tagged_at, refs, gone_at, used in db.execute(
                "SELECT image_id, tagged_at, refs, gone_at, last_used FROM images"):
            held[image_id] = (tagged_at, refs, gone_at)
            last_used[image_id] = used
        changed = []
        for image in inventory.images:
            tagged, refs = _opt(image.tagged_at), json.dumps(list(image.tags))
            old = held.get(image.id)
            if old is not None:
                old_tagged, old_refs, old_gone = old
                # The later tag time stands, as the upsert below keeps it.
                kept = tagged if old_tagged is None else (
                    old_tagged if tagged is None else max(old_tagged, tagged))
                if (kept, refs, None) == (old_tagged, old_refs, old_gone):
                    continue
            changed.append((image.id, _ts(now), tagged, refs))
        db.executemany(
            "INSERT INTO images (image_id, first_seen, tagged_at, refs) VALUES (?,?,?,?)"
            " ON CONFLICT (image_id) DO UPDATE SET refs = excluded.refs,"
            " tagged_at = COALESCE(MAX(images.tagged_at, excluded.tagged_at),"
            " images.tagged_at, excluded.tagged_at), gone_at = NULL",
            changed,
        )
        present = {i.id for i in inventory.images}
        _mark_gone(db, "images", "image_id",
                   [k for k, (_, _, gone) in held.items() if gone is None and k not in present],
                   now)
        return last_used

    def _observe_containers(self, db: sqlite3.Connection, inventory: Inventory,
                            now: datetime) -> None:
        held = {
            row[0]: row[1:]
            for row in db.execute(
                "SELECT container_id, image_id, name, state, created, started, finished,"
                " gone_at FROM containers")
        }
        changed = []
        for c in inventory.containers:
            seen = (c.image_id, c.name, c.state.value, _opt(c.created), _opt(c.started),
                    _opt(c.finished), None)
            if held.get(c.id) != seen:
                changed.append((c.id, *seen[:-1], _ts(now)))
        db.executemany(
            "INSERT INTO containers (container_id, image_id, name, state, created,"
            " started, finished, last_seen) VALUES (?,?,?,?,?,?,?,?)"
            " ON CONFLICT (container_id) DO UPDATE SET image_id=excluded.image_id,"
            " name=excluded.name, state=excluded.state, created=excluded.created,"
            " started=excluded.started, finished=excluded.finished,"
            " last_seen=excluded.last_seen, gone_at=NULL",
            changed,
        )
        present = {c.id for c in inventory.containers}
        _mark_gone(db, "containers", "container_id",
                   [k for k, row in held.items() if row[-1] is None and k not in present], now)

    @staticmethod
    def _record(db: sqlite3.Connection, uses: list[Use], now: datetime) -> None:
        db.executemany(
            "INSERT INTO images (image_id, first_seen) VALUES (?, ?)"
            " ON CONFLICT (image_id) DO NOTHING",
            [(u.image_id, _ts(min(u.when, now))) for u in uses],
        )
        # Only a later use replaces the one recorded: replays and catch-ups are harmless.
        db.executemany(
            "UPDATE images SET last_used = ?, last_source = ?, last_detail = ?"
            " WHERE image_id = ? AND (last_used IS NULL OR last_used < ?)",
            [(_ts(u.when), u.source, u.detail, u.image_id, _ts(u.when)) for u in uses],
        )


def _later(when: datetime, recorded: float | None) -> bool:
    return recorded is None or _ts(when) > recorded


def _opt(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _mark_gone(db: sqlite3.Connection, table: str, key: str, gone: list[str],
               now: datetime) -> None:
    # Table and column names are this module's constants, never input.
    db.executemany(f"UPDATE {table} SET gone_at = ? WHERE {key} = ? AND gone_at IS NULL",
                   [(_ts(now), k) for k in gone])
