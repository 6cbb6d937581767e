"""The planner's safety rules and accounting, on random inventories, ledgers and policies."""

from __future__ import annotations

import fnmatch
import hashlib
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from reclaim.accounting import Accounting
from reclaim.lastuse import LastUse, Usage
from reclaim.model import Container, ContainerState, Inventory, Mount, Volume
from reclaim.policy.plan import IMAGE_RULES, Plan, plan, removed_containers
from reclaim.policy.rules import DAY, ContainerPolicy, ImagePolicy, Policy, VolumePolicy
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
    volume_names = [f"{v:064x}" if v % 2 else f"named{v}" for v in range(3)]
    for k, n in enumerate(draw(st.lists(st.integers(0, n_images - 1), max_size=6))):
        state = draw(st.sampled_from(list(ContainerState)))
        created = NOW - timedelta(days=draw(st.integers(0, 5)))
        mounts = tuple(Mount("volume", name, "", f"/v{name}") for name in
                       draw(st.lists(st.sampled_from(volume_names), max_size=2, unique=True)))
        fake.add_container(Container(f"{k:064x}", f"c{k}", iid(n), state, created=created,
                                     finished=created, mounts=mounts,
                                     disk_bytes=draw(st.one_of(st.none(),
                                                               st.integers(0, 5000)))))
    for name in volume_names:
        fake.add_volume(Volume(name, "local", {}, not name.startswith("named"), "", 100, (),
                               disk_bytes=draw(st.one_of(st.none(), st.just(8292)))))
    quota = draw(st.one_of(st.none(), st.integers(0, 60_000)))
    policy = Policy(containers=ContainerPolicy(
        exited_after=draw(st.sampled_from([None, DAY, 3 * DAY])),
        created_after=draw(st.sampled_from([None, DAY])),
        keep_last=draw(st.integers(0, 1)),
    ), volumes=VolumePolicy(
        dangling_after=draw(st.sampled_from([None, DAY])),
        all=draw(st.booleans()),
        with_containers=draw(st.booleans()),
    ), images=ImagePolicy(
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


def measured(fake: FakeRuntime, policy: Policy) -> Inventory:
    """The inventory as the command line plans on it: the removed containers measured."""
    inventory = fake.inventory()
    found = fake.container_bytes(removed_containers(inventory, policy, NOW))
    return inventory._replace(containers=tuple(
        c._replace(disk_bytes=found.get(c.id)) for c in inventory.containers))


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_safety_rules_and_bookkeeping(world: tuple[FakeRuntime, dict[str, Usage], Policy]) -> None:
    fake, usage, policy = world
    inventory = measured(fake, policy)
    p = plan(inventory, usage, policy, NOW, volume_since={
        v.name: NOW - timedelta(days=2) for v in inventory.volumes})
    deleted = image_actions(p)
    removed = [a.id for a in p.actions if a.kind == "container"]
    kept_containers = [c for c in inventory.containers if c.id not in removed]
    used = {c.image_id for c in kept_containers}
    images = {i.id: i for i in inventory.images}
    position = {(a.kind, a.id): n for n, a in enumerate(p.actions)}

    # Only stopped containers go, and every one of them before anything else.
    assert all(c.state.stopped for c in inventory.containers if c.id in removed)
    assert [a.kind for a in p.actions[:len(removed)]] == ["container"] * len(removed)
    for a in p.actions:
        if a.kind == "container":
            assert a.bytes == (inventory.containers[[c.id for c in inventory.containers]
                                                    .index(a.id)].disk_bytes or 0)

    for image_id in deleted:
        image = images[image_id]
        # Rule 1, whatever the container's state: every container that uses an image the
        # plan deletes is removed by an earlier action of the same plan.
        assert image_id not in used
        for c in inventory.containers:
            if c.image_id == image_id:
                assert position[("container", c.id)] < position[("image", image_id)]
        assert not any(fnmatch.fnmatchcase(t, k) for t in image.tags for k in policy.images.keep)
        assert not (policy.images.keep_labels and "keep" in image.labels)
        age = (NOW - usage[image_id].age_basis.when).total_seconds()
        assert age >= policy.images.min_age

    # An image a kept container uses is kept as in use; no other is.
    in_use = {k.id for k in p.kept if k.kind == "image" and k.reason.rule == "in-use"}
    assert in_use == used & set(images)

    # Every image exactly once, each with a known reason.
    kept_images = [k.id for k in p.kept if k.kind == "image"]
    assert sorted(deleted + kept_images) == sorted(images)
    assert all(k.reason.rule in IMAGE_RULES for k in p.kept if k.kind == "image")
    assert all(a.reason.rule in IMAGE_RULES for a in p.actions if a.kind == "image")
    assert all(k.reason.detail for k in p.kept)

    # Volumes: one a kept container mounts never goes; one that goes is mounted only by
    # containers removed before it, and goes with them only under with_containers (then
    # anonymous) - otherwise it waits its dangling_after from their removal.
    for a in p.actions:
        if a.kind != "volume":
            continue
        mounted_by = [c for c in inventory.containers
                      if any(m.type == "volume" and m.name == a.id for m in c.mounts)]
        assert all(c.id in removed for c in mounted_by)
        assert all(position[("container", c.id)] < position[("volume", a.id)]
                   for c in mounted_by)
        if mounted_by:
            assert a.reason.rule == "with-container"
            assert policy.volumes.with_containers and not a.id.startswith("named")
            assert "which this plan removes" in a.reason.detail
        else:
            assert a.reason.rule == "dangling-volume"

    # Bytes: each action what it frees after the ones before; they add up exactly, on the
    # store as it is once the plan's containers are gone.
    accounting = Accounting(inventory._replace(containers=tuple(kept_containers)))
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
    removed = {a.id for a in p.actions if a.kind == "container"}
    accounting = Accounting(inventory._replace(containers=tuple(
        c for c in inventory.containers if c.id not in removed)))
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
