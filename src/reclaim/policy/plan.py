"""The planner: `plan(inventory, usage, policy, now) -> Plan`, a pure function.

Every object gets exactly one verdict with a machine-readable reason. Images are decided by
the table of image rules (`rules.IMAGE_TABLE`), whose order is their precedence: the phases
below run over it, and the first rule that applies decides. Deletions are in execution order,
and each carries the bytes it frees given the ones before it, so they add up to the plan's
prediction exactly; shared layers are counted once.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import attrgetter
from typing import NamedTuple

from reclaim import collector
from reclaim.accounting import Accounting, FreeingSet
from reclaim.lastuse import LastUse, Usage
from reclaim.model import Container, ContainerState, EngineInfo, Image, Inventory, Volume
from reclaim.policy.rules import (
    CLASSIFY_RULES,
    FALLBACK_RULES,
    SPACE_RULES,
    ImageFacts,
    ImagePolicy,
    ImageTest,
    Policy,
    Space,
    SpaceTarget,
    ago,
    labels_match,
)
from reclaim.policy.rules import IMAGE_RULES as IMAGE_RULES  # the rules a plan's reasons name
from reclaim.units import human_bytes


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
    with collector.paused():
        return _plan(inventory, usage, policy, now, filesystem=filesystem,
                     volume_since=volume_since, layer_inodes=layer_inodes,
                     accounting=accounting)


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
#
# The phases of an image plan, each a function of what the ones before it found, in the order
# `_images` runs them: detect (who uses what, and since when), classify (the table's
# classifying rows), delete by age (its deleting rows), the space need (its space rows), evict
# (least recently used first until that need is met), and keep the rest (its fallback rows).


def detect_images(inventory: Inventory, usage: Mapping[str, Usage],
                  removed: Mapping[str, str], now: datetime) -> ImageFacts:
    """What the image rules decide on. `removed`: the containers this plan removes before its
    images (id -> name). They make no image in use; an image only they use is `held` by them,
    is decided like any unused one, and its reason says so."""
    images = sorted(inventory.images, key=_by_id)
    users: dict[str, list[str]] = {}
    held: dict[str, list[str]] = {}
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
    # An image the ledger has no record of arrived now, as far as anyone knows: unknown is
    # never "old".
    arrived_now = LastUse(now, "first-seen", "")
    bases: dict[str, LastUse] = {}
    ages: dict[str, float] = {}
    for image in images:
        record = usage_of(image.id)
        basis = bases[image.id] = arrived_now if record is None else record.age_basis
        ages[image.id] = (now - basis.when).total_seconds()
    return ImageFacts(now, images, users, held, bases, ages)


class Classified(NamedTuple):
    kept: list[Kept]  # what a keeping row decided, by image id
    deleted: dict[str, list[tuple[Image, str]]]  # deleting row -> (image, detail), table order
    eligible: list[Image]  # what no row decided: the space rows' to take, by image id


def classify(facts: ImageFacts, rules: ImagePolicy) -> Classified:
    """Each image gets the first classifying row of the table that applies to it; rows the
    policy does not use are left out before the first image."""
    kept: list[Kept] = []
    deleted: dict[str, list[tuple[Image, str]]] = {
        r.name: [] for r in CLASSIFY_RULES if r.verdict == "delete"}
    tests: list[tuple[str, ImageTest, list[tuple[Image, str]] | None]] = []
    for rule in CLASSIFY_RULES:
        test = rule.bind(rules, facts)
        if test is not None:
            tests.append((rule.name, test, deleted.get(rule.name)))
    eligible: list[Image] = []
    reason = Reason("", "")
    for image in facts.images:
        for name, test, into in tests:
            detail = test(image)
            if detail is not None:
                if into is None:
                    # A rule that says the same of every image shares one reason among them.
                    if detail is not reason.detail or name is not reason.rule:
                        reason = Reason(name, detail)
                    kept.append(Kept("image", image.id, reason))
                else:
                    into.append((image, detail))
                break
        else:
            eligible.append(image)
    return Classified(kept, deleted, eligible)


def delete_by_age(deleted: Mapping[str, list[tuple[Image, str]]], facts: ImageFacts,
                  freeing: FreeingSet) -> list[Action]:
    """The deleting rows' images, row by row in the table's order and oldest first within a
    row, each with the bytes it frees given the ones before it (`freeing` takes them in)."""
    bases = facts.bases

    def oldest_first(entry: tuple[Image, str]) -> tuple[datetime, str]:
        return bases[entry[0].id].when, entry[0].id

    actions: list[Action] = []
    for rule, found in deleted.items():
        for image, detail in sorted(found, key=oldest_first):
            actions.append(Action("image", image.id, image.tags, freeing.add(image.id),
                                  Reason(rule, detail), bases[image.id].when))
    return actions


def space_need(rules: ImagePolicy, space: Space) -> SpaceTarget:
    """What the space rows ask to free beyond the deletions already chosen, which count
    towards them: bytes by the largest byte need (the earlier row on a tie), inodes by the
    largest inode need, with every target's detail and warning in the table's order."""
    target = SpaceTarget()
    for rule in SPACE_RULES:
        need = rule.need(rules, space)
        if need is None:
            continue
        if need.warning:
            target.warnings.append(need.warning)
        if need.detail:
            target.details.append(need.detail)
            target.configured = True
        if need.bytes > target.bytes_need:
            target.bytes_rule, target.bytes_need = rule.name, need.bytes
        if need.inodes > target.inodes_need:
            target.inodes_rule, target.inodes_need = rule.name, need.inodes
    return target


def evict(freeing: FreeingSet, lru: list[str], need: int, need_inodes: int
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


def evict_lru(target: SpaceTarget, eligible: list[Image], facts: ImageFacts,
              freeing: FreeingSet) -> tuple[list[Action], list[str]]:
    """The space rows' deletions among the eligible images (`evict`), each with the bytes it
    frees after the deletions already chosen (`freeing`, left as it was) and the ones before
    it; and a warning for each need still unmet after all of them."""
    bases, ages = facts.bases, facts.ages
    lru = sorted(eligible, key=lambda i: (bases[i.id].when, i.id))
    chosen, trial = evict(freeing, [i.id for i in lru], target.bytes_need, target.inodes_need)
    if trial is None:
        # Some image was taken out again: what each frees is worked out anew, in order.
        trial = freeing.copy()
        for image_id in chosen:
            trial.add(image_id)
    tags = {i.id: i.tags for i in eligible}
    detail = target.detail
    frees_inodes = target.inodes_need > 0
    actions: list[Action] = []
    got_bytes = got_inodes = 0
    for image_id in chosen:
        # Each image is put down to the target that still asked for more when it was chosen:
        # bytes first, then inodes.
        rule = target.bytes_rule if got_bytes < target.bytes_need else target.inodes_rule
        basis = bases[image_id]
        freed, inodes = trial.freed_when_added(image_id)
        got_bytes += freed
        got_inodes += inodes
        # The plan's actions carry bytes; the inodes each frees are said in the reason.
        frees = f"; frees {inodes:,} inodes" if frees_inodes else ""
        reason = Reason(rule, f"least recently used ({basis.source} {ago(ages[image_id])} "
                        f"ago); {detail}{frees}")
        actions.append(Action("image", image_id, tags[image_id], freed, reason, basis.when))
    warnings: list[str] = []
    bytes_left = target.bytes_need - got_bytes
    if bytes_left > 0:
        warnings.append(
            f"{target.bytes_rule}: {human_bytes(bytes_left)} still over the target after "
            "every image the rules allow; the rest are kept (in use, kept by pattern, label "
            "or keep_latest, or younger than min_age)"
        )
    inodes_left = target.inodes_need - got_inodes
    if frees_inodes and inodes_left > 0:
        warnings.append(
            f"{target.inodes_rule}: {inodes_left:,} inodes still over the target after every "
            "image the rules allow; the rest are kept (in use, kept by pattern, label or "
            "keep_latest, or younger than min_age)"
        )
    return actions, warnings


def keep_the_rest(images: list[Image], facts: ImageFacts, rules: ImagePolicy,
                  target: SpaceTarget) -> list[Kept]:
    """The images no classifying row decided and no target took: each gets the first
    fallback row of the table that applies to it."""
    tests = [(rule.name, test) for rule in FALLBACK_RULES
             if (test := rule.bind(rules, facts, target)) is not None]
    kept: list[Kept] = []
    reason = Reason("", "")
    for image in images:
        for name, test in tests:
            detail = test(image)
            if detail is not None:
                if detail is not reason.detail or name is not reason.rule:
                    reason = Reason(name, detail)
                kept.append(Kept("image", image.id, reason))
                break
        else:
            raise RuntimeError(f"no image rule decides {image.id}")
    return kept


def _images(
    inventory: Inventory,
    usage: Mapping[str, Usage],
    policy: Policy,
    now: datetime,
    filesystem: FilesystemUsage | None,
    accounting: Accounting,
    removed: Mapping[str, str],
) -> tuple[list[Action], list[Kept], list[str]]:
    """Every image's verdict, by the phases above. `removed`: the containers this plan
    removes before its images (id -> name)."""
    rules = policy.images
    facts = detect_images(inventory, usage, removed, now)
    kept, deleted, eligible = classify(facts, rules)
    freeing = accounting.freeing()
    actions = delete_by_age(deleted, facts, freeing)
    target = space_need(rules, Space(accounting.total_bytes(), freeing.freed,
                                     freeing.freed_inodes, filesystem))
    warnings = list(target.warnings)
    rest = eligible
    if target.evicts:
        evicted, unmet = evict_lru(target, eligible, facts, freeing)
        actions += evicted
        warnings += unmet
        if target.inodes_need > 0:
            uncounted = accounting.uncounted_layers(
                [a.id for a in actions] + [i.id for i in eligible])
            if uncounted:
                warnings.append(
                    f"{target.inodes_rule}: the runtime gave no inode count for {uncounted:,} "
                    "layer(s) of the images considered; they count as 0 freed inodes, so the "
                    "freed inodes are underestimated"
                )
        taken = {a.id for a in evicted}
        rest = [i for i in eligible if i.id not in taken]
    kept += keep_the_rest(rest, facts, rules, target)
    held = facts.held
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
                                             f"{ago((now - since).total_seconds())} ago"),
                                      since))
            else:
                keep("exited-age", f"finished {ago((now - since).total_seconds())} ago, within "
                     f"exited_after {ago(rules.exited_after)}")
        else:  # created, never started
            if rules.created_after is None or c.created is None:
                keep("created-age", "no containers.created_after, or no creation time")
            elif (now - c.created).total_seconds() > rules.created_after:
                actions.append(Action("container", c.id, (c.name,), c.disk_bytes or 0,
                                      Reason("created-age", "created "
                                             f"{ago((now - c.created).total_seconds())} ago, "
                                             "never started"), c.created))
            else:
                keep("created-age", f"created {ago((now - c.created).total_seconds())} ago, "
                     f"within created_after {ago(rules.created_after)}")
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
                 f"dangling_after {ago(rules.dangling_after)}")
        else:
            dangling_since = since.get(v.name, now)
            age = (now - dangling_since).total_seconds()
            assert rules.dangling_after is not None
            if age > rules.dangling_after:
                actions.append(Action("volume", v.name, (), _volume_bytes(v) or 0,
                                      Reason("dangling-volume", f"dangling {ago(age)}"),
                                      dangling_since, v.instance))
            else:
                keep("dangling-volume", f"dangling {ago(age)}, within dangling_after "
                     f"{ago(rules.dangling_after)}")
    return actions, kept
