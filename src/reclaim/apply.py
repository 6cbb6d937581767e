"""Apply a plan: re-validate it, delete through the engine API one object at a time, journal
each deletion, and measure what was freed.

Safety: nothing is forced. Every action is re-validated against a fresh inventory and the
ledger (gone, now used, retagged, used since the plan: skipped with the reason). Docker removes
one of several tags of an image in use without complaint, so before each tag but the last an
image is checked again for new users:

- with a `UseWatch` (the engine's event stream, opened before the inventory the plan is
  checked against), by asking the watch: every container created and every tag given since
  that inventory is in it, at no request per tag;
- without one, or once its stream is lost, by asking the engine for the image's containers.

The engine has no "untag only if unused", so either check leaves a window of about one round
trip. What closes it: the last tag of an image in use (or its id) the engine itself refuses,
and then the tags removed before it are put back, so an apply never leaves an image a
container uses with fewer tags than it had. A refusal is reported and the rest goes on.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from reclaim.accounting import Accounting
from reclaim.errors import EXIT_INTERRUPTED, EngineError, InUse, NotFound, ReclaimError
from reclaim.lastuse import Usage
from reclaim.model import EngineInfo, Inventory
from reclaim.policy.plan import Action
from reclaim.runtimes.base import Runtime, TagRestoring, UseWatch
from reclaim.state.journal import Entry, Journal, interrupted

APPLY_SCHEMA = "reclaim.apply/v1"
# Runs the engine's build-cache prune with an action's bounds; the bytes the engine freed.
BuildCachePrune = Callable[[int | None, float | None], int]
MEASURED_CAVEAT = (
    "measured_freed_bytes is what the filesystem that holds the data root gained in free "
    "blocks during the apply: anything else writing to or deleting from that filesystem "
    "meanwhile is included, and it counts allocated blocks where freed_bytes (the model's "
    "figure) counts apparent bytes, as du -b does")
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
    # What the deleted objects took, by the model (the same accounting as the prediction),
    # from inventories taken before and after.
    freed_bytes: int = 0
    # What the engine's build-cache prune said it freed; None when no prune ran.
    build_cache_freed_bytes: int | None = None
    # What the filesystem that holds the data root gained (free blocks, statvfs, after minus
    # before); None where that filesystem is not this host's.
    measured_freed_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": APPLY_SCHEMA,
            "deleted": [{"kind": a.kind, "id": a.id, "refs": list(a.refs), "bytes": a.bytes}
                        for a in self.deleted],
            "skipped": [{"kind": a.kind, "id": a.id, "why": why} for a, why in self.skipped],
            "failed": [{"kind": a.kind, "id": a.id, "error": err} for a, err in self.failed],
            "predicted_bytes": self.predicted_bytes,
            "freed_bytes": self.freed_bytes,
            "build_cache_freed_bytes": self.build_cache_freed_bytes,
            "measured_freed_bytes": self.measured_freed_bytes,
            "caveat": self.caveat,
        }

    @property
    def caveat(self) -> str:
        if self.measured_freed_bytes is None:
            return ("measured_freed_bytes is null: the engine's data root is not on a "
                    "filesystem of this host; freed_bytes is the model's figure")
        return MEASURED_CAVEAT


class _Current:
    """The fresh inventory, indexed once: every action is looked up in it."""

    def __init__(self, inventory: Inventory) -> None:
        self.images = {i.id: i for i in inventory.images}
        self.containers = {c.id: c for c in inventory.containers}
        self.volumes = {v.name: v for v in inventory.volumes}
        # Image id -> its containers (id, name).
        self.users: dict[str, list[tuple[str, str]]] = {}
        for c in inventory.containers:
            self.users.setdefault(c.image_id, []).append((c.id, c.name))


def stale_reason(action: Action, now: _Current, usage: Mapping[str, Usage],
                 removed: Collection[str] = ()) -> str | None:
    """Why an action no longer holds against what the engine and the ledger say now.
    `removed`: the containers this apply has removed already (the engine confirmed it);
    they use nothing any more, though the inventory taken before still lists them. Every
    other container does, whatever the plan said of it."""
    if action.kind == "image":
        image = now.images.get(action.id)
        if image is None:
            return "already gone"
        users = [name for cid, name in now.users.get(action.id, ()) if cid not in removed]
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
        if volume.instance != action.instance:
            return "re-created since the plan (another volume of that name)"
        if any(u not in removed for u in volume.used_by):
            return "now used by a container"
    return None


def _remove_ref(runtime: Runtime, ref: str) -> bool | None:
    """Remove one reference: True when the engine said the image itself went, False when
    only the tag did, None when the runtime cannot tell."""
    if isinstance(runtime, TagRestoring):
        return runtime.remove_image_ref(ref)
    runtime.remove_image(ref)
    return None


def _unsafe(runtime: Runtime, action: Action, watch: UseWatch | None) -> str | None:
    """Why the image's next tag must not be removed, from the watch while it is live, else
    from the engine's list of the image's containers."""
    if watch is not None and watch.live:
        why = watch.why_not(action.id, action.refs)
        # Asked again: the stream may have been lost while `why_not` waited.
        if why is not None or watch.live:
            return why
    if runtime.image_users(action.id):
        return "a container started using it"
    return None


def _put_back(runtime: Runtime, image_id: str, removed: list[str]) -> str:
    """Tag the image again with the tags this apply removed from it; a name that meanwhile
    names another image is left alone. Says what was done, for the skip reason."""
    if not removed:
        return ""
    if not isinstance(runtime, TagRestoring):
        return f"; its removed tags {', '.join(removed)} could not be put back"
    back, lost = [], []
    for ref in removed:
        try:
            runtime.image_id(ref)
            lost.append(ref)  # the name went to another image meanwhile: not ours to take
            continue
        except NotFound:
            pass
        try:
            runtime.tag_image(image_id, ref)
            back.append(ref)
        except ReclaimError:
            lost.append(ref)
    said = f"; its removed tags {', '.join(back)} were put back" if back else ""
    if lost:
        said += f"; could not put back {', '.join(lost)}"
    return said


def _delete_image(runtime: Runtime, action: Action, has_digests: bool,
                  watch: UseWatch | None) -> Outcome:
    """Each tag, then the id where something else still names it; before every tag but the
    last, a check for new users (the last tag of an image in use, and its id, the engine
    itself refuses to remove; the tags removed before such a refusal are put back)."""
    if watch is not None and watch.live:
        # Re-validated against an inventory taken after the watch started: any tag given
        # since then is in the watch.
        tags = action.refs
    else:
        now = runtime.image_refs(action.id)
        if now is None:
            return Outcome(action, "skipped", "already gone")
        if sorted(now) != sorted(action.refs):
            return Outcome(action, "skipped",
                           f"retagged just now (now {', '.join(now) or '-'})")
        tags = now
    removed: list[str] = []
    deleted: bool | None = None
    try:
        for n, tag in enumerate(tags):
            if n < len(tags) - 1:
                why = _unsafe(runtime, action, watch)
                if why is not None:
                    done = f" after removing {n} of its tags" if n else ""
                    return Outcome(action, "skipped",
                                   why + done + _put_back(runtime, action.id, removed))
            deleted = _remove_ref(runtime, tag)
            removed.append(tag)
        if not tags:
            _remove_ref(runtime, action.id)
        elif has_digests and not deleted:
            # Still named by a digest after its last tag went (unless the answer to the last
            # removal already listed the image as deleted).
            with contextlib.suppress(NotFound):
                _remove_ref(runtime, action.id)
    except InUse as exc:
        # Refused: the last tag, or the id after it. Whatever went before is put back.
        return Outcome(action, "skipped", f"the engine refused: {exc.message}"
                       + _put_back(runtime, action.id, removed))
    return Outcome(action, "deleted")


def _execute(runtime: Runtime, action: Action, build_cache: BuildCachePrune,
             has_digests: bool = False, watch: UseWatch | None = None) -> Outcome:
    try:
        if action.kind == "image":
            return _delete_image(runtime, action, has_digests, watch)
        if action.kind == "container":
            runtime.remove_container(action.id)
        elif action.kind == "volume":
            # Checked again just before: the volume may have been removed and created again
            # under its name since the inventory (the engine cannot remove "this" volume only).
            instance = runtime.volume_instance(action.id)
            if instance is None:
                return Outcome(action, "skipped", "already gone")
            if instance != action.instance:
                return Outcome(action, "skipped",
                               "re-created just now (another volume of that name)")
            runtime.remove_volume(action.id)
        elif action.kind == "build-cache":
            if action.prune is None:
                return Outcome(action, "skipped", "no bounds for the prune (never unbounded)")
            build_cache(*action.prune)
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
    build_cache: BuildCachePrune = lambda keep_storage, older_than: 0,
    workers: int = 4,
    progress: Callable[[Action, Outcome], None] | None = None,
    watch: UseWatch | None = None,
    stop: threading.Event | None = None,
) -> ApplyResult:
    """`watch`, when given, must have been started before `before` was taken. `stop`, once
    set (by SIGINT here, or by a caller), lets nothing more begin."""
    result = ApplyResult(predicted_bytes=sum(a.bytes for a in actions))
    current = _Current(before)
    # The containers this apply removed: an image or volume only they used is no longer in
    # use (a plan removes the containers first, then what they alone held).
    removed: set[str] = set()

    digested = {i.id for i in before.images if i.digests}
    journal_lock = threading.Lock()
    stop = stop if stop is not None else threading.Event()
    deleted = 0
    begun: set[int] = set()  # the journal rows of the actions that began

    def entry(action: Action) -> Entry:
        return Entry(now(), action.kind, action.id, action.refs, action.reason.rule,
                     action.reason.detail, action.bytes, plan_created, action.instance)

    def run(planned: tuple[Action, int]) -> Outcome | None:
        nonlocal deleted
        action, row = planned
        with journal_lock:
            if stop.is_set():
                return None  # interrupted before this one began: its intent is dropped
            begun.add(row)
        try:
            outcome = _execute(runtime, action, build_cache, action.id in digested, watch)
        except BaseException:
            stop.set()  # something unforeseen: nothing more begins; the intent stays
            raise
        with journal_lock:
            if outcome.status == "deleted":
                journal.complete(row, entry(action))
                deleted += 1
            else:
                journal.abandon(row)
        return outcome

    def settle(outcome: Outcome) -> None:
        action = outcome.action
        if outcome.status == "deleted":
            result.deleted.append(action)
        elif outcome.status == "skipped":
            result.skipped.append((action, outcome.why))
        else:
            result.failed.append((action, outcome.why))
        if progress:
            progress(action, outcome)

    with _stopped_by_sigint(stop):
        # Containers first (their removal can only free), then images, volumes, build
        # cache; a bounded number in flight within each kind. Each kind is re-checked once
        # the kinds before it are done, so that what this apply removed counts as gone.
        for kind in ("container", "image", "volume", "build-cache"):
            group = []
            for action in actions:
                if action.kind != kind:
                    continue
                why = stale_reason(action, current, usage, removed)
                if why is None:
                    group.append(action)
                else:
                    result.skipped.append((action, why))
            if not group:
                continue
            # The intents of the whole group are written at once, before the engine is asked
            # for any of them, and each is completed the moment the engine confirms: a process
            # killed in between leaves intents, which the next run settles against the engine
            # (see state.journal); one of an action that never began is simply dropped then.
            rows = journal.intend_all([entry(a) for a in group])
            pool = ThreadPoolExecutor(max_workers=max(1, workers))
            try:
                for outcome in pool.map(run, zip(group, rows, strict=True)):
                    if outcome is None:
                        continue
                    settle(outcome)
                    if kind == "container" and outcome.status == "deleted":
                        removed.add(outcome.action.id)
            except BaseException as exc:
                # What has not begun does not; what is in flight finishes and is journalled.
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                journal.abandon_all([r for r in rows if r not in begun])
                if isinstance(exc, KeyboardInterrupt):
                    raise ApplyInterrupted(deleted) from None
                raise
            pool.shutdown(wait=True)
            if stop.is_set():  # stopped by a caller: what never began leaves no intent
                journal.abandon_all([r for r in rows if r not in begun])
    return result


@contextlib.contextmanager
def _stopped_by_sigint(stop: threading.Event) -> Iterator[None]:
    """SIGINT sets `stop` before it interrupts, so that no worker begins another deletion
    after it; the handler that was there before is put back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    import signal

    def interrupt(signum: int, frame: object) -> None:
        stop.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class ApplyInterrupted(ReclaimError):
    """SIGINT during apply: what began finished and is in the journal; nothing else began."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, deleted: int) -> None:
        super().__init__(f"interrupted after {deleted} deletion(s); the journal has them")
        self.deleted = deleted


def settle_interrupted(journal: Journal, inventory: Inventory) -> int:
    """Settle the intents an interrupted apply left, against an inventory taken now; returns
    how many turned out to be deletions (or removed tags)."""
    current = _Current(inventory)
    found = 0
    for row, intent in journal.intents():
        tags_now: tuple[str, ...] | None = None
        if intent.kind == "image":
            image = current.images.get(intent.object_id)
            gone = image is None
            tags_now = None if image is None else image.tags
        elif intent.kind == "container":
            gone = intent.object_id not in current.containers
        elif intent.kind == "volume":
            volume = current.volumes.get(intent.object_id)
            gone = volume is None or volume.instance != intent.instance
        else:
            gone = False
        record = interrupted(intent, gone=gone, tags_now=tags_now)
        journal.settle(row, record)
        found += record is not None
    return found


def measured_freed(before: Inventory, after: Inventory, build_cache_freed: int = 0) -> int:
    """Bytes freed by the model, from two inventories: the image store (each piece once),
    the containers and volumes in `before` that are gone from `after` with what removing each
    frees (containers as measured before the apply, where they were), plus what the
    build-cache prune reported."""
    freed = Accounting(before).total_bytes() - Accounting(after).total_bytes()
    left = {c.id for c in after.containers}
    for c in before.containers:
        if c.id not in left:
            freed += c.disk_bytes if c.disk_bytes is not None else (c.rw_bytes or 0)
    remaining = {v.name for v in after.volumes}
    for v in before.volumes:
        if v.name not in remaining:
            freed += v.disk_bytes if v.disk_bytes is not None else (v.bytes or 0)
    return freed + build_cache_freed


def free_bytes(engine: EngineInfo) -> int | None:
    """Free bytes of the filesystem that holds the engine's data root, or None where that is
    not a filesystem of this host: an engine reached over TCP or SSH (its data root's path
    may well exist here, on another filesystem), or a data root not mounted here."""
    if not engine.data_root or not engine.endpoint.startswith("unix://"):
        return None
    try:
        st = os.statvfs(engine.data_root)
    except OSError:
        return None
    return st.f_bfree * st.f_frsize
