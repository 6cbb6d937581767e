"""What apply says it freed: the model's figure from inventories before and after (containers
and volumes included), and the filesystem's own, with its caveat, beside it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reclaim.apply import ApplyResult, apply_actions, free_bytes, measured_freed
from reclaim.model import Container, ContainerState, Mount, Volume
from reclaim.policy.plan import plan
from reclaim.policy.rules import ContainerPolicy, ImagePolicy, Policy, VolumePolicy
from reclaim.runtimes.fake import FAKE_ENGINE, FakeRuntime
from reclaim.state.journal import Journal
from reclaim.state.store import Store
from reclaim.units import Size

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=10)
IMAGE = "sha256:" + hashlib.sha256(b"app").hexdigest()


def test_the_models_figure_counts_removed_containers_and_volumes(tmp_path: Path) -> None:
    fake = FakeRuntime()
    fake.add_image(IMAGE, tags=["app:1"], layers=[("sha256:" + "1" * 64, 100)])
    fake.add_container(Container("a" * 64, "gone", IMAGE, ContainerState.EXITED, OLD,
                                 finished=OLD, disk_bytes=70_000))
    fake.add_container(Container("b" * 64, "kept", IMAGE, ContainerState.RUNNING, OLD,
                                 disk_bytes=99_999, mounts=(Mount("volume", "used", "", "/u"),)))
    for name, disk in (("v" * 64, 9_000), ("used", 5_000)):
        fake.add_volume(Volume(name, "local", {}, True, "", disk - 8192, (), disk_bytes=disk))
    before = fake.inventory()
    before = before._replace(containers=tuple(
        c._replace(disk_bytes=70_000) if c.id == "a" * 64 else c for c in before.containers))
    policy = Policy(images=ImagePolicy(min_age=0, quota=Size(bytes=0)),
                    containers=ContainerPolicy(exited_after=60.0),
                    volumes=VolumePolicy(dangling_after=60.0))
    made = plan(before, {}, policy, NOW, volume_since={"v" * 64: OLD})
    assert {a.id for a in made.actions} == {"a" * 64, "v" * 64}
    result = apply_actions(fake, made.actions, before, {}, Journal(Store(tmp_path / "j.db")),
                           now=lambda: NOW, plan_created=NOW)
    assert len(result.deleted) == 2
    assert measured_freed(before, fake.inventory()) == 70_000 + 9_000 == made.predicted_bytes


def test_the_filesystems_figure_is_only_for_a_data_root_on_this_host(tmp_path: Path) -> None:
    local = FAKE_ENGINE._replace(endpoint="unix:///run/docker.sock", data_root=str(tmp_path))
    free = free_bytes(local)
    assert isinstance(free, int) and free > 0
    # Over TCP the data root's path names a directory of another host, whatever is here.
    assert free_bytes(local._replace(endpoint="tcp://10.0.0.2:2376")) is None
    assert free_bytes(local._replace(data_root=str(tmp_path / "absent"))) is None
    assert free_bytes(FAKE_ENGINE) is None


def test_both_figures_are_in_the_json_with_the_caveat() -> None:
    result = ApplyResult(predicted_bytes=100, freed_bytes=100, measured_freed_bytes=4096)
    doc = result.to_json()
    assert doc["freed_bytes"] == 100
    assert doc["measured_freed_bytes"] == 4096
    assert "anything else writing" in doc["caveat"]
    remote = ApplyResult(predicted_bytes=100, freed_bytes=100).to_json()
    assert remote["measured_freed_bytes"] is None
    assert "not on a filesystem of this host" in remote["caveat"]


def test_the_human_output_shows_both(capsys: pytest.CaptureFixture[str]) -> None:
    from reclaim import output

    output.show_apply(ApplyResult(predicted_bytes=2048, freed_bytes=2048,
                                  measured_freed_bytes=3 * 1024 * 1024))
    shown = capsys.readouterr().out
    assert "Predicted 2.0 KiB" in shown and "freed 2.0 KiB by the model" in shown
    assert "3.0 MiB freed (statvfs" in shown and "meanwhile is included" in shown
    output.show_apply(ApplyResult(predicted_bytes=2048, freed_bytes=2048))
    assert "not known here" in capsys.readouterr().out
