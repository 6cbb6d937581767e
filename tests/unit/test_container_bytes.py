"""What removing a container or a volume frees, read from a data root laid out as the engine
lays it out: checked against what `du -sbx` of the data root loses when those paths go."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reclaim.runtimes.docker import disk as dockerdisk
from reclaim.runtimes.docker.disk import container_disk_bytes, container_storage
from reclaim.runtimes.docker.volumes import _volume_bytes

CID = "c" * 64
MOUNT = "a" * 64


def du(path: Path) -> int:
    out = subprocess.run(["du", "-sbx", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def _layer(root: Path, name: str, short: str, files: dict[str, bytes]) -> None:
    layer = root / "overlay2" / name
    for sub in ("diff", "work/work"):
        (layer / sub).mkdir(parents=True)
    (layer / "link").write_text(short)
    (layer / "lower").write_text("l/" + "B" * 26)
    for rel, data in files.items():
        path = layer / "diff" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "overlay2" / "l").mkdir(exist_ok=True)
    os.symlink(f"../{name}/diff", root / "overlay2" / "l" / short)


def _init_link(mount: str) -> str:
    return "I" + mount[:25].upper()


def _overlay2_container(root: Path, cid: str = CID, mount: str = MOUNT) -> None:
    own = root / "containers" / cid
    (own / "checkpoints").mkdir(parents=True)
    (own / "config.v2.json").write_text(json.dumps({"ID": cid}))
    (own / f"{cid}-json.log").write_bytes(b"x" * 5000)
    records = root / "image" / "overlay2" / "layerdb" / "mounts" / cid
    records.mkdir(parents=True)
    (records / "mount-id").write_text(mount)
    (records / "init-id").write_text(mount + "-init")
    (records / "parent").write_text("sha256:" + "b" * 64)
    _layer(root, mount, mount[:26].upper(), {"var/log/app.log": b"y" * 12345,
                                            "tmp/empty": b""})
    _layer(root, mount + "-init", _init_link(mount), {"etc/hosts": b"", ".dockerenv": b""})


def _remove_overlay2_container(root: Path, cid: str = CID, mount: str = MOUNT) -> None:
    """What the engine deletes when it removes the container."""
    shutil.rmtree(root / "containers" / cid)
    shutil.rmtree(root / "image" / "overlay2" / "layerdb" / "mounts" / cid)
    for name, short in ((mount, mount[:26].upper()), (mount + "-init", _init_link(mount))):
        shutil.rmtree(root / "overlay2" / name)
        (root / "overlay2" / "l" / short).unlink()


def test_an_overlay2_container_is_predicted_to_the_byte(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _overlay2_container(root)
    # Another container beside it, which stays: nothing of it is counted.
    _overlay2_container(root, "d" * 64, "e" * 64)
    measured = container_disk_bytes(str(root), "overlay2", [CID])
    before = du(root)
    _remove_overlay2_container(root)
    assert measured == {CID: before - du(root)}


def test_a_hard_link_in_the_read_write_layer_counts_once(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _overlay2_container(root)
    diff = root / "overlay2" / MOUNT / "diff"
    os.link(diff / "var/log/app.log", diff / "app.log.hardlink")
    measured = container_disk_bytes(str(root), "overlay2", [CID])
    before = du(root)
    _remove_overlay2_container(root)
    assert measured == {CID: before - du(root)}


@pytest.mark.parametrize("mount_id", ["../../../../etc", "A" * 64, ""])
def test_a_mount_record_that_names_no_layer_makes_it_unknown(tmp_path: Path,
                                                              mount_id: str) -> None:
    root = tmp_path / "data"
    _overlay2_container(root)
    (root / "image/overlay2/layerdb/mounts" / CID / "mount-id").write_text(mount_id)
    assert container_disk_bytes(str(root), "overlay2", [CID]) == {}


def test_a_container_not_in_this_data_root_is_unknown(tmp_path: Path) -> None:
    """A remote engine's data root path may exist here too; the container's own directory
    is the proof that it is the engine's."""
    root = tmp_path / "data"
    _overlay2_container(root)
    other = "f" * 64
    assert container_disk_bytes(str(root), "overlay2", [CID, other, "not-an-id"]).keys() == {
        CID}
    assert container_disk_bytes(str(root), "btrfs", [CID]) == {}
    assert container_disk_bytes(str(tmp_path / "absent"), "overlay2", [CID]) == {}


def test_containerd_store_counts_the_containers_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    (root / "containers" / CID).mkdir(parents=True)
    (root / "containers" / CID / "config.v2.json").write_text("{}")
    snapshots = tmp_path / "snapshots"
    for number in ("7", "8"):
        (snapshots / number / "fs").mkdir(parents=True)
        (snapshots / number / "work").mkdir()
    (snapshots / "8" / "fs" / "written").write_bytes(b"z" * 777)

    def dirs(data_root: str, names: list[str]) -> dict[str, str]:
        assert sorted(names) == [CID, CID + "-init"]
        return {CID: str(snapshots / "8"), CID + "-init": str(snapshots / "7")}

    from reclaim.ondisk import snapshotter
    monkeypatch.setattr(snapshotter, "snapshot_dirs", dirs)
    paths = container_storage(str(root), "containerd", [CID])
    assert paths == {CID: [str(root / "containers" / CID), str(snapshots / "8"),
                           str(snapshots / "7")]}
    expected = du(root / "containers" / CID) + du(snapshots / "8") + du(snapshots / "7")
    assert dockerdisk.container_disk_bytes(str(root), "containerd", [CID]) == {CID: expected}

    # Without its read-write snapshot, the container is being created or removed: unknown.
    monkeypatch.setattr(snapshotter, "snapshot_dirs",
                        lambda data_root, names: {CID + "-init": str(snapshots / "7")})
    assert container_storage(str(root), "containerd", [CID]) == {}


def test_a_volume_frees_its_directories_too(tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"
    data = volumes / "vol" / "_data"
    (data / "sub" / "deeper").mkdir(parents=True)
    (data / "a.bin").write_bytes(b"a" * 3000)
    (data / "sub" / "deeper" / "b.bin").write_bytes(b"b" * 500)
    os.symlink("a.bin", data / "link")
    (volumes / "other" / "_data").mkdir(parents=True)
    content, disk = _volume_bytes(str(data))
    assert content == 3000 + 500 + len("a.bin")  # the files, as the engine's figure counts
    before = du(volumes)
    shutil.rmtree(volumes / "vol")
    assert disk == before - du(volumes)


def test_a_volume_that_cannot_be_read_is_unknown(tmp_path: Path) -> None:
    assert _volume_bytes(str(tmp_path / "gone" / "_data")) == (None, None)
    assert _volume_bytes("") == (None, None)
