"""Containers and volumes in a plan: the bytes their removal frees, and what is unknown said so."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from reclaim.lastuse import Usage
from reclaim.model import Container, ContainerState, Mount, Volume
from reclaim.policy.plan import Plan, plan, removed_containers
from reclaim.policy.rules import DAY, ContainerPolicy, ImagePolicy, Policy, VolumePolicy
from reclaim.runtimes.fake import FakeRuntime
from reclaim.units import Size

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=10)


def iid(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"img{n}".encode()).hexdigest()


def cid(n: int) -> str:
    return f"{n:064x}"


def exited(n: int, image: str, *, disk: int | None = 70_000,
           volumes: tuple[str, ...] = ()) -> Container:
    return Container(cid(n), f"c{n}", image, ContainerState.EXITED, created=OLD,
                     finished=OLD, disk_bytes=disk,
                     mounts=tuple(Mount("volume", v, "", f"/v{k}") for k, v in enumerate(volumes)))


def volume(name: str, *, anonymous: bool = True, data: int | None = 1000,
           disk: int | None = 9192) -> Volume:
    return Volume(name=name, driver="local", labels={}, anonymous=anonymous, mountpoint="",
                  bytes=data, used_by=(), disk_bytes=disk)


AGGRESSIVE = Policy(images=ImagePolicy(min_age=0.0, quota=Size(bytes=0)),
                    containers=ContainerPolicy(exited_after=60.0, created_after=60.0),
                    volumes=VolumePolicy(dangling_after=DAY))


def measured(fake: FakeRuntime, policy: Policy) -> Plan:
    """A plan as the command line makes it: the removed containers measured first."""
    inventory = fake.inventory()
    found = fake.container_bytes(removed_containers(inventory, policy, NOW))
    inventory = inventory._replace(containers=tuple(
        c._replace(disk_bytes=found.get(c.id)) for c in inventory.containers))
    usage = {i.id: Usage(i.id, OLD, None) for i in inventory.images}
    return plan(inventory, usage, policy, NOW, volume_since={v.name: OLD for v in
                                                             inventory.volumes})


def test_a_removed_container_frees_its_measured_storage() -> None:
    fake = FakeRuntime()
    fake.add_image(iid(1), tags=["app:1"], layers=[("sha256:" + "1" * 64, 100)])
    fake.add_container(exited(1, iid(1), disk=70_123))
    fake.add_volume(volume("v" * 64))
    p = measured(fake, AGGRESSIVE)
    bytes_of = {a.id: a.bytes for a in p.actions}
    assert bytes_of[cid(1)] == 70_123
    assert bytes_of["v" * 64] == 9192  # its directories too, not only its files' 1000
    assert not any("unknown" in w for w in p.warnings)


def test_unknown_storage_is_said_so_not_claimed_to_free_nothing() -> None:
    fake = FakeRuntime()
    fake.add_image(iid(1), tags=["app:1"], layers=[("sha256:" + "1" * 64, 100)])
    fake.add_container(exited(1, iid(1), disk=None))
    fake.add_container(exited(2, iid(1), disk=None))
    fake.add_volume(volume("v" * 64, data=None, disk=None))
    fake.add_volume(volume("w" * 64, data=500, disk=None))  # the engine's figure is used
    p = measured(fake, AGGRESSIVE)
    bytes_of = {a.id: a.bytes for a in p.actions}
    assert bytes_of[cid(1)] == bytes_of[cid(2)] == bytes_of["v" * 64] == 0
    assert bytes_of["w" * 64] == 500
    unknown = [w for w in p.warnings if "unknown" in w]
    assert len(unknown) == 2
    assert "2 container(s)" in unknown[0] and "1 volume(s)" in unknown[1]
    assert p.predicted_bytes == sum(a.bytes for a in p.actions)


# -- one pass converges: what the plan's own containers held goes in the same plan ----------


def _world(*, with_containers: bool = False) -> FakeRuntime:
    """app:1 is used only by an old exited container; app:2 by an old exited one and a
    running one; both share a base layer with nothing else. The exited containers mount an
    anonymous volume, a named one, and a labelled anonymous one."""
    fake = FakeRuntime()
    base = ("sha256:" + "b" * 64, 1000)
    fake.add_image(iid(1), tags=["app:1"], layers=[base, ("sha256:" + "1" * 64, 100)])
    fake.add_image(iid(2), tags=["app:2"], layers=[base, ("sha256:" + "2" * 64, 200)])
    fake.add_container(exited(1, iid(1), volumes=("a" * 64, "named", "k" * 64)))
    fake.add_container(exited(2, iid(2)))
    fake.add_container(Container(cid(3), "live", iid(2), ContainerState.RUNNING, created=OLD))
    fake.add_volume(volume("a" * 64))
    fake.add_volume(volume("named", anonymous=False))
    fake.add_volume(volume("k" * 64)._replace(labels={"keep": "1"}))
    return fake


def _policy(*, with_containers: bool = False) -> Policy:
    return Policy(images=AGGRESSIVE.images, containers=AGGRESSIVE.containers,
                  volumes=VolumePolicy(dangling_after=DAY, all=True, keep_labels=("keep",),
                                       with_containers=with_containers))


def test_an_image_only_removed_containers_use_goes_after_them() -> None:
    p = measured(_world(), _policy())
    order = [(a.kind, a.id) for a in p.actions]
    assert order[:2] == [("container", cid(1)), ("container", cid(2))]
    assert ("image", iid(1)) in order[2:]
    action = next(a for a in p.actions if a.id == iid(1))
    assert action.reason.rule == "quota"
    assert action.reason.detail.endswith("in use only by container c1, which this plan removes")
    # Its own layer only: the base is still pinned by app:2, which the running one uses.
    assert action.bytes == 100
    kept = {k.id: k.reason for k in p.kept}
    assert kept[iid(2)].rule == "in-use"
    assert kept[iid(2)].detail == "used by 1 container(s): live"


def test_a_shared_layer_is_freed_once_its_last_user_goes() -> None:
    fake = _world()
    del fake.containers[cid(3)]  # no running user left: both images go, the base once
    p = measured(fake, _policy())
    image_bytes = sum(a.bytes for a in p.actions if a.kind == "image")
    assert image_bytes == 1000 + 100 + 200
    assert p.predicted_bytes == image_bytes + 2 * 70_000


def test_a_volume_only_removed_containers_mount_waits_its_dangling_after() -> None:
    p = measured(_world(), _policy())
    assert not [a for a in p.actions if a.kind == "volume"]
    kept = {k.id: k.reason for k in p.kept if k.kind == "volume"}
    assert kept["a" * 64].rule == "dangling-volume"
    assert kept["a" * 64].detail == ("in use only by container c1, which this plan removes: "
                                     "dangling from then, it waits dangling_after 1.0d")
    assert kept["named"].rule == "dangling-volume"
    assert kept["k" * 64].rule == "keep-label"


def test_with_containers_removes_their_anonymous_volumes_with_them() -> None:
    p = measured(_world(), _policy(with_containers=True))
    volumes = [a for a in p.actions if a.kind == "volume"]
    assert [a.id for a in volumes] == ["a" * 64]  # not the named one, nor the labelled one
    [action] = volumes
    assert action.reason.rule == "with-container"
    assert action.reason.detail == ("anonymous volume in use only by container c1, which "
                                    "this plan removes (volumes.with_containers)")
    assert action.bytes == 9192
    positions = {a.id: n for n, a in enumerate(p.actions)}
    assert positions[cid(1)] < positions["a" * 64]
    kept = {k.id: k.reason.rule for k in p.kept if k.kind == "volume"}
    assert kept == {"named": "dangling-volume", "k" * 64: "keep-label"}


def test_with_containers_alone_needs_no_dangling_after() -> None:
    policy = Policy(containers=AGGRESSIVE.containers,
                    volumes=VolumePolicy(with_containers=True, keep_labels=("keep",)))
    p = measured(_world(), policy)
    assert [a.id for a in p.actions if a.kind == "volume"] == ["a" * 64]
    kept = {k.id: k.reason.rule for k in p.kept if k.kind == "volume"}
    assert kept == {"named": "off", "k" * 64: "keep-label"}


def test_a_volume_a_kept_container_mounts_stays_in_use() -> None:
    fake = _world()
    fake.add_container(Container(cid(4), "live2", iid(1), ContainerState.RUNNING, created=OLD,
                                 mounts=(Mount("volume", "a" * 64, "", "/a"),)))
    p = measured(fake, _policy(with_containers=True))
    assert "a" * 64 not in {a.id for a in p.actions}
    assert iid(1) not in {a.id for a in p.actions}
    kept = {k.id: k.reason for k in p.kept}
    assert kept["a" * 64] == ("in-use", "mounted by 1 container(s)")
    assert kept[iid(1)].rule == "in-use"


def test_the_layers_to_count_include_those_the_removed_containers_pinned() -> None:
    from reclaim.policy.plan import freeable_layers

    inventory = _world().inventory()
    before = set(freeable_layers(inventory))
    after = set(freeable_layers(inventory, [cid(1)]))
    image = {i.id: i for i in inventory.images}[iid(1)]
    assert image.chain[1] not in before
    assert after - before == {image.chain[1]}  # the base is still pinned by app:2


def test_with_containers_is_a_setting_and_a_flag() -> None:
    import pytest

    from reclaim.errors import UsageError
    from reclaim.policy.rules import build_policy

    assert build_policy({"volumes": {"with_containers": True}}).volumes.with_containers
    assert build_policy({"volumes": {"with_containers": "true"}}).volumes.with_containers
    assert not build_policy({}).volumes.with_containers
    with pytest.raises(UsageError, match=r"volumes\.with_containers"):
        build_policy({"volumes": {"with_containers": "sometimes"}})
