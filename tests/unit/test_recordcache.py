"""The cache of on-disk engine records that df keeps between runs: used only while it is
provably the same record, dropped when unreadable, pruned to what the host still has."""

from __future__ import annotations

import marshal
import os
import sys
from pathlib import Path

from reclaim.runtimes.docker.recordcache import HEADER, RecordCache


def test_entries_survive_a_save_and_reload(tmp_path: Path) -> None:
    path = str(tmp_path / "c.json")
    cache = RecordCache(path, "/data")
    cache.put_image("a" * 64, [["sha256:" + "1" * 64], 10, None, None, None])
    cache.put_layer("b" * 64, [100, 7])
    cache.put_container("c" * 64, (1, 2, 3), {"Id": "c" * 64})
    cache.save()
    again = RecordCache(path, "/data")
    assert again.image("a" * 64) == [["sha256:" + "1" * 64], 10, None, None, None]
    assert again.layer("b" * 64) == [100, 7]
    assert again.container("c" * 64, (1, 2, 3)) == {"Id": "c" * 64}
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_a_container_record_with_another_stamp_is_a_miss(tmp_path: Path) -> None:
    cache = RecordCache(str(tmp_path / "c.json"), "/data")
    cache.put_container("c" * 64, (1, 2, 3), {"Id": "c" * 64})
    assert cache.container("c" * 64, (9, 2, 3)) is None  # a new file renamed into place
    assert cache.container("c" * 64, (1, 5, 3)) is None
    assert cache.container("c" * 64, (1, 2, 4)) is None


def test_entries_not_seen_in_a_run_are_dropped(tmp_path: Path) -> None:
    path = str(tmp_path / "c.json")
    cache = RecordCache(path, "/data")
    cache.put_layer("1" * 64, [1, 1])
    cache.put_layer("2" * 64, [2, 2])
    cache.save()
    run = RecordCache(path, "/data")
    assert run.layer("1" * 64) == [1, 1]  # only this one is still on the host
    run.save()
    assert RecordCache(path, "/data").layers == {"1" * 64: [1, 1]}


def test_a_cache_for_another_data_root_or_version_or_unreadable_is_ignored(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.json"
    cache = RecordCache(str(path), "/data")
    cache.put_layer("1" * 64, [1, 1])
    cache.save()
    assert RecordCache(str(path), "/other").layers == {}
    body = path.read_bytes()[len(HEADER):]
    # Another cache version, or another interpreter's marshal format: a miss.
    path.write_bytes(HEADER.replace(b"records 3 ", b"records 999 ") + body)
    assert RecordCache(str(path), "/data").layers == {}
    path.write_bytes(HEADER.replace(f"{sys.hexversion:x}".encode(), b"30a00f0") + body)
    assert RecordCache(str(path), "/data").layers == {}
    path.write_bytes(HEADER + marshal.dumps({"data_root": "/data", "images": [], "layers": {},
                                             "containers": {}}))
    assert RecordCache(str(path), "/data").images == {}
    path.write_bytes(HEADER + body[: len(body) // 2])  # cut short
    assert RecordCache(str(path), "/data").layers == {}
    path.write_bytes(HEADER + b"\xff not marshal")
    assert RecordCache(str(path), "/data").layers == {}
    path.write_text('{"version": 2, "data_root": "/data"}')  # an earlier version's JSON
    assert RecordCache(str(path), "/data").layers == {}


def test_the_superseded_json_cache_is_removed_once_the_new_one_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "docker-x.records"
    legacy = tmp_path / "docker-x.records.json"
    legacy.write_text("{}")
    cache = RecordCache(str(path), "/data")
    cache.put_layer("1" * 64, [1, 1])
    cache.save()
    assert path.exists()
    assert not legacy.exists()


def test_a_cache_that_cannot_be_written_costs_nothing_but_speed(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = RecordCache(str(blocker / "c.json"), "/data")  # its directory is a file
    cache.put_layer("1" * 64, [1, 1])
    cache.save()  # no exception
    assert not (tmp_path / "c.json").exists()


def test_a_run_that_reads_no_container_records_keeps_them(tmp_path: Path) -> None:
    """plan lists containers through the engine: df's container records must survive it."""
    path = str(tmp_path / "c.json")
    cache = RecordCache(path, "/data")
    cache.put_layer("1" * 64, [1, 1])
    cache.put_container("c" * 64, (1, 2, 3), {"Id": "c" * 64})
    cache.save()
    plan_run = RecordCache(path, "/data")
    assert plan_run.layer("1" * 64) == [1, 1]
    plan_run.put_layer("2" * 64, [2, 2])
    plan_run.save()
    assert RecordCache(path, "/data").container("c" * 64, (1, 2, 3)) == {"Id": "c" * 64}
