"""`reclaim watch` on the in-memory engine, driven by a fake clock: no real sleeps."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reclaim.errors import EXIT_OK
from reclaim.model import Container, ContainerState, Event, Inventory
from reclaim.runtimes.base import Progress, no_progress
from reclaim.runtimes.docker.events import _event_from_message
from reclaim.runtimes.fake import FakeRuntime
from reclaim.state.store import Store
from reclaim.state.usage import Ledger
from reclaim.watch import Watcher

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
X = "sha256:" + "a" * 64
Y = "sha256:" + "b" * 64
Z = "sha256:" + "c" * 64
W = "sha256:" + "d" * 64
LATE = "sha256:" + "e" * 64


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.wall = start
        self.mono = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[int], None] = lambda n: None

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        self.on_sleep(len(self.sleeps))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def container_event(action: str, cid: str, image: str, when: float, name: str = "") -> Event:
    return Event(time=at(when), type="container", action=action, id=cid, image=image,
                 name=name or f"{cid}-name")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(Store(tmp_path / "state" / "docker-FAKE.db"))
    try:
        yield ledger
    finally:
        ledger.store.close()


@pytest.fixture
def fake() -> FakeRuntime:
    fake = FakeRuntime()
    for image_id, tag in ((X, "x:1"), (Y, "y:1"), (Z, "z:1"), (W, "w:1")):
        fake.add_image(image_id, tags=[tag], layers=[(image_id.replace("sha256:", "l"), 10)])
    return fake


def watcher(fake: FakeRuntime, ledger: Ledger, clock: FakeClock, **kw: object) -> Watcher:
    lines: list[Mapping[str, object]] = []
    w = Watcher(fake, ledger, now=clock.now, monotonic=clock.monotonic, sleep=clock.sleep,
                log=lines.append, **kw)  # type: ignore[arg-type]
    w.lines = lines  # type: ignore[attr-defined]
    return w


def stop_on(w: Watcher, clock: FakeClock, call: int) -> None:
    previous = clock.on_sleep

    def hook(n: int) -> None:
        previous(n)
        if n >= call:
            w.request_stop()

    clock.on_sleep = hook


def last_used(ledger: Ledger, image_id: str) -> tuple[datetime, str] | None:
    use = ledger.images()[image_id].last_use
    return None if use is None else (use.when, use.source)


def test_events_become_uses(fake: FakeRuntime, ledger: Ledger) -> None:
    clock = FakeClock()
    fake.emit(container_event("create", "c1", "x:1", 10))
    fake.emit(container_event("start", "c1", "x:1", 11))
    fake.emit(container_event("destroy", "c1", "x:1", 12))
    fake.emit(container_event("exec_start: sh -c true", "c2", Y, 13))
    w = watcher(fake, ledger, clock)
    stop_on(w, clock, 1)  # the finite fake stream ends: stop at the first reconnect

    assert w.run() == EXIT_OK

    assert last_used(ledger, X) == (at(11), "event")  # destroy is not a use
    assert last_used(ledger, Y) == (at(13), "event")
    assert last_used(ledger, Z) is None  # never used: no evidence, no last use
    assert ledger.images()[Z].first_seen == T0
    assert ledger.checkpoint() == at(13)
    assert w.stats.events == 4 and w.stats.uses == 3


def test_first_run_checkpoints_its_start(fake: FakeRuntime, ledger: Ledger) -> None:
    clock = FakeClock()
    w = watcher(fake, ledger, clock)
    stop_on(w, clock, 1)
    assert w.run() == EXIT_OK
    # Nothing happened, but everything before the start is covered by the catch-up.
    assert ledger.checkpoint() == T0


def test_batches_by_count(fake: FakeRuntime, ledger: Ledger) -> None:
    clock = FakeClock()
    for n in range(5):
        fake.emit(container_event("start", f"c{n}", "x:1", 10 + n))
    w = watcher(fake, ledger, clock, batch_size=2)
    stop_on(w, clock, 1)
    w.run()
    assert w.stats.batches == 3  # 2 + 2, and the rest when the stream ended
    assert ledger.checkpoint() == at(14)


def test_batches_by_time(fake: FakeRuntime, ledger: Ledger) -> None:
    clock = FakeClock()
    w = watcher(fake, ledger, clock, batch_size=500, flush_interval=1.0)
    w._add(container_event("start", "c1", "x:1", 10))
    clock.advance(0.5)
    w._flush_if_due()
    assert w.stats.batches == 0 and ledger.checkpoint() is None
    clock.advance(0.5)
    w._flush_if_due()
    assert w.stats.batches == 1
    assert last_used(ledger, X) == (at(10), "event")
    assert ledger.checkpoint() == at(10)


class BrokenResolver(FakeRuntime):
    """An engine that fails unexpectedly on one reference, half-way through a batch."""

    def image_id(self, ref: str) -> str:
        if ref == "explodes:1":
            raise RuntimeError("boom")
        return super().image_id(ref)


def test_batch_and_checkpoint_land_together_or_not_at_all(ledger: Ledger) -> None:
    fake = BrokenResolver()
    fake.add_image(X, tags=["x:1"], layers=[("lx", 1)])
    clock = FakeClock()
    fake.emit(container_event("start", "c1", "x:1", 10))
    fake.emit(container_event("start", "c2", "x:1", 11))
    fake.emit(container_event("start", "c3", "x:1", 12))
    fake.emit(container_event("start", "c4", "explodes:1", 13))
    w = watcher(fake, ledger, clock, batch_size=2)

    with pytest.raises(RuntimeError, match="boom"):
        w.run()

    # The first batch and its checkpoint landed; of the failed one, neither.
    assert last_used(ledger, X) == (at(11), "event")
    assert ledger.checkpoint() == at(11)
    assert ledger.container_image("c3") is None
    assert ledger.store.integrity_ok()


def test_stream_end_reconnects_with_backoff_then_replays_and_catches_up(
    fake: FakeRuntime, ledger: Ledger
) -> None:
    clock = FakeClock()
    fake.emit(container_event("start", "c1", "x:1", 10))

    def engine_restarts(n: int) -> None:
        if n == 1:
            fake.down = True  # the engine is restarting: the next three reconnects fail
        if n == 4:
            fake.down = False
            # While nobody watched: a container from Y ran and stopped (its own timestamps
            # say so), a container from Z started (an event the engine still holds), and an
            # event older than the checkpoint is not replayed.
            fake.add_container(Container(
                id="gap", name="gap", image_id=Y, state=ContainerState.EXITED,
                created=at(20), started=at(21), finished=at(22),
            ))
            fake.emit(container_event("start", "c2", "z:1", 25))
            fake.emit(container_event("start", "old", "w:1", 5))

    clock.on_sleep = engine_restarts
    w = watcher(fake, ledger, clock)
    stop_on(w, clock, 5)

    assert w.run() == EXIT_OK

    # Doubling while the engine is down, back to the start once it answered.
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 0.5]
    assert w.stats.reconnects == 1 and w.stats.catch_ups == 2
    assert last_used(ledger, X) == (at(10), "event")
    assert last_used(ledger, Y) == (at(22), "container")  # from the catch-up
    assert last_used(ledger, Z) == (at(25), "event")  # from the replay since the checkpoint
    assert last_used(ledger, W) is None
    assert ledger.checkpoint() == at(25)
    assert [line["event"] for line in w.lines].count("reconnect-failed") == 3  # type: ignore[attr-defined]


def test_backoff_is_capped(fake: FakeRuntime, ledger: Ledger) -> None:
    clock = FakeClock()
    clock.on_sleep = lambda n: setattr(fake, "down", True)
    w = watcher(fake, ledger, clock)
    stop_on(w, clock, 9)
    assert w.run() == EXIT_OK
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


class SignalsMidStream(FakeRuntime):
    """Delivers its logged events, then SIGTERM to this process, then stays open (quiet), as
    a real stream does while the engine is idle."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def events(self, since: datetime | None, until: datetime | None = None) -> Iterator[Event]:
        logged = list(super().events(since, until))
        if until is not None:
            return iter(logged)

        def stream() -> Iterator[Event]:
            yield from logged
            os.kill(os.getpid(), signal.SIGTERM)
            self.release.wait(30)

        return stream()


def test_sigterm_flushes_the_batch_and_the_checkpoint_and_exits_0(ledger: Ledger) -> None:
    fake = SignalsMidStream()
    fake.add_image(X, tags=["x:1"], layers=[("lx", 1)])
    clock = FakeClock()
    fake.emit(container_event("create", "c1", "x:1", 10))
    fake.emit(container_event("start", "c1", "x:1", 11))
    # A batch that would never fill or age by itself: only the stop writes it.
    w = watcher(fake, ledger, clock, batch_size=500, flush_interval=3600, poll=0.01)
    before = signal.getsignal(signal.SIGTERM)
    try:
        assert w.run() == EXIT_OK
    finally:
        fake.release.set()

    assert w.stopping
    assert clock.sleeps == []  # no reconnect: the stream was still open
    assert w.stats.batches == 1
    assert last_used(ledger, X) == (at(11), "event")
    assert ledger.checkpoint() == at(11)
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back


class LateImage(FakeRuntime):
    """An image that arrives after the inventory was taken: only the engine knows its tag."""

    late: set[str]

    def inventory(self, *, sizes: bool = False, progress: Progress = no_progress) -> Inventory:
        inventory = super().inventory(sizes=sizes, progress=progress)
        return inventory._replace(images=tuple(i for i in inventory.images
                                               if i.id not in self.late))


def test_unknown_refs_are_resolved_through_the_runtime(ledger: Ledger) -> None:
    fake = LateImage()
    fake.late = {LATE}
    fake.add_image(X, tags=["x:1"], layers=[("lx", 1)])
    fake.add_image(LATE, tags=["late:1"], layers=[("ll", 1)])
    clock = FakeClock()
    fake.emit(container_event("create", "c1", "late:1", 10))
    fake.emit(container_event("start", "c1", "late:1", 11))
    fake.emit(container_event("start", "c2", "nowhere:1", 12))  # gone already: skipped
    w = watcher(fake, ledger, clock, verbose=True)
    stop_on(w, clock, 1)

    assert w.run() == EXIT_OK

    assert last_used(ledger, LATE) == (at(11), "event")
    assert ledger.container_image("c1") == (LATE, "c1-name")
    assert ledger.container_image("c2") is None
    logged = [dict(line) for line in w.lines if line.get("event") == "start"]  # type: ignore[attr-defined]
    assert {"event": "start", "container": "c1-name", "image": LATE, "at": at(11)} in logged


def test_docker_messages_map_to_events() -> None:
    nanos = 1_764_072_000_123_456_789
    container = _event_from_message({
        "Type": "container", "Action": "exec_start: sh -c true", "timeNano": nanos,
        "time": nanos // 10**9,
        "Actor": {"ID": "abc", "Attributes": {"image": "busybox:1", "name": "web-1"}},
    })
    assert container == Event(
        time=datetime.fromtimestamp(nanos // 10**9, UTC).replace(microsecond=123456),
        type="container", action="exec_start: sh -c true", id="abc", image="busybox:1",
        name="web-1",
    )
    image = _event_from_message({
        "Type": "image", "Action": "tag", "time": 1_764_072_000,
        "Actor": {"ID": "sha256:" + "f" * 64, "Attributes": {"name": "busybox:2"}},
    })
    assert image is not None and image.id == "sha256:" + "f" * 64 and image.image is None
    assert _event_from_message({"Type": "network", "Action": "connect", "time": 1,
                                "Actor": {"ID": "n"}}) is None
    assert _event_from_message({"Type": "container", "Action": "start"}) is None


def test_a_failed_write_keeps_the_batch_and_retries(
    fake: FakeRuntime, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reclaim.state.store import StateWriteFailed

    clock = FakeClock()
    for n in range(4):
        fake.emit(container_event("start", f"c{n}", "x:1", 10 + n))
    w = watcher(fake, ledger, clock, batch_size=2)
    real = w.recorder.handle
    failures = iter([True, False])

    def flaky(events: list[Event], now: datetime) -> int:
        if next(failures, False):
            raise StateWriteFailed("writing the state database failed: database or disk is "
                                   "full; the previous state is intact")
        return real(events, now)

    monkeypatch.setattr(w.recorder, "handle", flaky)
    stop_on(w, clock, 1)
    assert w.run() == EXIT_OK
    assert w.stats.write_failures == 1
    assert any(line.get("event") == "write-failed" for line in w.lines)  # type: ignore[attr-defined]
    # Nothing was lost: the kept batch went in with the next write.
    assert last_used(ledger, X) == (at(13), "event")
    assert ledger.checkpoint() == at(13)


def test_writes_that_never_succeed_end_with_exit_1(
    fake: FakeRuntime, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reclaim.state.store import StateWriteFailed

    clock = FakeClock()
    fake.emit(container_event("start", "c1", "x:1", 10))
    w = watcher(fake, ledger, clock)

    def full(events: list[Event], now: datetime) -> int:
        raise StateWriteFailed("database or disk is full")

    monkeypatch.setattr(w.recorder, "handle", full)
    stop_on(w, clock, 1)
    assert w.run() == 1
    assert ledger.checkpoint() == T0  # the state before stays as it was


def test_a_use_of_a_name_moved_since_the_inventory_counts_for_the_image_it_names_now(
        ledger: Ledger) -> None:
    from reclaim.recorder import Recorder

    fake = FakeRuntime()
    fake.add_image(X, tags=["app:1"], layers=[("lx", 1)])
    fake.add_image(Y, tags=["app:2"], layers=[("ly", 1)])
    recorder = Recorder(ledger, resolve=lambda ref: None)
    recorder.catch_up(fake.inventory(), T0)
    # `docker tag app:2 app:1` moves the name to Y; then a container is made from `app:1`.
    recorder.handle([Event(at(5), "image", "tag", Y, name="app:1"),
                     container_event("create", "c1", "app:1", 6)], at(7))
    assert last_used(ledger, Y) == (at(6), "event")
    assert last_used(ledger, X) != (at(6), "event")
    assert ledger.container_image("c1") == (Y, "c1-name")
    # A name removed meanwhile is asked of the resolver, never taken from the old tags.
    recorder.handle([Event(at(8), "image", "untag", Y, name="app:1"),
                     container_event("create", "c2", "app:1", 9)], at(10))
    assert ledger.container_image("c2") is None
