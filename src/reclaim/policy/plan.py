"""The planner: `plan(inventory, usage, policy, now) -> Plan`, a pure function.

Every object gets exactly one verdict with a machine-readable reason. Rules are checked in a
fixed order of precedence (the table below): the first that applies decides. Deletions are in
execution order, and each carries the bytes it frees given the ones before it, so they add up
to the plan's prediction exactly; shared layers are counted once.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from reclaim.accounting import Accounting
from reclaim.lastuse import LastUse, Usage
from reclaim.model import Container, ContainerState, EngineInfo, Image, Inventory, Volume
from reclaim.policy.rules import ImagePolicy, Policy, labels_match
from reclaim.units import human_bytes

# Image rules in order of precedence; the first that applies decides.
IMAGE_RULES = (
    "in-use",  # keep: a container of any state uses it
    "keep-pattern",  # keep: a tag or id matches images.keep
    "keep-label",  # keep: a label matches images.keep_labels
    "keep-latest",  # keep: among its repository's N most recently used tags
    "min-age",  # keep: used (or arrived) more recently than images.min_age
    "max-age",  # delete: unused longer than images.max_age
    "dangling",  # delete: untagged and older than min_age (images.dangling = after-min-age)
    "quota",  # delete, least recently used first, until the store fits images.quota
    "watermark",  # delete, least recently used first, from above images.high down to low
    "not-needed",  # keep: eligible, but no space target asked for more
    "no-rule",  # keep: no max_age, quota or watermark is set
)


@dataclass(frozen=True)
class Reason:
    rule: str
    detail: str


@dataclass(frozen=True)
class Action:
    kind: str  # "container", "image", "volume", "build-cache"
    id: str
    refs: tuple[str, ...]
    bytes: int
    reason: Reason
    # What the decision rested on, for re-validation at apply time: the image's age basis.
    basis: datetime | None = None


@dataclass(frozen=True)
class Kept:
    kind: str
    id: str
    reason: Reason


@dataclass(frozen=True)
class FilesystemUsage:
    """The filesystem that holds the engine's data root."""

    total_bytes: int
    used_bytes: int
    total_inodes: int = 0
    used_inodes: int = 0


@dataclass(frozen=True)
class Plan:
    created_at: datetime
    engine: EngineInfo
    policy: Policy
    actions: tuple[Action, ...]
    kept: tuple[Kept, ...]
    warnings: tuple[str, ...] = ()
    filesystem: FilesystemUsage | None = field(default=None, compare=False)

    @property
    def predicted_bytes(self) -> int:
        return sum(a.bytes for a in self.actions)


def plan(
    inventory: Inventory,
    usage: Mapping[str, Usage],
    policy: Policy,
    now: datetime,
    *,
    filesystem: FilesystemUsage | None = None,
    volume_since: Mapping[str, datetime] | None = None,
) -> Plan:
    actions: list[Action] = []
    kept: list[Kept] = []
    warnings: list[str] = []

    container_actions, container_kept = _containers(inventory.containers, policy, now)
    actions += container_actions
    kept += container_kept

    image_actions, image_kept, image_warnings = _images(
        inventory, usage, policy, now, filesystem
    )
    actions += image_actions
    kept += image_kept
    warnings += image_warnings

    volume_actions, volume_kept = _volumes(inventory.volumes, policy, now, volume_since or {})
    actions += volume_actions
    kept += volume_kept

    if policy.build_cache.enabled:
        actions.append(Action(
            "build-cache", "build-cache", (), inventory.build_cache.reclaimable_bytes or 0,
            Reason("build-cache", "the engine's build-cache prune, as configured; bytes are "
                   "the engine's own estimate"),
        ))
    return Plan(now, inventory.engine, policy, tuple(actions), tuple(kept), tuple(warnings),
                filesystem)


def _keep(kept: list[Kept], kind: str, object_id: str, rule: str, detail: str) -> None:
    kept.append(Kept(kind, object_id, Reason(rule, detail)))


# -- images ----------------------------------------------------------------------------------


def _age_basis(usage: Mapping[str, Usage], image: Image, now: datetime) -> LastUse:
    record = usage.get(image.id)
    if record is None:
        # Never seen before this very run: it arrived just now as far as we know. Unknown is
        # never "old".
        return LastUse(now, "first-seen", "")
    return record.age_basis


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _latest_kept(images: tuple[Image, ...], bases: Mapping[str, LastUse], n: int) -> set[str]:
    """Images holding one of the N most recently used tags of their repository."""
    if n <= 0:
        return set()
    by_repo: dict[str, list[tuple[datetime, str, str]]] = {}
    for image in images:
        for tag in image.tags:
            repo = tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag
            by_repo.setdefault(repo, []).append((bases[image.id].when, tag, image.id))
    keep: set[str] = set()
    for entries in by_repo.values():
        entries.sort(key=lambda e: (e[0], e[1]), reverse=True)
        keep.update(image_id for _, _, image_id in entries[:n])
    return keep


def _images(
    inventory: Inventory,
    usage: Mapping[str, Usage],
    policy: Policy,
    now: datetime,
    filesystem: FilesystemUsage | None,
) -> tuple[list[Action], list[Kept], list[str]]:
    rules = policy.images
    accounting = Accounting(inventory)
    users: dict[str, list[Container]] = {}
    for c in inventory.containers:
        users.setdefault(c.image_id, []).append(c)
    bases = {i.id: _age_basis(usage, i, now) for i in inventory.images}
    latest = _latest_kept(inventory.images, bases, rules.keep_latest)

    kept: list[Kept] = []
    by_age: list[Image] = []  # max-age deletions
    dangling: list[Image] = []
    candidates: list[Image] = []
    for image in sorted(inventory.images, key=lambda i: i.id):
        basis = bases[image.id]
        age = (now - basis.when).total_seconds()
        keep = functools.partial(_keep, kept, "image", image.id)

        if image.id in users:
            names = ", ".join(sorted(c.name for c in users[image.id])[:3])
            keep("in-use", f"used by {len(users[image.id])} container(s): {names}")
        elif (pattern := rules.keeps_by_pattern(image.tags, image.id)) is not None:
            keep("keep-pattern", f"matches {pattern!r}")
        elif (label := labels_match(rules.keep_labels, image.labels)) is not None:
            keep("keep-label", f"has label {label!r}")
        elif image.id in latest:
            keep("keep-latest", f"among the {rules.keep_latest} most recently used tags of "
                 "its repository")
        elif age < rules.min_age:
            keep("min-age", f"{basis.source} {_ago(age)} ago, younger than min_age "
                 f"{_ago(rules.min_age)}")
        elif rules.max_age is not None and age > rules.max_age:
            by_age.append(image)
        elif image.dangling and rules.dangling == "after-min-age":
            dangling.append(image)
        else:
            candidates.append(image)

    oldest_first = lambda i: (bases[i.id].when, i.id)  # noqa: E731
    freeing = accounting.freeing()
    actions: list[Action] = []

    def delete(image: Image, rule: str, detail: str) -> None:
        freed = freeing.add(image.id)
        actions.append(Action("image", image.id, image.tags, freed,
                              Reason(rule, detail), bases[image.id].when))

    for image in sorted(by_age, key=oldest_first):
        age = (now - bases[image.id].when).total_seconds()
        delete(image, "max-age", f"{bases[image.id].source} {_ago(age)} ago, older than "
               f"max_age {_ago(rules.max_age or 0)}")
    for image in sorted(dangling, key=oldest_first):
        delete(image, "dangling", "untagged, older than min_age")

    need, rule, target = _space_need(rules, accounting.total_bytes(), freeing.freed, filesystem)
    warnings: list[str] = []
    if need > 0:
        chosen = _evict(accounting, [a.id for a in actions if a.kind == "image"],
                        [i.id for i in sorted(candidates, key=oldest_first)], need)
        by_id = {i.id: i for i in candidates}
        remaining = need
        for image_id in chosen:
            image = by_id[image_id]
            age = (now - bases[image_id].when).total_seconds()
            freed_before = freeing.freed
            delete(image, rule, f"least recently used ({bases[image_id].source} {_ago(age)} "
                   f"ago); {target}")
            remaining -= freeing.freed - freed_before
        chosen_set = set(chosen)
        for image in candidates:
            if image.id not in chosen_set:
                kept.append(Kept("image", image.id, Reason("not-needed", f"{target}; "
                                 "met without it")))
        if remaining > 0:
            warnings.append(
                f"{rule}: {human_bytes(remaining)} still over the target after every image the "
                "rules allow; the rest are kept (in use, kept by pattern, label or "
                "keep_latest, or younger than min_age)"
            )
    else:
        detail = target if rule else "no max_age, quota or watermark is set"
        for image in candidates:
            kept.append(Kept("image", image.id, Reason("not-needed" if rule else "no-rule",
                                                       detail)))
    return actions, kept, warnings


def _space_need(rules: ImagePolicy, store_bytes: int, already_freed: int,
                fs: FilesystemUsage | None) -> tuple[int, str, str]:
    """How many more bytes the space targets ask to free, by which rule, and why; the
    deletions already chosen (max-age, dangling) count towards it."""
    need, rule, target = 0, "", ""
    total = fs.total_bytes if fs else 0
    if rules.quota is not None:
        if rules.quota.percent is not None and fs is None:
            raise ValueError("a quota in % needs the filesystem's size")
        limit = rules.quota.resolve(total)
        current = store_bytes - already_freed
        if current > limit:
            need, rule = current - limit, "quota"
        target = f"quota {human_bytes(limit)}, image store {human_bytes(current)}"
    if rules.high is not None and rules.low is not None and fs is not None:
        high, low = rules.high.resolve(total), rules.low.resolve(total)
        used = fs.used_bytes - already_freed
        if used > high and used - low > need:
            need, rule = used - low, "watermark"
            target = (f"filesystem {human_bytes(used)} used, above high {human_bytes(high)}; "
                      f"down to low {human_bytes(low)}")
        elif not target:
            target = f"filesystem {human_bytes(used)} used, under high {human_bytes(high)}"
    return need, rule, target


def _evict(accounting: Accounting, already: list[str], lru: list[str], need: int) -> list[str]:
    """Least recently used first until `need` bytes are freed (marginal bytes, shared layers
    counted once), then drop, newest first, any chosen image the target is met without: no
    image is deleted that the target did not need."""
    freeing = accounting.freeing()
    for image_id in already:
        freeing.add(image_id)
    base = freeing.freed
    chosen: list[str] = []
    for image_id in lru:
        if freeing.freed - base >= need:
            break
        freeing.add(image_id)
        chosen.append(image_id)
    if freeing.freed - base < need:
        return chosen  # cannot be met: everything allowed goes, and the caller says so
    # Newest first, each image is taken out again if the target holds without it. What an
    # image's removal loses is read off the piece counts, so the pass is linear.
    for image_id in reversed(list(chosen)):
        if freeing.freed - base - freeing.droppable(image_id) >= need:
            freeing.remove(image_id)
            chosen.remove(image_id)
    return chosen


# -- containers and volumes --------------------------------------------------------------------


def _containers(containers: tuple[Container, ...], policy: Policy, now: datetime
                ) -> tuple[list[Action], list[Kept]]:
    rules = policy.containers
    actions: list[Action] = []
    kept: list[Kept] = []
    recent: set[str] = set()
    if rules.keep_last > 0:
        by_image: dict[str, list[Container]] = {}
        for c in containers:
            if c.state in (ContainerState.EXITED, ContainerState.DEAD):
                by_image.setdefault(c.image_id, []).append(c)
        for group in by_image.values():
            group.sort(key=lambda c: (c.finished or c.created or now, c.id), reverse=True)
            recent.update(c.id for c in group[: rules.keep_last])
    for c in sorted(containers, key=lambda c: c.id):
        keep = functools.partial(_keep, kept, "container", c.id)
        if not c.state.stopped:
            keep("running", f"{c.state.value}: never removed")
        elif not rules.enabled:
            keep("off", "containers are collected only when configured")
        elif (label := labels_match(rules.keep_labels, c.labels)) is not None:
            keep("keep-label", f"has label {label!r}")
        elif c.id in recent:
            keep("keep-last", f"among the {rules.keep_last} most recently finished containers "
                 "of its image")
        elif c.state in (ContainerState.EXITED, ContainerState.DEAD):
            since = c.finished or c.created
            if rules.exited_after is None or since is None:
                keep("exited-age", "no containers.exited_after, or no finish time")
            elif (now - since).total_seconds() > rules.exited_after:
                actions.append(Action("container", c.id, (c.name,), c.rw_bytes or 0,
                                      Reason("exited-age", f"{c.state.value}, finished "
                                             f"{_ago((now - since).total_seconds())} ago"),
                                      since))
            else:
                keep("exited-age", f"finished {_ago((now - since).total_seconds())} ago, within "
                     f"exited_after {_ago(rules.exited_after)}")
        else:  # created, never started
            if rules.created_after is None or c.created is None:
                keep("created-age", "no containers.created_after, or no creation time")
            elif (now - c.created).total_seconds() > rules.created_after:
                actions.append(Action("container", c.id, (c.name,), c.rw_bytes or 0,
                                      Reason("created-age", "created "
                                             f"{_ago((now - c.created).total_seconds())} ago, "
                                             "never started"), c.created))
            else:
                keep("created-age", f"created {_ago((now - c.created).total_seconds())} ago, "
                     f"within created_after {_ago(rules.created_after)}")
    return actions, kept


def _volumes(volumes: tuple[Volume, ...], policy: Policy, now: datetime,
             since: Mapping[str, datetime]) -> tuple[list[Action], list[Kept]]:
    rules = policy.volumes
    actions: list[Action] = []
    kept: list[Kept] = []
    for v in sorted(volumes, key=lambda v: v.name):
        keep = functools.partial(_keep, kept, "volume", v.name)

        if v.used_by:
            keep("in-use", f"mounted by {len(v.used_by)} container(s)")
        elif not rules.enabled:
            keep("off", "volumes are collected only when configured")
        elif v.options and v.name not in rules.include:
            keep("driver-options", "has driver options (NFS, CIFS, bind...): only when named "
                 "in volumes.include")
        elif not v.anonymous and not rules.all and v.name not in rules.include:
            keep("named", "named volume: only with volumes.all = true")
        elif (label := labels_match(rules.keep_labels, v.labels)) is not None:
            keep("keep-label", f"has label {label!r}")
        else:
            dangling_since = since.get(v.name, now)
            age = (now - dangling_since).total_seconds()
            assert rules.dangling_after is not None
            if age > rules.dangling_after:
                actions.append(Action("volume", v.name, (), v.bytes or 0,
                                      Reason("dangling-volume", f"dangling {_ago(age)}"),
                                      dangling_since))
            else:
                keep("dangling-volume", f"dangling {_ago(age)}, within dangling_after "
                     f"{_ago(rules.dangling_after)}")
    return actions, kept

