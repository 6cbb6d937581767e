"""The image planner's phases, each alone, on a small inventory of the stateful fake engine,
and the table of image rules they run over: its order is the precedence, and its names are
exactly the rules a plan can give."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from reclaim.accounting import Accounting
from reclaim.errors import EXIT_USAGE, PolicyError, UsageError
from reclaim.lastuse import LastUse, Usage
from reclaim.model import Container, ContainerState
from reclaim.policy.plan import (
    Classified,
    FilesystemUsage,
    classify,
    delete_by_age,
    detect_images,
    evict,
    evict_lru,
    keep_the_rest,
    plan,
    space_need,
)
from reclaim.policy.rules import (
    CLASSIFY_RULES,
    DAY,
    FALLBACK_RULES,
    IMAGE_RULES,
    IMAGE_TABLE,
    SPACE_RULES,
    ImagePolicy,
    ImageRule,
    InodeCount,
    Policy,
    Space,
    SpaceTarget,
    check_table,
    latest_tags,
)
from reclaim.runtimes.fake import FakeRuntime
from reclaim.units import Size

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def iid(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"phase-image-{n}".encode()).hexdigest()


def layer(name: str) -> str:
    return "sha256:" + hashlib.sha256(f"phase-layer-{name}".encode()).hexdigest()


BASE = (layer("base"), 1000)


def world() -> tuple[FakeRuntime, dict[str, Usage]]:
    """Seven images on one base layer (1,000 bytes), each with a layer of its own of n * 100
    bytes; 1 and 8 also share an `old` layer of 500 bytes. Last used (days ago): 1 `app:1`
    40, 2 `app:2` 20, 3 `app:3` 5, 4 untagged 10, 5 `db:1` 50 and in use by a running
    container, 6 `web:1` 15, 8 `app:8` 60. Image 7 `new:1` has no ledger record."""
    fake = FakeRuntime()
    days = {1: 40, 2: 20, 3: 5, 4: 10, 5: 50, 6: 15, 8: 60}
    tags = {1: ["app:1"], 2: ["app:2"], 3: ["app:3"], 4: [], 5: ["db:1"], 6: ["web:1"],
            7: ["new:1"], 8: ["app:8"]}
    for n, image_tags in tags.items():
        layers = [BASE] + ([(layer("old"), 500)] if n in (1, 8) else [])
        fake.add_image(iid(n), tags=image_tags, layers=[*layers, (layer(f"own{n}"), n * 100)],
                       inodes=[10] * (len(layers) + 1))
    fake.add_container(Container("c" * 64, "db", iid(5), ContainerState.RUNNING,
                                 created=NOW - timedelta(days=50)))
    usage = {iid(n): Usage(iid(n), NOW - timedelta(days=90),
                           LastUse(NOW - timedelta(days=d), "event", ""))
             for n, d in days.items()}
    return fake, usage


def decided(found: Classified) -> dict[str, str]:
    """Image id -> the rule that decided it, or "eligible"."""
    out = {k.id: k.reason.rule for k in found.kept}
    out.update({image.id: rule for rule, images in found.deleted.items() for image, _ in images})
    out.update({image.id: "eligible" for image in found.eligible})
    return out


# -- the table ------------------------------------------------------------------------------


def test_the_precedence_is_in_use_first_and_keeps_before_deletions() -> None:
    # The order is a safety contract (in use is never overruled; a keep rule always beats an
    # age), pinned here so that moving a row is a visible decision.
    assert IMAGE_RULES == ("in-use", "keep-pattern", "keep-label", "keep-latest", "min-age",
                           "max-age", "dangling", "quota", "watermark", "inode-watermark",
                           "not-needed", "no-rule")
    assert [r.verdict for r in CLASSIFY_RULES] == ["keep"] * 5 + ["delete"] * 2
    assert all(r.verdict == "delete" for r in SPACE_RULES)
    assert all(r.verdict == "keep" for r in FALLBACK_RULES)
    assert all(r.explains for r in IMAGE_TABLE)


def test_the_phases_cover_the_table_row_for_row() -> None:
    assert (*CLASSIFY_RULES, *SPACE_RULES, *FALLBACK_RULES) == IMAGE_TABLE


# The table has 12 rows: 0-6 classify, 7-9 set space targets, 10-11 are fallbacks.
@pytest.mark.parametrize(("broken", "why"), [
    pytest.param(lambda t: (*t, t[0]), "a name appears twice", id="a name twice"),
    pytest.param(lambda t: (t[7], *t[:7], *t[8:]), "then space rows",
                 id="a space row before the classifying rows"),
    pytest.param(lambda t: (*t[:7], *t[8:], t[7]), "then space rows",
                 id="a space row after the fallbacks"),
    pytest.param(lambda t: t[:-2], "the last row is a fallback", id="no fallback row"),
    pytest.param(lambda t: (*t[:7], dataclasses.replace(t[7], verdict="keep"), *t[8:]),
                 "quota cannot keep", id="a space row that keeps"),
    pytest.param(lambda t: (*t[:-1], dataclasses.replace(t[-1], verdict="delete")),
                 "no-rule cannot delete", id="a fallback row that deletes"),
])
def test_a_table_of_the_wrong_shape_is_refused(
        broken: Callable[[tuple[ImageRule, ...]], tuple[ImageRule, ...]], why: str) -> None:
    check_table(IMAGE_TABLE)
    with pytest.raises(ValueError, match=why):
        check_table(broken(IMAGE_TABLE))


def test_the_rules_plans_give_are_exactly_the_table() -> None:
    """Every row of the table is reachable, and no plan gives an image a rule outside it."""
    fake, usage = world()
    fake.add_image(iid(9), tags=["fresh:1"], layers=[BASE, (layer("own9"), 900)],
                   inodes=[10, 10])
    usage[iid(9)] = Usage(iid(9), NOW - timedelta(days=90),
                          LastUse(NOW - timedelta(hours=2), "event", ""))
    fake.add_image(iid(10), tags=["kept:1"], labels={"keep": "yes"},
                   layers=[BASE, (layer("own10"), 1000)], inodes=[10, 10])
    inventory = fake.inventory()
    counts = fake.layer_inodes(list(fake.layers))
    store = Accounting(inventory).total_bytes()
    fs = FilesystemUsage(total_bytes=100_000, used_bytes=90_000, total_inodes=1_000,
                         used_inodes=900)
    images: list[tuple[ImagePolicy, FilesystemUsage | None]] = [
        (ImagePolicy(), None),
        (ImagePolicy(max_age=30 * DAY, keep=("app:2",), keep_labels=("keep",),
                     keep_latest=1, dangling="after-min-age"), None),
        (ImagePolicy(quota=Size(bytes=store - 1)), None),
        (ImagePolicy(high=Size(bytes=89_000), low=Size(bytes=88_999)), fs),
        (ImagePolicy(high_inodes=InodeCount(count=899), low_inodes=InodeCount(count=898)), fs),
    ]
    given: set[str] = set()
    for rules, filesystem in images:
        p = plan(inventory, usage, Policy(images=rules), NOW, filesystem=filesystem,
                 layer_inodes=counts)
        given |= {a.reason.rule for a in p.actions if a.kind == "image"}
        given |= {k.reason.rule for k in p.kept if k.kind == "image"}
    assert given == set(IMAGE_RULES)


# -- detect ---------------------------------------------------------------------------------


def test_detect_counts_age_from_last_use_and_an_unknown_image_from_now() -> None:
    fake, usage = world()
    facts = detect_images(fake.inventory(), usage, {}, NOW)
    assert [i.id for i in facts.images] == sorted(i.id for i in fake.images.values())
    assert facts.ages[iid(1)] == 40 * DAY
    assert facts.bases[iid(1)].source == "event"
    # No record: it arrived now as far as anyone knows, never "old".
    assert facts.bases[iid(7)] == LastUse(NOW, "first-seen", "")
    assert facts.ages[iid(7)] == 0
    assert facts.users == {iid(5): ["db"]}
    assert facts.held == {}


def test_detect_an_image_only_removed_containers_use_is_held_not_in_use() -> None:
    fake, usage = world()
    for n, (image, state) in enumerate([(2, ContainerState.EXITED), (5, ContainerState.EXITED),
                                        (6, ContainerState.EXITED)]):
        fake.add_container(Container(f"{n:064x}", f"job{n}", iid(image), state,
                                     created=NOW - timedelta(days=9)))
    removed = {f"{n:064x}": f"job{n}" for n in range(3)}
    facts = detect_images(fake.inventory(), usage, removed, NOW)
    # Image 5 is still used by the running `db`, which stays: in use, and not held.
    assert facts.users == {iid(5): ["db"]}
    assert facts.held == {iid(2): ["job0"], iid(6): ["job2"]}


# -- classify -------------------------------------------------------------------------------


def test_classify_gives_each_image_the_first_row_that_applies() -> None:
    fake, usage = world()
    facts = detect_images(fake.inventory(), usage, {}, NOW)
    found = classify(facts, ImagePolicy(min_age=7 * DAY, max_age=30 * DAY, keep=("app:2",),
                                        dangling="after-min-age"))
    assert decided(found) == {
        iid(1): "max-age", iid(2): "keep-pattern", iid(3): "min-age", iid(4): "dangling",
        iid(5): "in-use", iid(6): "eligible", iid(7): "min-age", iid(8): "max-age",
    }
    # The deleting rows' images, in the table's order of rows.
    assert list(found.deleted) == ["max-age", "dangling"]
    reasons = {k.id: k.reason.detail for k in found.kept}
    assert reasons[iid(5)] == "used by 1 container(s): db"
    assert reasons[iid(3)] == "event 5.0d ago, younger than min_age 7.0d"
    assert {i.id: detail for i, detail in found.deleted["max-age"]}[iid(1)] == (
        "event 40.0d ago, older than max_age 30.0d")


def test_classify_follows_the_clock() -> None:
    """Time is a parameter: the same image is young, then eligible, then past max_age."""
    fake, usage = world()
    rules = ImagePolicy(min_age=7 * DAY, max_age=30 * DAY)
    seen = []
    for days in (0, 5, 30):
        facts = detect_images(fake.inventory(), usage, {}, NOW + timedelta(days=days))
        seen.append(decided(classify(facts, rules))[iid(3)])  # used 5 days before NOW
    assert seen == ["min-age", "eligible", "max-age"]


def no_containers(fake: FakeRuntime, rules: ImagePolicy) -> ImagePolicy:
    fake.containers.clear()
    return rules


def test_keep_latest_groups_tags_by_repository_registry_ports_included() -> None:
    fake = FakeRuntime()
    usage: dict[str, Usage] = {}
    tags = {1: ["reg:5000/app:1"], 2: ["reg:5000/app:2"], 3: ["reg:5000/app"],
            4: ["app:1", "other/app:9"], 5: ["app:2"]}
    for n, image_tags in tags.items():
        fake.add_image(iid(n), tags=image_tags, layers=[BASE])
        usage[iid(n)] = Usage(iid(n), NOW - timedelta(days=90),
                              LastUse(NOW - timedelta(days=10 * n), "event", ""))
    facts = detect_images(fake.inventory(), usage, {}, NOW)
    # Most recent per repository: reg:5000/app (1, over 2 and over 3, whose tag has no
    # version after the registry's port), app (4 over 5) and other/app (4).
    assert latest_tags(facts.images, facts.bases, 1) == {iid(1), iid(4)}
    assert latest_tags(facts.images, facts.bases, 2) == {iid(1), iid(2), iid(4), iid(5)}
    assert latest_tags(facts.images, facts.bases, 0) == set()


# How to switch each classifying row off, for the precedence test below.
SWITCH_OFF: dict[str, Callable[[FakeRuntime, ImagePolicy], ImagePolicy]] = {
    "in-use": no_containers,
    "keep-pattern": lambda fake, r: dataclasses.replace(r, keep=()),
    "keep-label": lambda fake, r: dataclasses.replace(r, keep_labels=()),
    "keep-latest": lambda fake, r: dataclasses.replace(r, keep_latest=0),
    "min-age": lambda fake, r: dataclasses.replace(r, min_age=0.0),
    "max-age": lambda fake, r: dataclasses.replace(r, max_age=None),
    "dangling": lambda fake, r: dataclasses.replace(r, dangling="like-others"),
}


@pytest.mark.parametrize("tagged", [True, False])
def test_classify_precedence_is_the_tables_order(tagged: bool) -> None:
    """An image that every classifying row applies to (but keep-latest or dangling: an image
    has tags or has none) is decided by the first row of the table; with that row switched
    off, by the next one; and so on down the table until none is left."""
    assert set(SWITCH_OFF) == {r.name for r in CLASSIFY_RULES}
    fake = FakeRuntime()
    image_id = "sha256:" + "ab" * 32
    fake.add_image(image_id, tags=["keep:1"] if tagged else [], labels={"keep": "yes"},
                   layers=[BASE])
    fake.add_container(Container("c" * 64, "user", image_id, ContainerState.EXITED,
                                 created=NOW - timedelta(days=5)))
    usage = {image_id: Usage(image_id, NOW - timedelta(days=90),
                             LastUse(NOW - timedelta(days=5), "event", ""))}
    # Not a valid policy (max_age below min_age, which building one refuses): here both
    # age rows apply at once, to show which of them comes first.
    rules = ImagePolicy(min_age=10 * DAY, max_age=1 * DAY, keep=("keep:*", "abab"),
                        keep_labels=("keep",), keep_latest=1, dangling="after-min-age")
    order = []
    while True:
        facts = detect_images(fake.inventory(), usage, {}, NOW)
        rule = decided(classify(facts, rules))[image_id]
        order.append(rule)
        if rule == "eligible":
            break
        rules = SWITCH_OFF[rule](fake, rules)
    skip = "dangling" if tagged else "keep-latest"
    assert order == [r.name for r in CLASSIFY_RULES if r.name != skip] + ["eligible"]


# -- delete by age --------------------------------------------------------------------------


def test_delete_by_age_goes_row_by_row_oldest_first_with_marginal_bytes() -> None:
    fake, usage = world()
    fake.add_image(iid(11), tags=[], layers=[BASE, (layer("own11"), 1100)])
    usage[iid(11)] = Usage(iid(11), NOW - timedelta(days=90),
                           LastUse(NOW - timedelta(days=12), "event", ""))
    inventory = fake.inventory()
    facts = detect_images(inventory, usage, {}, NOW)
    found = classify(facts, ImagePolicy(min_age=7 * DAY, max_age=30 * DAY,
                                        dangling="after-min-age"))
    accounting = Accounting(inventory)
    freeing = accounting.freeing()
    actions = delete_by_age(found.deleted, facts, freeing)
    # max-age (8 used 60 days ago, then 1 at 40), then dangling (11 at 12, then 4 at 10).
    assert [(a.id, a.reason.rule) for a in actions] == [
        (iid(8), "max-age"), (iid(1), "max-age"), (iid(11), "dangling"), (iid(4), "dangling")]
    # The `old` layer 1 and 8 share goes with the second of them; the base, which the
    # running container's image needs, never goes.
    assert [a.bytes for a in actions] == [800, 100 + 500, 1100, 400]
    assert sum(a.bytes for a in actions) == freeing.freed == accounting.freed_by(
        a.id for a in actions)
    assert [a.basis for a in actions] == [facts.bases[a.id].when for a in actions]


# -- the space need -------------------------------------------------------------------------


def test_a_quota_counts_the_deletions_already_chosen() -> None:
    t = space_need(ImagePolicy(quota=Size(bytes=1000)), Space(5000, 1500, 0, None))
    assert (t.bytes_rule, t.bytes_need, t.inodes_need) == ("quota", 2500, 0)
    assert t.configured and t.evicts and not t.warnings
    met = space_need(ImagePolicy(quota=Size(bytes=1000)), Space(5000, 4500, 0, None))
    assert (met.bytes_need, met.configured, met.evicts) == (0, True, False)
    assert met.detail == "quota 1000 B, image store 500 B"


@pytest.mark.parametrize(("quota", "rule", "need"), [
    (9_900, "watermark", 300),  # quota asks 100, the watermark 300: the larger wins
    (9_700, "quota", 300),  # both ask 300: the earlier row of the table
    (9_000, "quota", 1_000),
])
def test_the_larger_byte_need_decides_and_the_earlier_row_on_a_tie(
        quota: int, rule: str, need: int) -> None:
    fs = FilesystemUsage(total_bytes=20_000, used_bytes=15_000)
    rules = ImagePolicy(quota=Size(bytes=quota), high=Size(bytes=14_900),
                        low=Size(bytes=14_700))
    t = space_need(rules, Space(10_000, 0, 0, fs))
    assert (t.bytes_rule, t.bytes_need) == (rule, need)
    assert len(t.details) == 2 and t.details[0].startswith("quota")


def test_an_inode_watermark_asks_for_inodes_with_what_is_chosen_counted() -> None:
    fs = FilesystemUsage(total_bytes=10**9, used_bytes=0, total_inodes=1_000, used_inodes=950)
    rules = ImagePolicy(high_inodes=InodeCount(percent=90), low_inodes=InodeCount(count=800))
    t = space_need(rules, Space(10_000, 0, 40, fs))
    assert (t.bytes_need, t.inodes_rule, t.inodes_need) == (0, "inode-watermark", 110)
    assert t.detail == ("filesystem 910 inodes used, above high_inodes 900; down to "
                        "low_inodes 800")


def test_targets_that_cannot_be_applied_here_say_so_and_ask_for_nothing() -> None:
    rules = ImagePolicy(high=Size(percent=90), low=Size(percent=80),
                        high_inodes=InodeCount(count=10), low_inodes=InodeCount(count=5))
    remote = space_need(rules, Space(10_000, 0, 0, None))
    assert not remote.configured and not remote.evicts and not remote.details
    assert [w.split(":")[0] for w in remote.warnings] == ["watermark", "inode-watermark"]
    btrfs = space_need(dataclasses.replace(rules, high=None, low=None),
                       Space(10_000, 0, 0, FilesystemUsage(1000, 500)))
    assert btrfs.warnings == ["inode-watermark: the engine's filesystem reports no inode "
                              "counts (e.g. btrfs); the inode watermarks are not applied"]
    assert space_need(ImagePolicy(), Space(10_000, 0, 0, None)) == SpaceTarget()


def test_a_quota_in_percent_without_the_filesystem_is_a_policy_error() -> None:
    with pytest.raises(PolicyError) as info:
        space_need(ImagePolicy(quota=Size(percent=50)), Space(10_000, 0, 0, None))
    assert isinstance(info.value, UsageError)
    assert info.value.exit_code == EXIT_USAGE
    assert info.value.message == "a quota in % needs the filesystem's size"


# -- evict ----------------------------------------------------------------------------------


def eviction_world() -> tuple[Accounting, list[str]]:
    """Three unused images with no layer in common: 100, 1,000 and 10 bytes, in LRU order."""
    fake = FakeRuntime()
    for n, size in ((1, 100), (2, 1000), (3, 10)):
        fake.add_image(iid(n), tags=[f"e:{n}"], layers=[(layer(f"e{n}"), size)],
                       inodes=[n])
    return Accounting(fake.inventory(), fake.layer_inodes(list(fake.layers))), [
        iid(1), iid(2), iid(3)]


def test_evict_takes_the_least_recently_used_until_the_need_is_met_and_no_further() -> None:
    accounting, lru = eviction_world()
    freeing = accounting.freeing()
    assert evict(freeing, lru, 50, 0)[0] == [iid(1)]
    assert evict(freeing, lru, 0, 3)[0] == [iid(1), iid(2)]  # 1 + 2 inodes
    assert evict(freeing, lru, 0, 0)[0] == []
    assert (freeing.freed, freeing.freed_inodes) == (0, 0)  # left as it was


def test_evict_takes_back_what_a_later_image_made_unneeded() -> None:
    accounting, lru = eviction_world()
    # 100 is not enough, 1,100 is; without the first image the second alone frees 1,000.
    chosen, trial = evict(accounting.freeing(), lru, 500, 0)
    assert (chosen, trial) == ([iid(2)], None)


def test_evict_takes_everything_allowed_when_the_need_cannot_be_met() -> None:
    accounting, lru = eviction_world()
    chosen, trial = evict(accounting.freeing(), lru, 10**6, 0)
    assert chosen == lru
    assert trial is not None and trial.freed == 1110


def test_evict_lru_names_each_deletion_after_the_need_it_answered_and_warns_of_the_rest(
) -> None:
    fake, usage = world()
    inventory = fake.inventory()
    facts = detect_images(inventory, usage, {}, NOW)
    eligible = [i for i in facts.images if i.id in (iid(1), iid(2), iid(6))]
    accounting = Accounting(inventory, fake.layer_inodes(list(fake.layers)))
    # 150 bytes: image 1 frees 100, then 2 frees 200; then 35 inodes, which the 10 each of
    # 1, 2 and 6 do not make.
    target = SpaceTarget(bytes_rule="quota", bytes_need=150, inodes_rule="inode-watermark",
                         inodes_need=35, details=["the target"], configured=True)
    freeing = accounting.freeing()
    actions, warnings = evict_lru(target, eligible, facts, freeing)
    assert [(a.id, a.reason.rule, a.bytes) for a in actions] == [
        (iid(1), "quota", 100), (iid(2), "quota", 200), (iid(6), "inode-watermark", 600)]
    assert actions[0].reason.detail == (
        "least recently used (event 40.0d ago); the target; frees 10 inodes")
    assert (freeing.freed, freeing.freed_inodes) == (0, 0)  # left as it was
    assert warnings == [
        "inode-watermark: 5 inodes still over the target after every image the rules allow; "
        "the rest are kept (in use, kept by pattern, label or keep_latest, or younger than "
        "min_age)"]


def test_evict_lru_counts_bytes_anew_when_an_image_was_taken_back() -> None:
    fake, usage = world()
    inventory = fake.inventory()
    facts = detect_images(inventory, usage, {}, NOW)
    eligible = [i for i in facts.images if i.id in (iid(1), iid(2), iid(6))]
    accounting = Accounting(inventory)
    # 550 bytes: 1 (100) and 2 (200) are not enough, 6 (600) is, and alone.
    target = SpaceTarget(bytes_rule="watermark", bytes_need=550, details=["the target"],
                         configured=True)
    actions, warnings = evict_lru(target, eligible, facts, accounting.freeing())
    assert [(a.id, a.reason.rule, a.bytes) for a in actions] == [(iid(6), "watermark", 600)]
    assert actions[0].reason.detail == "least recently used (event 15.0d ago); the target"
    assert warnings == []


# -- keep the rest --------------------------------------------------------------------------


def test_the_rest_is_not_needed_under_a_target_and_no_rule_without_one() -> None:
    fake, usage = world()
    facts = detect_images(fake.inventory(), usage, {}, NOW)
    rest = [i for i in facts.images if i.id == iid(6)]
    evicting = SpaceTarget(bytes_rule="quota", bytes_need=1, details=["quota 1 B"],
                           configured=True)
    met = SpaceTarget(details=["quota 1 GiB"], configured=True)
    rules = ImagePolicy(max_age=30 * DAY)
    assert [k.reason for k in keep_the_rest(rest, facts, rules, evicting)] == [
        ("not-needed", "quota 1 B; met without it")]
    assert [k.reason for k in keep_the_rest(rest, facts, rules, met)] == [
        ("not-needed", "quota 1 GiB")]
    assert [k.reason for k in keep_the_rest(rest, facts, rules, SpaceTarget())] == [
        ("no-rule", "event 15.0d ago, within max_age 30.0d; no quota or watermark is set")]
    assert [k.reason for k in keep_the_rest(rest, facts, ImagePolicy(), SpaceTarget())] == [
        ("no-rule", "no max_age, quota or watermark is set")]
