"""The recorder: turns engine events and inventories into the usage ledger.

The same code runs inside `reclaim watch` (events as they come, in batches) and as the catch-up
every one-shot command does first (the inventory alone: container timestamps show every use a
container still remembers, so cron users get right answers without the daemon).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from datetime import datetime

from reclaim.model import Event, Inventory
from reclaim.ondisk.digests import is_hex64
from reclaim.state.usage import Ledger, Use

# Container actions that show its image in use at that moment.
USE_ACTIONS = frozenset({
    "create", "start", "restart", "unpause", "exec_create", "exec_start", "attach",
    "die", "stop", "kill", "pause", "health_status",
})
IMAGE_ARRIVALS = frozenset({"pull", "load", "import", "commit", "build"})

# Finds an image id for a reference an event gave (a tag, or an id); None if unknown.
ImageResolver = Callable[[str], str | None]


def _looks_like_id(ref: str) -> bool:
    return is_hex64(ref.removeprefix("sha256:"))


class Recorder:
    def __init__(self, ledger: Ledger, resolve: ImageResolver | None = None) -> None:
        self.ledger = ledger
        self.resolve = resolve
        # Tags to image ids, read from the ledger once and dropped whenever an image event
        # may have moved a tag: looking each event's tag up in the database costs more than
        # the write of the event itself.
        self._refs: dict[str, str] | None = None
        # Names moved by image events since the last inventory, which the ledger's tags do
        # not show yet: a tag given to another image names that one from the event on (None:
        # removed, ask the resolver). Without it a use of `app:1` made after `app:1` moved
        # would be counted for the image the name used to mean.
        self._moved: dict[str, str | None] = {}

    def catch_up(self, inventory: Inventory, now: datetime) -> None:
        """Reconcile the ledger with an inventory taken now."""
        self.ledger.observe(inventory, now)
        self._refs = None
        self._moved.clear()

    def handle(self, events: Iterable[Event], now: datetime) -> int:
        """Write one batch of events in one transaction, with the checkpoint after the last
        one; returns how many were uses. Either the whole batch and its checkpoint land, or
        none of it (a replay from the old checkpoint then does no harm: uses only move
        forward)."""
        batch = list(events)
        if not batch:
            return 0
        uses = 0
        with self.ledger.store.transaction() as db:
            for event in batch:
                if event.type == "container":
                    uses += self._container_event(db, event)
                elif event.type == "image":
                    self._image_event(db, event)
                    self._refs = None
            self.ledger.set_checkpoint_in(db, max(e.time for e in batch))
        return uses

    def _container_event(self, db: sqlite3.Connection, event: Event) -> int:
        known = self.ledger.container_image(event.id)
        image_id = known[0] if known else self.image_id(event.image)
        name = (known[1] if known else "") or event.name or event.id[:12]
        if image_id is None:
            return 0
        if known is None:
            self.ledger.remember_container_in(db, event.id, image_id, name, event.time)
        if event.action == "destroy":
            self.ledger.forget_container_in(db, event.id, event.time)
            return 0
        if event.action.split(":")[0] not in USE_ACTIONS:
            return 0
        self.ledger.record_in(db, [Use(image_id, event.time, "event", name)], event.time)
        return 1

    def _image_event(self, db: sqlite3.Connection, event: Event) -> None:
        image_id = self.image_id(event.id)
        if image_id is None:
            return
        if event.action in IMAGE_ARRIVALS:
            self.ledger.note_image_in(db, image_id, event.time)
        elif event.action == "tag":
            self.ledger.note_image_in(db, image_id, event.time, tagged=True)
            if event.name:
                self._moved[event.name] = image_id
        elif event.action == "untag" and event.name:
            self._moved[event.name] = None
        elif event.action == "delete":
            self.ledger.note_image_in(db, image_id, event.time, gone=True)

    def image_id(self, ref: str | None) -> str | None:
        """The image an event's reference names: an id as it is, a tag through the ledger's
        tags, else through the resolver (the engine)."""
        if not ref:
            return None
        if _looks_like_id(ref):
            return ref if ref.startswith("sha256:") else "sha256:" + ref
        if ref in self._moved:
            found = self._moved[ref]
            if found is None and self.resolve is not None:
                found = self.resolve(ref)
            return found
        if self._refs is None:
            self._refs = self.ledger.ref_index()
        found = self._refs.get(ref)
        if found is None and self.resolve is not None:
            found = self.resolve(ref)
            if found is not None:
                self._refs[ref] = found
        return found
