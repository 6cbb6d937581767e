"""Container records read from a data root: the state word the engine would list, the times
it would report, and what cannot be read left out (the caller then asks the engine)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reclaim.model import ContainerState, Mount
from reclaim.runtimes.docker.disk import containers_on_disk
from reclaim.runtimes.docker.recordcache import RecordCache

ZERO = "0001-01-01T00:00:00Z"


def _record(root: Path, cid: str, state: dict[str, object], created: str) -> None:
    d = root / "containers" / cid
    d.mkdir(parents=True)
    (d / "config.v2.json").write_text(json.dumps({
        "ID": cid, "Name": f"/c-{cid[:4]}", "Image": "sha256:" + "a" * 64, "Created": created,
        "State": {"StartedAt": ZERO, "FinishedAt": ZERO, **state},
        "Config": {"Labels": {"k": "v"}},
        "MountPoints": {"/data": {"Type": "volume", "Name": "vol", "Source": "/v/_data",
                                  "Destination": "/data"},
                        "/etc/x": {"Type": "bind", "Source": "/etc/x", "Destination": "/etc/x"}},
    }))


@pytest.mark.parametrize(("state", "word"), [
    ({"Running": True, "StartedAt": "2026-01-01T00:00:00Z"}, "running"),
    ({"Running": True, "Paused": True, "StartedAt": "2026-01-01T00:00:00Z"}, "paused"),
    ({"Running": True, "Restarting": True, "StartedAt": "2026-01-01T00:00:00Z"}, "restarting"),
    ({"RemovalInProgress": True, "StartedAt": "2026-01-01T00:00:00Z"}, "removing"),
    ({"Dead": True, "StartedAt": "2026-01-01T00:00:00Z"}, "dead"),
    ({"StartedAt": "2026-01-01T00:00:00Z", "FinishedAt": "2026-01-02T00:00:00Z"}, "exited"),
    ({}, "created"),
])
def test_state_word_is_the_engines(tmp_path: Path, state: dict[str, object], word: str) -> None:
    _record(tmp_path, "1" * 64, state, "2026-01-01T10:00:00.987654321Z")
    [c] = containers_on_disk(str(tmp_path)) or []
    assert c.state == ContainerState(word)
    assert c.name == "c-1111"
    assert c.image_id == "sha256:" + "a" * 64
    # Whole seconds, as the listing gives them.
    assert c.created == datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
    assert c.labels == {"k": "v"}
    assert sorted(c.mounts) == [Mount("bind", None, "/etc/x", "/etc/x"),
                                Mount("volume", "vol", "/v/_data", "/data")]
    assert c.rw_bytes is None


@pytest.mark.parametrize("cached", [False, True])
def test_only_a_stopped_containers_times_are_kept(tmp_path: Path, cached: bool) -> None:
    """As the API path does (it reads times for exited and dead containers only), so that
    both paths give the ledger the same rows. With `cached`, the second read comes from the
    record cache and must give the same containers."""
    times: dict[str, object] = {"StartedAt": "2026-01-01T00:00:00.123456789Z",
             "FinishedAt": "2026-01-02T00:00:00.5Z"}
    _record(tmp_path, "1" * 64, times, "2026-01-01T10:00:00Z")
    _record(tmp_path, "2" * 64, {**times, "Running": True}, "2026-01-01T10:00:01Z")
    _record(tmp_path, "3" * 64, {**times, "Dead": True}, "2026-01-01T10:00:02Z")
    cache = RecordCache(str(tmp_path / "cache.records"), str(tmp_path)) if cached else None
    first = containers_on_disk(str(tmp_path), cache)
    if cache is not None:
        cache.save()
        cache = RecordCache(str(tmp_path / "cache.records"), str(tmp_path))
        assert cache.containers  # the second read below is served from it
    by_id = {c.id[0]: c for c in containers_on_disk(str(tmp_path), cache) or []}
    assert list(by_id.values()) == first
    started = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    finished = datetime(2026, 1, 2, 0, 0, 0, 500000, tzinfo=UTC)
    assert (by_id["1"].started, by_id["1"].finished) == (started, finished)  # exited
    assert (by_id["3"].started, by_id["3"].finished) == (started, finished)  # dead
    assert (by_id["2"].started, by_id["2"].finished) == (None, None)  # running


def test_newest_first_and_unreadable_records_left_out(tmp_path: Path) -> None:
    _record(tmp_path, "1" * 64, {}, "2026-01-01T10:00:00.5Z")
    _record(tmp_path, "2" * 64, {}, "2026-01-01T10:00:00.25Z")
    _record(tmp_path, "3" * 64, {}, "2026-01-01T10:00:01Z")
    (tmp_path / "containers" / ("4" * 64)).mkdir()  # being created: no record yet
    (tmp_path / "containers" / ("5" * 64)).mkdir()
    (tmp_path / "containers" / ("5" * 64) / "config.v2.json").write_text("{not json")
    (tmp_path / "containers" / "not-a-container").mkdir()
    listing = containers_on_disk(str(tmp_path)) or []
    assert [c.id[0] for c in listing] == ["3", "1", "2"]


def test_no_containers_directory_means_ask_the_engine(tmp_path: Path) -> None:
    assert containers_on_disk(str(tmp_path)) is None


def test_containerd_names_as_the_engine_shows_them() -> None:
    from reclaim.runtimes.docker.containerd_store import _familiar

    assert _familiar("docker.io/library/busybox:1") == "busybox:1"
    assert _familiar("docker.io/fx/api:1.0") == "fx/api:1.0"
    assert _familiar("ghcr.io/org/tool:2") == "ghcr.io/org/tool:2"
    assert _familiar("docker.io/fx/api@sha256:" + "a" * 64) == "fx/api@sha256:" + "a" * 64


def test_go_binary_times() -> None:
    import struct
    from datetime import UTC, datetime

    from reclaim.runtimes.docker.containerd_store import _go_time

    # 2026-01-02T03:04:05.678901234Z: seconds since year 1, nanoseconds, zone -1 (UTC).
    seconds = int((datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
                   - datetime(1, 1, 1, tzinfo=UTC)).total_seconds())
    raw = b"\x01" + struct.pack(">qi", seconds, 678901234) + b"\xff\xff"
    assert _go_time(raw) == datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert _go_time(b"\x02" + raw[1:]) is None
    assert _go_time(None) is None


def test_a_kept_container_record_is_laid_out_as_its_names_say(tmp_path: Path) -> None:
    """The record cache keeps container records as plain lists: CONTAINER_RECORD names their
    places, and the record read from disk fills them so."""
    from reclaim.runtimes.docker.disk import CONTAINER_RECORD, _container_record

    cid = "c" * 64
    _record(tmp_path, cid, {"StartedAt": "2026-01-01T00:00:00Z",
                            "FinishedAt": "2026-01-02T00:00:00Z"}, "2025-12-31T00:00:00.5Z")
    record = _container_record(str(tmp_path / "containers" / cid / "config.v2.json"))
    assert record is not None
    fields = dict(zip(CONTAINER_RECORD, record, strict=True))
    assert fields == {
        "name": "c-cccc", "image_id": "sha256:" + "a" * 64, "state": "exited",
        "created": datetime(2025, 12, 31, 0, 0, 0, 500000, UTC).timestamp(),
        "labels": {"k": "v"},
        "mounts": [["volume", "vol", "/v/_data", "/data"], ["bind", None, "/etc/x", "/etc/x"]],
        "started": datetime(2026, 1, 1, tzinfo=UTC).timestamp(),
        "finished": datetime(2026, 1, 2, tzinfo=UTC).timestamp(),
    }
