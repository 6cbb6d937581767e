"""The leak recipes A, C, E and F of STORAGE.md made on purpose on real engines of their own (one
per overlay2 configuration), each found by fsck with the right class and nothing else; what is
proven orphaned is quarantined then purged, and the bytes that frees (du -sbx of the data root
plus the quarantine dir, before and after) are the bytes fsck reported.

  A  dockerd killed with -9 during `docker load` of a large image
  C  `chattr +i layerdb/mounts` during `docker create`
  E  after D (a container record moved away), its stale mount metadata moved away too, then a
     restart and a prune: the image's layer chain stays for good
  F  dockerd killed with -9 during a BuildKit RUN; `docker builder prune` removes what is left

Every test that stops or kills dockerd starts it again, so the module's engine stays usable.
Byte checks run with the engine stopped: a running engine writes to its data root on its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from reclaim.fsck import quarantine as q
from reclaim.fsck import run
from reclaim.fsck.errors import FsckRefused
from reclaim.fsck.scan import Finding
from reclaim.state.quarantine import open_ledger
from reclaim.state.store import default_state_dir
from sandbox import engines
from tests.conftest import KINDS
from tests.engine.test_fsck import Box
from tests.engine.test_sandbox import IMAGE, import_busybox, needs_root_and_docker
from tests.rootfs import busybox_rootfs_tar

pytestmark = [needs_root_and_docker, pytest.mark.engine]

OVERLAY2_KINDS = [k for k in ("docker20", "docker26") if k in KINDS]
DOCKER = shutil.which("docker", path=engines.SYSTEM_PATH) or "docker"
LOAD_MIB = 256  # the big layer of recipe A: large enough that the kill lands mid-extraction
CHUNK_MIB = 16
POLL = 0.02


class Leak(Box):
    """A private engine with a keeper: a running container (restart policy `always`, so it
    comes back after every restart and kill) that holds the busybox image through any prune,
    so that the data root never ends up with no references at all (fsck refuses that)."""

    @property
    def qroot(self) -> Path:
        return Path(q.quarantine_root(str(self.root)))

    def docker(self, *args: str, check: bool = True) -> str:
        done = subprocess.run([DOCKER, "-H", self.engine.url, *args], capture_output=True,
                              text=True, timeout=300, check=False,
                              env={"PATH": engines.SYSTEM_PATH, "HOME": str(self.base),
                                   "DOCKER_BUILDKIT": "1"})
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def layer_dirs(self) -> set[str]:
        return set(os.listdir(self.root / "overlay2")) - {"l"}


@pytest.fixture(scope="module", params=OVERLAY2_KINDS)
def leak(request: pytest.FixtureRequest) -> Iterator[Leak]:
    base = Path(tempfile.mkdtemp(prefix="rl-", dir="/tmp"))
    box = Leak(base, str(request.param))
    try:
        c = box.client()
        import_busybox(c)
        hc = c.create_host_config(network_mode="none", restart_policy={"Name": "always"})
        keeper = c.create_container(IMAGE, command=["sleep", "86400"], host_config=hc,
                                    network_disabled=True, name="keeper")
        c.start(keeper["Id"])
        yield box
    finally:
        engines.stop(box.engine, remove=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_before_and_after(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each recipe on the module's engine starts from a data root fsck finds nothing wrong
    with, and leaves one. (Asked for by name: a test with an engine of its own must not start
    the module's.)"""
    if "leak" not in request.fixturenames:
        yield
        return
    leak: Leak = request.getfixturevalue("leak")
    _assert_clean(leak)
    yield
    if engines.is_running(leak.engine):
        _assert_clean(leak)


def _assert_clean(leak: Leak) -> None:
    result = run.report(str(leak.root))
    assert result.scan is not None
    assert result.scan.findings == [], result.scan.findings


# --- helpers ----------------------------------------------------------------------------------


def du(path: Path) -> int:
    """Apparent bytes as `du -sbx` counts them (each inode once, no other mount), 0 if absent."""
    if not path.exists():
        return 0
    done = subprocess.run(["du", "-sbx", str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0])


def stopped_findings(leak: Leak) -> dict[str, Finding]:
    result = run.report(str(leak.root), engine_stopped=True)
    assert result.scan is not None and result.scan.blockers == []
    return {f.path: f for f in result.scan.findings}


def quarantine_then_purge(leak: Leak, expected: set[str]) -> None:
    """With the engine stopped: quarantine exactly `expected`, purge, and check that the bytes
    freed on disk are the bytes fsck reported.

    The expected difference is exact, not approximate, because the engine is stopped and
    nothing else writes there: `du -sbx` and fsck's sizing both count apparent bytes (every
    directory's own size included) once per inode without crossing a mount. What fsck's figure
    leaves out is accounted for: the `l/<short>` symlinks moved with their layers (their
    apparent size is their target's length), and the quarantine dir itself with its empty lock
    file, which stays after a purge (a directory's size, when this run created it)."""
    qroot_before = leak.qroot.exists()
    before = du(leak.root) + du(leak.qroot)
    done = run.quarantine(str(leak.root), engine_stopped=True)
    [batch] = done.batches
    moved_dirs = {e["from"] for e in batch.entries if e["kind"] == "dir"}
    assert moved_dirs == expected
    assert all(e["state"] == "moved" for e in batch.entries)
    assert done.ledger is not None and done.ledger.recorded
    assert done.scan is not None
    quarantined = [f for f in done.scan.findings if f.action == "quarantined"]
    assert {f.path for f in quarantined} == expected
    reported = sum(f.apparent_bytes for f in quarantined)
    links = sum(len(e["target"]) for e in batch.entries if e["kind"] == "symlink")
    # Moved, not copied: the total is what it was, plus the new batch's own dirs and manifest.
    assert du(leak.root) + du(leak.qroot) >= before

    purged = run.purge(str(leak.root))
    assert [b.id for b in purged.batches] == [batch.id]
    assert not Path(batch.path).exists()
    after = du(leak.root) + du(leak.qroot)
    kept_qroot = 0 if qroot_before else os.lstat(leak.qroot).st_size
    assert before - after == reported + links - kept_qroot
    # The ledger has the batch as purged, with what the purge measured (allocated bytes, the
    # batch's own dirs and manifest included) at least the allocated bytes fsck reported.
    [b] = purged.batches
    assert b.bytes >= sum(f.bytes for f in quarantined)
    ledger = open_ledger(default_state_dir())
    try:
        row = ledger.get(str(leak.root), batch.id)
    finally:
        ledger.close()
    assert row is not None and row.state == "purged" and row.purged_bytes == b.bytes
    assert row.bytes == sum(f.bytes for f in quarantined)


def _processes_rooted_under(root: Path) -> list[int]:
    """Processes whose root directory is below `root`: a RUN step's process, which outlives a
    dockerd killed with -9 (its runc went with dockerd, its container did not)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                target = os.readlink(entry / "root")
            except OSError:
                continue
            if target.startswith(str(root) + "/"):
                found.append(int(entry.name))
    return found


def _wait_for(what: str, cond: Callable[[], bool], proc: subprocess.Popen[bytes],
              timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the command finished ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f}s")
        time.sleep(POLL)


def big_image_archive(path: Path, mib: int, tag: str) -> str:
    """A `docker save` archive of one image with one layer of `mib` MiB of random (so
    incompressible) bytes, written in chunks; returns the layer's diff id."""
    layer = path.with_name(path.name + ".layer")
    digest = hashlib.sha256()

    class Hashing(io.RawIOBase):
        def __init__(self, out: Any) -> None:
            self.out = out

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            digest.update(b)
            return int(self.out.write(b))

    with open(layer, "wb") as raw, tarfile.open(fileobj=Hashing(raw), mode="w|",
                                                format=tarfile.USTAR_FORMAT) as tar:
        for i in range(mib // CHUNK_MIB):
            data = os.urandom(CHUNK_MIB << 20)
            info = tarfile.TarInfo(f"big/{i:04d}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    diff_id = "sha256:" + digest.hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag],
                            "Layers": [f"{diff_id[7:]}/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        tar.add(layer, arcname=f"{diff_id[7:]}/layer.tar")
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    layer.unlink()
    return diff_id


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file the engine removed meanwhile
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


# --- A: dockerd killed during docker load -----------------------------------------------------


def test_recipe_a_dockerd_killed_during_docker_load(leak: Leak) -> None:
    archive = leak.base / "big.tar"
    big_image_archive(archive, LOAD_MIB, "big:1")
    before = leak.layer_dirs()
    tmp = leak.root / "image" / "overlay2" / "layerdb" / "tmp"
    state: dict[str, str] = {}

    def mid_extraction() -> bool:
        """A registration under way (its write-set) and the new layer's diff a quarter full."""
        if not tmp.is_dir() or not any(n.startswith("write-set-") for n in os.listdir(tmp)):
            return False
        for name in leak.layer_dirs() - before:
            if (leak.root / "overlay2" / name / "link").exists() and _tree_bytes(
                    leak.root / "overlay2" / name / "diff") >= (LOAD_MIB << 20) // 4:
                state["dir"] = name
                return True
        return False

    load = subprocess.Popen([DOCKER, "-H", leak.engine.url, "load", "-i", str(archive)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={"PATH": engines.SYSTEM_PATH, "HOME": str(leak.base)})
    try:
        _wait_for("a layer a quarter extracted", mid_extraction, load)
        engines.kill9(leak.engine)
    finally:
        load.wait(timeout=60)
        archive.unlink()
    assert load.returncode != 0
    leaked = state["dir"]
    write_sets = [n for n in os.listdir(tmp) if n.startswith("write-set-")]
    assert len(write_sets) == 1
    write_set = f"image/overlay2/layerdb/tmp/{write_sets[0]}"

    # It survives a restart and a prune, as STORAGE.md says.
    leak.stop()
    leak.start()
    leak.docker("system", "prune", "-af")
    assert "big" not in leak.docker("images", "--format", "{{.Repository}}")
    assert (leak.root / "overlay2" / leaked).is_dir()

    # Running: the leftover write-set is a registration that may be in progress, so nothing
    # is proven and nothing may be acted on.
    running = run.report(str(leak.root))
    assert running.scan is not None
    assert {f.path: f.cls for f in running.scan.findings} == {
        write_set: "in-flight", f"overlay2/{leaked}": "in-flight"}
    assert any("write-set" in b for b in running.scan.blockers)
    with pytest.raises(FsckRefused, match="layer registration"):
        run.quarantine(str(leak.root), look_gap=0.5, min_age=0)

    leak.stop()
    try:
        found = stopped_findings(leak)
        assert {p: f.cls for p, f in found.items()} == {
            f"overlay2/{leaked}": "orphan-layer", write_set: "in-flight"}
        orphan = found[f"overlay2/{leaked}"]
        assert orphan.action == "quarantine" and orphan.bytes >= (LOAD_MIB << 20) // 4
        assert "not mounted in any mount namespace" in orphan.evidence
        assert orphan.link and (leak.root / "overlay2" / "l" / orphan.link).is_symlink()
        assert found[write_set].action == "none"
        assert "layer registration" in found[write_set].evidence[0]

        quarantine_then_purge(leak, {f"overlay2/{leaked}"})
        # fsck never acts on the write-set (in-flight is never actionable); with the engine
        # stopped it is the crashed load's leftover, removed here so the next test starts clean.
        assert set(stopped_findings(leak)) == {write_set}
        shutil.rmtree(leak.root / write_set)
    finally:
        leak.start()


# --- C: layerdb/mounts immutable during docker create -----------------------------------------


def _leak_by_immutable_mounts(box: Leak) -> set[str]:
    """Recipe C: the layer dirs of a `docker create` that could not record its mount."""
    c = box.client()
    before = box.layer_dirs()
    mounts = box.root / "image" / "overlay2" / "layerdb" / "mounts"
    mounts.mkdir(exist_ok=True)
    subprocess.run(["chattr", "+i", str(mounts)], check=True)
    try:
        with pytest.raises(docker.errors.APIError, match="operation not permitted"):
            c.create_container(IMAGE, command=["true"], network_disabled=True,
                               host_config=c.create_host_config(network_mode="none"))
    finally:
        subprocess.run(["chattr", "-i", str(mounts)], check=True)
    leaked = box.layer_dirs() - before
    assert len(leaked) == 2
    return leaked


def test_recipe_c_immutable_mounts_during_docker_create(leak: Leak) -> None:
    import_busybox(leak.client())
    leaked = _leak_by_immutable_mounts(leak)
    [init] = [n for n in leaked if n.endswith("-init")]
    mount_id = init.removesuffix("-init")
    assert leaked == {mount_id, init}
    expected = {f"overlay2/{mount_id}", f"overlay2/{init}"}

    # Running: younger than the age threshold, so in flight (a create may be under way).
    running = run.report(str(leak.root))
    assert running.scan is not None
    assert {f.path: f.cls for f in running.scan.findings} == dict.fromkeys(expected, "in-flight")
    assert all("threshold" in f.evidence[-1] for f in running.scan.findings)

    leak.stop()
    try:
        found = stopped_findings(leak)
        assert {p: f.cls for p, f in found.items()} == dict.fromkeys(expected, "orphan-layer")
        assert all(f.action == "quarantine" and f.link for f in found.values())
        quarantine_then_purge(leak, expected)
        assert stopped_findings(leak) == {}
    finally:
        leak.start()


def test_a_running_engine_holding_its_data_root_as_a_mount_is_refused_before_any_move(
        leak: Leak) -> None:
    """dockerd 20.10 and 26.1 bind-mount their data root onto itself when the host's mount
    propagation is private (as here): same filesystem, but a rename to the quarantine dir
    beside it fails with EXDEV. fsck says so before moving anything, with the engine running;
    with it stopped the mount is gone and the same leak is quarantined."""
    if str(leak.root) not in q.mount_points():
        pytest.skip("this dockerd did not bind-mount its data root (shared propagation)")
    leaked = _leak_by_immutable_mounts(leak)
    expected = {f"overlay2/{n}" for n in leaked}
    with pytest.raises(FsckRefused, match="cannot cross mounts"):
        run.quarantine(str(leak.root), look_gap=0.5, min_age=0)
    assert {n for n in leaked if (leak.root / "overlay2" / n).is_dir()} == leaked
    leak.stop()
    try:
        quarantine_then_purge(leak, expected)
    finally:
        leak.start()


@pytest.fixture
def shared_base() -> Iterator[Path]:
    """A base dir that is a mount with shared propagation, as / is on a systemd host: dockerd
    then uses its data root as it is, and the quarantine dir beside it is on the same mount."""
    base = Path(tempfile.mkdtemp(prefix="rls-", dir="/tmp"))
    subprocess.run(["mount", "--bind", str(base), str(base)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(base)], check=True)
        yield base
    finally:
        subprocess.run(["umount", str(base)], check=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("kind", OVERLAY2_KINDS)
def test_quarantine_with_the_engine_running(kind: str, shared_base: Path) -> None:
    """Recipe C acted on with the engine running: two looks, the age threshold set to 0 (the
    leak is seconds old), both layers quarantined, restored, quarantined again and purged."""
    box = Leak(shared_base, kind)
    try:
        assert str(box.root) not in q.mount_points()
        import_busybox(box.client())
        leaked = _leak_by_immutable_mounts(box)
        expected = {f"overlay2/{n}" for n in leaked}

        done = run.quarantine(str(box.root), look_gap=0.5, min_age=0)
        assert done.scan is not None and done.scan.looks == 2 and done.scan.engine_running
        quarantined = {f.path: f for f in done.scan.findings if f.action == "quarantined"}
        assert set(quarantined) == expected
        assert all("orphaned and unchanged in two looks" in f.evidence
                   for f in quarantined.values())
        assert [f for f in done.scan.findings if f.action != "quarantined"] == []
        [batch] = done.batches
        assert not any((box.root / p).exists() for p in expected)

        run.restore(str(box.root), batch.id)
        assert all((box.root / p / "link").is_file() for p in expected)
        [again] = run.quarantine(str(box.root), look_gap=0.5, min_age=0).batches
        [purged] = run.purge(str(box.root)).batches
        assert purged.id == again.id and purged.bytes >= sum(f.bytes for f in
                                                              quarantined.values())
        assert not (box.layer_dirs() & leaked)
        after = run.report(str(box.root)).scan
        assert after is not None and after.findings == []
    finally:
        engines.stop(box.engine)


# --- E: stale mount metadata moved away: the chain stays forever ------------------------------


def test_recipe_e_chains_no_image_uses_stay_forever(leak: Leak) -> None:
    c = leak.client()
    c.import_image(src=io.BytesIO(busybox_rootfs_tar("recipe-e")), repository="recipe-e",
                   tag="1")
    [diff_id] = c.inspect_image("recipe-e:1")["RootFS"]["Layers"]
    chain = diff_id.split(":", 1)[1]  # one layer: its chain id is its diff id
    layerdb = leak.root / "image" / "overlay2" / "layerdb"
    cache_id = (layerdb / "sha256" / chain / "cache-id").read_text().strip()
    cid = c.create_container("recipe-e:1", command=["true"], network_disabled=True,
                             host_config=c.create_host_config(network_mode="none"))["Id"]
    mount_id = (layerdb / "mounts" / cid / "mount-id").read_text().strip()
    aside = leak.base / "aside"
    aside.mkdir(exist_ok=True)

    # D: the container record moved away with the daemon stopped; a prune then removes the
    # image (no container uses it now), but its chain is still held by the stale mount.
    leak.stop()
    (leak.root / "containers" / cid).rename(aside / cid)
    leak.start()
    leak.docker("system", "prune", "-af")
    assert "recipe-e" not in leak.docker("images", "--format", "{{.Repository}}")
    leak.stop()
    try:
        found = stopped_findings(leak)
        assert {p: f.cls for p, f in found.items()} == {
            f"image/overlay2/layerdb/mounts/{cid}": "stale-metadata",
            f"image/overlay2/layerdb/sha256/{chain}": "stale-metadata"}

        # E: the stale mount metadata moved away too (by hand: fsck never acts on metadata),
        # a restart and a prune: nothing in Docker ever collects the chain.
        (layerdb / "mounts" / cid).rename(aside / f"mount-{cid}")
    finally:
        leak.start()
    leak.docker("system", "prune", "-af")
    leak.stop()
    try:
        found = stopped_findings(leak)
        stale = f"image/overlay2/layerdb/sha256/{chain}"
        assert {p: f.cls for p, f in found.items()} == {
            f"overlay2/{mount_id}": "orphan-layer", f"overlay2/{mount_id}-init": "orphan-layer",
            stale: "stale-metadata"}
        assert found[stale].action == "none"
        assert any(f"overlay2/{cache_id}" in e for e in found[stale].evidence)
        assert "no complete image" in found[stale].evidence[0]

        quarantine_then_purge(leak, {f"overlay2/{mount_id}", f"overlay2/{mount_id}-init"})
        # The chain stays (reported, never acted on) ...
        assert {p: f.cls for p, f in stopped_findings(leak).items()} == {
            stale: "stale-metadata"}
        assert (leak.root / "overlay2" / cache_id).is_dir()
        # ... until its metadata is removed, with the daemon stopped: then its layer is an
        # orphan like any other, and goes the same way.
        (leak.root / stale).rename(aside / f"chain-{chain}")
        assert {p: f.cls for p, f in stopped_findings(leak).items()} == {
            f"overlay2/{cache_id}": "orphan-layer"}
        quarantine_then_purge(leak, {f"overlay2/{cache_id}"})
    finally:
        leak.start()
        shutil.rmtree(aside, ignore_errors=True)


# --- F: dockerd killed during a BuildKit RUN --------------------------------------------------


def test_recipe_f_dockerd_killed_during_a_buildkit_run(leak: Leak) -> None:
    c = leak.client()
    import_busybox(c)
    ctx = leak.base / "ctx-f"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(
        f"FROM {IMAGE}\nCOPY f /f\n"
        "RUN dd if=/dev/zero of=/fill bs=1M count=8 && sleep 30\n")
    (ctx / "f").write_text("recipe f\n")
    before = leak.layer_dirs()

    def run_step_wrote() -> bool:
        """The RUN's rootfs is mounted and `dd` has written its 8 MiB into its upper dir."""
        return any((leak.root / "overlay2" / n / "diff" / "fill").is_file()
                   and (leak.root / "overlay2" / n / "diff" / "fill").stat().st_size == 8 << 20
                   for n in leak.layer_dirs() - before)

    build = subprocess.Popen(
        [DOCKER, "-H", leak.engine.url, "build", "--network", "none", "-t", "recipe-f:1",
         str(ctx)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={"PATH": engines.SYSTEM_PATH, "HOME": str(leak.base), "DOCKER_BUILDKIT": "1"})
    try:
        _wait_for("the RUN step's 8 MiB", run_step_wrote, build)
        during = leak.layer_dirs() - before
        # While the RUN runs: a build in progress blocks every action, and no dir of the
        # build is an orphan (they are named in BuildKit's snapshots.db or mounted).
        mid = run.report(str(leak.root))
        assert mid.scan is not None
        assert any("BuildKit" in b for b in mid.scan.blockers)
        assert [f for f in mid.scan.findings if f.cls == "orphan-layer"] == []
        engines.kill9(leak.engine)
    finally:
        build.wait(timeout=60)
        # The RUN's own process outlives dockerd (only runc went with it): ours, by pid.
        for pid in _processes_rooted_under(leak.root):
            os.kill(pid, signal.SIGKILL)
    leak.stop()
    leak.start()
    survivors = during & leak.layer_dirs()
    assert survivors, "no dir of the killed build survived the restart"
    # Each is named in BuildKit's snapshots.db (and in no layerdb or container record): the
    # references fsck has to find there.
    snapshots = (leak.root / "buildkit" / "snapshots.db").read_bytes()
    assert all(name.encode() in snapshots for name in survivors), survivors

    # BuildKit's dirs survive the restart; they are referenced from its snapshots.db, so none
    # of them is an orphan, running or stopped.
    running = run.report(str(leak.root))
    assert running.scan is not None and running.scan.findings == []
    leak.stop()
    try:
        assert stopped_findings(leak) == {}
        # Nothing to quarantine, so nothing moves and no byte is freed.
        size = du(leak.root) + du(leak.qroot)
        assert run.quarantine(str(leak.root), engine_stopped=True).batches == []
        assert du(leak.root) + du(leak.qroot) == size
    finally:
        leak.start()

    leak.docker("builder", "prune", "-af")
    assert not (survivors & leak.layer_dirs()), "builder prune left the build's dirs"
    running = run.report(str(leak.root))
    assert running.scan is not None and running.scan.findings == []
    leak.stop()
    try:
        assert stopped_findings(leak) == {}
    finally:
        leak.start()
