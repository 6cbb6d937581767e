"""Apply's last line of defence: a container that appears after the plan was re-validated, while
an image's tags are being removed. The engine removes one of several tags of an image in use
without complaint (the fake does the same), so only apply's own checks stand in the way: the
use watch while it is live, the engine's list of the image's containers without it, and, for a
container neither saw in time, the engine's refusal of the last tag, after which the tags
already removed are put back."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reclaim.apply import ApplyResult, apply_actions
from reclaim.errors import NotFound
from reclaim.model import Container, ContainerState, Inventory
from reclaim.policy.plan import Action, plan
from reclaim.policy.rules import ImagePolicy, Policy
from reclaim.runtimes.base import TagRestoring
from reclaim.runtimes.fake import FakeRuntime
from reclaim.state.journal import Journal
from reclaim.state.store import Store
from reclaim.units import Size

NOW = datetime(2026, 6, 1, tzinfo=UTC)
IMAGE = "sha256:" + hashlib.sha256(b"multi").hexdigest()
OTHER = "sha256:" + hashlib.sha256(b"other").hexdigest()
TAGS = ("app:1", "app:2", "app:3")
LATE = "r" * 64


class CountingFake(FakeRuntime):
    """The fake, counting the re-check requests apply makes."""

    def __init__(self) -> None:
        super().__init__()
        self.user_checks = 0
        self.ref_checks = 0

    def image_users(self, image_id: str) -> tuple[str, ...]:
        self.user_checks += 1
        return super().image_users(image_id)

    def image_refs(self, image_id: str) -> tuple[str, ...] | None:
        self.ref_checks += 1
        return super().image_refs(image_id)

    def create_late(self) -> None:
        """A container created from the image, as `docker create app:3` would."""
        self.add_container(Container(LATE, "late", IMAGE, ContainerState.CREATED, NOW))


class RacingFake(CountingFake):
    """Creates a container from the image right after `after` is removed, and tells the
    watch (if any) at once, as the engine's event stream would a moment later."""

    def __init__(self, after: str = TAGS[0], watch: FakeWatch | None = None) -> None:
        super().__init__()
        self.after = after
        self.watch = watch

    def remove_image_ref(self, ref: str) -> bool:
        gone = super().remove_image_ref(ref)
        if ref == self.after and LATE not in self.containers:
            self.create_late()
            if self.watch is not None:
                self.watch.created(IMAGE, "late")
        return gone


class PlainRacingFake(FakeRuntime):
    """A runtime that can neither tell what a removal did nor tag: nothing can be put back."""

    def remove_image(self, ref: str) -> None:
        super().remove_image(ref)
        if ref == TAGS[0] and LATE not in self.containers:
            self.add_container(Container(LATE, "late", IMAGE, ContainerState.CREATED, NOW))


class FakeWatch:
    """A use watch whose stream delivers at once; `lose()` ends it."""

    def __init__(self) -> None:
        self.used: dict[str, str] = {}
        self.named: dict[str, str] = {}
        self.lost = False
        self.closed = False

    @property
    def live(self) -> bool:
        return not self.lost

    def created(self, image_id: str, name: str) -> None:
        self.used[image_id] = name

    def lose(self) -> None:
        self.lost = True

    def why_not(self, image_id: str, refs: tuple[str, ...]) -> str | None:
        if image_id in self.used:
            return f"container {self.used[image_id]} was created from it"
        for ref in refs:
            if ref in self.named:
                return f"{ref} was just given to an image ({self.named[ref]})"
        return None

    def close(self) -> None:
        self.closed = True


def _setup(fake: FakeRuntime, tmp_path: Path) -> tuple[Inventory, tuple[Action, ...], Journal]:
    fake.add_image(IMAGE, tags=TAGS, layers=[("sha256:" + "1" * 64, 100)])
    before = fake.inventory()
    made = plan(before, {}, Policy(images=ImagePolicy(min_age=0, quota=Size(bytes=0))), NOW)
    assert [a.id for a in made.actions] == [IMAGE]
    return before, made.actions, Journal(Store(tmp_path / "docker-R.db"))


def _apply(fake: FakeRuntime, tmp_path: Path, watch: FakeWatch | None = None
           ) -> tuple[ApplyResult, Journal]:
    before, actions, journal = _setup(fake, tmp_path)
    result = apply_actions(fake, actions, before, {}, journal, now=lambda: NOW,
                           plan_created=NOW, watch=watch)
    return result, journal


def test_without_a_watch_each_tag_is_rechecked_and_the_removed_one_put_back(
    tmp_path: Path
) -> None:
    fake = RacingFake()
    result, journal = _apply(fake, tmp_path)

    assert result.deleted == []
    assert [why for _, why in result.skipped] == [
        "a container started using it after removing 1 of its tags; its removed tags app:1 "
        "were put back"]
    assert sorted(fake.images[IMAGE].tags) == sorted(TAGS)
    assert fake.user_checks == 2  # before the first and before the second tag
    assert journal.entries() == []


class WithoutTagging:
    """A runtime without the tagging capability (`TagRestoring`): the fake, with its
    `remove_image_ref` and `tag_image` out of reach."""

    def __init__(self, fake: FakeRuntime) -> None:
        self._fake = fake

    def __getattr__(self, name: str) -> Any:
        if name in ("remove_image_ref", "tag_image"):
            raise AttributeError(name)
        return getattr(self._fake, name)


def test_a_runtime_that_cannot_tag_says_so(tmp_path: Path) -> None:
    fake = PlainRacingFake()
    runtime = WithoutTagging(fake)
    assert not isinstance(runtime, TagRestoring) and isinstance(fake, TagRestoring)
    before, actions, journal = _setup(fake, tmp_path)
    result = apply_actions(runtime, actions, before, {}, journal,
                           now=lambda: NOW, plan_created=NOW)

    assert result.deleted == []
    assert [why for _, why in result.skipped] == [
        "a container started using it after removing 1 of its tags; its removed tags app:1 "
        "could not be put back"]
    # The tags the plan had not reached yet are all still there, and nothing is journalled.
    assert set(fake.images[IMAGE].tags) == set(TAGS[1:])
    assert journal.entries() == []


def test_with_a_live_watch_no_request_is_made_per_tag(tmp_path: Path) -> None:
    fake = CountingFake()
    watch = FakeWatch()
    result, journal = _apply(fake, tmp_path, watch)

    assert [a.id for a in result.deleted] == [IMAGE]
    assert IMAGE not in fake.images
    assert (fake.user_checks, fake.ref_checks) == (0, 0)
    assert [e.object_id for e in journal.entries()] == [IMAGE]


def test_a_container_created_mid_apply_stops_the_remaining_tags_through_the_watch(
    tmp_path: Path
) -> None:
    watch = FakeWatch()
    fake = RacingFake(watch=watch)
    result, journal = _apply(fake, tmp_path, watch)

    assert result.deleted == []
    assert [why for _, why in result.skipped] == [
        "container late was created from it after removing 1 of its tags; its removed tags "
        "app:1 were put back"]
    assert sorted(fake.images[IMAGE].tags) == sorted(TAGS)
    assert fake.user_checks == 0
    assert journal.entries() == []


def test_a_lost_watch_falls_back_to_asking_the_engine(tmp_path: Path) -> None:
    watch = FakeWatch()
    watch.lose()
    fake = RacingFake()  # the watch never hears of the container: only the engine can tell
    result, _ = _apply(fake, tmp_path, watch)

    assert [why for _, why in result.skipped] == [
        "a container started using it after removing 1 of its tags; its removed tags app:1 "
        "were put back"]
    assert fake.user_checks == 2 and fake.ref_checks == 1
    assert sorted(fake.images[IMAGE].tags) == sorted(TAGS)


def test_a_container_nobody_saw_in_time_makes_the_engine_refuse_and_the_tags_go_back(
    tmp_path: Path
) -> None:
    """The window every check leaves: the container appears after the last check, before the
    last tag. The engine refuses the last tag of an image in use; the others come back."""
    watch = FakeWatch()
    fake = RacingFake(after=TAGS[1])  # created after the second tag; the watch is not told
    result, journal = _apply(fake, tmp_path, watch)

    assert result.deleted == []
    [(_, why)] = result.skipped
    assert why.startswith("the engine refused: conflict")
    assert why.endswith("; its removed tags app:1, app:2 were put back")
    assert sorted(fake.images[IMAGE].tags) == sorted(TAGS)
    assert journal.entries() == []


def test_a_name_given_to_another_image_meanwhile_is_not_taken_back(tmp_path: Path) -> None:
    class Moving(RacingFake):
        def remove_image_ref(self, ref: str) -> bool:
            gone = super().remove_image_ref(ref)
            if ref == TAGS[0]:
                # Someone tags another image app:1 right after apply removed it.
                self.tag_image(OTHER, TAGS[0])
            return gone

    fake = Moving()
    fake.add_image(OTHER, tags=("other:1",), layers=[("sha256:" + "2" * 64, 10)])
    # In use, so that the plan keeps it.
    fake.add_container(Container("o" * 64, "other", OTHER, ContainerState.RUNNING, NOW))
    result, _ = _apply(fake, tmp_path)

    [(_, why)] = result.skipped
    assert why.endswith("; could not put back app:1")
    assert fake.images[OTHER].tags == ("other:1", "app:1")
    assert sorted(fake.images[IMAGE].tags) == sorted(TAGS[1:])


def test_a_name_moved_by_an_event_stops_the_image(tmp_path: Path) -> None:
    watch = FakeWatch()
    watch.named[TAGS[2]] = "pull"
    fake = CountingFake()
    result, _ = _apply(fake, tmp_path, watch)

    assert [why for _, why in result.skipped] == ["app:3 was just given to an image (pull)"]
    assert sorted(fake.images[IMAGE].tags) == sorted(TAGS)


def test_a_tag_gone_under_apply_is_reported_gone(tmp_path: Path) -> None:
    class Vanishing(CountingFake):
        def remove_image_ref(self, ref: str) -> bool:
            if ref == TAGS[1]:
                raise NotFound(f"no such image: {ref}")
            return super().remove_image_ref(ref)

    fake = Vanishing()
    result, _ = _apply(fake, tmp_path, FakeWatch())
    assert [why for _, why in result.skipped] == ["already gone"]


@pytest.mark.parametrize("workers", [1, 4])
def test_every_deletion_is_journalled_once(tmp_path: Path, workers: int) -> None:
    fake = CountingFake()
    ids = []
    for n in range(12):
        image_id = "sha256:" + hashlib.sha256(f"i{n}".encode()).hexdigest()
        ids.append(image_id)
        fake.add_image(image_id, tags=tuple(f"img{n}:{t}" for t in range(n % 3 + 1)),
                       layers=[("sha256:" + f"{n:064x}", 100 + n)])
    before = fake.inventory()
    made = plan(before, {}, Policy(images=ImagePolicy(min_age=0, quota=Size(bytes=0))), NOW)
    journal = Journal(Store(tmp_path / "docker-J.db"))
    result = apply_actions(fake, made.actions, before, {}, journal, now=lambda: NOW,
                           plan_created=NOW, watch=FakeWatch(), workers=workers)
    assert sorted(a.id for a in result.deleted) == sorted(ids)
    assert sorted(e.object_id for e in journal.entries()) == sorted(ids)
    assert fake.images == {}
