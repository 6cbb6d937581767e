"""fsck on synthetic overlay2 data roots built here: the reference graph, the classes of findings,
failing closed (the whole tree listed before and after), quarantine, restore and purge."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reclaim.cli import main
from reclaim.fsck import quarantine as q
from reclaim.fsck import run, scan, version
from reclaim.fsck.errors import FsckRefused, UnsafeName
from reclaim.fsck.mounts import Mount, parse_mountinfo
from reclaim.ondisk.sizing import size_paths
from tests.unit.test_fsck_bbolt import _inline_bucket, _leaf, _meta

OLD = time.time() - 3 * 86400


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_volume_db(path: Path, names: list[str]) -> None:
    items = [(n.encode(), json.dumps({"Name": n}).encode(), 0) for n in sorted(names)]
    leaf = _leaf(2, [(b"volumes", _inline_bucket(items), 1)])
    path.write_bytes(_meta(0, 2, 3, 2) + _meta(1, 2, 3, 1) + leaf)


@dataclass
class Tree:
    root: Path
    image: str
    chains: list[str]
    layers: list[str]
    container: str
    mount_id: str

    @property
    def overlay(self) -> Path:
        return self.root / "overlay2"

    def layer(self, name: str, link: str | None, lower: str | None = None) -> Path:
        d = self.overlay / name
        (d / "diff").mkdir(parents=True)
        (d / "diff" / "file").write_bytes(b"x" * 10000)
        if link is not None:
            (d / "link").write_text(link)
            if link:
                (self.overlay / "l" / link).symlink_to(f"../{name}/diff")
        if lower:
            (d / "lower").write_text(lower)
        return d


def age(root: Path, when: float = OLD) -> None:
    os.utime(root, (when, when), follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)


def write_image_store(img: Path) -> tuple[str, list[str], list[str]]:
    """`image/<driver>/` with one tagged image of two layers: (image id hex, chain ids,
    cache ids). The same for every driver's layout."""
    diff_ids = ["sha256:" + _sha("d1"), "sha256:" + _sha("d2")]
    c1 = diff_ids[0][7:]
    c2 = _sha(f"sha256:{c1} {diff_ids[1]}")
    layers = [_sha("cache1"), _sha("cache2")]
    for chain, cache, parent in ((c1, layers[0], None), (c2, layers[1], c1)):
        d = img / "layerdb" / "sha256" / chain
        d.mkdir(parents=True)
        (d / "cache-id").write_text(cache)
        (d / "diff").write_text("sha256:" + chain)
        if parent:
            (d / "parent").write_text("sha256:" + parent)
    (img / "layerdb" / "tmp").mkdir()
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    image = hashlib.sha256(config).hexdigest()
    (img / "imagedb" / "content" / "sha256").mkdir(parents=True)
    (img / "imagedb" / "content" / "sha256" / image).write_bytes(config)
    (img / "repositories.json").write_text(json.dumps(
        {"Repositories": {"a": {"a:1": "sha256:" + image}}}))
    return image, [c1, c2], layers


def make_tree(tmp_path: Path) -> Tree:
    root = tmp_path / "docker"
    img = root / "image" / "overlay2"
    image, chains, layers = write_image_store(img)
    c1, c2 = chains
    tree = Tree(root, image, [c1, c2], layers, _sha("container"), _sha("mount"))
    (tree.overlay / "l").mkdir(parents=True)
    tree.layer(layers[0], "AAAAAAAAAAAAAAAAAAAAAAAAA1")
    tree.layer(layers[1], "AAAAAAAAAAAAAAAAAAAAAAAAA2", "l/AAAAAAAAAAAAAAAAAAAAAAAAA1")
    tree.layer(tree.mount_id + "-init", "AAAAAAAAAAAAAAAAAAAAAAAAA3",
               "l/AAAAAAAAAAAAAAAAAAAAAAAAA2:l/AAAAAAAAAAAAAAAAAAAAAAAAA1")
    tree.layer(tree.mount_id, "AAAAAAAAAAAAAAAAAAAAAAAAA4",
               "l/AAAAAAAAAAAAAAAAAAAAAAAAA3:l/AAAAAAAAAAAAAAAAAAAAAAAAA2")
    m = img / "layerdb" / "mounts" / tree.container
    m.mkdir(parents=True)
    (m / "mount-id").write_text(tree.mount_id)
    (m / "init-id").write_text(tree.mount_id + "-init")
    (m / "parent").write_text("sha256:" + c2)
    c = root / "containers" / tree.container
    c.mkdir(parents=True)
    (c / "config.v2.json").write_text(json.dumps({"ID": tree.container, "MountPoints": {
        "/data": {"Name": "vol1", "Source": str(root / "volumes/vol1/_data"), "Type": "volume"},
    }}))
    (root / "volumes" / "vol1" / "_data").mkdir(parents=True)
    (root / "volumes" / "vol1" / "_data" / "f").write_bytes(b"v" * 5000)
    write_volume_db(root / "volumes" / "metadata.db", ["vol1"])
    age(root)
    return tree


def no_mounts() -> list[Mount]:
    return []


@pytest.fixture(autouse=True)
def _host_mounts_unseen(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's own mounts (other engines' layers) are not part of these synthetic roots."""
    monkeypatch.setattr("reclaim.fsck.mounts.all_namespaces", no_mounts)


@pytest.fixture(autouse=True)
def _no_daemon_config(tmp_path_factory: pytest.TempPathFactory,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's /etc/docker/daemon.json is no part of these roots."""
    monkeypatch.setattr(scan, "DAEMON_JSON", str(tmp_path_factory.mktemp("etc") / "none.json"))


@pytest.fixture(autouse=True)
def _verified_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """These roots stand for a Docker 20.10 data root, whatever dockerd this host has (the
    version rule itself is tested in test_fsck_legacy.py, with a dockerd of its own)."""
    found = [version.EngineVersion("Docker version 20.10.24, build test", (20, 10, 24), "test")]
    monkeypatch.setattr(version, "detect", lambda pids: found)


def listing(root: Path) -> dict[str, tuple[int, int, str | None]]:
    """Every entry under `root` and beside it (the quarantine dir), with type, size and target."""
    out: dict[str, tuple[int, int, str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root.parent):
        for name in [*dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            target = os.readlink(p) if os.path.islink(p) else None
            out[os.path.relpath(p, root.parent)] = (st.st_mode, st.st_size, target)
    return out


def do_scan(tree: Tree, mounts: Callable[[], list[Mount]] = no_mounts, **kw: Any) -> scan.Scan:
    kw.setdefault("engine_running", False)
    return scan.scan(str(tree.root), read_mounts=mounts, **kw)


def classes(result: scan.Scan) -> dict[str, str]:
    return {f.path: f.cls for f in result.findings}


# --- the graph ------------------------------------------------------------------------------


def test_a_healthy_root_has_no_findings(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    assert do_scan(tree).findings == []
    assert do_scan(tree, engine_running=True).findings == []


def test_an_unreferenced_layer_is_an_orphan_with_evidence_and_bytes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    # ctime cannot be set back: an age threshold of 0 stands in for an old dir
    result = do_scan(tree, engine_running=True, min_age=0)
    [f] = result.findings
    assert (f.path, f.cls, f.action, f.link) == (
        "overlay2/orphan1", "orphan-layer", "quarantine", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    assert f.bytes >= 10000 and f.apparent_bytes >= 10000
    assert any("mount" in e for e in f.evidence)
    assert result.reclaimable_bytes == f.bytes
    doc = result.to_json()
    assert doc["schema"] == "reclaim.fsck/v1"
    assert set(doc["findings"][0]) >= {"path", "class", "bytes", "evidence", "action"}


def test_a_layer_store_entry_whose_name_ends_in_a_newline_is_no_layer(tmp_path: Path) -> None:
    """Only a name of exactly 64 hex digits is a chain id: one with a newline after them is
    reported as unknown, never taken for the chain it nearly names."""
    tree = make_tree(tmp_path)
    layerdb = tree.root / "image" / "overlay2" / "layerdb" / "sha256"
    shutil.copytree(layerdb / tree.chains[0], layerdb / (tree.chains[0] + "\n"))
    got = classes(do_scan(tree))
    assert got == {f"image/overlay2/layerdb/sha256/{tree.chains[0]}\n": "unknown"}


def test_a_layer_named_by_any_mount_or_lower_file_is_kept(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    tree.layer("held", "HHHHHHHHHHHHHHHHHHHHHHHHH1")
    tree.layer("elsewhere", "HHHHHHHHHHHHHHHHHHHHHHHHH2")
    age(tree.overlay)
    # Relative lowerdir (Docker chdirs to overlay2/ when options are long), and the same data
    # root seen at another path inside another mount namespace.
    text = (
        "60 59 0:50 / /x/merged rw - overlay overlay rw,lowerdir=l/HHHHHHHHHHHHHHHHHHHHHHHHH1,"
        "upperdir=/x/diff,workdir=/x/work\n"
        "61 59 8:1 /var/lib/docker/overlay2/elsewhere/diff /mnt/y rw - ext4 /dev/sda1 rw\n"
    )
    assert do_scan(tree, lambda: parse_mountinfo(text)).findings == []
    # a lower file of a kept layer names its parents: a chain entry lost in the middle does
    # not orphan them
    (tree.overlay / tree.layers[1] / "lower").write_text(
        "l/AAAAAAAAAAAAAAAAAAAAAAAAA1:l/HHHHHHHHHHHHHHHHHHHHHHHHH1")
    assert "overlay2/held" not in classes(do_scan(tree))


def test_buildkit_ids_keep_their_dirs(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    key = "ab3dp9fdbc93uveyipzju70v1"
    tree.layer(key, "BBBBBBBBBBBBBBBBBBBBBBBBB1")
    age(tree.overlay)
    (tree.root / "buildkit").mkdir()
    leaf = _leaf(2, [(key.encode(), _inline_bucket([(b"parent", b"", 0)]), 1)])
    (tree.root / "buildkit" / "snapshots.db").write_bytes(
        _meta(0, 2, 3, 2) + _meta(1, 2, 3, 1) + leaf)
    assert do_scan(tree).findings == []
    # a damaged database proves nothing: refused
    raw = bytearray((tree.root / "buildkit" / "snapshots.db").read_bytes())
    raw[16] ^= 0xFF
    raw[4096 + 16] ^= 0xFF
    (tree.root / "buildkit" / "snapshots.db").write_bytes(bytes(raw))
    with pytest.raises(FsckRefused, match="meta"):
        do_scan(tree)


def test_recipe_b_a_lost_top_chain_orphans_its_layer(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    top = tree.root / "image/overlay2/layerdb/sha256" / tree.chains[1]
    top.rename(tmp_path / "aside")
    # The container's RW layer stacks on layer 2 (its lower file): without the container gone
    # too, layer 2 stays kept by it.
    for p in (tree.root / "containers", tree.root / "image/overlay2/layerdb/mounts"):
        p.rename(tmp_path / (p.name + "-aside"))
    for name in (tree.mount_id, tree.mount_id + "-init"):
        (tree.overlay / name).rename(tmp_path / name)
    (tree.root / "containers").mkdir()
    got = classes(do_scan(tree))
    assert got[f"overlay2/{tree.layers[1]}"] == "orphan-layer"
    assert got[f"image/overlay2/imagedb/content/sha256/{tree.image}"] == "stale-metadata"
    assert got[f"image/overlay2/layerdb/sha256/{tree.chains[0]}"] == "stale-metadata"
    assert f"overlay2/{tree.layers[0]}" not in got


def test_recipe_d_a_lost_container_leaves_stale_metadata_not_orphans(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    (tree.root / "containers" / tree.container).rename(tmp_path / "aside")
    got = do_scan(tree)
    # vol1 stays: it is in the volume store, whoever uses it
    assert classes(got) == {
        f"image/overlay2/layerdb/mounts/{tree.container}": "stale-metadata"}
    assert not [f for f in got.findings if f.cls == "orphan-layer"]
    assert not [f for f in got.findings if f.actionable and f.path.startswith("overlay2/")]


def test_in_flight_layers_are_never_actionable(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    tree.layer("nolink", None)
    tree.layer("fresh", "FFFFFFFFFFFFFFFFFFFFFFFFF1")
    age(tree.overlay / "nolink")
    (tree.root / "image/overlay2/layerdb/sha256/x-removing").mkdir()
    got = classes(do_scan(tree, engine_running=True))
    assert got["overlay2/nolink"] == "in-flight"
    assert got["overlay2/fresh"] == "in-flight"
    # with the engine stopped the age does not matter; a missing link still does
    got = classes(do_scan(tree, engine_running=False))
    assert got["overlay2/fresh"] == "orphan-layer"
    assert got["overlay2/nolink"] == "in-flight"


def test_a_write_set_blocks_acting_while_the_engine_runs(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    age(tree.overlay)
    (tree.root / "image/overlay2/layerdb/tmp/write-set-123").mkdir()
    result = do_scan(tree, engine_running=True)
    assert result.blockers
    assert classes(result)["image/overlay2/layerdb/tmp/write-set-123"] == "in-flight"
    assert all(f.action == "none" for f in result.findings)
    before = listing(tree.root)
    with pytest.raises(FsckRefused, match="write-set"):
        q.quarantine(result)
    assert listing(tree.root) == before


def test_changed_between_two_looks_is_in_flight(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    tree.layer("orphan2", "OOOOOOOOOOOOOOOOOOOOOOOOO2")
    age(tree.overlay)

    def touch(_: float) -> None:
        (tree.overlay / "orphan1" / "diff" / "new").write_text("x")

    monkeypatch.setattr("reclaim.fsck.scan.time.sleep", touch)
    result = do_scan(tree, engine_running=True, two_looks=True, min_age=0)
    assert result.looks == 2
    got = {f.path: f for f in result.findings}
    assert got["overlay2/orphan1"].cls == "in-flight"
    assert got["overlay2/orphan2"].cls == "orphan-layer"
    assert "two looks" in " ".join(got["overlay2/orphan2"].evidence)


# --- volumes ---------------------------------------------------------------------------------


def test_orphan_volume_only_when_neither_stored_nor_referenced(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    for name in ("lost", "used-by-name"):
        (tree.root / "volumes" / name / "_data").mkdir(parents=True)
    cfg = tree.root / "containers" / tree.container / "config.v2.json"
    doc = json.loads(cfg.read_text())
    doc["MountPoints"]["/b"] = {"Name": "used-by-name", "Type": "volume"}
    cfg.write_text(json.dumps(doc))
    got = do_scan(tree)
    assert classes(got) == {"volumes/lost": "orphan-volume"}


def test_a_volume_data_that_is_a_mount_point_blocks_everything(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    (tree.root / "volumes" / "nfs" / "_data").mkdir(parents=True)
    age(tree.overlay)
    data = tree.root / "volumes" / "nfs" / "_data"
    text = f"70 59 0:90 / {data} rw - nfs srv:/x rw\n"
    result = do_scan(tree, lambda: parse_mountinfo(text))
    assert classes(result)["volumes/nfs"] == "unknown"
    assert result.blockers
    before = listing(tree.root)
    with pytest.raises(FsckRefused, match="mount point"):
        q.quarantine(result)
    assert listing(tree.root) == before


# --- failing closed ---------------------------------------------------------------------------


def _refuses(tree: Tree, match: str) -> None:
    before = listing(tree.root)
    with pytest.raises(FsckRefused, match=match):
        run.quarantine(str(tree.root), engine_stopped=True)
    assert listing(tree.root) == before


def test_empty_reference_set_is_refused(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    layerdb = tree.root / "image/overlay2/layerdb"
    for sub in ("sha256", "mounts"):
        for p in (layerdb / sub).iterdir():
            for f in p.iterdir():
                f.unlink()
            p.rmdir()
    _refuses(tree, "empty reference set")


def test_unreadable_metadata_is_refused(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    (tree.root / "image/overlay2/layerdb/sha256" / tree.chains[0] / "cache-id").unlink()
    _refuses(tree, "cache-id")


def test_a_corrupt_volume_store_is_refused(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    (tree.root / "volumes/metadata.db").write_bytes(b"\0" * 8192)
    _refuses(tree, "volume store")


@pytest.mark.parametrize("layout,match", [
    ("btrfs", "driver btrfs"),
    ("two-drivers", "several storage drivers"),
    ("containerd", "containerd image store"),
    ("userns", "userns-remap"),
])
def test_other_layouts_are_refused(tmp_path: Path, layout: str, match: str) -> None:
    tree = make_tree(tmp_path)
    if layout == "btrfs":
        (tree.root / "image/overlay2").rename(tree.root / "image/btrfs")
        (tree.root / "btrfs/subvolumes").mkdir(parents=True)
    elif layout == "two-drivers":
        (tree.root / "image/aufs/layerdb").mkdir(parents=True)
    elif layout == "containerd":
        (tree.root / "image/overlay2").rename(tmp_path / "gone")
        (tree.root / "containerd/daemon").mkdir(parents=True)
    else:
        (tree.root / "100000.100000" / "image").mkdir(parents=True)
    _refuses(tree, match)


def test_metadata_naming_a_path_outside_is_refused(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    outside = tmp_path / "precious"
    outside.mkdir()
    (tree.root / "image/overlay2/layerdb/sha256" / tree.chains[0] / "cache-id").write_text(
        "../../precious")
    with pytest.raises(UnsafeName):
        run.quarantine(str(tree.root), engine_stopped=True)
    assert outside.is_dir()


def test_symlinks_are_never_followed_out_of_the_root(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    outside = tmp_path / "precious"
    (outside / "diff").mkdir(parents=True)
    (outside / "link").write_text("PPPPPPPPPPPPPPPPPPPPPPPPP1")
    (tree.overlay / "evil").symlink_to(outside)
    result = run.quarantine(str(tree.root), engine_stopped=True)
    assert result.scan is not None
    assert classes(result.scan) == {"overlay2/evil": "unknown"}
    assert (tree.overlay / "evil").is_symlink() and (outside / "link").exists()
    # a symlink where a metadata directory should be is refused, not followed
    (tree.root / "containers").rename(tmp_path / "containers-real")
    (tree.root / "containers").symlink_to(tmp_path / "containers-real")
    _refuses(tree, "symlink")


def test_an_empty_link_file_leaves_l_alone(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    tree.layer("emptylink", "")
    age(tree.overlay)
    links_before = sorted(os.listdir(tree.overlay / "l"))
    result = run.quarantine(str(tree.root), engine_stopped=True)
    assert result.batches and [e["from"] for e in result.batches[0].entries] == [
        "overlay2/emptylink"]
    assert (tree.overlay / "l").is_dir()
    assert sorted(os.listdir(tree.overlay / "l")) == links_before


def test_engine_stopped_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(tmp_path)
    monkeypatch.setattr(scan, "engine_pids", lambda root: [4242])
    _refuses(tree, "pid 4242")


# --- quarantine, restore, purge ---------------------------------------------------------------


def test_quarantine_restore_puts_everything_back_exactly(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    (tree.root / "volumes" / "lost" / "_data").mkdir(parents=True)
    age(tree.root)
    before = listing(tree.root)
    result = run.quarantine(str(tree.root), engine_stopped=True)
    [batch] = result.batches
    assert {e["from"] for e in batch.entries} == {
        "overlay2/orphan1", "overlay2/l/OOOOOOOOOOOOOOOOOOOOOOOOO1", "volumes/lost"}
    assert not (tree.overlay / "orphan1").exists()
    assert not os.path.lexists(tree.overlay / "l" / "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    assert (tmp_path / "reclaim-quarantine" / batch.id / "overlay2" / "orphan1").is_dir()
    manifest = json.loads((Path(batch.path) / "manifest.json").read_text())
    assert all(e["state"] == "moved" for e in manifest["entries"])
    assert result.scan is not None
    assert {f.action for f in result.scan.findings} == {"quarantined"}
    assert do_scan(tree).findings == []

    run.restore(str(tree.root), batch.id)
    after = listing(tree.root)
    after.pop("reclaim-quarantine/.lock")
    after.pop("reclaim-quarantine")
    assert after == before
    with pytest.raises(FsckRefused, match="no quarantine batch"):
        run.restore(str(tree.root), batch.id)


def test_restore_refuses_when_a_path_is_taken_again(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    age(tree.root)
    [batch] = run.quarantine(str(tree.root), engine_stopped=True).batches
    (tree.overlay / "orphan1").mkdir()
    with pytest.raises(FsckRefused, match="exists again"):
        run.restore(str(tree.root), batch.id)
    assert os.path.lexists(Path(batch.path) / "overlay2" / "orphan1")
    with pytest.raises(UnsafeName):
        run.restore(str(tree.root), "../x")


def test_purge_deletes_batches_and_measures_them(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    age(tree.root)
    [batch] = run.quarantine(str(tree.root), engine_stopped=True).batches
    assert run.purge(str(tree.root), older_than=3600).batches == []
    [purged] = run.purge(str(tree.root)).batches
    assert purged.id == batch.id and purged.bytes >= 10000
    assert not Path(batch.path).exists()
    assert (tree.overlay / tree.layers[0]).is_dir()


def test_quarantine_refuses_another_filesystem(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    age(tree.root)
    real = os.lstat

    def other_dev(path: Any, *a: Any, **kw: Any) -> os.stat_result:
        st = real(path, *a, **kw)
        if str(path).endswith("reclaim-quarantine"):
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev + 1, *st[3:10]))
        return st

    monkeypatch.setattr("reclaim.fsck.quarantine.os.lstat", other_dev)
    with pytest.raises(FsckRefused, match="another filesystem"):
        run.quarantine(str(tree.root), engine_stopped=True)
    assert (tree.overlay / "orphan1").is_dir()


# --- sizing -----------------------------------------------------------------------------------


def test_sizing_counts_hard_links_once_and_follows_no_symlink(tmp_path: Path) -> None:
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "sub" / "f").write_bytes(b"x" * 8192)
    os.link(a / "sub" / "f", a / "g")
    big = tmp_path / "big"
    big.write_bytes(b"y" * 100000)
    (a / "s").symlink_to(big)
    [s] = size_paths([str(a)], workers=4)
    dirs = os.lstat(a).st_size + os.lstat(a / "sub").st_size
    assert s.apparent == dirs + 8192 + len(str(big))
    assert s.files == 4  # a, sub, f (g is the same inode), s (not what it points at)
    assert s.apparent < 100000


# --- the command line -------------------------------------------------------------------------


def test_cli_json_and_refusal_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(tmp_path)
    tree.layer("orphan1", "OOOOOOOOOOOOOOOOOOOOOOOOO1")
    age(tree.root)
    monkeypatch.setattr(scan, "engine_pids", lambda root: [])
    assert main(["fsck", "--data-root", str(tree.root), "--json", "--engine-stopped"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "reclaim.fsck/v1" and doc["driver"] == "overlay2"
    assert [f["path"] for f in doc["findings"]] == ["overlay2/orphan1"]
    assert doc["reclaimable_bytes"] == doc["findings"][0]["bytes"] > 0

    assert main(["fsck", "--data-root", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["fsck", "--data-root", str(tree.root), "--quarantine", "--purge"]) == 2
    assert main(["fsck", "--data-root", str(tree.root), "--older-than", "3d"]) == 2
    assert main(["fsck", "--data-root", str(tree.root), "--quarantine", "--engine-stopped",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [batch] = doc["batches"]
    assert main(["fsck", "--data-root", str(tree.root), "--restore", batch["id"]]) == 0
    assert (tree.overlay / "orphan1").is_dir()
