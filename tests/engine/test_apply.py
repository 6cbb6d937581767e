"""`reclaim plan` and `reclaim apply` on real engines: the safety rules, the prediction against
`du`, and bad input. Each test loads its own images (a fixture with its own name) into a
dedicated engine per configuration, so deleting things cannot disturb other tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from reclaim.sandbox import engines
from reclaim.sandbox.content import FixtureSpec, KiB, MiB, build_fixture
from reclaim.sandbox.engines import SandboxEngine
from reclaim.sandbox.seed import SeededTruth, seed
from tests.conftest import KINDS

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module", params=KINDS)
def engine(request: pytest.FixtureRequest) -> Iterator[SandboxEngine]:
    base = Path(tempfile.mkdtemp(prefix="ra-", dir="/tmp"))
    started = engines.start(str(request.param), base)
    try:
        yield started
    finally:
        engines.stop(started, remove=True)
        shutil.rmtree(base, ignore_errors=True)


def load(engine: SandboxEngine, name: str, tmp: Path, **overrides: Any) -> SeededTruth:
    spec_args: dict[str, Any] = dict(
        name=name, seed=11, families=2, images_per_family=3, tags_per_image=(1, 3),
        dangling_images=1, base_bytes=(3 * MiB, 4 * MiB), runtime_bytes=(2 * MiB, 3 * MiB),
        deps_bytes=(1 * MiB, 2 * MiB), app_bytes=(1 * MiB, 2 * MiB),
        config_bytes=(1 * KiB, 4 * KiB), running=1, exited=1, created=1, named_volumes=0,
        anonymous_volumes=0, dangling_named_volumes=0, dangling_anonymous_volumes=0,
        whiteout_images=0, shared_diff_pairs=0,
    )
    spec_args.update(overrides)
    client = docker.APIClient(base_url=engine.url, version="auto", timeout=300)
    try:
        work = tmp / f"seed-{name}"
        work.mkdir()
        return seed(client, build_fixture(FixtureSpec(**spec_args)), work)
    finally:
        client.close()


def reclaim(engine: SandboxEngine, state: Path, *args: str,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "reclaim", "--engine", engine.url, "--state-dir", str(state),
         *args],
        capture_output=True, text=True, timeout=600, check=False, stdin=subprocess.DEVNULL,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def du(path: Path) -> int:
    out = subprocess.run(["du", "-sbx", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def images_now(engine: SandboxEngine) -> dict[str, list[str]]:
    client = docker.APIClient(base_url=engine.url, version="auto")
    try:
        return {i["Id"]: [t for t in i.get("RepoTags") or [] if t != "<none>:<none>"]
                for i in client.images(all=True)}
    finally:
        client.close()


def test_aggressive_apply_frees_the_prediction_and_spares_every_used_tag(
    engine: SandboxEngine, tmp_path: Path
) -> None:
    truth = load(engine, "aggr", tmp_path)
    state = tmp_path / "state"
    used_keys = {c.image for c in truth.truth.containers}
    used = {truth.image_ids[k]: sorted(truth.truth.image(k).tags) for k in used_keys}

    plan_doc = json.loads(reclaim(engine, state, "plan", "--min-age", "0s", "--quota", "0",
                                  "--json").stdout)
    assert plan_doc["schema"] == "reclaim.plan/v1"
    planned = {a["id"] for a in plan_doc["actions"]}
    assert not planned & set(used)
    assert sum(a["bytes"] for a in plan_doc["actions"]) == plan_doc["predicted_bytes"]

    before = du(engine.data_root)
    result = json.loads(reclaim(engine, state, "apply", "--min-age", "0s", "--quota", "0",
                                "--yes", "--json").stdout)
    after = du(engine.data_root)
    assert result["schema"] == "reclaim.apply/v1"
    assert not result["failed"]
    predicted = result["predicted_bytes"]
    assert predicted == plan_doc["predicted_bytes"]
    assert abs((before - after) - predicted) <= 0.02 * predicted, (before - after, predicted)
    assert abs(result["freed_bytes"] - predicted) <= 0.02 * predicted

    now = images_now(engine)
    for image_id, tags in used.items():
        assert sorted(now[image_id]) == tags  # every tag of every used image survives
    for key, image_id in truth.image_ids.items():
        if key not in used_keys:
            assert image_id not in now  # multi-tag unused images are removed whole

    history = json.loads(reclaim(engine, state, "history", "--json").stdout)
    assert {d["id"] for d in history["deletions"]} >= {
        a["id"] for a in result["deleted"]}


def test_a_container_created_after_the_plan_saves_its_image(
    engine: SandboxEngine, tmp_path: Path
) -> None:
    truth = load(engine, "race", tmp_path)
    state = tmp_path / "state"
    plan_path = tmp_path / "plan.json"
    reclaim(engine, state, "plan", "--min-age", "0s", "--quota", "0", "-o", str(plan_path))
    doc = json.loads(plan_path.read_text())
    multi = next(a for a in doc["actions"] if a["kind"] == "image" and len(a["refs"]) > 1)
    client = docker.APIClient(base_url=engine.url, version="auto")
    try:
        client.create_container(multi["refs"][-1], command=["true"], network_disabled=True,
                                host_config=client.create_host_config(network_mode="none"))
    finally:
        client.close()
    result = json.loads(reclaim(engine, state, "apply", str(plan_path), "--yes",
                                "--json").stdout)
    skipped = {s["id"]: s["why"] for s in result["skipped"]}
    assert "now used by container" in skipped[multi["id"]]
    assert sorted(images_now(engine)[multi["id"]]) == sorted(multi["refs"])
    # A stale plan applied again: everything already gone or in use is skipped, nothing fails.
    again = json.loads(reclaim(engine, state, "apply", str(plan_path), "--yes",
                               "--json").stdout)
    assert again["deleted"] == [] and again["failed"] == []
    assert truth.image_ids  # the fixture was loaded


def test_one_apply_at_a_time(engine: SandboxEngine, tmp_path: Path) -> None:
    load(engine, "lock", tmp_path)
    state = tmp_path / "state"
    holder_ready = threading.Event()
    release = threading.Event()

    def hold() -> None:
        from reclaim.lock import apply_lock

        with apply_lock(state, wait=False):
            holder_ready.set()
            release.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holder_ready.wait(10)
        before = images_now(engine)
        busy = reclaim(engine, state, "apply", "--min-age", "0s", "--quota", "0", "--yes",
                       "--no-wait", check=False)
        assert busy.returncode == 1
        assert "another reclaim apply" in busy.stderr
        assert images_now(engine) == before
    finally:
        release.set()
        thread.join()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quota", "50Q"], 'images.quota: "50Q" is not a size'),
        (["--min-age", "1 second"], "images.min_age"),
        (["--keep-latest", "-1"], "images.keep_latest"),
        (["--dangling", "sometimes"], "images.dangling"),
    ],
)
def test_bad_flags_are_one_line_and_delete_nothing(
    engine: SandboxEngine, tmp_path: Path, args: list[str], message: str
) -> None:
    before = images_now(engine)
    done = reclaim(engine, tmp_path / "state", "apply", "--yes", *args, check=False)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2
    assert images_now(engine) == before


@pytest.mark.parametrize(
    "content",
    ["not json", '{"schema": "other/v1"}', '{"schema": "reclaim.plan/v1"}',
     '{"schema": "reclaim.plan/v1", "created_at": "2026-01-01T00:00:00Z", "engine": {},'
     ' "actions": [{"kind": "image", "id": "x", "refs": [], "bytes": 5,'
     ' "reason": {}}], "predicted_bytes": 99}'],
)
def test_bad_plan_files_are_refused(engine: SandboxEngine, tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    before = images_now(engine)
    done = reclaim(engine, tmp_path / "state", "apply", str(path), "--yes", check=False)
    assert done.returncode == 2, done.stderr
    assert "plan file" in done.stderr
    assert images_now(engine) == before


def test_bad_config_file_is_refused(engine: SandboxEngine, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[images]\nquota = "lots"\n')
    before = images_now(engine)
    done = subprocess.run(
        [sys.executable, "-m", "reclaim", "--engine", engine.url, "--config", str(config),
         "--state-dir", str(tmp_path / "state"), "apply", "--yes"],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
        env={**os.environ},
    )
    assert done.returncode == 2
    assert 'images.quota: "lots" is not a size' in done.stderr
    assert images_now(engine) == before


def test_without_a_terminal_apply_needs_yes(engine: SandboxEngine, tmp_path: Path) -> None:
    before = images_now(engine)
    done = reclaim(engine, tmp_path / "state", "apply", "--min-age", "0s", "--quota", "0",
                   check=False)
    assert done.returncode == 2
    assert "--yes" in done.stderr
    assert images_now(engine) == before
