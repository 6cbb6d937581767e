"""Container records read from a data root: the state word the engine would list, and what
cannot be read left out (the caller then asks the engine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reclaim.runtimes.dockerdisk import container_listing

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
    [raw] = container_listing(str(tmp_path)) or []
    assert raw["State"] == word
    assert raw["Names"] == ["/c-1111"]
    assert raw["Created"] == 1767261600  # whole seconds, as the listing gives them
    assert raw["Labels"] == {"k": "v"}
    assert sorted(m["Type"] for m in raw["Mounts"]) == ["bind", "volume"]
    assert {m["Name"] for m in raw["Mounts"]} == {"vol", None}


def test_newest_first_and_unreadable_records_left_out(tmp_path: Path) -> None:
    _record(tmp_path, "1" * 64, {}, "2026-01-01T10:00:00.5Z")
    _record(tmp_path, "2" * 64, {}, "2026-01-01T10:00:00.25Z")
    _record(tmp_path, "3" * 64, {}, "2026-01-01T10:00:01Z")
    (tmp_path / "containers" / ("4" * 64)).mkdir()  # being created: no record yet
    (tmp_path / "containers" / ("5" * 64)).mkdir()
    (tmp_path / "containers" / ("5" * 64) / "config.v2.json").write_text("{not json")
    (tmp_path / "containers" / "not-a-container").mkdir()
    listing = container_listing(str(tmp_path)) or []
    assert [raw["Id"][0] for raw in listing] == ["3", "1", "2"]


def test_no_containers_directory_means_ask_the_engine(tmp_path: Path) -> None:
    assert container_listing(str(tmp_path)) is None


def test_containerd_names_as_the_engine_shows_them() -> None:
    from reclaim.runtimes.containerddisk import _familiar

    assert _familiar("docker.io/library/busybox:1") == "busybox:1"
    assert _familiar("docker.io/fx/api:1.0") == "fx/api:1.0"
    assert _familiar("ghcr.io/org/tool:2") == "ghcr.io/org/tool:2"
    assert _familiar("docker.io/fx/api@sha256:" + "a" * 64) == "fx/api@sha256:" + "a" * 64


def test_go_binary_times() -> None:
    import struct
    from datetime import UTC, datetime

    from reclaim.runtimes.containerddisk import _go_time

    # 2026-01-02T03:04:05.678901234Z: seconds since year 1, nanoseconds, zone -1 (UTC).
    seconds = int((datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
                   - datetime(1, 1, 1, tzinfo=UTC)).total_seconds())
    raw = b"\x01" + struct.pack(">qi", seconds, 678901234) + b"\xff\xff"
    assert _go_time(raw) == datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert _go_time(b"\x02" + raw[1:]) is None
    assert _go_time(None) is None
