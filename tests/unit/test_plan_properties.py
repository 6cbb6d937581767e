"""The planner's safety rules and accounting, on random inventories, ledgers and policies."""

from __future__ import annotations

import fnmatch
import hashlib
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from reclaim.accounting import Accounting
from reclaim.lastuse import LastUse, Usage
from reclaim.model import Container, ContainerState
from reclaim.policy.plan import IMAGE_RULES, Plan, plan
from reclaim.policy.rules import DAY, ImagePolicy, Policy
from reclaim.runtimes.fake import FakeRuntime
from reclaim.units import Size

NOW = datetime(2026, 6, 1, tzinfo=UTC)
LAYER_SIZES = [(i + 1) * 1000 for i in range(10)]


def iid(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"img{n}".encode()).hexdigest()


@st.composite
def worlds(draw: st.DrawFn) -> tuple[FakeRuntime, dict[str, Usage], Policy]:
    fake = FakeRuntime()
    n_images = draw(st.integers(1, 12))
    usage: dict[str, Usage] = {}
    for n in range(n_images):
        layers = draw(st.lists(st.integers(0, 9), min_size=1, max_size=4))
        tags = [f"repo{draw(st.integers(0, 2))}:t{n}"] if draw(st.booleans()) else []
        labels = {"keep": "yes"} if draw(st.integers(0, 5)) == 0 else {}
        fake.add_image(iid(n), tags=tags, labels=labels,
                       layers=[(f"sha256:{x:064x}", LAYER_SIZES[x]) for x in layers])
        first = NOW - timedelta(days=draw(st.integers(0, 60)))
        used_days = draw(st.one_of(st.none(), st.integers(0, 60)))
        last = None if used_days is None else LastUse(NOW - timedelta(days=used_days), "event", "")
        usage[iid(n)] = Usage(iid(n), first, last)
    for k, n in enumerate(draw(st.lists(st.integers(0, n_images - 1), max_size=4))):
        state = draw(st.sampled_from(list(ContainerState)))
        fake.add_container(Container(f"{k:064x}", f"c{k}", iid(n), state, created=NOW))
    quota = draw(st.one_of(st.none(), st.integers(0, 60_000)))
    policy = Policy(images=ImagePolicy(
        min_age=draw(st.sampled_from([0.0, DAY, 7 * DAY])),
        max_age=draw(st.sampled_from([None, 30 * DAY, 45 * DAY])),
        quota=None if quota is None else Size(bytes=quota),
        keep=tuple(draw(st.lists(st.sampled_from(["repo0:*", "repo1:t1", "nomatch"]),
                                 max_size=2))),
        keep_labels=("keep",) if draw(st.booleans()) else (),
        keep_latest=draw(st.integers(0, 2)),
        dangling=draw(st.sampled_from(["like-others", "after-min-age"])),
    ))
    return fake, usage, policy


def image_actions(p: Plan) -> list[str]:
    return [a.id for a in p.actions if a.kind == "image"]


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_safety_rules_and_bookkeeping(world: tuple[FakeRuntime, dict[str, Usage], Policy]) -> None:
    fake, usage, policy = world
    inventory = fake.inventory()
    p = plan(inventory, usage, policy, NOW)
    deleted = image_actions(p)
    used = {c.image_id for c in inventory.containers}
    images = {i.id: i for i in inventory.images}

    for image_id in deleted:
        image = images[image_id]
        assert image_id not in used  # rule 1: whatever the container's state
        assert not any(fnmatch.fnmatchcase(t, k) for t in image.tags for k in policy.images.keep)
        assert not (policy.images.keep_labels and "keep" in image.labels)
        age = (NOW - usage[image_id].age_basis.when).total_seconds()
        assert age >= policy.images.min_age

    # Every image exactly once, each with a known reason.
    kept_images = [k.id for k in p.kept if k.kind == "image"]
    assert sorted(deleted + kept_images) == sorted(images)
    assert all(k.reason.rule in IMAGE_RULES for k in p.kept if k.kind == "image")
    assert all(a.reason.rule in IMAGE_RULES for a in p.actions if a.kind == "image")
    assert all(k.reason.detail for k in p.kept)

    # Bytes: each action what it frees after the ones before; they add up exactly.
    accounting = Accounting(inventory)
    assert p.predicted_bytes == sum(a.bytes for a in p.actions)
    assert sum(a.bytes for a in p.actions if a.kind == "image") == accounting.freed_by(deleted)
    for i in range(len(deleted)):
        step = accounting.freed_by(deleted[: i + 1]) - accounting.freed_by(deleted[:i])
        assert [a for a in p.actions if a.kind == "image"][i].bytes == step


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_quota_is_met_when_the_rules_allow_and_never_overshot(
    world: tuple[FakeRuntime, dict[str, Usage], Policy]
) -> None:
    fake, usage, policy = world
    if policy.images.quota is None:
        return
    inventory = fake.inventory()
    p = plan(inventory, usage, policy, NOW)
    accounting = Accounting(inventory)
    limit = policy.images.quota.bytes or 0
    deleted = image_actions(p)
    after = accounting.total_bytes() - accounting.freed_by(deleted)
    evicted = [a.id for a in p.actions if a.reason.rule == "quota"]
    if after > limit:
        # Over only when every image the rules allow is already gone, and then it says so.
        eligible = [k.id for k in p.kept if k.reason.rule == "not-needed"]
        assert not eligible
        if evicted:
            assert p.warnings
    # No overshoot: without any one evicted image the store would be over the quota.
    for image_id in evicted:
        without = [i for i in deleted if i != image_id]
        assert accounting.total_bytes() - accounting.freed_by(without) > limit


def test_an_image_the_quota_did_not_need_is_kept() -> None:
    """LRU picks the old small image first, then the big one meets the quota alone: the small
    one is kept after all, so nothing is deleted that the target did not need."""
    fake = FakeRuntime()
    fake.add_image(iid(1), tags=["small:1"], layers=[("sha256:" + "1" * 64, 10)])
    fake.add_image(iid(2), tags=["big:1"], layers=[("sha256:" + "2" * 64, 1000)])
    fake.add_image(iid(3), tags=["new:1"], layers=[("sha256:" + "3" * 64, 500)])
    usage = {
        iid(1): Usage(iid(1), NOW - timedelta(days=30), None),
        iid(2): Usage(iid(2), NOW - timedelta(days=20), None),
        iid(3): Usage(iid(3), NOW - timedelta(days=10), None),
    }
    policy = Policy(images=ImagePolicy(quota=Size(bytes=510)))
    p = plan(fake.inventory(), usage, policy, NOW)
    assert image_actions(p) == [iid(2)]
    assert [a.bytes for a in p.actions] == [1000]
    kept = {k.id: k.reason.rule for k in p.kept}
    assert kept[iid(1)] == "not-needed"
    assert kept[iid(3)] == "not-needed"


def test_lru_order_and_unknown_is_never_oldest() -> None:
    fake = FakeRuntime()
    for n in range(3):
        fake.add_image(iid(n), tags=[f"r:{n}"], layers=[(f"sha256:{n + 1:064x}", 100)])
    usage = {
        # Built years ago, never used, but arrived here yesterday: young, not old.
        iid(0): Usage(iid(0), NOW - timedelta(days=2), None),
        iid(1): Usage(iid(1), NOW - timedelta(days=40), LastUse(NOW - timedelta(days=9),
                                                                  "event", "")),
        iid(2): Usage(iid(2), NOW - timedelta(days=40), LastUse(NOW - timedelta(days=5),
                                                                  "container", "")),
    }
    policy = Policy(images=ImagePolicy(quota=Size(bytes=100), min_age=DAY))
    p = plan(fake.inventory(), usage, policy, NOW)
    assert image_actions(p) == [iid(1), iid(2)]
    assert all(a.reason.rule == "quota" for a in p.actions)


def test_containers_are_removed_by_age_and_keep_last_per_image() -> None:
    from reclaim.policy.rules import ContainerPolicy

    fake = FakeRuntime()
    fake.add_image(iid(1), tags=["job:1"], layers=[("sha256:" + "1" * 64, 10)])
    days = [1, 3, 5, 8]
    for n, d in enumerate(days):
        fake.add_container(Container(f"{n:064x}", f"run-{d}d", iid(1), ContainerState.EXITED,
                                     created=NOW - timedelta(days=d + 1),
                                     finished=NOW - timedelta(days=d)))
    fake.add_container(Container("e" * 64, "fresh", iid(1), ContainerState.CREATED,
                                 created=NOW - timedelta(seconds=1)))
    fake.add_container(Container("f" * 64, "live", iid(1), ContainerState.RUNNING,
                                 created=NOW - timedelta(days=30)))
    policy = Policy(containers=ContainerPolicy(exited_after=2 * DAY, created_after=60.0,
                                               keep_last=2))
    p = plan(fake.inventory(), {}, policy, NOW)
    removed = sorted(a.refs[0] for a in p.actions if a.kind == "container")
    # run-1d and run-3d are the two most recent (kept); run-5d and run-8d are old enough.
    assert removed == ["run-5d", "run-8d"]
    reasons = {k.id: k.reason.rule for k in p.kept if k.kind == "container"}
    assert reasons["f" * 64] == "running"
    assert reasons["e" * 64] == "created-age"  # created a second ago: never removed


def test_containers_younger_than_a_minute_cannot_be_asked_for() -> None:
    import pytest

    from reclaim.errors import UsageError
    from reclaim.policy.rules import build_policy

    with pytest.raises(UsageError, match=r"containers\.created_after"):
        build_policy({"containers": {"created_after": "1s"}})
