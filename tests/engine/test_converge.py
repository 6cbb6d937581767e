"""One aggressive plan-and-apply on real engines converges in one pass: the stopped containers
go, then the images and anonymous volumes only they held, and the data root loses what was
predicted (`du -sbx`), containers' own storage included. Each configuration gets an engine of
its own (the images and volumes go), loaded with a fixture made here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from reclaim.model import ContainerState
from sandbox.content import FixtureSpec, KiB, MiB, build_fixture
from sandbox.engines import SandboxEngine
from sandbox.seed import seed
from tests.conftest import KINDS, private_engine

pytestmark = pytest.mark.engine

# The aggressive policy: every image no kept container uses, every stopped container older
# than a minute (the shortest reclaim allows), and their anonymous volumes with them.
POLICY = ("--min-age", "0s", "--quota", "1K", "--containers-exited-after", "1m",
          "--containers-created-after", "1m", "--volumes-with-containers")
# reclaim never removes a container younger than a minute: the test waits that out once.
CONTAINER_AGE = 62.0


@pytest.fixture(scope="module", params=KINDS)
def engine(request: pytest.FixtureRequest) -> Iterator[SandboxEngine]:
    with private_engine(str(request.param), "rc-") as started:
        yield started


def reclaim(engine: SandboxEngine, state: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "reclaim", "--engine", engine.url, "--state-dir", str(state),
         *args, "--json"],
        capture_output=True, text=True, timeout=600, check=False, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def du(path: Path) -> int:
    out = subprocess.run(["du", "-sbx", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def settled_du(path: Path, before: int, expected_drop: int) -> int:
    """The containerd image store collects blobs and snapshots just after the delete
    answers: wait (bounded) until the size stops moving."""
    last = du(path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (before - last) < expected_drop * 0.98:
        time.sleep(0.5)
        last = du(path)
    return last


def test_one_pass_removes_the_containers_and_what_only_they_held(
    engine: SandboxEngine, tmp_path: Path
) -> None:
    spec = FixtureSpec(
        name="conv", seed=3, families=2, images_per_family=3, tags_per_image=(1, 3),
        dangling_images=1, base_bytes=(3 * MiB, 4 * MiB), runtime_bytes=(2 * MiB, 3 * MiB),
        deps_bytes=(1 * MiB, 2 * MiB), app_bytes=(1 * MiB, 2 * MiB),
        config_bytes=(1 * KiB, 4 * KiB), running=1, exited=2, created=1, named_volumes=1,
        anonymous_volumes=2, dangling_named_volumes=0, dangling_anonymous_volumes=0,
        whiteout_images=0, shared_diff_pairs=0,
    )
    client = docker.APIClient(base_url=engine.url, version="auto", timeout=300)
    try:
        work = tmp_path / "seed"
        work.mkdir()
        loaded = seed(client, build_fixture(spec), work)
        seeded_at = time.monotonic()
        truth = loaded.truth
        running = [c for c in truth.containers if c.state is ContainerState.RUNNING]
        stopped = [c for c in truth.containers if c.state is not ContainerState.RUNNING]
        kept_images = {loaded.image_ids[c.image] for c in running}
        freed_images = {loaded.image_ids[c.image] for c in stopped} - kept_images
        assert freed_images, "the fixture must have an image only stopped containers use"
        only_stopped = {v.name for v in truth.volumes if v.anonymous and v.used_by
                        and all(u in {c.name for c in stopped} for u in v.used_by)}
        shared = {v.name for v in truth.volumes if not v.anonymous}
        assert only_stopped and shared
        tags_before = {i["Id"]: sorted(i.get("RepoTags") or []) for i in client.images()}

        state = tmp_path / "state"
        time.sleep(max(0.0, CONTAINER_AGE - (time.monotonic() - seeded_at)))
        made = reclaim(engine, state, "plan", *POLICY)
        kinds = [a["kind"] for a in made["actions"]]
        removed = {a["id"] for a in made["actions"] if a["kind"] == "container"}
        assert removed == {loaded.container_ids[c.name] for c in stopped}
        # Containers first, then images, then volumes: what they alone held comes after them.
        assert kinds == sorted(kinds, key=["container", "image", "volume"].index)
        for a in made["actions"]:
            if a["kind"] == "container":
                assert a["bytes"] > 5 * 4096  # measured, not 0
            if a["id"] in freed_images:
                assert "which this plan removes" in a["reason"]["detail"]
        assert not [w for w in made["warnings"] if "unknown" in w]

        before = du(engine.data_root)
        result = reclaim(engine, state, "apply", *POLICY, "--yes")
        predicted = result["predicted_bytes"]
        after = settled_du(engine.data_root, before, predicted)
        assert not result["failed"] and not result["skipped"]
        deleted = {a["id"] for a in result["deleted"]}
        assert removed | freed_images | only_stopped <= deleted
        assert abs((before - after) - predicted) <= 0.02 * predicted, (before - after, predicted)
        assert abs(result["freed_bytes"] - predicted) <= 0.02 * predicted
        # The filesystem's own figure: allocated blocks, and the rest of this host's writes.
        assert result["measured_freed_bytes"] is not None
        assert result["measured_freed_bytes"] > 0.5 * predicted
        assert "meanwhile" in result["caveat"]

        now = {i["Id"]: sorted(i.get("RepoTags") or []) for i in client.images(all=True)}
        assert not freed_images & set(now)  # the images of removed containers, same pass
        for image_id in kept_images:
            assert now[image_id] == tags_before[image_id]  # in use: untouched, every tag
        volumes = {v["Name"] for v in client.volumes()["Volumes"] or []}
        assert not only_stopped & volumes
        assert shared <= volumes
        left = {c["Id"] for c in client.containers(all=True)}
        assert left == {loaded.container_ids[c.name] for c in running}

        # Nothing left for a second pass of the same policy.
        again = reclaim(engine, state, "plan", *POLICY)
        assert again["actions"] == []
    finally:
        client.close()
