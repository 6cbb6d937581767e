"""The `[build_cache]` policy on real engines: `reclaim apply` prunes through the engine's own
build-cache prune, reports the bytes the engine says it freed, and those are what the engine's
`/system/df` stops counting; keep_storage and the age are honoured; off means untouched.

The cache comes from BuildKit builds (`DOCKER_BUILDKIT=1 docker build --network none`, offline,
`FROM` a busybox imported locally) whose `RUN` steps write files of known size. The images the
builds make are removed again, so that the cache records are nobody else's and reclaimable.
BuildKit builds offline on all three configurations, the containerd image store included.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import engines
from sandbox.engines import SandboxEngine
from tests.conftest import KINDS
from tests.engine.test_sandbox import client_for, import_busybox, needs_root_and_docker

pytestmark = [needs_root_and_docker, pytest.mark.engine]

MiB = 1024 * 1024
# Bytes written by the RUN steps of each build; every build has its own steps (the sizes
# differ), so no step is shared between builds.
BUILDS = ((1 * MiB, MiB // 2), (2 * MiB, MiB), (3 * MiB, 3 * MiB // 2))
WRITTEN = sum(a + b for a, b in BUILDS)


@pytest.fixture(scope="module", params=KINDS)
def engine(request: pytest.FixtureRequest) -> Iterator[SandboxEngine]:
    base = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
    started = engines.start(str(request.param), base)
    try:
        client = client_for(started)
        try:
            import_busybox(client)
        finally:
            client.close()
        yield started
    finally:
        engines.stop(started, remove=True)
        shutil.rmtree(base, ignore_errors=True)


def build_cache(engine: SandboxEngine, work: Path) -> int:
    """Three BuildKit builds, their images removed again; the engine's cache bytes after."""
    docker_cli = shutil.which("docker", path=engines.SYSTEM_PATH)
    assert docker_cli, "Debian's docker.io client is needed"
    client = client_for(engine)
    try:
        for n, (first, second) in enumerate(BUILDS):
            ctx = work / f"ctx{n}"
            ctx.mkdir()
            (ctx / "Dockerfile").write_text(
                "FROM sandbox-busybox:1\n"
                f"RUN head -c {first} /dev/zero > /first.bin\n"
                f"RUN head -c {second} /dev/zero > /second.bin\n"
            )
            done = subprocess.run(
                [docker_cli, "-H", engine.url, "build", "--network", "none", "-t",
                 f"cachegen:{n}", str(ctx)],
                env={"DOCKER_BUILDKIT": "1", "PATH": engines.SYSTEM_PATH, "HOME": str(work)},
                capture_output=True, text=True, timeout=300, check=False,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            client.remove_image(f"cachegen:{n}")
    finally:
        client.close()
    return cache_bytes(engine)


def cache_records(engine: SandboxEngine) -> list[dict[str, Any]]:
    client = client_for(engine)
    try:
        return list(client.df().get("BuildCache") or [])
    finally:
        client.close()


def cache_bytes(engine: SandboxEngine) -> int:
    """The build cache's bytes as the engine's `/system/df` counts them (as `docker system df`
    does: records shared with others are counted inside those)."""
    return sum(int(r["Size"]) for r in cache_records(engine) if not r.get("Shared"))


def reclaim(engine: SandboxEngine, state: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "reclaim", "--engine", engine.url, "--state-dir", str(state),
         *args, "--json"],
        capture_output=True, text=True, timeout=600, check=False, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def prune_everything(engine: SandboxEngine) -> None:
    client = client_for(engine)
    try:
        client.prune_builds()
    finally:
        client.close()
    assert cache_bytes(engine) == 0


def test_the_builds_make_the_cache_they_should(engine: SandboxEngine, tmp_path: Path) -> None:
    prune_everything(engine)
    total = build_cache(engine, tmp_path)
    # The files written, plus a little filesystem metadata per step on the containerd store.
    assert WRITTEN <= total <= WRITTEN + 256 * 1024, (total, WRITTEN)
    prune_everything(engine)


def test_off_prunes_nothing(engine: SandboxEngine, tmp_path: Path) -> None:
    prune_everything(engine)
    before = build_cache(engine, tmp_path)
    records = {r["ID"] for r in cache_records(engine)}
    state = tmp_path / "state"

    planned = reclaim(engine, state, "plan")
    assert not [a for a in planned["actions"] if a["kind"] == "build-cache"]
    result = reclaim(engine, state, "apply", "--yes")
    assert not [a for a in result["deleted"] if a["kind"] == "build-cache"]
    assert result["build_cache_freed_bytes"] is None
    assert cache_bytes(engine) == before
    assert {r["ID"] for r in cache_records(engine)} == records
    prune_everything(engine)


def test_keep_storage_is_honoured_and_the_engine_figure_reported(
    engine: SandboxEngine, tmp_path: Path
) -> None:
    prune_everything(engine)
    before = build_cache(engine, tmp_path)
    keep = 5 * MiB
    assert before > keep
    state = tmp_path / "state"

    planned = reclaim(engine, state, "plan", "--build-cache-keep-storage", "5M")
    assert [a["kind"] for a in planned["actions"]] == ["build-cache"]
    result = reclaim(engine, state, "apply", "--build-cache-keep-storage", "5M", "--yes")
    after = cache_bytes(engine)

    assert [a["kind"] for a in result["deleted"]] == ["build-cache"]
    assert result["failed"] == [] and result["skipped"] == []
    freed = result["build_cache_freed_bytes"]
    # What the engine said it freed is exactly what its own disk usage stopped counting ...
    assert freed == before - after, (freed, before, after)
    # ... and the only thing freed: no image, container or volume went.
    assert result["freed_bytes"] == freed
    # keep_storage honoured: at or under it, and not everything went (the prune stopped there).
    assert 0 < after <= keep, (after, keep)
    assert freed >= before - keep

    history = reclaim(engine, state, "history")
    assert [d["kind"] for d in history["deletions"]] == ["build-cache"]
    prune_everything(engine)


def test_older_than_keeps_cache_younger_than_that(engine: SandboxEngine, tmp_path: Path) -> None:
    prune_everything(engine)
    before = build_cache(engine, tmp_path)
    records = {r["ID"] for r in cache_records(engine)}
    state = tmp_path / "state"

    result = reclaim(engine, state, "apply", "--build-cache-older-than", "1h", "--yes")
    assert [a["kind"] for a in result["deleted"]] == ["build-cache"]
    assert result["build_cache_freed_bytes"] == 0
    assert cache_bytes(engine) == before
    assert {r["ID"] for r in cache_records(engine)} == records

    # The same age with a keep_storage: only the size limit could prune, and the age forbids it.
    result = reclaim(engine, state, "apply", "--build-cache-older-than", "1h",
                     "--build-cache-keep-storage", "1M", "--yes")
    assert result["build_cache_freed_bytes"] == 0
    assert cache_bytes(engine) == before
    prune_everything(engine)
