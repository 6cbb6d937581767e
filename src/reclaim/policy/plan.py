"""The planner: `plan(inventory, usage, policy, now) -> Plan`, a pure function.

Every object gets exactly one verdict with a machine-readable reason. Rules are checked in a
fixed order of precedence (the table below): the first that applies decides. Deletions are in
execution order, and each carries the bytes it frees given the ones before it, so they add up
to the plan's prediction exactly; shared layers are counted once.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import attrgetter
from typing import NamedTuple

from reclaim.accounting import Accounting, FreeingSet
from reclaim.errors import PolicyError
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
    "inode-watermark",  # delete, least recently used first, from above high_inodes to low_inodes
    "not-needed",  # keep: eligible, but no quota or watermark asked for more
    "no-rule",  # keep: no max_age, quota or watermark is set
)


class Reason(NamedTuple):
    # A named tuple rather than a dataclass: a plan holds one per object, and tuples of
    # strings are cheap to build and leave the cyclic collector alone.
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
    # Which object of that id: a volume's `Volume.instance` (a name can be used again).
    instance: str = ""
    # The build-cache prune's bounds, which apply passes to the engine and nothing else:
    # (keep_storage in bytes, older_than in seconds), at least one of them set.
    prune: tuple[int | None, float | None] | None = None


class Kept(NamedTuple):
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
    layer_inodes: Mapping[str, int] | None = None,
    accounting: Accounting | None = None,
) -> Plan:
    """`layer_inodes`: inodes per layer (chain id) as the runtime counts them, for inode
    watermarks (see `wants_layer_inodes`); a layer missing from it counts as 0 freed inodes.
    `accounting`: this inventory's piece graph when the caller already has one (built with
    the same `layer_inodes`), so that several plans of one inventory build it once; one
    whose containers are not those the plan leaves (it removes some) is built again."""
    # A plan builds a reason for every object and makes no reference cycles; with the
    # collector on, those allocations set off full collections that walk the whole inventory
    # again and again. It is switched off for the plan and put back as it was, whatever the
    # plan does.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _plan(inventory, usage, policy, now, filesystem=filesystem,
                     volume_since=volume_since, layer_inodes=layer_inodes,
                     accounting=accounting)
    finally:
        if was_enabled:
            gc.enable()


def _plan(
    inventory: Inventory,
    usage: Mapping[str, Usage],
    policy: Policy,
    now: datetime,
    *,
    filesystem: FilesystemUsage | None,
    volume_since: Mapping[str, datetime] | None,
    layer_inodes: Mapping[str, int] | None,
    accounting: Accounting | None,
) -> Plan:
    # Containers first: a container this plan removes no longer makes its image or its
    # volumes in use for the actions after it. The images are decided, and their bytes
    # counted, on the inventory as it will be once those containers are gone.
    actions, kept = _containers(inventory.containers, policy, now)
    removed = {a.id: a.refs[0] for a in actions}
    remaining = (tuple(c for c in inventory.containers if c.id not in removed)
                 if removed else inventory.containers)
    if accounting is None or (_inode_watermarks(policy) and filesystem is not None
                              and not accounting.counts_inodes) or (
            removed and accounting.used_images != frozenset(c.image_id for c in remaining)):
        counts = layer_inodes
        if counts is None and _inode_watermarks(policy) and filesystem is not None:
            counts = {}  # asked for, but nothing counted: every layer is unknown
        accounting = Accounting(inventory._replace(containers=remaining), counts)

    image_actions, image_kept, warnings = _images(
        inventory, usage, policy, now, filesystem, accounting, removed
    )
    warnings += _unknown_bytes(inventory, actions)
    actions += image_actions
    kept += image_kept

    volume_actions, volume_kept = _volumes(inventory.volumes, policy, now, volume_since or {},
                                           removed)
    warnings += _unknown_bytes(inventory, volume_actions)
    actions += volume_actions
    kept += volume_kept

    if policy.build_cache.enabled:
        bounds = _build_cache_bounds(policy, filesystem)
        if bounds is None:
            warnings.append("build_cache.keep_storage is a percentage of the engine's "
                            "filesystem, which cannot be read from here: the build cache is "
                            "not pruned")
        else:
            predicted, detail = _build_cache_prediction(inventory, policy, filesystem)
            actions.append(Action("build-cache", "build-cache", (), predicted,
                                  Reason("build-cache", detail), prune=bounds))
    return Plan(now, inventory.engine, policy, tuple(actions), tuple(kept), tuple(warnings),
                filesystem)


def _build_cache_bounds(policy: Policy, filesystem: FilesystemUsage | None
                        ) -> tuple[int | None, float | None] | None:
    """The prune's bounds as the engine takes them, or None when they cannot be resolved: a
    prune is never sent with fewer bounds than the policy gives (dropping a keep_storage the
    engine cannot be told would prune everything)."""
    keep, older = policy.build_cache.keep_storage, policy.build_cache.older_than
    if keep is None:
        return (None, older)
    if keep.bytes is None and filesystem is None:
        return None
    return (keep.resolve(filesystem.total_bytes if filesystem else 0), older)
def removed_containers(inventory: Inventory, policy: Policy, now: datetime) -> list[str]:
    """Ids of the containers the plan of this inventory removes: the ones whose storage the
    caller measures (`Container.disk_bytes`) before planning."""
    return [a.id for a in _containers(inventory.containers, policy, now)[0]]


def _unknown_bytes(inventory: Inventory, actions: list[Action]) -> list[str]:
    """A warning for the container and volume actions whose bytes are not known (their
    storage could not be read here): they carry 0, which is not a measurement."""
    containers = {c.id: c for c in inventory.containers}
    volumes = {v.name: v for v in inventory.volumes}
    unknown: dict[str, int] = {}
    for a in actions:
        if a.kind == "container":
            known = containers[a.id].disk_bytes is not None
        else:
            known = a.kind != "volume" or _volume_bytes(volumes[a.id]) is not None
        if not known:
            unknown[a.kind] = unknown.get(a.kind, 0) + 1
    return [f"what removing {n} {kind}(s) frees is unknown: their storage could not be read "
            "from the engine's data root here (a remote engine?); they count as 0 bytes in "
            "the prediction" for kind, n in unknown.items()]


def _volume_bytes(v: Volume) -> int | None:
    """What removing the volume frees: its directories with its files where they were read,
    else the engine's figure for its files."""
    return v.disk_bytes if v.disk_bytes is not None else v.bytes


def _build_cache_prediction(inventory: Inventory, policy: Policy,
                            filesystem: FilesystemUsage | None) -> tuple[int, str]:
    """What the engine's prune should free: its reclaimable bytes, and with keep_storage no
    more than what brings the cache down to it. The engine lists no ages, so `older_than`
    leaves the reclaimable bytes as an upper bound; apply reports what the engine freed."""
    cache = inventory.build_cache
    if cache.reclaimable_bytes is None:
        return 0, ("the engine's build-cache prune, as configured; the engine lists its build "
                   "cache only inside /system/df on this version (reclaim --sizes), so the "
                   "bytes are not predicted")
    predicted = cache.reclaimable_bytes
    detail = "the engine's build-cache prune, as configured; the engine's reclaimable bytes"
    keep = policy.build_cache.keep_storage
    if keep is not None and (keep.bytes is not None or filesystem is not None):
        keep_bytes = keep.resolve(filesystem.total_bytes if filesystem else 0)
        predicted = min(predicted, max(0, (cache.bytes or 0) - keep_bytes))
        detail += f", down to keep_storage {human_bytes(keep_bytes)}"
    if policy.build_cache.older_than is not None:
        detail += "; at most: only records unused for older_than go"
    return predicted, detail


def _inode_watermarks(policy: Policy) -> bool:
    return policy.images.high_inodes is not None and policy.images.low_inodes is not None


def wants_layer_inodes(policy: Policy, filesystem: FilesystemUsage | None) -> bool:
    """Whether the plan needs the runtime's per-layer inode counts: an inode watermark is set
    and the filesystem is above it. Counting reads every layer's records on disk, so it is
    only asked for when it can change the plan."""
    rules = policy.images
    if rules.high_inodes is None or rules.low_inodes is None or filesystem is None:
        return False
    if filesystem.total_inodes <= 0:
        return False
    return filesystem.used_inodes > rules.high_inodes.resolve(filesystem.total_inodes)


def freeable_layers(inventory: Inventory, removed: Collection[str] = ()) -> list[str]:
    """Chain ids of the layers some deletion could free: those no container's image needs,
    but for the containers the plan removes (`removed_containers`). Only these need an inode
    count."""
    gone = set(removed)
    used = {c.image_id for c in inventory.containers if c.id not in gone}
    pinned = {chain_id for i in inventory.images if i.id in used for chain_id in i.chain}
    return list(dict.fromkeys(chain_id for i in inventory.images if i.id not in used
                              for chain_id in i.chain if chain_id not in pinned))


def _keep(kept: list[Kept], kind: str, object_id: str, rule: str, detail: str) -> None:
    kept.append(Kept(kind, object_id, Reason(rule, detail)))


# -- images ----------------------------------------------------------------------------------


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _latest_kept(images: list[Image], bases: Mapping[str, LastUse], n: int) -> set[str]:
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


@dataclass
class _Target:
    """What the space targets ask for beyond the deletions already chosen."""

    bytes_rule: str = ""  # "quota" or "watermark" when bytes are needed
    bytes_need: int = 0
    inodes_need: int = 0
    details: list[str] = field(default_factory=list)  # every target in play, for reasons
    configured: bool = False  # some quota or watermark applies to this plan
    warnings: list[str] = field(default_factory=list)

    @property
    def detail(self) -> str:
        return "; ".join(self.details)


def _images(
    inventory: Inventory,
    usage: Mapping[str, Usage],
    policy: Policy,
    now: datetime,
    filesystem: FilesystemUsage | None,
    accounting: Accounting,
    removed: Mapping[str, str],
) -> tuple[list[Action], list[Kept], list[str]]:
    """`removed`: the containers this plan removes before its images (id -> name). They
    make no image in use; an image only they use is decided like any unused one, and its
    reason says so."""
    rules = policy.images
    images = sorted(inventory.images, key=_by_id)
    users: dict[str, list[str]] = {}
    held: dict[str, list[str]] = {}  # images used only by containers this plan removes
    for c in inventory.containers:
        into = held if c.id in removed else users
        names = into.get(c.image_id)
        if names is None:
            into[c.image_id] = [c.name]
        else:
            names.append(c.name)
    for image_id in users.keys() & held.keys():
        del held[image_id]
    usage_of = usage.get
    arrived_now = LastUse(now, "first-seen", "")
    bases: dict[str, LastUse] = {}
    for image in images:
        record = usage_of(image.id)
        # Never seen before this very run: it arrived just now as far as we know. Unknown is
        # never "old".
        bases[image.id] = arrived_now if record is None else record.age_basis
    latest = _latest_kept(images, bases, rules.keep_latest)
    min_age, max_age = rules.min_age, rules.max_age
    keeps_by_pattern = rules.keeps_by_pattern if rules.keep else None
    keep_labels = rules.keep_labels
    dangling_after_min_age = rules.dangling == "after-min-age"

    kept: list[Kept] = []
    by_age: list[Image] = []  # max-age deletions
    dangling: list[Image] = []
    candidates: list[Image] = []
    for image in images:
        image_id = image.id
        if image_id in users:
            names = users[image_id]
            kept.append(Kept("image", image_id, Reason(
                "in-use", f"used by {len(names)} container(s): {', '.join(sorted(names)[:3])}")))
            continue
        if keeps_by_pattern is not None and \
                (pattern := keeps_by_pattern(image.tags, image_id)) is not None:
            kept.append(Kept("image", image_id, Reason("keep-pattern", f"matches {pattern!r}")))
            continue
        if keep_labels and (label := labels_match(keep_labels, image.labels)) is not None:
            kept.append(Kept("image", image_id, Reason("keep-label", f"has label {label!r}")))
            continue
        if image_id in latest:
            kept.append(Kept("image", image_id, Reason(
                "keep-latest", f"among the {rules.keep_latest} most recently used tags of its "
                "repository")))
            continue
        basis = bases[image_id]
        age = (now - basis.when).total_seconds()
        if age < min_age:
            kept.append(Kept("image", image_id, Reason(
                "min-age", f"{basis.source} {_ago(age)} ago, younger than min_age "
                f"{_ago(min_age)}")))
        elif max_age is not None and age > max_age:
            by_age.append(image)
        elif dangling_after_min_age and not image.tags:
            dangling.append(image)
        else:
            candidates.append(image)

    def oldest_first(i: Image) -> tuple[datetime, str]:
        return bases[i.id].when, i.id

    freeing = accounting.freeing()
    actions: list[Action] = []

    def delete(image: Image, rule: str, detail: str) -> None:
        freed = freeing.add(image.id)
        actions.append(Action("image", image.id, image.tags, freed,
                              Reason(rule, detail), bases[image.id].when))

    for image in sorted(by_age, key=oldest_first):
        age = (now - bases[image.id].when).total_seconds()
        delete(image, "max-age", f"{bases[image.id].source} {_ago(age)} ago, older than "
               f"max_age {_ago(max_age or 0)}")
    for image in sorted(dangling, key=oldest_first):
        delete(image, "dangling", "untagged, older than min_age")

    target = _space_need(rules, accounting.total_bytes(), freeing.freed, freeing.freed_inodes,
                         filesystem)
    warnings = target.warnings
    if target.bytes_need > 0 or target.inodes_need > 0:
        lru = sorted(candidates, key=oldest_first)
        chosen, trial = _evict(freeing, [i.id for i in lru], target.bytes_need,
                               target.inodes_need)
        by_id = {i.id: i for i in candidates}
        detail = target.detail
        got_bytes = got_inodes = 0
        for image_id in chosen:
            # Each image is put down to the target that still asked for more when it was
            # chosen: bytes first, then inodes.
            rule = target.bytes_rule if got_bytes < target.bytes_need else "inode-watermark"
            basis = bases[image_id]
            age = (now - basis.when).total_seconds()
            if trial is not None:
                # Nothing was taken out again: the eviction's own figures are the actions',
                # in the same order from the same start.
                freed, inodes = trial.freed_when_added(image_id)
            else:
                freed = freeing.add(image_id)
                inodes = freeing.last_inodes
            got_bytes += freed
            got_inodes += inodes
            # The plan's actions carry bytes; the inodes each frees are said in the reason.
            frees = f"; frees {inodes:,} inodes" if target.inodes_need > 0 else ""
            reason = Reason(rule, f"least recently used ({basis.source} {_ago(age)} ago); "
                            f"{detail}{frees}")
            actions.append(Action("image", image_id, by_id[image_id].tags, freed, reason,
                                  basis.when))
        chosen_set = set(chosen)
        met = Reason("not-needed", f"{detail}; met without it")
        kept += [Kept("image", i.id, met) for i in candidates if i.id not in chosen_set]
        bytes_left = target.bytes_need - got_bytes
        if bytes_left > 0:
            warnings.append(
                f"{target.bytes_rule}: {human_bytes(bytes_left)} still over the target after "
                "every image the rules allow; the rest are kept (in use, kept by pattern, label "
                "or keep_latest, or younger than min_age)"
            )
        inodes_left = target.inodes_need - got_inodes
        if target.inodes_need > 0 and inodes_left > 0:
            warnings.append(
                f"inode-watermark: {inodes_left:,} inodes still over the target after every "
                "image the rules allow; the rest are kept (in use, kept by pattern, label or "
                "keep_latest, or younger than min_age)"
            )
        if target.inodes_need > 0:
            uncounted = accounting.uncounted_layers(
                [a.id for a in actions] + [i.id for i in candidates])
            if uncounted:
                warnings.append(
                    f"inode-watermark: the runtime gave no inode count for {uncounted:,} "
                    "layer(s) of the images considered; they count as 0 freed inodes, so the "
                    "freed inodes are underestimated"
                )
    elif target.configured:
        met = Reason("not-needed", target.detail)
        kept += [Kept("image", i.id, met) for i in candidates]
    else:
        for image in candidates:
            if max_age is None:
                reason = Reason("no-rule", "no max_age, quota or watermark is set")
            else:
                basis = bases[image.id]
                reason = Reason("no-rule", f"{basis.source} "
                                f"{_ago((now - basis.when).total_seconds())} ago, within "
                                f"max_age {_ago(max_age)}; no quota or watermark is set")
            kept.append(Kept("image", image.id, reason))
    if held:
        actions = [replace(a, reason=_held_by(a.reason, held[a.id])) if a.id in held else a
                   for a in actions]
        kept = [k._replace(reason=_held_by(k.reason, held[k.id])) if k.id in held else k
                for k in kept]
    return actions, kept, warnings


def _held_by(reason: Reason, names: list[str]) -> Reason:
    return Reason(reason.rule, f"{reason.detail}; {_only_by(names)}")


def _only_by(names: list[str]) -> str:
    """What the reasons say of an object only containers this plan removes use."""
    shown = sorted(names)
    who = (f"container {shown[0]}" if len(shown) == 1
           else f"containers {', '.join(shown[:3])}" + (" and more" if len(shown) > 3 else ""))
    return f"in use only by {who}, which this plan removes"


_by_id = attrgetter("id")


def _space_need(rules: ImagePolicy, store_bytes: int, freed: int, freed_inodes: int,
                fs: FilesystemUsage | None) -> _Target:
    """What the space targets ask to free beyond the deletions already chosen (max-age,
    dangling), which count towards them: bytes by the larger of the quota's and the byte
    watermark's need, and inodes by the inode watermark's."""
    t = _Target()
    total = fs.total_bytes if fs else 0
    if rules.quota is not None:
        if rules.quota.percent is not None and fs is None:
            raise PolicyError("a quota in % needs the filesystem's size")
        limit = rules.quota.resolve(total)
        current = store_bytes - freed
        if current > limit:
            t.bytes_need, t.bytes_rule = current - limit, "quota"
        t.details.append(f"quota {human_bytes(limit)}, image store {human_bytes(current)}")
        t.configured = True
    if rules.high is not None and rules.low is not None and fs is None:
        t.warnings.append("watermark: the engine's filesystem is not known here (a remote "
                          "engine?); the byte watermarks are not applied")
    elif rules.high is not None and rules.low is not None and fs is not None:
        high, low = rules.high.resolve(total), rules.low.resolve(total)
        used = fs.used_bytes - freed
        if used > high:
            if used - low > t.bytes_need:
                t.bytes_need, t.bytes_rule = used - low, "watermark"
            t.details.append(f"filesystem {human_bytes(used)} used, above high "
                             f"{human_bytes(high)}; down to low {human_bytes(low)}")
        else:
            t.details.append(f"filesystem {human_bytes(used)} used, under high "
                             f"{human_bytes(high)}")
        t.configured = True
    if rules.high_inodes is not None and rules.low_inodes is not None:
        if fs is None:
            t.warnings.append("inode-watermark: the engine's filesystem is not known here (a "
                              "remote engine?); the inode watermarks are not applied")
        elif fs.total_inodes <= 0:
            t.warnings.append("inode-watermark: the engine's filesystem reports no inode "
                              "counts (e.g. btrfs); the inode watermarks are not applied")
        else:
            high, low = (rules.high_inodes.resolve(fs.total_inodes),
                         rules.low_inodes.resolve(fs.total_inodes))
            used = fs.used_inodes - freed_inodes
            if used > high:
                t.inodes_need = used - low
                t.details.append(f"filesystem {used:,} inodes used, above high_inodes "
                                 f"{high:,}; down to low_inodes {low:,}")
            else:
                t.details.append(f"filesystem {used:,} inodes used, under high_inodes "
                                 f"{high:,}")
            t.configured = True
    return t


def _evict(freeing: FreeingSet, lru: list[str], need: int, need_inodes: int
           ) -> tuple[list[str], FreeingSet | None]:
    """Least recently used first until `need` bytes and `need_inodes` inodes are freed
    beyond what `freeing` already frees (marginal figures, shared layers counted once), then
    drop, newest first, any chosen image both targets are met without: no image is deleted
    that the targets did not need. `freeing` itself is left as it was; the trial set is
    returned too when no image was taken out again (its figures are then the plan's)."""
    trial = freeing.copy()
    base, base_inodes = trial.freed, trial.freed_inodes

    def met(lost: int = 0, lost_inodes: int = 0) -> bool:
        return (trial.freed - lost - base >= need
                and trial.freed_inodes - lost_inodes - base_inodes >= need_inodes)

    chosen: list[str] = []
    for image_id in lru:
        if met():
            break
        trial.add(image_id)
        chosen.append(image_id)
    if not met():
        return chosen, trial  # cannot be met: everything allowed goes, and the caller says so
    # Newest first, each image is taken out again if the targets hold without it. What an
    # image's removal loses is read off the piece counts, so the pass is linear.
    dropped: set[str] = set()
    for image_id in reversed(chosen):
        if met(*trial.droppable(image_id)):
            trial.remove(image_id)
            dropped.add(image_id)
    if not dropped:
        return chosen, trial
    return [i for i in chosen if i not in dropped], None


# -- containers and volumes --------------------------------------------------------------------


_EXITED, _DEAD, _CREATED = ContainerState.EXITED, ContainerState.DEAD, ContainerState.CREATED


def _containers(containers: tuple[Container, ...], policy: Policy, now: datetime
                ) -> tuple[list[Action], list[Kept]]:
    rules = policy.containers
    actions: list[Action] = []
    kept: list[Kept] = []
    ordered = sorted(containers, key=_by_id)
    # Every container is listed with its reason; the reasons that do not depend on the
    # container are built once, as a CI host can hold a great many containers.
    never: dict[ContainerState, Reason] = {}
    if not rules.enabled:
        off = Reason("off", "containers are collected only when configured")
        for c in ordered:
            state = c.state
            if state is _EXITED or state is _DEAD or state is _CREATED:
                kept.append(Kept("container", c.id, off))
            else:
                reason = never.get(state)
                if reason is None:
                    reason = never[state] = Reason("running", f"{state.value}: never removed")
                kept.append(Kept("container", c.id, reason))
        return actions, kept
    recent: set[str] = set()
    if rules.keep_last > 0:
        by_image: dict[str, list[Container]] = {}
        for c in containers:
            if c.state in (ContainerState.EXITED, ContainerState.DEAD):
                by_image.setdefault(c.image_id, []).append(c)
        for group in by_image.values():
            group.sort(key=lambda c: (c.finished or c.created or now, c.id), reverse=True)
            recent.update(c.id for c in group[: rules.keep_last])
    for c in ordered:
        keep = functools.partial(_keep, kept, "container", c.id)
        if not c.state.stopped:
            keep("running", f"{c.state.value}: never removed")
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
                actions.append(Action("container", c.id, (c.name,), c.disk_bytes or 0,
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
                actions.append(Action("container", c.id, (c.name,), c.disk_bytes or 0,
                                      Reason("created-age", "created "
                                             f"{_ago((now - c.created).total_seconds())} ago, "
                                             "never started"), c.created))
            else:
                keep("created-age", f"created {_ago((now - c.created).total_seconds())} ago, "
                     f"within created_after {_ago(rules.created_after)}")
    return actions, kept


_DRIVER_OPTIONS = ("has driver options (NFS, CIFS, bind...): only when named in "
                   "volumes.include")


def _volumes(volumes: tuple[Volume, ...], policy: Policy, now: datetime,
             since: Mapping[str, datetime], removed: Mapping[str, str]
             ) -> tuple[list[Action], list[Kept]]:
    """`removed`: the containers this plan removes (id -> name). A volume only they use is
    dangling once they are gone: it waits its dangling_after from then, as any dangling
    volume (the ledger sees it dangling from the next inventory on), unless
    volumes.with_containers has a container's anonymous volumes removed with it, as
    `docker rm -v` does."""
    rules = policy.volumes
    actions: list[Action] = []
    kept: list[Kept] = []
    for v in sorted(volumes, key=lambda v: v.name):
        keep = functools.partial(_keep, kept, "volume", v.name)
        held = [removed[u] for u in v.used_by if u in removed]
        users = len(v.used_by) - len(held)

        if users:
            keep("in-use", f"mounted by {users} container(s)")
        elif held and rules.with_containers and v.anonymous:
            if v.options and v.name not in rules.include:
                keep("driver-options", _DRIVER_OPTIONS)
            elif (label := labels_match(rules.keep_labels, v.labels)) is not None:
                keep("keep-label", f"has label {label!r}")
            else:
                actions.append(Action("volume", v.name, (), _volume_bytes(v) or 0, Reason(
                    "with-container", f"anonymous volume {_only_by(held)} "
                    "(volumes.with_containers)"), instance=v.instance))
        elif not rules.enabled:
            keep("off", "volumes are collected only when configured")
        elif v.options and v.name not in rules.include:
            keep("driver-options", _DRIVER_OPTIONS)
        elif not v.anonymous and not rules.all and v.name not in rules.include:
            keep("named", "named volume: only with volumes.all = true")
        elif (label := labels_match(rules.keep_labels, v.labels)) is not None:
            keep("keep-label", f"has label {label!r}")
        elif held:
            assert rules.dangling_after is not None
            keep("dangling-volume", f"{_only_by(held)}: dangling from then, it waits "
                 f"dangling_after {_ago(rules.dangling_after)}")
        else:
            dangling_since = since.get(v.name, now)
            age = (now - dangling_since).total_seconds()
            assert rules.dangling_after is not None
            if age > rules.dangling_after:
                actions.append(Action("volume", v.name, (), _volume_bytes(v) or 0,
                                      Reason("dangling-volume", f"dangling {_ago(age)}"),
                                      dangling_since, v.instance))
            else:
                keep("dangling-volume", f"dangling {_ago(age)}, within dangling_after "
                     f"{_ago(rules.dangling_after)}")
    return actions, kept
