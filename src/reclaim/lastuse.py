"""When each image was last used, from the evidence an inventory carries by itself.

A container keeps evidence of its image's use in its own timestamps: a running (or paused,
restarting) container uses its image now; a stopped one used it until it finished; a
never-started one was created from it. Without any container, the image's local tag time says
when it arrived here. The build time (`Created`) is never evidence of use.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from reclaim.model import ContainerState, Inventory


# NamedTuples, not data classes, as the model is (see reclaim.model): one per image.
class LastUse(NamedTuple):
    when: datetime
    source: str  # "event", "container", "tag-time", "first-seen"
    detail: str  # e.g. the container's name


def container_time(state: ContainerState, created: datetime | None, started: datetime | None,
                   finished: datetime | None, now: datetime) -> datetime | None:
    """The latest moment a container is known to have used its image."""
    if not state.stopped:
        return now  # running, paused, restarting, removing: in use right now
    times = [t for t in (created, started, finished) if t is not None]
    return max(times) if times else None


class Usage(NamedTuple):
    """What is known of one image's use: the usage ledger's record of it."""

    image_id: str
    first_seen: datetime
    last_use: LastUse | None  # evidence of use only: an event or a container's timestamps
    tagged_at: datetime | None = None
    refs: tuple[str, ...] = ()
    gone_at: datetime | None = None

    @property
    def age_basis(self) -> LastUse:
        """The time an image's age is counted from: its last use; without one, the later of
        its local tag time and the first time reclaim saw it. Never its build time."""
        if self.last_use is not None:
            return self.last_use
        if self.tagged_at is not None and self.tagged_at > self.first_seen:
            return LastUse(self.tagged_at, "tag-time", "")
        return LastUse(self.first_seen, "first-seen", "")


def usage_from_inventory(inventory: Inventory, now: datetime) -> dict[str, Usage]:
    """Usage as one inventory shows it, for callers without a ledger (first seen: now)."""
    uses = container_uses(inventory, now)
    return {
        i.id: Usage(i.id, now, uses.get(i.id), i.tagged_at, i.tags) for i in inventory.images
    }


def container_uses(inventory: Inventory, now: datetime) -> dict[str, LastUse]:
    best: dict[str, LastUse] = {}
    for c in inventory.containers:
        when = container_time(c.state, c.created, c.started, c.finished, now)
        if when is None:
            continue
        known = best.get(c.image_id)
        if known is None or when > known.when:
            best[c.image_id] = LastUse(when, "container", c.name)
    return best
