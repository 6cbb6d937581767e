"""The engine's event stream: its messages as reclaim's `Event`s, and `UseWatch`, the live
watch apply keeps on what makes an image's tags unsafe to remove."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reclaim.errors import NotFound, ReclaimError
from reclaim.model import Event
from reclaim.ondisk.digests import is_hex64

if TYPE_CHECKING:
    from reclaim.runtimes.docker.adapter import DockerRuntime
    from reclaim.transport import Stream


def json_messages(pieces: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON objects of an event stream as they arrive. The engine writes one object per
    line, but nothing promises that a piece ends on an object's boundary: what is whole is
    decoded, the rest kept for the next piece. Transport errors are the caller's."""
    decoder = json.JSONDecoder()
    buffer = ""
    for chunk in pieces:
        buffer += chunk.decode(errors="replace")
        while buffer := buffer.lstrip():
            try:
                message, end = decoder.raw_decode(buffer)
            except ValueError:
                break
            buffer = buffer[end:]
            if isinstance(message, dict):
                yield message


def _event_time_param(when: datetime) -> str:
    # Seconds with a fraction: the engine reads the digits after the point as a fraction of a
    # second, so a replay starts at the checkpoint itself, not at its whole second.
    return f"{when.timestamp():.6f}"


def _event_from_message(message: dict[str, Any]) -> Event | None:
    kind = message.get("Type")
    action = message.get("Action")
    actor = message.get("Actor") or {}
    actor_id = actor.get("ID") or message.get("id")
    if kind not in ("container", "image") or not action or not actor_id:
        return None
    attributes = actor.get("Attributes") or {}
    nanos = message.get("timeNano")
    if isinstance(nanos, int):
        seconds, rest = divmod(nanos, 1_000_000_000)
        when = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)
    elif isinstance(message.get("time"), int):
        when = datetime.fromtimestamp(message["time"], UTC)
    else:
        return None
    image = attributes.get("image")
    name = attributes.get("name")
    return Event(
        time=when,
        type=str(kind),
        action=str(action),
        id=str(actor_id),
        image=str(image) if image and kind == "container" else None,
        name=str(name) if name else None,
    )


# Events that can make an image's tags unsafe to remove: a container created (from any
# image: which one is looked up), and a name given to an image.
_USE_EVENTS = ("create", "tag", "pull", "load", "import")


class UseWatch:
    """What `DockerRuntime.watch_uses` returns: one thread reading the engine's events.

    `why_not(image_id, refs)` is asked before each tag apply removes. It first waits for every
    container creation seen so far to be looked up (one inspect each; creations during an
    apply are rare), then says why the tags must stay, or None. `live` turns False for good
    when the stream could not be opened or ended; apply then goes back to asking the engine
    for the image's containers before every tag.
    """

    # How long `why_not` waits for creations to be looked up before it gives up on the image.
    RESOLVE_WAIT = 30.0

    def __init__(self, runtime: DockerRuntime, since: datetime) -> None:
        self._runtime = runtime
        self._cond = threading.Condition()
        self._used: dict[str, str] = {}  # image id -> the container created from it
        self._named: dict[str, str] = {}  # image id -> a name it was given
        self._refs: dict[str, str] = {}  # a name given to some image -> by what event
        self._pending = 0
        self._lost: str | None = None
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._stream: Stream | None = None
        params = {
            "since": _event_time_param(since),
            "filters": json.dumps({"type": ["container", "image"], "event": list(_USE_EVENTS)}),
        }
        try:
            # The connect and the answer's headers have the call deadline; the stream, none.
            self._stream = runtime._event_stream(params)
        except ReclaimError as exc:
            self._lost = f"the engine's event stream could not be opened ({exc})"
            return
        self._thread = threading.Thread(target=self._read, args=(self._stream,), daemon=True,
                                        name="reclaim-use-watch")
        self._thread.start()

    @property
    def live(self) -> bool:
        with self._cond:
            return self._lost is None

    def why_not(self, image_id: str, refs: tuple[str, ...]) -> str | None:
        with self._cond:
            settled = self._cond.wait_for(lambda: self._pending == 0, self.RESOLVE_WAIT)
            if not settled:
                return "a container created just now could not be looked up in time"
            if image_id in self._used:
                return f"container {self._used[image_id]} was created from it"
            if image_id in self._named:
                return f"it was tagged {self._named[image_id]} meanwhile"
            for ref in refs:
                if ref in self._refs:
                    return f"{ref} was just given to an image ({self._refs[ref]})"
        return None

    def close(self) -> None:
        with self._cond:
            self._stopped = True
        if self._stream is not None:
            self._stream.shutdown()
        if self._thread is not None:
            self._thread.join(5)
        if self._stream is not None:
            self._stream.close()

    def _read(self, stream: Stream) -> None:
        why = "the engine's event stream ended"
        try:
            for message in json_messages(stream):
                self._take(message)
        except (OSError, ValueError, ReclaimError) as exc:  # ValueError: closed under it
            why = f"the engine's event stream broke ({exc})"
        finally:
            with self._cond:
                if not self._stopped:
                    self._lost = why
                self._cond.notify_all()

    def _take(self, message: dict[str, Any]) -> None:
        kind, action = message.get("Type"), message.get("Action")
        actor = message.get("Actor") or {}
        actor_id = str(actor.get("ID") or message.get("id") or "")
        name = str((actor.get("Attributes") or {}).get("name") or "")
        if kind == "container" and action == "create" and actor_id:
            with self._cond:
                self._pending += 1
            try:
                try:
                    raw = self._runtime._get_json(f"/containers/{actor_id}/json",
                                                  f"inspect container {actor_id[:12]}")
                except NotFound:
                    return  # removed again already: it uses nothing now
                with self._cond:
                    self._used.setdefault(str(raw.get("Image") or ""),
                                          name or actor_id[:12])
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()
        elif kind == "image" and action in _USE_EVENTS:
            with self._cond:
                for ref in (actor_id, name):
                    if ref and not is_hex64(ref.removeprefix("sha256:")):
                        self._refs.setdefault(ref, str(action))
                if actor_id.startswith("sha256:") and name:
                    self._named.setdefault(actor_id, name)
                self._cond.notify_all()
