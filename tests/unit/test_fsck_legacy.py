"""fsck on legacy layouts built here (aufs data roots, pre-1.7 volumes) and the engine version
rule, with a dockerd of the tests' own on PATH: what is referenced stays unreported, orphans are
found with evidence and bytes, quarantine and restore put back every path, and every fail-closed
case refuses or stays non-actionable with the whole tree unchanged."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reclaim.cli import main
from reclaim.fsck import aufs, graph, run, scan, version
from reclaim.fsck.errors import FsckRefused, Unreadable, UnsafeName
from reclaim.fsck.mounts import Mount, parse_mountinfo, with_aufs_branches
from tests.unit.test_fsck import age, listing, make_tree, write_image_store, write_volume_db

V20 = "Docker version 20.10.24+dfsg1, build 5d6db84"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def no_mounts() -> list[Mount]:
    return []


@pytest.fixture(autouse=True)
def _host_mounts_unseen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("reclaim.fsck.mounts.all_namespaces", no_mounts)


class FakeDockerd:
    """A `dockerd` first on PATH that prints what a test tells it to (and exits as told)."""

    def __init__(self, bin_dir: Path) -> None:
        bin_dir.mkdir(parents=True, exist_ok=True)
        self.path = bin_dir / "dockerd"
        self.calls = bin_dir / "calls"
        self.says(V20)

    def says(self, text: str, status: int = 0) -> None:
        self.path.write_text(f"#!/bin/sh\necho \"$@\" >> '{self.calls}'\n"
                             f"printf '%s\\n' '{text}'\nexit {status}\n")
        self.path.chmod(0o755)

    def times_asked(self) -> int:
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0


@pytest.fixture(autouse=True)
def dockerd(tmp_path_factory: pytest.TempPathFactory,
            monkeypatch: pytest.MonkeyPatch) -> FakeDockerd:
    # its own dir: the listings compared before and after cover everything beside the root
    fake = FakeDockerd(tmp_path_factory.mktemp("bin"))
    monkeypatch.setenv("PATH", str(fake.path.parent))
    return fake


@pytest.fixture(autouse=True)
def daemon_json(tmp_path_factory: pytest.TempPathFactory,
                monkeypatch: pytest.MonkeyPatch) -> Path:
    """The engine's default config file: absent unless a test writes it (the host's own is no
    part of these roots)."""
    path = tmp_path_factory.mktemp("etc") / "daemon.json"
    monkeypatch.setattr(scan, "DAEMON_JSON", str(path))
    return path


# --- a synthetic aufs data root -------------------------------------------------------------


@dataclass
class Aufs:
    root: Path
    image: str
    chains: list[str]
    layers: list[str]
    container: str
    mount_id: str

    @property
    def aufs(self) -> Path:
        return self.root / "aufs"

    def layer(self, name: str, ancestors: list[str] | None, *, mnt: bool = True,
              size: int = 10000) -> None:
        """diff/<name> with a file; layers/<name> listing `ancestors` (None: no layers file)."""
        (self.aufs / "diff" / name).mkdir(parents=True)
        (self.aufs / "diff" / name / "file").write_bytes(b"x" * size)
        if ancestors is not None:
            (self.aufs / "layers" / name).write_text("".join(f"{a}\n" for a in ancestors))
        if mnt:
            (self.aufs / "mnt" / name).mkdir(parents=True)


def make_aufs(tmp_path: Path) -> Aufs:
    root = tmp_path / "docker"
    img = root / "image" / "aufs"
    image, chains, layers = write_image_store(img)
    c1, c2 = chains
    t = Aufs(root, image, [c1, c2], layers, _sha("container"), _sha("mount"))
    for sub in ("diff", "layers", "mnt"):
        (t.aufs / sub).mkdir(parents=True)
    t.layer(layers[0], [])
    t.layer(layers[1], [layers[0]])
    t.layer(t.mount_id + "-init", [layers[1], layers[0]])
    t.layer(t.mount_id, [t.mount_id + "-init", layers[1], layers[0]])
    m = img / "layerdb" / "mounts" / t.container
    m.mkdir(parents=True)
    (m / "mount-id").write_text(t.mount_id)
    (m / "init-id").write_text(t.mount_id + "-init")
    (m / "parent").write_text("sha256:" + c2)
    c = root / "containers" / t.container
    c.mkdir(parents=True)
    (c / "config.v2.json").write_text(json.dumps({"ID": t.container, "MountPoints": {
        "/data": {"Name": "vol1", "Source": str(root / "volumes/vol1/_data"), "Type": "volume"},
        "/old": {"Name": "migrated", "Source": str(root / "volumes/migrated/_data"),
                 "Type": "volume"},
    }}))
    (root / "volumes" / "vol1" / "_data").mkdir(parents=True)
    (root / "volumes" / "vol1" / "_data" / "f").write_bytes(b"v" * 5000)
    write_volume_db(root / "volumes" / "metadata.db", ["vol1", "migrated"])
    add_legacy_volumes(root)
    age(root)
    return t


def volume_record(root: Path, name: str, path: str, *, bind: bool = False) -> None:
    (root / "volumes" / name).mkdir(parents=True, exist_ok=True)
    (root / "volumes" / name / "config.json").write_text(json.dumps(
        {"ID": name, "Path": path, "IsBindMount": bind, "Writable": True}))


def add_legacy_volumes(root: Path) -> None:
    """A pre-1.7 container with a vfs volume and a bind mount, each with its volume record, and
    a volume Docker 1.7 migrated (its _data a link to vfs/dir, its record kept)."""
    vfs = root / "vfs" / "dir"
    for vid in ("oldvol", "migrated"):
        (vfs / vid).mkdir(parents=True)
        (vfs / vid / "data").write_bytes(b"o" * 7000)
    volume_record(root, "oldvol", str(vfs / "oldvol"))
    volume_record(root, "bindvol", "/srv/hostdata", bind=True)
    volume_record(root, "migrated", str(vfs / "migrated"))
    (root / "volumes" / "migrated" / "_data").symlink_to(vfs / "migrated")
    old = root / "containers" / _sha("old container")
    old.mkdir(parents=True)
    (old / "config.json").write_text(json.dumps({
        "ID": old.name, "Volumes": {"/data": str(vfs / "oldvol"), "/host": "/srv/hostdata"},
        "VolumesRW": {"/data": True, "/host": False}}))


def do_scan(root: Path, **kw: Any) -> scan.Scan:
    kw.setdefault("engine_running", False)
    kw.setdefault("read_mounts", no_mounts)
    return scan.scan(str(root), **kw)


def classes(result: scan.Scan) -> dict[str, str]:
    return {f.path: f.cls for f in result.findings}


def _refuses(root: Path, match: str, error: type[Exception] = FsckRefused) -> None:
    """The run refuses with `match`, and nothing under or beside the root changed."""
    before = listing(root)
    with pytest.raises(error, match=match):
        run.quarantine(str(root), engine_stopped=True)
    assert listing(root) == before


def _stays_put(root: Path) -> scan.Scan:
    """The run quarantines nothing, and nothing under or beside the root changed."""
    before = listing(root)
    result = run.quarantine(str(root), engine_stopped=True)
    assert result.batches == []
    after = listing(root)
    after.pop("reclaim-quarantine", None)
    after.pop("reclaim-quarantine/.lock", None)
    assert after == before
    assert result.scan is not None
    assert not [f for f in result.scan.findings if f.action != "none"]
    return result.scan


# --- aufs: the graph --------------------------------------------------------------------------


def test_a_healthy_aufs_root_with_legacy_volumes_has_no_findings(tmp_path: Path,
                                                                 dockerd: FakeDockerd) -> None:
    t = make_aufs(tmp_path)
    result = do_scan(t.root)
    assert result.driver == "aufs"
    assert result.findings == [] and result.blockers == []
    assert do_scan(t.root, engine_running=True).findings == []
    assert [str(v) for v in result.engine_versions] == ["20.10.24"]
    assert result.to_json()["engine_versions"][0]["text"] == V20
    assert dockerd.times_asked() == 2


def test_an_aufs_orphan_is_three_paths_with_evidence_and_bytes(tmp_path: Path) -> None:
    t = make_aufs(tmp_path)
    orphan = _sha("orphan")
    t.layer(orphan, [t.layers[0]], size=20000)
    age(t.aufs)
    # ctime cannot be set back: an age threshold of 0 stands in for an old layer
    result = do_scan(t.root, engine_running=True, min_age=0)
    got = {f.path: f for f in result.findings}
    assert set(got) == {f"aufs/diff/{orphan}", f"aufs/layers/{orphan}", f"aufs/mnt/{orphan}"}
    assert {f.cls for f in got.values()} == {"orphan-layer"}
    assert {f.action for f in got.values()} == {"quarantine"}
    diff = got[f"aufs/diff/{orphan}"]
    assert diff.bytes >= 20000 and diff.apparent_bytes >= 20000
    assert any("ancestor list" in e for e in diff.evidence)
    assert any("not mounted" in e for e in diff.evidence)
    assert all(any("moved with" in e for e in got[p].evidence)
               for p in (f"aufs/layers/{orphan}", f"aufs/mnt/{orphan}"))
    assert result.reclaimable_bytes == sum(f.bytes for f in got.values())
    # its parent, layer 0, is still kept by the image: naming it as an ancestor keeps nothing
    # alive in the other direction
    assert f"aufs/diff/{t.layers[0]}" not in got


def test_ancestor_lists_and_aufs_mounts_keep_their_layers(tmp_path: Path) -> None:
    t = make_aufs(tmp_path)
    parent, branch, mounted = _sha("parent"), _sha("branch"), _sha("mounted")
    for name in (parent, branch, mounted):
        t.layer(name, [])
    age(t.aufs)
    # the container's RW layer stacks on `parent` too (its layers file), whatever the layerdb
    (t.aufs / "layers" / t.mount_id).write_text(
        f"{t.mount_id}-init\n{t.layers[1]}\n{t.layers[0]}\n{parent}\n")
    # a branch named in the mount options, and a mount point under aufs/mnt at another prefix
    text = (
        f"70 59 0:60 / /x/merged rw - aufs none rw,si=abc,br:/d/aufs/diff/xyz=rw:"
        f"/var/lib/docker/aufs/diff/{branch}=ro+wh,dio\n"
        f"71 59 0:61 / /elsewhere/docker/aufs/mnt/{mounted} rw - aufs none rw,si=def\n"
    )
    mounts = parse_mountinfo(text)
    assert mounts[0].branches == ("/d/aufs/diff/xyz", f"/var/lib/docker/aufs/diff/{branch}")
    result = do_scan(t.root, read_mounts=lambda: mounts)
    assert result.findings == [] and result.blockers == []


def test_aufs_branches_hidden_in_sysfs_are_read_there(tmp_path: Path) -> None:
    t = make_aufs(tmp_path)
    held = _sha("held")
    t.layer(held, [])
    age(t.aufs)
    sys_aufs = tmp_path / "sys"
    (sys_aufs / "si_abc").mkdir(parents=True)
    (sys_aufs / "si_abc" / "br0").write_text("/tmp/rw=rw\n")
    (sys_aufs / "si_abc" / "br1").write_text(f"{t.aufs}/diff/{held}=ro+wh\n")
    (sys_aufs / "si_abc" / "xi_path").write_text("/dev/shm/aufs.xino\n")
    line = "70 59 0:60 / /run/some/merged rw - aufs none rw,si=abc,dio\n"
    mounts = with_aufs_branches(parse_mountinfo(line), str(sys_aufs))
    assert mounts[0].branches == ("/tmp/rw", f"{t.aufs}/diff/{held}")
    assert do_scan(t.root, read_mounts=lambda: mounts).findings == []
    # branches that cannot be read anywhere: the mount could hold any layer, nothing is acted on
    hidden = with_aufs_branches(parse_mountinfo(line.replace("si=abc", "si=gone")),
                                str(sys_aufs))
    assert hidden[0].branches == ()
    result = do_scan(t.root, read_mounts=lambda: hidden)
    assert result.blockers == ["an aufs mount at /run/some/merged does not say which layers it "
                               "holds"]
    assert classes(result) == {f"aufs/{d}/{held}": "orphan-layer"
                               for d in ("diff", "layers", "mnt")}
    assert {f.action for f in result.findings} == {"none"}


def test_half_made_aufs_layers_are_never_actionable(tmp_path: Path) -> None:
    t = make_aufs(tmp_path)
    creating, damaged, stray = _sha("creating"), _sha("damaged"), _sha("stray")
    t.layer(creating, None)  # dirs made, layers file not yet written (or a removal cut short)
    (t.aufs / "layers" / damaged).write_text("")  # a layers file whose diff is gone
    (t.aufs / "mnt" / stray).mkdir()
    (t.aufs / "diff" / f"{_sha('gone')}-removing").mkdir()
    (t.aufs / "mnt" / f"{_sha('gone')}-removing").mkdir()
    fresh = _sha("fresh")
    t.layer(fresh, [])
    age(t.aufs / "diff" / creating)
    running = classes(do_scan(t.root, engine_running=True))
    assert running == {
        f"aufs/diff/{creating}": "in-flight",
        f"aufs/layers/{damaged}": "unknown",
        f"aufs/mnt/{stray}": "unknown",
        f"aufs/diff/{_sha('gone')}-removing": "pending-removal",
        f"aufs/mnt/{_sha('gone')}-removing": "pending-removal",
        f"aufs/diff/{fresh}": "in-flight",  # younger than the threshold while the engine runs
    }
    # stopped: nothing is in flight any more, but a half-made layer is still no proof; only the
    # complete one becomes an orphan
    stopped = do_scan(t.root, engine_running=False)
    got = classes(stopped)
    assert got[f"aufs/diff/{creating}"] == "unknown"
    assert got[f"aufs/diff/{fresh}"] == "orphan-layer"
    assert {f.path for f in stopped.findings if f.action == "quarantine"} == {
        f"aufs/{d}/{fresh}" for d in ("diff", "layers", "mnt")}


def test_an_aufs_layer_that_changes_between_two_looks_is_in_flight(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = make_aufs(tmp_path)
    moving, still = _sha("moving"), _sha("still")
    t.layer(moving, [])
    t.layer(still, [])
    age(t.aufs)

    def touch(_: float) -> None:
        (t.aufs / "layers" / moving).write_text(f"{t.layers[0]}\n")

    monkeypatch.setattr("reclaim.fsck.scan.time.sleep", touch)
    # versions given directly: the fake dockerd runs in a subprocess, whose wait could call the
    # patched sleep before the first look
    found = [version.parse(V20, "test")]
    result = do_scan(t.root, engine_running=True, two_looks=True, min_age=0,
                     engine_versions=lambda pids: found)
    assert result.looks == 2
    got = {f.path: f for f in result.findings}
    for d in ("diff", "layers", "mnt"):
        assert got[f"aufs/{d}/{moving}"].cls == "in-flight"
        assert got[f"aufs/{d}/{still}"].cls == "orphan-layer"
        assert "two looks" in " ".join(got[f"aufs/{d}/{still}"].evidence)


# --- aufs: quarantine and restore ------------------------------------------------------------


def test_aufs_quarantine_and_restore_put_every_path_back_exactly(tmp_path: Path) -> None:
    t = make_aufs(tmp_path)
    orphan = _sha("orphan")
    t.layer(orphan, [t.layers[1], t.layers[0]])
    (t.aufs / "diff" / orphan / "sub").mkdir()
    (t.aufs / "diff" / orphan / "sub" / "exec").write_bytes(b"#!/bin/sh\n")
    (t.aufs / "diff" / orphan / "sub" / "exec").chmod(0o4755)
    (t.aufs / "diff" / orphan / "sub" / "link").symlink_to("../file")
    (t.aufs / "diff" / orphan / ".wh.gone").write_bytes(b"")
    (t.aufs / "mnt" / orphan).chmod(0o700)
    age(t.root)
    before = listing(t.root)
    result = run.quarantine(str(t.root), engine_stopped=True)
    [batch] = result.batches
    paths = {f"aufs/{d}/{orphan}" for d in ("diff", "layers", "mnt")}
    assert {e["from"] for e in batch.entries} == paths
    assert all(e["state"] == "moved" for e in batch.entries)
    for p in paths:
        assert not os.path.lexists(t.root / p)
        assert os.path.lexists(Path(batch.path) / p)
    assert do_scan(t.root).findings == []

    run.restore(str(t.root), batch.id)
    after = listing(t.root)
    after.pop("reclaim-quarantine/.lock")
    after.pop("reclaim-quarantine")
    assert after == before
    assert (t.aufs / "layers" / orphan).read_text() == f"{t.layers[1]}\n{t.layers[0]}\n"


# --- aufs: failing closed ---------------------------------------------------------------------


def test_an_empty_aufs_reference_set_is_refused(tmp_path: Path) -> None:
    t = make_aufs(tmp_path)
    layerdb = t.root / "image/aufs/layerdb"
    for sub in ("sha256", "mounts"):
        for p in (layerdb / sub).iterdir():
            for f in p.iterdir():
                f.unlink()
            p.rmdir()
    _refuses(t.root, "empty reference set")


def test_an_unreadable_layers_file_is_refused(tmp_path: Path) -> None:
    t = make_aufs(tmp_path)
    t.layer(_sha("orphan"), [])
    age(t.root)
    bad = t.aufs / "layers" / t.layers[1]
    bad.unlink()
    bad.mkdir()  # root reads any file whatever its mode; a directory cannot be read as one
    _refuses(t.root, "not a regular file", Unreadable)
    bad.rmdir()
    outside = tmp_path / "precious-layers"
    outside.write_text(f"{t.layers[0]}\n")
    bad.symlink_to(outside)
    _refuses(t.root, "symlink", UnsafeName)
    assert outside.read_text() == f"{t.layers[0]}\n"


def test_a_dotdot_name_in_aufs_metadata_is_refused(tmp_path: Path) -> None:
    t = make_aufs(tmp_path)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("mine")
    (t.aufs / "layers" / t.layers[1]).write_text("..\n")
    _refuses(t.root, "not a plain name", UnsafeName)
    (t.aufs / "layers" / t.layers[1]).write_text(f"{t.layers[0]}\n")
    (t.root / "image/aufs/layerdb/sha256" / t.chains[0] / "cache-id").write_text(
        "../../../precious")
    _refuses(t.root, "not a plain name", UnsafeName)
    assert (precious / "keep").read_text() == "mine"


def test_aufs_symlinks_out_of_the_root_are_never_followed(tmp_path: Path) -> None:
    t = make_aufs(tmp_path)
    outside = tmp_path / "precious"
    (outside / "data").mkdir(parents=True)
    (outside / "data" / "f").write_bytes(b"p" * 9000)
    (t.aufs / "diff" / "evil").symlink_to(outside)
    (t.aufs / "mnt" / "evil2").symlink_to(outside)
    result = _stays_put(t.root)
    assert classes(result) == {"aufs/diff/evil": "unknown", "aufs/mnt/evil2": "unknown"}
    assert all(f.bytes < 9000 for f in result.findings)
    # an orphan whose mnt dir is a symlink cannot be moved whole: not acted on
    orphan = _sha("orphan")
    t.layer(orphan, [], mnt=False)
    (t.aufs / "mnt" / orphan).symlink_to(outside)
    age(t.root)
    result = _stays_put(t.root)
    assert classes(result)[f"aufs/diff/{orphan}"] == "unknown"
    # a symlink in place of aufs/diff itself refuses the run
    (t.aufs / "diff").rename(tmp_path / "diff-real")
    (t.aufs / "diff").symlink_to(tmp_path / "diff-real")
    _refuses(t.root, "not a real directory")
    assert (outside / "data" / "f").stat().st_size == 9000


# --- pre-1.7 volumes --------------------------------------------------------------------------


def test_a_pre_1_7_orphan_volume_is_found_quarantined_and_restored(tmp_path: Path) -> None:
    t = make_aufs(tmp_path)
    lost = t.root / "vfs" / "dir" / _sha("lost")
    lost.mkdir()
    (lost / "big").write_bytes(b"l" * 30000)
    age(t.root)
    result = do_scan(t.root)
    [f] = result.findings
    assert (f.path, f.cls, f.action) == (f"vfs/dir/{lost.name}", "orphan-volume", "quarantine")
    assert f.bytes >= 30000
    assert any("volumes/*/config.json" in e for e in f.evidence)
    assert any("Volumes" in e for e in f.evidence)
    before = listing(t.root)
    [batch] = run.quarantine(str(t.root), engine_stopped=True).batches
    assert [e["from"] for e in batch.entries] == [f"vfs/dir/{lost.name}"]
    assert not lost.exists()
    run.restore(str(t.root), batch.id)
    after = listing(t.root)
    after.pop("reclaim-quarantine/.lock")
    after.pop("reclaim-quarantine")
    assert after == before


def test_unreferenced_legacy_records_are_reported_never_acted_on(tmp_path: Path) -> None:
    t = make_aufs(tmp_path)
    host = tmp_path / "hostdata"
    host.mkdir()
    (host / "precious").write_bytes(b"h" * 50000)
    volume_record(t.root, "lonebind", str(host), bind=True)
    vfs = t.root / "vfs" / "dir"
    (vfs / "lonevol").mkdir()
    volume_record(t.root, "lonevol", str(vfs / "lonevol"))
    volume_record(t.root, "odd", "/somewhere/else")
    age(t.root)
    result = _stays_put(t.root)
    got = {f.path: f for f in result.findings}
    assert {p: f.cls for p, f in got.items()} == {
        "volumes/lonevol": "stale-metadata",  # keeps vfs/dir/lonevol, which is not an orphan
        "volumes/lonebind": "unknown",
        "volumes/odd": "unknown",
    }
    assert any(str(host) in e and "never followed" in e for e in got["volumes/lonebind"].evidence)
    assert got["volumes/lonebind"].bytes < 50000  # the host path was not sized either
    assert (host / "precious").stat().st_size == 50000


def test_vfs_dirs_nothing_at_all_names_are_not_proof(tmp_path: Path) -> None:
    t = make_aufs(tmp_path)
    for p in (t.root / "volumes").iterdir():
        if (p / "config.json").exists():
            (p / "config.json").unlink()
            if (p / "_data").is_symlink():
                (p / "_data").unlink()
            p.rmdir()
    old = next(c for c in (t.root / "containers").iterdir() if (c / "config.json").exists())
    (old / "config.json").unlink()
    old.rmdir()
    write_volume_db(t.root / "volumes" / "metadata.db", ["vol1"])
    (t.root / "containers" / t.container / "config.v2.json").write_text(
        json.dumps({"ID": t.container, "MountPoints": {}}))
    age(t.root)
    result = _stays_put(t.root)
    got = classes(result)
    assert got["vfs/dir/oldvol"] == got["vfs/dir/migrated"] == "unknown"
    assert any("empty reference set" in e for f in result.findings for e in f.evidence)


@pytest.mark.parametrize("where,text,match", [
    ("record", "{not json", "not valid JSON"),
    ("record", '{"ID": "oldvol", "Path": 3, "IsBindMount": false, "Writable": true}', "Path"),
    ("record", '{"ID": "oldvol", "Path": "/x", "Writable": true}', "IsBindMount"),
    ("container", '{"Volumes": ["/data"]}', "Volumes is not a map"),
    ("container", '{"Volumes": {"/d": "/x"}, "VolumesRW": {"/d": "yes"}}', "VolumesRW"),
    ("container", "[]", "not a JSON object"),
])
def test_unparsable_legacy_metadata_is_refused(tmp_path: Path, where: str, text: str,
                                               match: str) -> None:
    t = make_aufs(tmp_path)
    if where == "record":
        (t.root / "volumes" / "oldvol" / "config.json").write_text(text)
    else:
        old = next(c for c in (t.root / "containers").iterdir()
                   if (c / "config.json").exists())
        (old / "config.json").write_text(text)
    _refuses(t.root, match, Unreadable)


def test_a_vfs_storage_driver_root_is_refused(tmp_path: Path) -> None:
    t = make_aufs(tmp_path)
    # vfs/dir then holds image layers, not volumes
    (t.root / "image" / "vfs" / "layerdb").mkdir(parents=True)
    _refuses(t.root, "several storage drivers")
    (t.root / "image" / "aufs").rename(tmp_path / "aufs-meta")
    _refuses(t.root, "driver vfs")


# --- the engine version -----------------------------------------------------------------------


def _root_with_an_orphan(tmp_path: Path, layout: str) -> Path:
    if layout == "aufs":
        t = make_aufs(tmp_path)
        t.layer(_sha("orphan"), [])
        root = t.root
    else:
        tree = make_tree(tmp_path)
        tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
        root = tree.root
    age(root)
    return root


@pytest.mark.parametrize("layout,text", [
    ("aufs", "Docker version 20.10.24+dfsg1, build 5d6db84"),
    ("aufs", "Docker version 23.0.6, build ef23cbc"),
    ("overlay2", "Docker version 20.10.24+dfsg1, build 5d6db84"),
    ("overlay2", "Docker version 26.1.5, build 411e817"),
])
def test_verified_versions_act(tmp_path: Path, dockerd: FakeDockerd, layout: str,
                               text: str) -> None:
    dockerd.says(text)
    root = _root_with_an_orphan(tmp_path, layout)
    result = run.quarantine(str(root), engine_stopped=True)
    assert result.batches and result.batches[0].entries
    assert result.scan is not None and result.scan.blockers == []
    number = text.split()[2].rstrip(",").split("+")[0]
    assert [str(v) for v in result.scan.engine_versions] == [number]


@pytest.mark.parametrize("layout,text", [
    ("aufs", "Docker version 19.03.15, build 99e3ed8"),
    ("aufs", "Docker version 24.0.7, build afdd53b"),  # aufs was removed in 24
    ("overlay2", "Docker version 27.3.1, build ce12230"),
    ("overlay2", "Docker version 17.03.2-ce, build f5ec1e2"),
])
def test_an_unverified_version_reports_but_acts_on_nothing(
        tmp_path: Path, dockerd: FakeDockerd, layout: str, text: str) -> None:
    dockerd.says(text)
    root = _root_with_an_orphan(tmp_path, layout)
    report = run.report(str(root), engine_stopped=True)
    assert report.scan is not None
    [blocker] = report.scan.blockers
    assert "outside the versions" in blocker and layout in blocker
    assert report.scan.findings and {f.action for f in report.scan.findings} == {"none"}
    assert {f.cls for f in report.scan.findings} == {"orphan-layer"}  # still shown
    _refuses(root, "not quarantining: engine version")


@pytest.mark.parametrize("text,status,match", [
    ("podman version 4.3.1", 0, "engine version unknown: .* printed 'podman version 4.3.1'"),
    ("", 0, "engine version unknown"),
    ("Docker version 26.x, build y", 0, "engine version unknown"),
    (V20, 3, "exited with 3"),
])
def test_an_unknown_version_is_refused_in_one_line(
        tmp_path: Path, dockerd: FakeDockerd, capsys: pytest.CaptureFixture[str],
        text: str, status: int, match: str) -> None:
    dockerd.says(text, status)
    t = make_aufs(tmp_path)
    t.layer(_sha("orphan"), [])
    age(t.root)
    _refuses(t.root, match)
    before = listing(t.root)
    assert main(["fsck", "--data-root", str(t.root), "--engine-stopped"]) == 2
    err = capsys.readouterr().err.strip()
    assert "engine version unknown" in err or "exited with" in err
    assert len(err.splitlines()) <= 2  # the reason (and at most a hint), no traceback
    assert listing(t.root) == before


def test_no_dockerd_anywhere_is_refused(tmp_path: Path, dockerd: FakeDockerd) -> None:
    dockerd.path.unlink()
    t = make_aufs(tmp_path)
    _refuses(t.root, "no dockerd runs on this data root and none is on PATH")


def test_a_running_engine_is_asked_through_its_own_binary(tmp_path: Path,
                                                          dockerd: FakeDockerd) -> None:
    """/proc/<pid>/exe is the running binary: a fake /proc whose exe links to a script that
    answers 26.1.5 while the dockerd on PATH says 20.10."""
    running = tmp_path / "running-dockerd"
    running.write_text("#!/bin/sh\necho 'Docker version 26.1.5, build 411e817'\n")
    running.chmod(0o755)
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "exe").symlink_to(running)
    [found] = version.detect([4242], proc=str(proc))
    assert str(found) == "26.1.5" and "pid 4242" in found.source
    assert dockerd.times_asked() == 0
    [on_path] = version.detect([])
    assert str(on_path) == "20.10.24" and "on PATH" in on_path.source
    (proc / "4242" / "exe").unlink()
    with pytest.raises(FsckRefused, match="cannot run dockerd pid 4242"):
        version.detect([4242], proc=str(proc))


# --- a data root that changed storage driver --------------------------------------------------


def test_the_configured_driver_picks_among_several(tmp_path: Path, daemon_json: Path) -> None:
    t = make_aufs(tmp_path)
    orphan = _sha("orphan")
    t.layer(orphan, [])
    (t.root / "image" / "overlay2" / "layerdb").mkdir(parents=True)
    (t.root / "overlay2" / "abc" / "diff").mkdir(parents=True)
    age(t.root)
    _refuses(t.root, "names none of them")
    daemon_json.write_text(json.dumps({"storage-driver": "btrfs"}))
    _refuses(t.root, "names none of them")
    daemon_json.write_text(json.dumps({"storage-driver": "aufs"}))
    result = do_scan(t.root)
    assert result.driver == "aufs"
    got = classes(result)
    assert got["image/overlay2"] == got["overlay2"] == "unknown"
    assert got[f"aufs/diff/{orphan}"] == "orphan-layer"
    [batch] = run.quarantine(str(t.root), engine_stopped=True).batches
    assert {e["from"] for e in batch.entries} == {f"aufs/{d}/{orphan}"
                                                  for d in ("diff", "layers", "mnt")}
    assert (t.root / "overlay2" / "abc" / "diff").is_dir()


def test_vfs_dir_of_an_earlier_vfs_driver_is_not_taken_for_volumes(tmp_path: Path,
                                                                   daemon_json: Path) -> None:
    t = make_aufs(tmp_path)
    (t.root / "image" / "vfs" / "layerdb").mkdir(parents=True)
    (t.root / "vfs" / "dir" / _sha("a vfs layer")).mkdir()
    age(t.root)
    daemon_json.write_text(json.dumps({"storage-driver": "aufs"}))
    result = _stays_put(t.root)
    assert classes(result) == {"image/vfs": "unknown", "vfs": "unknown"}


def test_a_running_engine_says_its_driver_on_its_command_line(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "77").mkdir(parents=True)
    (proc / "77" / "cmdline").write_bytes(b"dockerd\0-s\0overlay2\0--data-root\0/x\0")
    assert scan.configured_driver([77], str(proc)) == "overlay2"
    config = tmp_path / "d.json"
    config.write_text(json.dumps({"storage-driver": "aufs", "data-root": "/x"}))
    (proc / "78").mkdir()
    (proc / "78" / "cmdline").write_bytes(b"dockerd\0--config-file=" + bytes(config) + b"\0")
    assert scan.configured_driver([78], str(proc)) == "aufs"
    # two engines on one root that disagree: no answer
    assert scan.configured_driver([77, 78], str(proc)) is None


def test_a_layer_removed_while_being_looked_at_is_skipped(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Docker deletes a layer between fsck's listing and its look: nothing is left to judge."""
    t = make_aufs(tmp_path)
    real = graph.list_dir

    def with_a_ghost(path: str, what: str, **kw: Any) -> list[str]:
        names = real(path, what, **kw)
        return [*names, _sha("ghost")] if path.endswith("/aufs/diff") else names

    monkeypatch.setattr(aufs, "list_dir", with_a_ghost)
    assert do_scan(t.root, engine_running=True).findings == []
