"""Apply's last line of defence: a container that appears after the plan was re-validated, while
an image's tags are being removed. The engine removes one of several tags of an image in use
without complaint (the fake does the same), so only apply's own re-check stands in the way."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from reclaim.apply import apply_actions
from reclaim.model import Container, ContainerState
from reclaim.policy.plan import plan
from reclaim.policy.rules import ImagePolicy, Policy
from reclaim.runtimes.fake import FakeRuntime
from reclaim.state.journal import Journal
from reclaim.state.store import Store
from reclaim.units import Size

NOW = datetime(2026, 6, 1, tzinfo=UTC)
IMAGE = "sha256:" + hashlib.sha256(b"multi").hexdigest()
TAGS = ("app:1", "app:2", "app:3")


class RacingFake(FakeRuntime):
    """Starts a container from the image right after its first tag is removed."""

    def remove_image(self, ref: str) -> None:
        super().remove_image(ref)
        if ref == TAGS[0] and "r" * 64 not in self.containers:
            self.add_container(Container("r" * 64, "late", IMAGE, ContainerState.CREATED, NOW))


def test_tags_stop_going_the_moment_a_container_uses_the_image(tmp_path: Path) -> None:
    fake = RacingFake()
    fake.add_image(IMAGE, tags=TAGS, layers=[("sha256:" + "1" * 64, 100)])
    before = fake.inventory()
    made = plan(before, {}, Policy(images=ImagePolicy(min_age=0, quota=Size(bytes=0))), NOW)
    assert [a.id for a in made.actions] == [IMAGE]
    journal = Journal(Store(tmp_path / "docker-R.db"))

    result = apply_actions(fake, made.actions, before, {}, journal, now=lambda: NOW,
                           plan_created=NOW)

    assert result.deleted == []
    assert [why for _, why in result.skipped] == [
        "a container started using it after removing 1 of its tags"]
    # The tags the plan had not reached yet are all still there, and nothing is journalled.
    assert set(fake.images[IMAGE].tags) == set(TAGS[1:])
    assert journal.entries() == []
