"""Apply of a plan that removes containers and then the images and volumes they alone held: the
re-check against the "before" inventory, which still lists those containers, ignores exactly
the containers this apply removed, and no other."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reclaim.apply import ApplyResult, apply_actions
from reclaim.model import Container, ContainerState, Mount, Volume
from reclaim.policy.plan import Plan, plan
from reclaim.policy.rules import DAY, ContainerPolicy, ImagePolicy, Policy, VolumePolicy
from reclaim.runtimes.fake import FakeRuntime
from reclaim.state.journal import Journal
from reclaim.state.store import Store
from reclaim.units import Size

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=10)
IMAGE = "sha256:" + hashlib.sha256(b"job").hexdigest()
JOB = "a" * 64
VOLUME = "v" * 64
POLICY = Policy(images=ImagePolicy(min_age=0, quota=Size(bytes=0)),
                containers=ContainerPolicy(exited_after=DAY),
                volumes=VolumePolicy(with_containers=True))


def _world() -> FakeRuntime:
    fake = FakeRuntime()
    fake.add_image(IMAGE, tags=["job:1", "job:2"], layers=[("sha256:" + "1" * 64, 100)])
    fake.add_container(Container(JOB, "job", IMAGE, ContainerState.EXITED, OLD, finished=OLD,
                                 mounts=(Mount("volume", VOLUME, "", "/v"),), disk_bytes=5000))
    fake.add_volume(Volume(VOLUME, "local", {}, True, "", 10, (), disk_bytes=8202))
    return fake


def _plan(fake: FakeRuntime) -> Plan:
    made = plan(fake.inventory(), {}, POLICY, NOW)
    assert [(a.kind, a.id) for a in made.actions] == [
        ("container", JOB), ("image", IMAGE), ("volume", VOLUME)]
    return made


def _apply(fake: FakeRuntime, made: Plan, tmp_path: Path) -> ApplyResult:
    """Re-checked against an inventory taken now, as apply of a plan file does."""
    journal = Journal(Store(tmp_path / "j.db"))
    return apply_actions(fake, made.actions, fake.inventory(), {}, journal, now=lambda: NOW,
                         plan_created=NOW)


def test_one_apply_removes_the_container_then_what_it_alone_held(tmp_path: Path) -> None:
    fake = _world()
    result = _apply(fake, _plan(fake), tmp_path)
    assert [(a.kind, a.id) for a in result.deleted] == [
        ("container", JOB), ("image", IMAGE), ("volume", VOLUME)]
    assert not result.skipped and not result.failed
    assert not fake.images and not fake.containers and not fake.volumes


def test_a_container_the_apply_could_not_remove_still_holds_them(tmp_path: Path) -> None:
    fake = _world()
    made = _plan(fake)
    # Started again after the plan: the container's own re-check skips it, and then its
    # image and volume are still in use.
    fake.set_state(JOB, ContainerState.RUNNING)
    result = _apply(fake, made, tmp_path)
    assert not result.deleted
    skipped = {a.id: why for a, why in result.skipped}
    assert skipped[JOB] == "now running"
    assert skipped[IMAGE] == "now used by container job"
    assert skipped[VOLUME] == "now used by a container"
    assert IMAGE in fake.images and fake.images[IMAGE].tags == ("job:1", "job:2")


def test_another_container_in_the_inventory_still_holds_the_image(tmp_path: Path) -> None:
    """A container the plan did not remove, listed in the inventory apply checks against
    (made after the plan, e.g. when a plan file is applied later), keeps the image."""
    fake = _world()
    made = _plan(fake)
    fake.add_container(Container("b" * 64, "other", IMAGE, ContainerState.CREATED, NOW,
                                 mounts=(Mount("volume", VOLUME, "", "/v"),)))
    result = _apply(fake, made, tmp_path)
    assert [a.id for a in result.deleted] == [JOB]
    skipped = {a.id: why for a, why in result.skipped}
    assert skipped[IMAGE] == "now used by container other"
    assert skipped[VOLUME] == "now used by a container"
    assert fake.images[IMAGE].tags == ("job:1", "job:2")


def test_a_container_created_during_the_apply_saves_the_image(tmp_path: Path) -> None:
    """Not in the inventory at all: the engine's list of the image's users, asked before
    each tag, stops the image."""

    class Racing(FakeRuntime):
        def remove_container(self, container_id: str) -> None:
            super().remove_container(container_id)
            self.add_container(Container("c" * 64, "late", IMAGE, ContainerState.CREATED, NOW))

    fake = Racing()
    fake.images, fake.layers, fake._tag_owner = (dict(_world().images), dict(_world().layers),
                                                 {"job:1": IMAGE, "job:2": IMAGE})
    fake.add_container(Container(JOB, "job", IMAGE, ContainerState.EXITED, OLD, finished=OLD))
    made = plan(fake.inventory(), {}, POLICY, NOW)
    result = _apply(fake, made, tmp_path)
    assert [a.id for a in result.deleted] == [JOB]
    assert IMAGE in fake.images and fake.images[IMAGE].tags == ("job:1", "job:2")
