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
