"""fsck against real engines of its own, one per overlay2 configuration (docker20, docker26): no
false positives on a busy engine, and the leak recipes of STORAGE.md made on purpose (B: a layer
chain moved away; D: a container record moved away) found with the right class; quarantine then
restore brings the image back. On the containerd image store (docker26-containerd) fsck refuses
and changes nothing. Recipes A, C, E and F are in test_fsck_leaks.py."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reclaim.fsck import run
from reclaim.fsck.errors import FsckRefused
from sandbox import engines
from sandbox.engines import SandboxEngine
from tests.conftest import KINDS
from tests.engine.test_sandbox import (
    client_for,
    create,
    import_busybox,
    needs_root_and_docker,
)
from tests.rootfs import busybox_rootfs_tar

pytestmark = [needs_root_and_docker, pytest.mark.engine]

# The configurations whose data root fsck analyses (graph-driver overlay2); the containerd image
# store is the refusal case.
OVERLAY2_KINDS = [k for k in ("docker20", "docker26") if k in KINDS]


def _second_image_tar() -> bytes:
    """busybox plus a file of its own, so that the image's single layer is nobody else's."""
    buf = io.BytesIO(busybox_rootfs_tar())
    out = io.BytesIO()
    with tarfile.open(fileobj=buf) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        data = b"leak me " * 4096
        info = tarfile.TarInfo("leak.bin")
        info.size = len(data)
        dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


class Box:
    def __init__(self, base: Path, kind: str) -> None:
        self.base = base
        self.kind = kind
        self.engine: SandboxEngine = engines.start(kind, base)

    @property
    def root(self) -> Path:
        return self.engine.data_root

    def client(self) -> Any:
        return client_for(self.engine)

    def stop(self) -> None:
        engines.stop(self.engine)

    def start(self) -> None:
        self.engine = engines.start(self.kind, self.base)


@pytest.fixture(scope="module", params=OVERLAY2_KINDS)
def box(request: pytest.FixtureRequest) -> Iterator[Box]:
    base = Path(tempfile.mkdtemp(prefix="rf-", dir="/tmp"))
    b = Box(base, str(request.param))
    try:
        c = b.client()
        import_busybox(c)
        c.import_image(src=io.BytesIO(_second_image_tar()), repository="leaky", tag="1")
        c.create_volume("named1")
        hc = c.create_host_config(network_mode="none",
                                  binds={"named1": {"bind": "/data", "mode": "rw"}})
        running = c.create_container("sandbox-busybox:1", command=["sleep", "600"],
                                     host_config=hc, network_disabled=True, volumes=["/data",
                                                                                     "/anon"])
        c.start(running["Id"])
        create(c, "true")  # a created, never started container
        # A BuildKit build: its local-source snapshots live only in snapshots.db, and its RUN
        # step leaves files in buildkit/executor (no build runs after it, though).
        ctx = base / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text("FROM sandbox-busybox:1\nCOPY f /f\nRUN cat /f > /g\n")
        (ctx / "f").write_text("data\n")
        docker_cli = shutil.which("docker", path=engines.SYSTEM_PATH)
        if docker_cli:
            subprocess.run([docker_cli, "-H", b.engine.url, "build", "--network", "none",
                            "-t", "bk:1", str(ctx)],
                           env={"DOCKER_BUILDKIT": "1", "PATH": engines.SYSTEM_PATH,
                                "HOME": str(base)}, check=True, capture_output=True, timeout=120)
        yield b
    finally:
        engines.stop(b.engine, remove=True)
        shutil.rmtree(base, ignore_errors=True)


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_no_false_positives_on_a_busy_engine(box: Box) -> None:
    result = run.report(str(box.root))
    assert result.scan is not None
    assert result.scan.findings == []
    assert len(list((box.root / "overlay2").iterdir())) > 5  # BuildKit and container layers
    before = _listing(box.root)
    done = run.quarantine(str(box.root), look_gap=1.0)
    assert done.batches == [] and done.scan is not None and done.scan.findings == []
    assert _listing(box.root) == before


def test_engine_stopped_is_refused_while_it_runs(box: Box) -> None:
    with pytest.raises(FsckRefused, match="dockerd"):
        run.quarantine(str(box.root), engine_stopped=True)


def test_recipe_d_a_container_record_moved_away(box: Box, tmp_path: Path) -> None:
    c = box.client()
    cid = next(x["Id"] for x in c.containers(all=True) if x["State"] == "created")
    box.stop()
    try:
        (box.root / "containers" / cid).rename(tmp_path / cid)
        result = run.report(str(box.root), engine_stopped=True)
        assert result.scan is not None
        got = {f.path: f.cls for f in result.scan.findings}
        assert got == {f"image/overlay2/layerdb/mounts/{cid}": "stale-metadata"}
        (tmp_path / cid).rename(box.root / "containers" / cid)
    finally:
        box.start()
    assert cid in {x["Id"] for x in box.client().containers(all=True)}


def test_recipe_b_quarantine_and_restore_bring_the_image_back(box: Box, tmp_path: Path) -> None:
    c = box.client()
    inspect = c.inspect_image("leaky:1")
    [diff_id] = inspect["RootFS"]["Layers"]
    chain = diff_id.split(":", 1)[1]  # a single layer: its chain id is its diff id
    entry = box.root / "image/overlay2/layerdb/sha256" / chain
    cache_id = (entry / "cache-id").read_text().strip()
    box.stop()
    try:
        entry.rename(tmp_path / chain)
        result = run.report(str(box.root), engine_stopped=True)
        assert result.scan is not None
        got = {f.path: f for f in result.scan.findings}
        orphan = got[f"overlay2/{cache_id}"]
        assert orphan.cls == "orphan-layer" and orphan.action == "quarantine"
        assert orphan.bytes >= 32768
        assert [f for f in result.scan.findings if f.actionable] == [orphan]
        image_hex = inspect["Id"].split(":", 1)[1]
        assert got[f"image/overlay2/imagedb/content/sha256/{image_hex}"].cls == "stale-metadata"

        done = run.quarantine(str(box.root), engine_stopped=True)
        [batch] = done.batches
        assert not (box.root / "overlay2" / cache_id).exists()
        assert any(e["kind"] == "symlink" for e in batch.entries)

        run.restore(str(box.root), batch.id)
        (tmp_path / chain).rename(entry)  # the metadata put back as well
        assert (box.root / "overlay2" / cache_id / "diff" / "leak.bin").is_file()
    finally:
        box.start()
    c = box.client()
    assert "leaky:1" in {t for i in c.images() for t in i.get("RepoTags") or []}
    hc = c.create_host_config(network_mode="none")
    cid = c.create_container("leaky:1", command=["sh", "-c", "wc -c < /leak.bin"],
                             host_config=hc, network_disabled=True)["Id"]
    c.start(cid)
    assert c.wait(cid, timeout=60)["StatusCode"] == 0
    assert c.logs(cid).strip() == b"32768"
    c.remove_container(cid)
    result = run.report(str(box.root))
    assert result.scan is not None and result.scan.findings == []


def _full_listing(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under `root` with its mode, size and modification time."""
    out: dict[str, tuple[int, int, int]] = {}
    for p in [root, *root.rglob("*")]:
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.skipif("docker26-containerd" not in KINDS, reason="docker26-containerd not selected")
def test_the_containerd_image_store_is_refused_and_nothing_changes(
        capsys: pytest.CaptureFixture[str]) -> None:
    from reclaim.cli import main

    base = Path(tempfile.mkdtemp(prefix="rfc-", dir="/tmp"))
    engine = engines.start("docker26-containerd", base)
    try:
        c = client_for(engine)
        import_busybox(c)
        c.create_volume("named1")
        create(c, "true")
        root = engine.data_root
        qdir = root.parent / "reclaim-quarantine"
        args = ["fsck", "--data-root", str(root)]

        def refused_everywhere(*extra: str) -> None:
            with pytest.raises(FsckRefused, match="containerd image store"):
                run.report(str(root), engine_stopped=bool(extra))
            with pytest.raises(FsckRefused, match="containerd image store"):
                run.quarantine(str(root), engine_stopped=bool(extra), look_gap=0.1)
            with pytest.raises(FsckRefused, match="no quarantine batch"):
                run.restore(str(root), "20260101T000000.000000Z")
            assert run.purge(str(root)).batches == []
            assert main([*args, *extra, "--json"]) == 2
            assert main([*args, *extra, "--quarantine"]) == 2
            err = capsys.readouterr().err
            assert err.count("containerd image store") == 2, err

        # Running: the engine may touch its own files meanwhile, so the names and types are
        # compared; stopped below, everything down to sizes and times.
        before = {k: v[0] for k, v in _full_listing(root).items()}
        refused_everywhere()
        assert {k: v[0] for k, v in _full_listing(root).items()} == before
        assert not qdir.exists()

        engines.stop(engine)
        before_stopped = _full_listing(root)
        refused_everywhere("--engine-stopped")
        assert _full_listing(root) == before_stopped
        assert not qdir.exists()
    finally:
        engines.stop(engine, remove=True)
        shutil.rmtree(base, ignore_errors=True)
