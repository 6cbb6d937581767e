"""Apply a plan: re-validate it, delete through the engine API one object at a time, journal
each deletion, and measure what was freed.

Safety: nothing is forced. Every action is re-validated against a fresh inventory and the
ledger (gone, now used, retagged, used since the plan: skipped with the reason), and each image
is re-checked against the engine just before each of its tags is removed, because Docker
removes one of several tags of an image in use without complaint. A refusal by the engine is
reported and the rest goes on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from reclaim.accounting import Accounting
from reclaim.errors import EngineError, InUse, NotFound, ReclaimError
from reclaim.lastuse import Usage
from reclaim.model import Inventory
from reclaim.policy.plan import Action
from reclaim.runtimes.base import Runtime
from reclaim.state.journal import Entry, Journal

APPLY_SCHEMA = "reclaim.apply/v1"
# Plan files carry times to the second.
_BASIS_SLACK = timedelta(seconds=1)


@dataclass(frozen=True)
class Outcome:
    action: Action
    status: str  # "deleted", "skipped", "failed"
    why: str = ""


@dataclass
class ApplyResult:
    deleted: list[Action] = field(default_factory=list)
    skipped: list[tuple[Action, str]] = field(default_factory=list)
    failed: list[tuple[Action, str]] = field(default_factory=list)
    predicted_bytes: int = 0
    freed_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": APPLY_SCHEMA,
            "deleted": [{"kind": a.kind, "id": a.id, "refs": list(a.refs), "bytes": a.bytes}
                        for a in self.deleted],
            "skipped": [{"kind": a.kind, "id": a.id, "why": why} for a, why in self.skipped],
            "failed": [{"kind": a.kind, "id": a.id, "error": err} for a, err in self.failed],
            "predicted_bytes": self.predicted_bytes,
            "freed_bytes": self.freed_bytes,
        }


class _Current:
    """The fresh inventory, indexed once: every action is looked up in it."""

    def __init__(self, inventory: Inventory) -> None:
        self.images = {i.id: i for i in inventory.images}
        self.containers = {c.id: c for c in inventory.containers}
        self.volumes = {v.name: v for v in inventory.volumes}
        self.users: dict[str, list[str]] = {}
        for c in inventory.containers:
            self.users.setdefault(c.image_id, []).append(c.name)


def stale_reason(action: Action, now: _Current, usage: Mapping[str, Usage]) -> str | None:
    """Why an action no longer holds against what the engine and the ledger say now."""
    if action.kind == "image":
        image = now.images.get(action.id)
        if image is None:
            return "already gone"
        users = now.users.get(action.id)
        if users:
            return f"now used by container {users[0]}"
        if sorted(image.tags) != sorted(action.refs):
            return f"retagged since the plan (now {', '.join(image.tags) or 'untagged'})"
        record = usage.get(action.id)
        if record is not None and action.basis is not None and \
                record.age_basis.when > action.basis + _BASIS_SLACK:
            return f"used since the plan ({record.age_basis.source} {record.age_basis.when:%F %T})"
    elif action.kind == "container":
        container = now.containers.get(action.id)
        if container is None:
            return "already gone"
        if not container.state.stopped:
            return f"now {container.state.value}"
        since = container.finished or container.created
        if action.basis is not None and since is not None and since > action.basis + _BASIS_SLACK:
            return "ran again since the plan"
    elif action.kind == "volume":
        volume = now.volumes.get(action.id)
        if volume is None:
            return "already gone"
        if volume.used_by:
            return "now used by a container"
    return None


def _delete_image(runtime: Runtime, action: Action, has_digests: bool) -> Outcome:
    """Each tag, then the id where something else still names it; re-checking for users
    before every tag the engine would remove even though the image is in use: all but the
    last (the last tag of an image in use, or its id, the engine itself refuses to remove)."""
    tags = runtime.image_refs(action.id)
    if tags is None:
        return Outcome(action, "skipped", "already gone")
    if sorted(tags) != sorted(action.refs):
        return Outcome(action, "skipped", f"retagged just now (now {', '.join(tags) or '-'})")
    for n, tag in enumerate(tags):
        if n < len(tags) - 1 and runtime.image_users(action.id):
            done = f" after removing {n} of its tags" if n else ""
            return Outcome(action, "skipped", f"a container started using it{done}")
        runtime.remove_image(tag)
    if not tags:
        runtime.remove_image(action.id)
    elif has_digests:
        # Still named by a digest after its last tag went; or the last tag took it along.
        with contextlib.suppress(NotFound):
            runtime.remove_image(action.id)
    return Outcome(action, "deleted")


def _execute(runtime: Runtime, action: Action, build_cache: Callable[[], int],
             has_digests: bool = False) -> Outcome:
    try:
        if action.kind == "image":
            return _delete_image(runtime, action, has_digests)
        if action.kind == "container":
            runtime.remove_container(action.id)
        elif action.kind == "volume":
            runtime.remove_volume(action.id)
        elif action.kind == "build-cache":
            build_cache()
        return Outcome(action, "deleted")
    except NotFound:
        return Outcome(action, "skipped", "already gone")
    except InUse as exc:
        return Outcome(action, "skipped", f"the engine refused: {exc.message}")
    except (EngineError, ReclaimError) as exc:
        return Outcome(action, "failed", exc.message)


def apply_actions(
    runtime: Runtime,
    actions: tuple[Action, ...],
    before: Inventory,
    usage: Mapping[str, Usage],
    journal: Journal,
    *,
    now: Callable[[], datetime],
    plan_created: datetime | None,
    build_cache: Callable[[], int] = lambda: 0,
    workers: int = 4,
    progress: Callable[[Action, Outcome], None] | None = None,
) -> ApplyResult:
    result = ApplyResult(predicted_bytes=sum(a.bytes for a in actions))
    valid: list[Action] = []
    current = _Current(before)
    for action in actions:
        why = stale_reason(action, current, usage)
        if why is None:
            valid.append(action)
        else:
            result.skipped.append((action, why))

    digested = {i.id for i in before.images if i.digests}

    def settle(outcome: Outcome) -> None:
        action = outcome.action
        if outcome.status == "deleted":
            result.deleted.append(action)
            # Journalled here, in one thread, as each deletion is confirmed.
            journal.record(Entry(now(), action.kind, action.id, action.refs, action.reason.rule,
                                 action.reason.detail, action.bytes, plan_created))
        elif outcome.status == "skipped":
            result.skipped.append((action, outcome.why))
        else:
            result.failed.append((action, outcome.why))
        if progress:
            progress(action, outcome)

    # Containers first (their removal can only free), then images, volumes, build cache; a
    # bounded number in flight within each kind.
    for kind in ("container", "image", "volume", "build-cache"):
        group = [a for a in valid if a.kind == kind]
        if not group:
            continue
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for outcome in pool.map(
                lambda a: _execute(runtime, a, build_cache, a.id in digested), group
            ):
                settle(outcome)
    return result


def measured_freed(before: Inventory, after: Inventory, build_cache_freed: int = 0) -> int:
    """Bytes freed, from two inventories: image store (each layer once), container read-write
    layers and volumes where the engine gave sizes, plus what the build-cache prune reported."""
    freed = Accounting(before).total_bytes() - Accounting(after).total_bytes()
    if all(c.rw_bytes is not None for c in before.containers + after.containers):
        freed += sum(c.rw_bytes or 0 for c in before.containers) - \
            sum(c.rw_bytes or 0 for c in after.containers)
    if all(v.bytes is not None for v in before.volumes + after.volumes):
        freed += sum(v.bytes or 0 for v in before.volumes) - \
            sum(v.bytes or 0 for v in after.volumes)
    return freed + build_cache_freed
