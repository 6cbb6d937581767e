"""The state store and the usage ledger: creation, refusal, faults, and the rules of last use."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reclaim.errors import EXIT_USAGE
from reclaim.model import Container, ContainerState, EngineInfo, Event, Volume
from reclaim.recorder import Recorder
from reclaim.runtimes.fake import FakeRuntime
from reclaim.state.migrations import SCHEMA_VERSION
from reclaim.state.store import (
    StateBusy,
    StateError,
    StateWriteFailed,
    Store,
    adopt_legacy,
    ledger_path,
    legacy_ledger_path,
    reset,
)
from reclaim.state.usage import Ledger, Use

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def iid(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"image-{n}".encode()).hexdigest()


def ledger(tmp_path: Path) -> Ledger:
    return Ledger(Store(tmp_path / "state" / "docker-TEST.db"))


def test_created_private_and_atomic(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "docker-X.db")
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # No half-made temporary file is left beside it.
    assert [p.name for p in (tmp_path / "state").iterdir() if p.name.startswith(".new-")] == []


def _engine(engine_id: str, data_root: str | None) -> EngineInfo:
    return EngineInfo("docker", "unix:///x.sock", "20.10", "1.41", data_root, "overlay2",
                      "overlay2", engine_id)


def test_ledger_file_is_named_by_engine_id_and_data_root(tmp_path: Path) -> None:
    engine = _engine("ABCD:EF01:../x", "/var/lib/docker")
    path = ledger_path(tmp_path, "docker", engine.state_name)
    assert path.parent == tmp_path
    assert "/" not in path.name.removesuffix(".db")
    assert path.name.startswith("docker-ABCD_EF01")
    # Two daemons sharing one key.json (so one id) with other data roots: two ledgers.
    other = _engine("ABCD:EF01:../x", "/srv/docker2")
    assert other.identity != engine.identity
    assert ledger_path(tmp_path, "docker", other.state_name) != path
    # The same daemon reached through another endpoint: the same ledger.
    assert engine._replace(endpoint="tcp://127.0.0.1:2375").state_name == engine.state_name


def test_a_ledger_is_refused_to_another_engine(tmp_path: Path) -> None:
    path = tmp_path / "docker-X.db"
    store = Store(path)
    store.bind_engine("X@/var/lib/docker")
    store.bind_engine("X@/var/lib/docker")  # its own engine again: fine
    with pytest.raises(StateError, match="belongs to engine X@/var/lib/docker") as info:
        store.bind_engine("X@/srv/docker2")
    assert info.value.exit_code == EXIT_USAGE
    store.close()


def test_a_legacy_ledger_is_adopted_once_and_kept(tmp_path: Path) -> None:
    first, second = _engine("ID", "/var/lib/docker"), _engine("ID", "/srv/docker2")
    legacy = legacy_ledger_path(tmp_path, "docker", "ID")
    old = Ledger(Store(legacy))
    with old.store.transaction() as db:
        db.execute("INSERT INTO journal (at, kind, object_id, rule) VALUES (1, 'image', 'x', 'r')")
    old.store.close()

    path1 = ledger_path(tmp_path, "docker", first.state_name)
    assert adopt_legacy(legacy, path1, first.identity)
    adopted = Store(path1)
    adopted.bind_engine(first.identity)  # the copy already names its engine
    assert adopted.conn.execute("SELECT object_id FROM journal").fetchall() == [("x",)]
    adopted.close()
    # The second daemon of that id does not take the first one's history too.
    path2 = ledger_path(tmp_path, "docker", second.state_name)
    assert not adopt_legacy(legacy, path2, second.identity)
    assert not path2.exists()
    # The old file is still there, untouched but for the note of who adopted it.
    assert sqlite3.connect(legacy).execute("SELECT count(*) FROM journal").fetchone() == (1,)
    # Adopting again is a no-op.
    assert not adopt_legacy(legacy, path1, first.identity)


def test_a_volume_created_again_under_its_name_starts_a_new_dangling_time(
        tmp_path: Path) -> None:
    runtime = FakeRuntime()
    volume = Volume("v", "local", {}, True, "/v/_data", 10, ())
    runtime.add_volume(volume)
    led = ledger(tmp_path)
    led.observe(runtime.inventory(), T0)
    led.observe(runtime.inventory(), T0 + timedelta(days=3))
    assert led.volume_dangling_since() == {"v": T0}
    # Removed and created again, between two looks of reclaim.
    runtime.remove_volume("v")
    runtime.add_volume(volume)
    later = T0 + timedelta(days=3, seconds=1)
    led.observe(runtime.inventory(), later)
    assert led.volume_dangling_since() == {"v": later}


def test_a_database_from_a_newer_reclaim_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "docker-NEW.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="newer reclaim") as info:
        Store(path)
    assert info.value.exit_code == EXIT_USAGE
    assert path.read_bytes() == before


def test_a_corrupt_database_is_an_error_never_a_silent_reset(tmp_path: Path) -> None:
    path = tmp_path / "docker-BAD.db"
    path.write_bytes(b"this is not a database at all" * 100)
    before = path.read_bytes()
    with pytest.raises(StateError, match="damaged") as info:
        Store(path)
    assert info.value.exit_code == EXIT_USAGE
    assert "--reset-state" in (info.value.hint or "")
    assert path.read_bytes() == before
    aside = reset(path)
    assert aside is not None and aside.read_bytes() == before
    assert not path.exists()
    Store(path).close()  # a fresh one can now be made


def test_a_locked_database_waits_then_says_so(tmp_path: Path) -> None:
    path = tmp_path / "docker-LOCK.db"
    holder = Store(path)
    holder.conn.execute("BEGIN IMMEDIATE")
    try:
        waiting = Store(path, busy_timeout=0.05)
        with pytest.raises(StateBusy, match="locked"), waiting.transaction():
            pass
    finally:
        holder.conn.execute("ROLLBACK")


def test_disk_full_fails_loudly_and_keeps_the_previous_state(tmp_path: Path) -> None:
    led = ledger(tmp_path)
    led.record_uses([Use(iid(1), T0, "event", "web-1")], T0)
    # Cap the file at its current size: the next large write cannot fit.
    pages = led.store.conn.execute("PRAGMA page_count").fetchone()[0]
    led.store.conn.execute(f"PRAGMA max_page_count = {pages}")
    big = [Use(iid(n), T0 + timedelta(seconds=n), "event", "x" * 2000) for n in range(2, 400)]
    with pytest.raises(StateWriteFailed, match="intact"):
        led.record_uses(big, T0 + timedelta(hours=1))
    images = led.images()
    assert set(images) == {iid(1)}
    kept = images[iid(1)].last_use
    assert kept is not None and kept.detail == "web-1"


def test_never_used_images_have_no_last_use_and_age_from_first_seen(tmp_path: Path) -> None:
    fake = FakeRuntime()
    fake.add_image(iid(1), tags=["a:1"], layers=[("sha256:" + "1" * 64, 10)])
    led = ledger(tmp_path)
    Recorder(led).catch_up(fake.inventory(), T0)
    record = led.images()[iid(1)]
    assert record.last_use is None
    assert record.first_seen == T0
    assert record.age_basis.when == T0
    assert record.age_basis.source == "first-seen"
    # A later catch-up does not move first_seen.
    Recorder(led).catch_up(fake.inventory(), T0 + timedelta(days=3))
    assert led.images()[iid(1)].first_seen == T0


def test_a_tag_after_first_seen_is_the_age_basis(tmp_path: Path) -> None:
    fake = FakeRuntime()
    fake.add_image(iid(1), tags=["a:1"], layers=[("sha256:" + "1" * 64, 10)],
                   tagged_at=T0 + timedelta(days=2))
    led = ledger(tmp_path)
    Recorder(led).catch_up(fake.inventory(), T0)
    basis = led.images()[iid(1)].age_basis
    assert basis.source == "tag-time"
    assert basis.when == T0 + timedelta(days=2)


def test_build_time_is_never_evidence(tmp_path: Path) -> None:
    fake = FakeRuntime()
    fake.add_image(iid(1), tags=["old:1"], layers=[("sha256:" + "1" * 64, 10)],
                   created=T0 - timedelta(days=900))
    led = ledger(tmp_path)
    Recorder(led).catch_up(fake.inventory(), T0)
    assert led.images()[iid(1)].age_basis.when == T0


def test_container_timestamps_are_uses(tmp_path: Path) -> None:
    fake = FakeRuntime()
    for n in (1, 2, 3):
        fake.add_image(iid(n), tags=[f"i:{n}"], layers=[(f"sha256:{n:064x}", 10)])
    fake.add_container(Container("a" * 64, "runner", iid(1), ContainerState.RUNNING,
                                 created=T0 - timedelta(days=9)))
    fake.add_container(Container("b" * 64, "job", iid(2), ContainerState.EXITED,
                                 created=T0 - timedelta(days=9),
                                 started=T0 - timedelta(days=8),
                                 finished=T0 - timedelta(days=5)))
    led = ledger(tmp_path)
    Recorder(led).catch_up(fake.inventory(), T0)
    images = led.images()
    running_use = images[iid(1)].last_use
    exited_use = images[iid(2)].last_use
    assert running_use is not None and running_use.when == T0  # in use now
    assert exited_use is not None and exited_use.when == T0 - timedelta(days=5)
    assert exited_use.source == "container" and exited_use.detail == "job"
    assert images[iid(3)].last_use is None


def test_events_become_uses_with_a_checkpoint(tmp_path: Path) -> None:
    fake = FakeRuntime()
    fake.add_image(iid(1), tags=["web:1"], layers=[("sha256:" + "1" * 64, 10)])
    led = ledger(tmp_path)
    rec = Recorder(led)
    rec.catch_up(fake.inventory(), T0)
    cid = "c" * 64
    events = [
        Event(T0 + timedelta(minutes=1), "container", "create", cid, image="web:1", name="w"),
        Event(T0 + timedelta(minutes=2), "container", "start", cid, image="web:1", name="w"),
        Event(T0 + timedelta(minutes=3), "container", "exec_start: sh", cid, image="web:1"),
        Event(T0 + timedelta(minutes=4), "container", "destroy", cid, image="web:1"),
    ]
    assert rec.handle(events, T0 + timedelta(minutes=5)) == 3
    use = led.images()[iid(1)].last_use
    assert use is not None and use.when == T0 + timedelta(minutes=3) and use.source == "event"
    assert led.checkpoint() == T0 + timedelta(minutes=4)


def test_a_failed_batch_leaves_neither_uses_nor_checkpoint(tmp_path: Path) -> None:
    fake = FakeRuntime()
    fake.add_image(iid(1), tags=["web:1"], layers=[("sha256:" + "1" * 64, 10)])
    led = ledger(tmp_path)
    calls = 0

    def flaky(ref: str) -> str | None:
        nonlocal calls
        calls += 1
        raise RuntimeError("engine went away mid-batch")

    rec = Recorder(led, resolve=flaky)
    rec.catch_up(fake.inventory(), T0)
    events = [
        Event(T0 + timedelta(minutes=1), "container", "start", "c" * 64, image="web:1"),
        Event(T0 + timedelta(minutes=2), "container", "start", "d" * 64, image="other:9"),
    ]
    with pytest.raises(RuntimeError):
        rec.handle(events, T0 + timedelta(minutes=3))
    assert calls == 1
    assert led.images()[iid(1)].last_use is None
    assert led.checkpoint() is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=30), st.randoms())
def test_last_use_is_the_latest_whatever_the_order(offsets: list[int], rnd: object) -> None:
    import random
    import tempfile

    assert isinstance(rnd, random.Random)
    with tempfile.TemporaryDirectory() as tmp:
        led = ledger(Path(tmp))
        uses = [Use(iid(1), T0 + timedelta(seconds=o), "event", str(o)) for o in offsets]
        rnd.shuffle(uses)
        for chunk in (uses[: len(uses) // 2], uses[len(uses) // 2 :]):
            led.record_uses(chunk, T0 + timedelta(days=30))
        use = led.images()[iid(1)].last_use
        assert use is not None
        assert use.when == T0 + timedelta(seconds=max(offsets))
        led.store.close()


def test_a_volume_dangles_from_when_it_was_first_seen_unused(tmp_path: Path) -> None:
    from reclaim.model import Mount, Volume

    fake = FakeRuntime()
    fake.add_image(iid(1), tags=["a:1"], layers=[("sha256:" + "1" * 64, 10)])
    fake.add_volume(Volume("cache", "local", {}, False, "", 0, ()))
    led = ledger(tmp_path)
    Recorder(led).catch_up(fake.inventory(), T0)
    Recorder(led).catch_up(fake.inventory(), T0 + timedelta(days=2))
    assert led.volume_dangling_since() == {"cache": T0}
    # Used again: no longer dangling; unused later: dangling from then on.
    fake.add_container(Container("c" * 64, "user", iid(1), ContainerState.EXITED, T0,
                                 mounts=(Mount("volume", "cache", "", "/c"),)))
    Recorder(led).catch_up(fake.inventory(), T0 + timedelta(days=3))
    assert led.volume_dangling_since() == {}
    fake.remove_container("c" * 64)
    Recorder(led).catch_up(fake.inventory(), T0 + timedelta(days=4))
    assert led.volume_dangling_since() == {"cache": T0 + timedelta(days=4)}


def test_a_catch_up_writes_only_what_changed_and_misses_no_change(tmp_path: Path) -> None:
    fake = FakeRuntime()
    for n in (1, 2):
        fake.add_image(iid(n), tags=[f"i:{n}"], layers=[(f"sha256:{n:064x}", 10)])
    fake.add_container(Container("a" * 64, "job", iid(1), ContainerState.EXITED,
                                 created=T0 - timedelta(days=9), started=T0 - timedelta(days=8),
                                 finished=T0 - timedelta(days=7)))
    fake.add_container(Container("b" * 64, "old", iid(2), ContainerState.CREATED,
                                 created=T0 - timedelta(days=9)))
    led = ledger(tmp_path)
    Recorder(led).catch_up(fake.inventory(), T0)
    changes = led.store.conn.total_changes
    sent: list[str] = []
    led.store.conn.set_trace_callback(sent.append)
    Recorder(led).catch_up(fake.inventory(), T0 + timedelta(hours=1))
    led.store.conn.set_trace_callback(None)
    assert led.store.conn.total_changes == changes  # nothing changed: nothing written
    # ... and nothing was even asked of the database but the reads.
    assert [q for q in sent if q.lstrip().startswith(("INSERT", "UPDATE"))] == []

    # A container ran again, an image got a tag, another container and image went away.
    fake.remove_container("b" * 64)
    fake.add_container(Container("a" * 64, "job", iid(1), ContainerState.EXITED,
                                 created=T0 - timedelta(days=9), started=T0,
                                 finished=T0 + timedelta(minutes=30)))
    fake.remove_image("i:2")
    fake.add_image(iid(3), tags=["i:3", "i:3b"], layers=[(f"sha256:{3:064x}", 10)])
    later = T0 + timedelta(hours=2)
    Recorder(led).catch_up(fake.inventory(), later)
    images = led.images()
    use = images[iid(1)].last_use
    assert use is not None and use.when == T0 + timedelta(minutes=30)
    assert images[iid(2)].gone_at == later
    assert images[iid(3)].refs == ("i:3", "i:3b") and images[iid(3)].gone_at is None
    gone = dict(led.store.conn.execute("SELECT container_id, gone_at FROM containers"))
    assert gone == {"a" * 64: None, "b" * 64: later.timestamp()}
