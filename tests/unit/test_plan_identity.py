"""What an action names is the very object it was planned for, plan files say no more and no
less than their policy makes, and every deletion reaches the journal, even through a kill."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reclaim.apply import ApplyInterrupted, apply_actions, settle_interrupted
from reclaim.errors import EXIT_INTERRUPTED, UsageError
from reclaim.model import BuildCache, Volume
from reclaim.planfile import plan_to_json, read_plan
from reclaim.policy.plan import Action, FilesystemUsage, plan
from reclaim.policy.rules import (
    BuildCachePolicy,
    ContainerPolicy,
    ImagePolicy,
    Policy,
    VolumePolicy,
)
from reclaim.runtimes.fake import FakeRuntime
from reclaim.state.journal import INTERRUPTED_NOTE, Entry, Journal
from reclaim.state.store import Store
from reclaim.units import Size

NOW = datetime(2026, 6, 1, tzinfo=UTC)
VOLUMES = Policy(volumes=VolumePolicy(dangling_after=60))


def iid(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"image-{n}".encode()).hexdigest()


def volume(name: str = "v") -> Volume:
    return Volume(name, "local", {}, True, f"/v/{name}/_data", 4096, ())


def journal(tmp_path: Path) -> Journal:
    return Journal(Store(tmp_path / "docker-J.db"))


def volume_plan(fake: FakeRuntime) -> tuple[Action, ...]:
    before = fake.inventory()
    made = plan(before, {}, VOLUMES, NOW, volume_since={"v": NOW - timedelta(hours=1)})
    assert [(a.kind, a.id) for a in made.actions] == [("volume", "v")]
    return made.actions


# -- a volume is its name and its instance --------------------------------------------------

def test_a_volume_created_again_since_the_plan_is_skipped(tmp_path: Path) -> None:
    fake = FakeRuntime()
    fake.add_volume(volume())
    actions = volume_plan(fake)
    fake.remove_volume("v")
    fake.add_volume(volume())  # same name, new data
    result = apply_actions(fake, actions, fake.inventory(), {}, journal(tmp_path),
                           now=lambda: NOW, plan_created=NOW)
    assert result.deleted == []
    assert [why for _, why in result.skipped] == [
        "re-created since the plan (another volume of that name)"]
    assert "v" in fake.volumes


def test_a_volume_created_again_after_the_recheck_is_skipped(tmp_path: Path) -> None:
    class Recreating(FakeRuntime):
        def volume_instance(self, name: str) -> str | None:
            # Between apply's inventory and the removal, as a user racing it would.
            self.remove_volume(name)
            self.add_volume(volume(name))
            return super().volume_instance(name)

    fake = Recreating()
    fake.add_volume(volume())
    actions = volume_plan(fake)
    result = apply_actions(fake, actions, fake.inventory(), {}, journal(tmp_path),
                           now=lambda: NOW, plan_created=NOW)
    assert result.deleted == []
    assert [why for _, why in result.skipped] == [
        "re-created just now (another volume of that name)"]
    assert "v" in fake.volumes


# -- plan files -----------------------------------------------------------------------------

def _document(policy: Policy, fake: FakeRuntime | None = None,
              filesystem: FilesystemUsage | None = None) -> dict[str, Any]:
    fake = fake or FakeRuntime()
    made = plan(fake.inventory(), {}, policy, NOW, filesystem=filesystem,
                volume_since={"v": NOW - timedelta(hours=1)})
    return plan_to_json(made)


def _read(tmp_path: Path, doc: dict[str, Any]) -> Any:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc))
    return read_plan(path)


def _volume_document() -> dict[str, Any]:
    fake = FakeRuntime()
    fake.add_volume(volume())
    return _document(VOLUMES, fake)


def test_a_plan_file_round_trips_the_volume_instance(tmp_path: Path) -> None:
    doc = _volume_document()
    stored = _read(tmp_path, doc)
    assert stored.actions[0].instance == doc["actions"][0]["instance"] != ""
    assert (stored.engine_id, stored.data_root) == ("FAKE", None)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["engine"].pop("id"), "engine.id is missing"),
    (lambda d: d["engine"].update(id=""), "engine.id is missing"),
    (lambda d: d["engine"].pop("data_root"), "engine.data_root is missing"),
    (lambda d: d["actions"][0].pop("instance"), "which volume of that name"),
    (lambda d: d["actions"].append(copy.deepcopy(d["actions"][0])) or
     d.update(predicted_bytes=2 * d["predicted_bytes"]), "repeats volume v"),
    (lambda d: d["policy"]["volumes"].update(dangling_after=None),
     "sets no volumes.dangling_after"),
])
def test_a_plan_file_that_does_not_say_enough_is_refused(tmp_path: Path, edit: Any,
                                                         message: str) -> None:
    doc = _volume_document()
    edit(doc)
    with pytest.raises(UsageError, match=message):
        _read(tmp_path, doc)


def test_an_action_its_policy_would_not_make_is_refused(tmp_path: Path) -> None:
    doc = _volume_document()
    doc["actions"].append({"kind": "container", "id": "c" * 64, "refs": ["x"], "bytes": 0,
                           "reason": {"rule": "exited-age", "detail": ""}, "basis": None})
    with pytest.raises(UsageError, match=r"containers\.exited_after or created_after"):
        _read(tmp_path, doc)
    doc = _volume_document()
    doc["actions"].append({"kind": "image", "id": iid(1), "refs": [], "bytes": 0,
                           "reason": {"rule": "quota", "detail": ""}, "basis": None})
    with pytest.raises(UsageError, match=r"no images\.max_age, quota"):
        _read(tmp_path, doc)


CACHE = Policy(build_cache=BuildCachePolicy(keep_storage=Size(bytes=1 << 30), older_than=86400))


def test_a_build_cache_action_carries_its_bounds_and_apply_uses_only_those(
        tmp_path: Path) -> None:
    fake = FakeRuntime()
    fake.build_cache = BuildCache(3, 5 << 30, 4 << 30)
    doc = _document(CACHE, fake)
    action = doc["actions"][0]
    assert (action["keep_storage"], action["older_than"]) == (1 << 30, 86400)
    stored = _read(tmp_path, doc)
    pruned: list[tuple[int | None, float | None]] = []

    def prune(keep: int | None, older: float | None) -> int:
        pruned.append((keep, older))
        return 0

    apply_actions(fake, stored.actions, fake.inventory(), {}, journal(tmp_path),
                  now=lambda: NOW, plan_created=NOW, build_cache=prune)
    assert pruned == [(1 << 30, 86400.0)]


@pytest.mark.parametrize("edit, message", [
    # Hand-written, without bounds: an unbounded prune would empty the cache.
    (lambda a, p: (a.pop("keep_storage"), a.pop("older_than")), "unbounded prune"),
    (lambda a, p: a.update(keep_storage=1), "not the policy's build_cache.keep_storage"),
    (lambda a, p: a.update(older_than=1), "not the policy's build_cache.older_than"),
    (lambda a, p: p["build_cache"].update(keep_storage=None, older_than=None),
     "not the policy's"),
])
def test_a_build_cache_action_unlike_its_policy_is_refused(tmp_path: Path, edit: Any,
                                                            message: str) -> None:
    fake = FakeRuntime()
    fake.build_cache = BuildCache(3, 5 << 30, 4 << 30)
    doc = _document(CACHE, fake)
    edit(doc["actions"][0], doc["policy"])
    with pytest.raises(UsageError, match=message):
        _read(tmp_path, doc)


def test_a_keep_storage_percentage_is_resolved_or_the_cache_is_not_pruned() -> None:
    fake = FakeRuntime()
    fake.build_cache = BuildCache(3, 5 << 30, 4 << 30)
    percent = Policy(build_cache=BuildCachePolicy(keep_storage=Size(percent=10.0)))
    made = plan(fake.inventory(), {}, percent, NOW,
                filesystem=FilesystemUsage(total_bytes=100 << 30, used_bytes=50 << 30))
    assert [a.prune for a in made.actions] == [(10 << 30, None)]
    # Nothing to resolve the percentage against: no prune at all, never an unbounded one.
    made = plan(fake.inventory(), {}, percent, NOW)
    assert made.actions == ()
    assert any("keep_storage is a percentage" in w for w in made.warnings)


# -- the journal: intents, completions, interruptions ---------------------------------------

def _images(fake: FakeRuntime, n: int) -> tuple[Action, ...]:
    for k in range(n):
        fake.add_image(iid(k), tags=(f"img{k}:1", f"img{k}:2"),
                       layers=[(f"sha256:{k:064x}", 100 + k)])
    made = plan(fake.inventory(), {}, Policy(images=ImagePolicy(min_age=0,
                                                                 quota=Size(bytes=0))), NOW)
    assert len(made.actions) == n
    return made.actions


def test_an_interrupt_stops_what_has_not_begun_and_the_journal_has_what_went(
        tmp_path: Path) -> None:
    class Interrupting(FakeRuntime):
        removed = 0

        def remove_image(self, ref: str) -> None:
            super().remove_image(ref)
            self.removed += 1
            if self.removed == 3:  # mid-way through the second image: SIGINT, as from ^C
                os.kill(os.getpid(), signal.SIGINT)
                # Until the main thread has taken the signal (a fake engine answers faster
                # than the interpreter switches threads; a real one does not).
                assert stop.wait(10)

    fake = Interrupting()
    actions = _images(fake, 6)
    j = journal(tmp_path)
    stop = threading.Event()
    with pytest.raises(ApplyInterrupted) as info:
        apply_actions(fake, actions, fake.inventory(), {}, j, now=lambda: NOW,
                      plan_created=NOW, workers=1, stop=stop)
    assert info.value.exit_code == EXIT_INTERRUPTED
    # The handler apply put in place is gone again.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    done = j.entries()
    assert info.value.message == \
        f"interrupted after {len(done)} deletion(s); the journal has them"
    # What was in flight finished; what had not begun did not.
    assert len(done) == 2
    assert len(fake.images) == 6 - len(done)
    gone = {a.id for a in actions} - set(fake.images)
    assert {e.object_id for e in done} == gone
    assert j.intents() == []


def test_a_kill_between_the_engine_and_the_journal_is_settled_on_the_next_run(
        tmp_path: Path) -> None:
    class Killed(Exception):
        """The process dying right after the engine deleted, before the journal heard."""

    class Dying(FakeRuntime):
        def remove_image(self, ref: str) -> None:
            super().remove_image(ref)
            if len(self.images) == 4 and not self.died:
                self.died = True
                raise Killed

        died = False

    fake = Dying()
    actions = _images(fake, 6)
    j = journal(tmp_path)
    with pytest.raises(Killed):
        apply_actions(fake, actions, fake.inventory(), {}, j, now=lambda: NOW,
                      plan_created=NOW, workers=1)
    gone = {a.id for a in actions} - set(fake.images)
    assert len(gone) == 2 and len(j.entries()) == 1
    # Left by the kill: the intent of the deletion it interrupted (and those written with it
    # for the ones not yet begun, which the engine still holds).
    assert actions[1].id in {e.object_id for _, e in j.intents()}
    assert settle_interrupted(j, fake.inventory()) == 1
    assert {e.object_id for e in j.entries()} == gone
    assert [e.detail.endswith(INTERRUPTED_NOTE) for e in j.entries()].count(True) == 1
    assert j.intents() == []


def test_intents_are_settled_against_what_the_engine_holds(tmp_path: Path) -> None:
    fake = FakeRuntime()
    gone, untagged, kept = (iid(k) for k in range(3))
    for image_id, tags in ((gone, ("a:1",)), (untagged, ("b:1", "b:2")), (kept, ("c:1",))):
        fake.add_image(image_id, tags=tags, layers=[("sha256:" + image_id[-64:], 10)])
    fake.add_volume(volume("v"))
    j = journal(tmp_path)

    def intent(kind: str, oid: str, refs: tuple[str, ...] = (), instance: str = "") -> None:
        j.intend(Entry(NOW, kind, oid, refs, "quota", "over quota", 10, NOW, instance))

    intent("image", gone, ("a:1",))
    intent("image", untagged, ("b:1", "b:2"))
    intent("image", kept, ("c:1",))
    intent("volume", "v", instance=fake.volumes["v"].instance)
    intent("volume", "v", instance="an-earlier-v")  # that one is gone; today's v is another
    fake.remove_image("a:1")
    fake.remove_image("b:1")
    assert settle_interrupted(j, fake.inventory()) == 3
    by = {(e.object_id, e.instance): e for e in j.entries()}
    assert set(by) == {(gone, ""), (untagged, ""), ("v", "an-earlier-v")}
    assert by[(untagged, "")].refs == ("b:1",)
    assert by[(untagged, "")].predicted_bytes == 0
    assert "still there" in by[(untagged, "")].detail
    assert j.intents() == []


def test_a_completion_after_its_intent_was_settled_is_still_written(tmp_path: Path) -> None:
    j = journal(tmp_path)
    entry = Entry(NOW, "container", "c" * 64, ("x",), "exited-age", "", 0, NOW)
    row = j.intend(entry)
    j.settle(row, None)  # a history that took it for interrupted
    j.complete(row, entry)
    assert [e.object_id for e in j.entries()] == ["c" * 64]


def test_containers_policy_is_recorded_for_plan_files() -> None:
    # The policy section a container action is checked against is in every plan file.
    doc = _document(Policy(containers=ContainerPolicy(exited_after=3600)))
    assert doc["policy"]["containers"]["exited_after"] == 3600
