"""The safety fixes on real engines: a volume created again under its name is another volume,
a plan made on one engine is refused by every other (two daemons that share one id included),
a plan file is only what its own policy makes, and every deletion of an apply killed at any
point is in the journal."""

from __future__ import annotations

import json
import os
import pty
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from sandbox.engines import SandboxEngine
from tests.conftest import KINDS, EnginePool, private_engine
from tests.engine.test_apply import images_now, load, reclaim

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module", params=KINDS)
def engine(request: pytest.FixtureRequest) -> Iterator[SandboxEngine]:
    with private_engine(str(request.param), "rs-") as started:
        yield started


def client(engine: SandboxEngine) -> docker.APIClient:
    return docker.APIClient(base_url=engine.url, version="auto", timeout=60)


def make_volume(engine: SandboxEngine, name: str, content: bytes) -> str:
    c = client(engine)
    try:
        mountpoint = str(c.create_volume(name)["Mountpoint"])
    finally:
        c.close()
    Path(mountpoint, "data").write_bytes(content)
    return mountpoint


def remove_volume(engine: SandboxEngine, name: str) -> None:
    c = client(engine)
    try:
        c.remove_volume(name)
    finally:
        c.close()


def backdate_volumes(state: Path, seconds: float) -> None:
    """As if the ledger had seen the volumes dangling for `seconds` longer."""
    for db in state.glob("docker-*.db"):
        conn = sqlite3.connect(db)
        conn.execute("UPDATE volumes SET dangling_since = dangling_since - ?,"
                     " first_seen = first_seen - ?", (seconds, seconds))
        conn.commit()
        conn.close()


VOLUME_POLICY = ("--volumes-dangling-after", "5s", "--volumes-all")


# -- 1. a volume is its name and its instance -----------------------------------------------

def test_a_volume_created_again_under_its_name_keeps_its_new_data(
        engine: SandboxEngine, tmp_path: Path) -> None:
    state = tmp_path / "state"
    mountpoint = make_volume(engine, "recreated", b"old data")
    reclaim(engine, state, "df")
    backdate_volumes(state, 3600)
    plan_file = tmp_path / "plan.json"
    doc = json.loads(reclaim(engine, state, "plan", *VOLUME_POLICY, "-o", str(plan_file),
                             "--json").stdout)
    assert [(a["kind"], a["id"]) for a in doc["actions"]] == [("volume", "recreated")]

    # The user removes it and creates it again, with new data, within the same second.
    remove_volume(engine, "recreated")
    make_volume(engine, "recreated", b"new data")

    # The plan made before is stale for it ...
    result = json.loads(reclaim(engine, state, "apply", str(plan_file), "--yes",
                                "--json").stdout)
    assert result["deleted"] == []
    assert [s["why"] for s in result["skipped"]] == [
        "re-created since the plan (another volume of that name)"]
    assert Path(mountpoint, "data").read_bytes() == b"new data"
    # ... and its dangling time starts now, not when the old one was first seen dangling.
    result = json.loads(reclaim(engine, state, "apply", *VOLUME_POLICY, "--yes",
                                "--json").stdout)
    assert result["deleted"] == []
    assert Path(mountpoint, "data").read_bytes() == b"new data"
    remove_volume(engine, "recreated")


# -- 2. an engine is its id and its data root -----------------------------------------------

def test_a_plan_is_refused_by_every_other_engine(
        engine: SandboxEngine, engine_pool: EnginePool, tmp_path: Path) -> None:
    other = engine_pool.get(engine.kind).engine
    state = tmp_path / "state"
    ids = []
    for e in (engine, other):
        c = client(e)
        try:
            ids.append(c.info()["ID"])
        finally:
            c.close()
    if engine.kind == "docker20":
        # The case that needs the data root: Docker 20.10 takes its id from the host's
        # /etc/docker/key.json, so two daemons of one host answer with one id.
        assert ids[0] == ids[1]
    reclaim(engine, state, "df")
    reclaim(other, state, "df")
    assert len(list(state.glob("docker-*.db"))) == 2  # one ledger each, never one for both

    load(engine, "ident", tmp_path)
    plan_file = tmp_path / "plan.json"
    reclaim(engine, state, "plan", "--min-age", "0s", "--quota", "0", "-o", str(plan_file))
    before = images_now(other)
    done = reclaim(other, state, "apply", str(plan_file), "--yes", check=False)
    assert done.returncode == 2, done.stderr
    assert "made for another engine" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert images_now(other) == before

    doc = json.loads(plan_file.read_text())
    for key, value in (("id", None), ("data_root", None), ("data_root", "/srv/elsewhere")):
        changed = json.loads(json.dumps(doc))
        if value is None:
            del changed["engine"][key]
        else:
            changed["engine"][key] = value
        path = tmp_path / "edited.json"
        path.write_text(json.dumps(changed))
        before = images_now(engine)
        done = reclaim(engine, state, "apply", str(path), "--yes", check=False)
        assert done.returncode == 2, done.stderr
        assert images_now(engine) == before


def test_a_ledger_named_by_the_id_alone_is_adopted(engine: SandboxEngine,
                                                   tmp_path: Path) -> None:
    state = tmp_path / "state"
    reclaim(engine, state, "df")
    (current,) = state.glob("docker-*.db")
    # What an earlier version left: the same ledger under the id alone.
    c = client(engine)
    try:
        engine_id = str(c.info()["ID"])
    finally:
        c.close()
    legacy = state / ("docker-" + "".join(ch if ch.isalnum() or ch in "._-" else "_"
                                            for ch in engine_id).strip("_") + ".db")
    current.rename(legacy)
    for suffix in ("-wal", "-shm"):
        Path(str(current) + suffix).unlink(missing_ok=True)
    conn = sqlite3.connect(legacy)
    conn.execute("DELETE FROM checkpoint WHERE key = 'engine.identity'")
    conn.execute("INSERT INTO journal (at, kind, object_id, rule) VALUES (1, 'image', 'x', 'r')")
    conn.commit()
    conn.close()
    done = reclaim(engine, state, "history", "--json")
    assert [d["id"] for d in json.loads(done.stdout)["deletions"]] == ["x"]
    assert "copied to" in done.stderr
    assert current.exists() and legacy.exists()


# -- 4, 5. plan files are input ---------------------------------------------------------------

def test_plan_files_that_say_more_than_their_policy_are_refused(
        engine: SandboxEngine, tmp_path: Path) -> None:
    state = tmp_path / "state"
    load(engine, "pfile", tmp_path)
    plan_file = tmp_path / "plan.json"
    reclaim(engine, state, "plan", "--min-age", "0s", "--quota", "0", "-o", str(plan_file))
    doc = json.loads(plan_file.read_text())
    assert doc["actions"]

    def refused(changed: dict[str, Any], message: str) -> None:
        path = tmp_path / "edited.json"
        path.write_text(json.dumps(changed))
        before = images_now(engine)
        done = reclaim(engine, state, "apply", str(path), "--yes", check=False)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert images_now(engine) == before

    # A hand-written build-cache action, without bounds: never an unbounded prune.
    cache = json.loads(json.dumps(doc))
    cache["actions"].append({"kind": "build-cache", "id": "build-cache", "refs": [],
                             "bytes": 0, "reason": {"rule": "build-cache", "detail": ""}})
    refused(cache, "unbounded prune")
    # With bounds, but a policy that makes no build-cache action.
    cache["actions"][-1].update(keep_storage=0, older_than=None)
    refused(cache, "is not what the plan's own policy makes")
    # The same object twice.
    twice = json.loads(json.dumps(doc))
    twice["actions"].append(dict(twice["actions"][0]))
    twice["predicted_bytes"] += twice["actions"][0]["bytes"]
    refused(twice, "repeats image")


# -- 3, 11. interruptions ---------------------------------------------------------------------

def _apply_process(engine: SandboxEngine, state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reclaim", "--engine", engine.url, "--state-dir", str(state),
         "apply", "--min-age", "0s", "--quota", "0", "--containers-exited-after", "1m",
         "--containers-created-after", "1m", "--yes"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _journalled(engine: SandboxEngine, state: Path) -> set[str]:
    history = json.loads(reclaim(engine, state, "history", "--json").stdout)
    return {d["id"] for d in history["deletions"]}


def _present(engine: SandboxEngine) -> tuple[set[str], set[str]]:
    c = client(engine)
    try:
        return ({i["Id"] for i in c.images(all=True)},
                {x["Id"] for x in c.containers(all=True)})
    finally:
        c.close()


def _journal_rows(state: Path) -> int:
    """Every row the journal holds, intents included (its id only grows)."""
    db = next(iter(state.glob("docker-*.db")), None)
    if db is None:
        return 0
    conn = sqlite3.connect(db, timeout=5)
    try:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM journal").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def _wait_for_rows(process: subprocess.Popen[str], state: Path, rows: int) -> bool:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if _journal_rows(state) >= rows:
            return True
        time.sleep(0.005)
    return False


def test_kill_9_at_any_point_loses_no_journal_row(engine: SandboxEngine,
                                                  tmp_path: Path) -> None:
    rng = random.Random(1234)
    state = tmp_path / "state"
    loaded_images: set[str] = set()
    loaded_containers: set[str] = set()
    kills = 0
    for round_ in range(6):
        if round_ % 2 == 0:
            truth = load(engine, f"kill{round_}", tmp_path, families=4, images_per_family=5,
                         running=0, exited=3, created=2)
            loaded_images |= set(truth.image_ids.values())
            images, containers = _present(engine)
            loaded_containers |= containers
        start = _journal_rows(state)
        process = _apply_process(engine, state)
        # Killed at a random point among its deletions: after a random number of journal
        # writes (intents and completions), and a random moment more.
        if _wait_for_rows(process, state, start + rng.randint(1, 8)):
            time.sleep(rng.uniform(0, 0.05))
        if process.poll() is None:
            process.kill()  # SIGKILL: no handler, no cleanup
            kills += 1
        process.communicate()
        images, containers = _present(engine)
        deleted = (loaded_images - images) | (loaded_containers - containers)
        journalled = _journalled(engine, state)
        assert deleted <= journalled, sorted(deleted - journalled)
    assert kills >= 2  # the loop did kill apply mid-way, more than once


def test_sigint_is_one_line_and_the_journal_has_what_went(engine: SandboxEngine,
                                                          tmp_path: Path) -> None:
    state = tmp_path / "state"
    truth = load(engine, "sigint", tmp_path, families=3, images_per_family=4)
    loaded = set(truth.image_ids.values())
    process = _apply_process(engine, state)
    # Interrupted once the first deletions are in the journal.
    _wait_for_rows(process, state, _journal_rows(state) + 2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("apply finished before the interrupt reached it")
    assert process.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "interrupted" in lines[0]
    images, _ = _present(engine)
    assert loaded - images <= _journalled(engine, state)


def test_end_of_input_at_the_prompt_is_no(engine: SandboxEngine, tmp_path: Path) -> None:
    load(engine, "eof", tmp_path)
    before = images_now(engine)
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "reclaim", "--engine", engine.url, "--state-dir",
         str(tmp_path / "state"), "apply", "--min-age", "0s", "--quota", "0"],
        stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(follower)
    os.write(leader, b"\x04")  # ^D: the end of input, on a terminal
    try:
        _, err = process.communicate(timeout=120)
    finally:
        os.close(leader)
    assert process.returncode == 2, err
    assert "not confirmed; nothing was deleted" in err
    assert "interrupted" not in err
    assert images_now(engine) == before
