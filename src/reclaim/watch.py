"""`reclaim watch`: records image use from the engine's event stream into the usage ledger.

The loop, in order:

1. catch up from a fresh inventory (container timestamps are uses; every image gets a first
   seen), so that whatever happened while nobody watched is reconciled;
2. replay the events the engine still holds since the checkpoint, up to the moment of
   connecting (the engine keeps only its last ~256, which is why step 1 comes first);
3. follow new events, written in batches (every `batch_size` events or `flush_interval`
   seconds, whichever comes first), each batch with its checkpoint in one transaction;
4. when the stream ends or breaks (engine restart, broken connection), reconnect with an
   exponential backoff and start again at step 1.

SIGTERM and SIGINT only set a flag; the loop notices it, writes the batch in hand with its
checkpoint, and returns 0. Time and sleeping are injected so that tests drive them.
Enforcement (running the policy) is not part of this module yet: it only records.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType

from reclaim.errors import EXIT_OK, EXIT_PARTIAL, NotFound, ReclaimError
from reclaim.model import Event
from reclaim.recorder import IMAGE_ARRIVALS, USE_ACTIONS, Recorder
from reclaim.runtimes.base import Runtime
from reclaim.state.store import StateBusy, StateWriteFailed
from reclaim.state.usage import Ledger

# One structured log line: ordered key/value pairs (the CLI prints them as key=value).
LogFn = Callable[[Mapping[str, object]], None]

BATCH_SIZE = 500
FLUSH_INTERVAL = 1.0
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
# How long the loop waits for the next event before looking at the clock and the stop flag
# again (real seconds; only matters while the engine is quiet).
POLL = 0.2
# Image events that change what a reference names: cached resolutions are dropped on these.
_REF_CHANGES = frozenset({"tag", "untag", "delete", "pull", "load", "import", "build", "commit"})
_LOGGED_IMAGE_ACTIONS = IMAGE_ARRIVALS | {"tag", "untag", "delete"}


def _no_log(fields: Mapping[str, object]) -> None:
    """The log that drops every line."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _End:
    """The stream ended: by itself (error None) or with an error."""

    error: BaseException | None = None


_STOPPED = _End()


@dataclass
class WatchStats:
    events: int = 0
    uses: int = 0
    batches: int = 0
    reconnects: int = 0
    catch_ups: int = 0
    write_failures: int = 0
    backoffs: list[float] = field(default_factory=list)


class Watcher:
    def __init__(
        self,
        runtime: Runtime,
        ledger: Ledger,
        *,
        verbose: bool = False,
        log: LogFn = _no_log,
        now: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        batch_size: int = BATCH_SIZE,
        flush_interval: float = FLUSH_INTERVAL,
        backoff_start: float = BACKOFF_START,
        backoff_max: float = BACKOFF_MAX,
        poll: float = POLL,
    ) -> None:
        self.runtime = runtime
        self.ledger = ledger
        self.verbose = verbose
        self.log = log
        self.now = now
        self.monotonic = monotonic
        # The default sleep wakes up as soon as a stop is requested: a SIGTERM during a 30 s
        # backoff must not wait for it.
        self.sleep = sleep if sleep is not None else self._interruptible_sleep
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.poll = poll
        self.stats = WatchStats()
        self.recorder = Recorder(ledger, resolve=self._resolve)
        self._stop = threading.Event()
        self._batch: list[Event] = []
        self._batch_started = 0.0
        # Tag -> image id answers from the engine. Dropped whenever an image event says a
        # reference may have moved, so a stale answer never outlives the next tag or pull.
        self._resolved: dict[str, str | None] = {}

    # -- control -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to write what it holds and return. Safe from a signal handler."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _interruptible_sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT set the stop flag and nothing else: the handler may run between
        any two bytecodes, even inside a transaction, so it must not touch the database."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.request_stop()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Watch until asked to stop; returns the exit code (0). Errors before the first
        successful catch-up (engine unreachable, state unusable) are raised to the caller."""
        with self._signals():
            since = self._start()
            while not self.stopping:
                end = self._follow(since)
                if self.stopping:
                    break
                self.log({
                    "event": "stream-ended",
                    "error": _describe(end.error) if end.error else None,
                    "checkpoint": self.ledger.checkpoint(),
                })
                reconnected = self._reconnect()
                if reconnected is None:
                    break
                since = reconnected
            self._flush()
        self.log({"event": "stopped", "events": self.stats.events, "uses": self.stats.uses,
                  "checkpoint": self.ledger.checkpoint(), "unwritten": len(self._batch)})
        # Events that could not be written are replayed from the checkpoint next time, as far
        # as the engine still holds them; the exit status says they were not written now.
        return EXIT_OK if not self._batch else EXIT_PARTIAL

    def _start(self) -> datetime:
        """The first catch-up. Events are followed from the checkpoint; on the very first run
        from the moment before the inventory, which the catch-up covers."""
        started = self.now()
        checkpoint = self.ledger.checkpoint()
        self._catch_up()
        if checkpoint is None:
            with self.ledger.store.transaction() as db:
                self.ledger.set_checkpoint_in(db, started)
        since = checkpoint or started
        self.log({"event": "start", "since": since})
        return since

    def _catch_up(self) -> None:
        inventory = self.runtime.inventory()
        self.recorder.catch_up(inventory, self.now())
        self.stats.catch_ups += 1
        self.log({"event": "catch-up", "images": len(inventory.images),
                  "containers": len(inventory.containers)})

    def _reconnect(self) -> datetime | None:
        """Back off, then reconcile from a fresh inventory; again, with a doubled delay, until
        the engine answers. Returns where to replay events from, or None when stopping."""
        delay = self.backoff_start
        while not self.stopping:
            self.stats.backoffs.append(delay)
            self.log({"event": "reconnect", "in_s": delay})
            self.sleep(delay)
            if self.stopping:
                return None
            delay = min(delay * 2, self.backoff_max)
            try:
                self._catch_up()
            except ReclaimError as exc:
                self.log({"event": "reconnect-failed", "error": exc.message})
                continue
            self.stats.reconnects += 1
            return self.ledger.checkpoint() or self.now()
        return None

    def _follow(self, since: datetime) -> _End:
        """Replay from `since` up to now, then follow; returns how the stream ended."""
        connected = self.now()
        end = self._consume(lambda: self.runtime.events(since, connected))
        if end is _STOPPED or end.error is not None:
            return end
        self._flush()
        self.log({"event": "caught-up", "checkpoint": self.ledger.checkpoint(),
                  "events": self.stats.events})
        return self._consume(lambda: self.runtime.events(connected))

    def _consume(self, open_stream: Callable[[], Iterator[Event]]) -> _End:
        """Read one stream to its end. The stream is read by a thread of its own, so that the
        batch is written on time and a stop is noticed while the engine is quiet; a thread
        left blocked on a quiet stream at exit is a daemon and goes with the process."""
        items: queue.Queue[Event | _End] = queue.Queue()

        def pump() -> None:
            try:
                for event in open_stream():
                    items.put(event)
                items.put(_End())
            except BaseException as exc:  # handed to the loop, which decides
                items.put(_End(exc))

        threading.Thread(target=pump, name="reclaim-events", daemon=True).start()
        while True:
            if self.stopping:
                # What already arrived is written too, then the loop ends.
                with contextlib.suppress(queue.Empty):
                    while True:
                        item = items.get_nowait()
                        if isinstance(item, _End):
                            break
                        self._add(item)
                return _STOPPED
            try:
                item = items.get(timeout=self._wait_budget())
            except queue.Empty:
                self._flush_if_due()
                continue
            if isinstance(item, _End):
                self._flush()
                if item.error is not None and not isinstance(item.error, Exception):
                    raise item.error  # KeyboardInterrupt, SystemExit: not a stream problem
                return item
            self._add(item)
            self._flush_if_due()

    def _wait_budget(self) -> float:
        if not self._batch:
            return self.poll
        left = self.flush_interval - (self.monotonic() - self._batch_started)
        return max(0.0, min(self.poll, left))

    # -- batches -------------------------------------------------------------------------

    def _add(self, event: Event) -> None:
        if event.type == "image" and event.action in _REF_CHANGES:
            self._resolved.clear()
        if not self._batch:
            self._batch_started = self.monotonic()
        self._batch.append(event)
        self.stats.events += 1
        if self.verbose:
            self._log_event(event)

    def _flush_if_due(self) -> None:
        if self._batch and (
            len(self._batch) >= self.batch_size
            or self.monotonic() - self._batch_started >= self.flush_interval
        ):
            self._flush()

    def _flush(self) -> None:
        """The batch and its checkpoint, in one transaction. When the write fails (disk full,
        the database held by another reclaim), the previous state is intact: say so loudly,
        keep the batch, and try again at the next flush."""
        if not self._batch:
            return
        try:
            self.stats.uses += self.recorder.handle(self._batch, self.now())
        except (StateWriteFailed, StateBusy) as exc:
            self.stats.write_failures += 1
            self.log({"event": "write-failed", "error": exc.message,
                      "pending": len(self._batch)})
            # Counted from now: the next try is one flush interval away.
            self._batch_started = self.monotonic()
            return
        self._batch = []
        self.stats.batches += 1

    # -- resolving and logging -----------------------------------------------------------

    def _resolve(self, ref: str) -> str | None:
        """An image reference the ledger does not know, asked of the engine."""
        if ref in self._resolved:
            return self._resolved[ref]
        try:
            found: str | None = self.runtime.image_id(ref)
        except NotFound:
            found = None
        except ReclaimError as exc:
            # The engine went away mid-batch: this event's use is lost, the catch-up after
            # the reconnect finds what containers still show. Not cached.
            self.log({"event": "resolve-failed", "ref": ref, "error": exc.message})
            return None
        self._resolved[ref] = found
        return found

    def _image_for_log(self, ref: str | None) -> str | None:
        if not ref or ref.startswith("sha256:"):
            return ref
        return self.recorder.image_id(ref)

    def _log_event(self, event: Event) -> None:
        action = event.action.split(":")[0]
        if event.type == "container":
            if action not in USE_ACTIONS and action != "destroy":
                return
            known = self.ledger.container_image(event.id)
            image = known[0] if known else self._image_for_log(event.image)
            self.log({"event": action, "container": event.name or event.id[:12],
                      "image": image or event.image, "at": event.time})
        elif action in _LOGGED_IMAGE_ACTIONS:
            self.log({"event": f"image-{action}", "ref": event.id, "at": event.time})


def _describe(error: BaseException) -> str:
    if isinstance(error, ReclaimError):
        return error.message
    return f"{type(error).__name__}: {error}"
