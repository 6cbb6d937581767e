"""`reclaim plan` and `reclaim apply` on real engines: the safety rules, the prediction against
`du`, and bad input. Each test loads its own images (a fixture with its own name) into a
dedicated engine per configuration, so deleting things cannot disturb other tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from reclaim.apply import apply_actions
from reclaim.model import Inventory
from reclaim.policy.plan import Action, plan
from reclaim.policy.rules import ImagePolicy, Policy
from reclaim.runtimes.docker import DockerRuntime
from reclaim.state.journal import Journal
from reclaim.state.store import Store
from reclaim.units import Size
from sandbox.content import FixtureSpec, KiB, MiB, build_fixture
from sandbox.engines import SandboxEngine
from sandbox.seed import SeededTruth, seed
from tests.conftest import KINDS, private_engine

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module", params=KINDS)
def engine(request: pytest.FixtureRequest) -> Iterator[SandboxEngine]:
    with private_engine(str(request.param), "ra-") as started:
        yield started


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


class RacingDocker(DockerRuntime):
    """The Docker adapter, with a container created from `target` right after its first tag
    is removed: a user that appears mid-apply. Counts the per-tag re-checks apply makes."""

    def __init__(self, url: str, target: str, settle: Any = None) -> None:
        super().__init__(url)
        self.target = target
        self.settle = settle
        self.created: str | None = None
        self.user_checks = 0

    def image_users(self, image_id: str) -> tuple[str, ...]:
        self.user_checks += 1
        return super().image_users(image_id)

    def remove_image_ref(self, ref: str) -> bool:
        gone = super().remove_image_ref(ref)
        if self.created is None and not ref.startswith("sha256:"):
            client = docker.APIClient(base_url=self.endpoint, version="auto")
            try:
                self.created = str(client.create_container(
                    self.target, command=["true"], network_disabled=True,
                    host_config=client.create_host_config(network_mode="none"))["Id"])
            finally:
                client.close()
            if self.settle is not None:
                self.settle()
        return gone


class BlindDocker(RacingDocker):
    """As RacingDocker, but its own check for users misses the new container, as a check made
    a moment before it was created would: only the engine's refusal is left."""

    def image_users(self, image_id: str) -> tuple[str, ...]:
        self.user_checks += 1
        return ()


def _multi_tag_action(runtime: DockerRuntime) -> tuple[Inventory, Action]:
    before = runtime.inventory()
    made = plan(before, {}, Policy(images=ImagePolicy(min_age=0, quota=Size(bytes=0))),
                datetime.now(UTC))
    action = max((a for a in made.actions if a.kind == "image"), key=lambda a: len(a.refs))
    assert len(action.refs) >= 3, "the fixture has no unused image with three tags"
    return before, action


def test_the_use_watch_stops_the_tags_of_an_image_used_mid_apply(
    engine: SandboxEngine, tmp_path: Path
) -> None:
    """The events-based watch on a real engine: a container created from a planned image
    after its first tag went stops the rest, with no per-tag request, and the removed tag is
    put back. The hook waits until the watch has the creation, so that the check, not the
    engine's refusal of the last tag, is what is tested here."""
    load(engine, "watch", tmp_path, tags_per_image=(3, 3))
    probe = DockerRuntime(engine.url)
    # From now, as apply does: the load just above named these tags a moment ago, and a
    # watch that replayed that would (rightly) skip the image before any tag went.
    watch = probe.watch_uses(datetime.now(UTC))
    assert watch is not None and watch.live
    try:
        before, action = _multi_tag_action(probe)

        def seen() -> None:
            for _ in range(300):
                if watch.why_not(action.id, action.refs) is not None:
                    return
                time.sleep(0.1)
            pytest.fail("the watch never saw the container created from the image")

        runtime = RacingDocker(engine.url, action.id, settle=seen)
        journal = Journal(Store(tmp_path / "docker-W.db"))
        result = apply_actions(runtime, (action,), before, {}, journal,
                               now=lambda: datetime.now(UTC), plan_created=None, watch=watch)
    finally:
        watch.close()
    assert runtime.created is not None, result.skipped
    assert result.deleted == [] and result.failed == []
    [(_, why)] = result.skipped
    assert "was created from it after removing 1 of its tags" in why, why
    assert "were put back" in why, why
    assert runtime.user_checks == 0
    assert sorted(images_now(engine)[action.id]) == sorted(action.refs)
    assert journal.entries() == []


def test_a_user_no_check_saw_makes_the_engine_refuse_and_the_tags_go_back(
    engine: SandboxEngine, tmp_path: Path
) -> None:
    load(engine, "blind", tmp_path, tags_per_image=(3, 3))
    runtime = BlindDocker(engine.url, "")
    before, action = _multi_tag_action(runtime)
    runtime.target = action.id
    journal = Journal(Store(tmp_path / "docker-B.db"))
    result = apply_actions(runtime, (action,), before, {}, journal,
                           now=lambda: datetime.now(UTC), plan_created=None)
    assert runtime.created is not None and runtime.user_checks >= 1
    assert result.deleted == [] and result.failed == []
    [(_, why)] = result.skipped
    assert why.startswith("the engine refused: "), why
    assert "were put back" in why, why
    assert sorted(images_now(engine)[action.id]) == sorted(action.refs)
    assert journal.entries() == []
