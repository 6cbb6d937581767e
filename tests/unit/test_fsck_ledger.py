"""fsck's quarantine batches in the ledger: migration 3, the state module, what quarantine,
restore and purge record, and what happens when the ledger cannot be written (the batch stays
restorable from its manifest, the command says so and exits 1)."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reclaim.cli import main
from reclaim.fsck import quarantine as q
from reclaim.fsck import run, scan, version
from reclaim.fsck.errors import FsckRefused, PartialAction
from reclaim.state.migrations import MIGRATIONS, SCHEMA_VERSION
from reclaim.state.quarantine import BatchRecord, QuarantineLedger, ledger_file, open_ledger
from reclaim.state.store import Store
from tests.unit.test_fsck import age, listing, make_tree, no_mounts

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _synthetic_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in test_fsck.py: the host's mounts are not part of these synthetic roots, and they
    stand for a Docker 20.10 data root whatever dockerd this host has."""
    monkeypatch.setattr("reclaim.fsck.mounts.all_namespaces", no_mounts)
    found = [version.EngineVersion("Docker version 20.10.24, build test", (20, 10, 24), "test")]
    monkeypatch.setattr(version, "detect", lambda pids: found)
    monkeypatch.setattr(scan, "engine_pids", lambda root: [])


def record(batch_id: str, state: str = "quarantined", *, root: str = "/var/lib/docker",
           at: datetime = T0, size: int = 1000, purged: int | None = None) -> BatchRecord:
    return BatchRecord(data_root=root, id=batch_id, path=f"/var/lib/reclaim-quarantine/{batch_id}",
                       created=T0, bytes=size, state=state, state_at=at,
                       entries=[{"from": "overlay2/x", "state": "moved", "bytes": size}],
                       purged_bytes=purged)


# --- migration 3 and the state module -------------------------------------------------------


def test_a_version_2_ledger_gains_the_quarantine_table_and_keeps_its_rows(tmp_path: Path
                                                                           ) -> None:
    path = tmp_path / "docker-OLD.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO journal (at, kind, object_id, rule) VALUES (1, 'image', 'x', 'r')")
    conn.close()

    store = Store(path)

    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.conn.execute("SELECT object_id FROM journal").fetchall() == [("x",)]
    ledger = QuarantineLedger(store)
    ledger.record(record("b1"))
    assert [b.id for b in ledger.batches()] == ["b1"]
    store.close()


def test_a_batch_goes_from_quarantined_to_restored_or_purged_with_the_time(tmp_path: Path
                                                                           ) -> None:
    ledger = open_ledger(tmp_path / "state")
    assert ledger.store.path == ledger_file(tmp_path / "state")
    ledger.record(record("b1"))
    ledger.record(record("b2"))
    ledger.record(record("b1", "restored", at=T0 + timedelta(hours=1)))
    ledger.record(record("b2", "purged", at=T0 + timedelta(days=2), purged=1234))
    b1 = ledger.get("/var/lib/docker", "b1")
    b2 = ledger.get("/var/lib/docker", "b2")
    assert b1 is not None and b1.state == "restored" and b1.state_at == T0 + timedelta(hours=1)
    assert b1.created == T0 and b1.bytes == 1000 and b1.purged_bytes is None
    assert b1.entries == [{"from": "overlay2/x", "state": "moved", "bytes": 1000}]
    assert b2 is not None and b2.state == "purged" and b2.purged_bytes == 1234
    assert [b.id for b in ledger.batches(states=("quarantined",))] == []
    assert ledger.get("/other", "b1") is None
    ledger.close()


def test_rows_are_per_data_root(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path)
    ledger.record(record("same-id", root="/a"))
    ledger.record(record("same-id", "purged", root="/b", purged=1))
    assert [(b.data_root, b.state) for b in ledger.batches()] == [
        ("/a", "quarantined"), ("/b", "purged")]
    assert [b.data_root for b in ledger.batches("/b")] == ["/b"]
    ledger.close()


def test_an_unknown_state_is_refused_by_the_record_and_by_the_table(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="state"):
        record("b1", "deleted")
    ledger = open_ledger(tmp_path)
    with pytest.raises(sqlite3.IntegrityError), ledger.store.transaction() as db:
        db.execute("INSERT INTO quarantine (data_root, id, path, created, state, state_at)"
                   " VALUES ('/r', 'x', '/p', 0, 'gone', 0)")
    assert ledger.batches() == []
    ledger.close()


# --- what fsck records ------------------------------------------------------------------------


def test_quarantine_restore_and_purge_are_recorded(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    age(tree.root)
    state = tmp_path / "state"
    root = str(tree.root)

    done = run.quarantine(root, engine_stopped=True, state_dir=state)
    [batch] = done.batches
    assert done.ledger is not None and done.ledger.recorded and done.ledger.error is None
    ledger = open_ledger(state)
    row = ledger.get(root, batch.id)
    assert row is not None and row.state == "quarantined" and row.bytes == batch.bytes > 10000
    assert row.path == batch.path
    assert {e["from"] for e in row.entries} == {"overlay2/orphan1",
                                                "overlay2/l/OOOOOOOOOOOOOOOOOOOOOOOOO1"}
    doc = done.to_json()
    assert doc["batches"][0]["id"] == batch.id and doc["batches"][0]["recorded"] is True
    assert doc["batches"][0]["restore"].endswith(f"--restore {batch.id}")
    assert [b["id"] for b in doc["quarantined"]] == [batch.id]

    # A report afterwards lists the batch still held, with the command that restores it.
    seen = run.report(root, engine_stopped=True, state_dir=state)
    assert [b.id for b in seen.held] == [batch.id] and seen.recorded == {batch.id: True}

    run.restore(root, batch.id, state_dir=state)
    row = ledger.get(root, batch.id)
    assert row is not None and row.state == "restored" and row.state_at >= row.created
    assert run.report(root, engine_stopped=True, state_dir=state).held == []

    [again] = run.quarantine(root, engine_stopped=True, state_dir=state).batches
    purged = run.purge(root, state_dir=state)
    assert [b.id for b in purged.batches] == [again.id]
    row = ledger.get(root, again.id)
    assert row is not None and row.state == "purged"
    assert row.purged_bytes == purged.batches[0].bytes > 10000
    assert [(b.id, b.state) for b in ledger.batches(root)] == [
        (batch.id, "restored"), (again.id, "purged")]
    ledger.close()


def test_purge_only_touches_the_batches_of_its_own_data_root(tmp_path: Path) -> None:
    """Two data roots in one parent share the quarantine dir beside them."""
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    age(tree.root)
    [batch] = run.quarantine(str(tree.root), engine_stopped=True,
                             state_dir=tmp_path / "s").batches
    sibling = tmp_path / "docker2"
    sibling.mkdir()
    assert q.purge(str(sibling)) == []
    assert Path(batch.path, "overlay2", "orphan1").is_dir()


def _unwritable(tmp_path: Path) -> Path:
    """A state dir nothing can create: it would have to be made under a regular file (root
    writes through mode bits, so a mode 0500 dir would not stop these tests)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    return blocker / "state"


def test_a_ledger_that_cannot_be_written_leaves_the_batch_restorable(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    age(tree.root)
    state = _unwritable(tmp_path)
    before = listing(tree.root)

    done = run.quarantine(str(tree.root), engine_stopped=True, state_dir=state)
    [batch] = done.batches
    assert done.ledger is not None and not done.ledger.recorded
    assert done.ledger.error and "state" in done.ledger.error
    assert not (tree.overlay / "orphan1").exists()
    manifest = json.loads((Path(batch.path) / "manifest.json").read_text())
    assert {e["state"] for e in manifest["entries"]} == {"moved"}
    assert done.to_json()["batches"][0]["recorded"] is False
    seen = run.report(str(tree.root), engine_stopped=True, state_dir=state)
    assert seen.recorded == {batch.id: False}

    restored = run.restore(str(tree.root), batch.id, state_dir=state)
    assert restored.ledger is not None and restored.ledger.error
    after = listing(tree.root)
    after.pop("reclaim-quarantine/.lock")
    after.pop("reclaim-quarantine")
    after.pop("not-a-dir")
    before.pop("not-a-dir")
    assert after == before

    # Recorded later when the ledger works again: the restore writes the whole row.
    good = tmp_path / "good"
    [batch2] = run.quarantine(str(tree.root), engine_stopped=True, state_dir=state).batches
    run.restore(str(tree.root), batch2.id, state_dir=good)
    ledger = open_ledger(good)
    row = ledger.get(str(tree.root), batch2.id)
    assert row is not None and row.state == "restored" and row.bytes == batch2.bytes
    ledger.close()


def test_cli_says_so_and_exits_1_when_the_ledger_is_not_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    age(tree.root)
    state = _unwritable(tmp_path)
    args = ["--state-dir", str(state), "fsck", "--data-root", str(tree.root)]
    assert main([*args, "--quarantine", "--engine-stopped", "--json"]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    [batch] = doc["batches"]
    assert doc["ledger"]["recorded"] is False and batch["recorded"] is False
    assert "could not record batch " + batch["id"] in captured.err
    assert f"--restore {batch['id']}" in captured.err

    assert main([*args, "--engine-stopped"]) == 0
    out = capsys.readouterr().out
    assert f"batch {batch['id']}" in out and "not in the ledger" in out
    assert f"--restore {batch['id']}" in out

    assert main([*args, "--restore", batch["id"]]) == 1
    assert (tree.overlay / "orphan1").is_dir()
    assert "restore done, but the ledger" in capsys.readouterr().err

    good = tmp_path / "good"
    ok = ["--state-dir", str(good), "fsck", "--data-root", str(tree.root)]
    assert main([*ok, "--quarantine", "--engine-stopped"]) == 0
    out = capsys.readouterr().out
    assert "Quarantined batch" in out and "restore: reclaim fsck --data-root" in out
    assert main([*ok, "--purge", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ledger"]["recorded"] is True and len(doc["batches"]) == 1
    assert os.path.exists(ledger_file(good))


def test_a_move_that_would_cross_mounts_is_refused_before_anything_moves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dockerd 20.10 bind-mounts its data root onto itself while it runs (when mount
    propagation is private): same filesystem, but rename() across it fails with EXDEV."""
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    tree.layer("orphan2", "OOOOOOOOOOOOOOOOOOOOOOOOO2")
    age(tree.root)
    before = listing(tree.root)
    monkeypatch.setattr(q, "mount_points", lambda: ["/", str(tree.root)])
    with pytest.raises(FsckRefused, match="cannot cross mounts"):
        run.quarantine(str(tree.root), engine_stopped=True, state_dir=tmp_path / "s")
    after = listing(tree.root)
    after.pop("reclaim-quarantine/.lock")
    after.pop("reclaim-quarantine")
    assert after == before


def test_mountinfo_mount_points_are_unescaped(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
                    "74 22 8:1 /x /srv/my\\040docker rw - ext4 /dev/sda1 rw\n")
    points = q.mount_points(str(info))
    assert points == ["/", "/srv/my docker"]
    assert q._mount_of("/srv/my docker/overlay2", points) == "/srv/my docker"
    assert q._mount_of("/srv/my dockerx", points) == "/"


def test_a_batch_cut_short_is_recorded_as_it_was_left(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    tree.layer("orphan2", "OOOOOOOOOOOOOOOOOOOOOOOOO2")
    age(tree.root)
    real = os.rename

    def fail_orphan2(src: str, dst: str) -> None:
        if src.endswith("/orphan2"):
            raise OSError(5, "Input/output error")
        real(src, dst)

    monkeypatch.setattr("reclaim.fsck.quarantine.os.rename", fail_orphan2)
    state = tmp_path / "state"
    with pytest.raises(PartialAction, match="1 of 4 moves failed") as info:
        run.quarantine(str(tree.root), engine_stopped=True, state_dir=state)
    [batch] = info.value.done
    ledger = open_ledger(state)
    row = ledger.get(str(tree.root), batch.id)
    ledger.close()
    assert row is not None and row.state == "quarantined"
    assert {e["from"]: e["state"] for e in row.entries} == {
        "overlay2/orphan1": "moved", "overlay2/l/OOOOOOOOOOOOOOOOOOOOOOOOO1": "moved",
        "overlay2/orphan2": "failed", "overlay2/l/OOOOOOOOOOOOOOOOOOOOOOOOO2": "skipped"}
    assert row.bytes == sum(e["bytes"] for e in row.entries if e["state"] == "moved") > 0
    assert (tree.overlay / "orphan2").is_dir() and not (tree.overlay / "orphan1").exists()
    # The layer that stayed kept its l/ link.
    assert (tree.overlay / "l" / "OOOOOOOOOOOOOOOOOOOOOOOOO2").is_symlink()

    # Recording failed too: the one error says both.
    with pytest.raises(PartialAction, match="could not record it either"):
        run.quarantine(str(tree.root), engine_stopped=True, state_dir=_unwritable(tmp_path))
