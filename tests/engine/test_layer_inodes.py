"""Per-layer inode counts (for the inode watermarks) against the inodes really on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reclaim.ondisk import bbolt
from reclaim.ondisk.snapshotter import uvarint
from reclaim.runtimes.docker import DockerRuntime
from tests.conftest import Seeded

pytestmark = pytest.mark.engine


def _inodes(*trees: Path) -> int:
    """Every inode under the trees, the trees themselves included (independent of the code
    under test: a plain walk)."""
    seen: set[int] = set()
    for tree in trees:
        seen.add(tree.lstat().st_ino)
        for top, dirs, files in os.walk(tree):
            for name in dirs + files:
                seen.add(os.lstat(os.path.join(top, name)).st_ino)
    return len(seen)


def _overlay2_truth(root: Path, chain_id: str) -> int:
    entry = root / "image/overlay2/layerdb/sha256" / chain_id.removeprefix("sha256:")
    cache_id = (entry / "cache-id").read_text().strip()
    return _inodes(entry, root / "overlay2" / cache_id) + 1  # and its l/<short> symlink


def _snapshot_dirs(root: Path) -> dict[str, Path]:
    """Chain id -> snapshot directory, from the snapshotter's records (only the mapping is
    taken from there; the inodes are walked)."""
    base = root / "containerd/daemon/io.containerd.snapshotter.v1.overlayfs"
    db = bbolt.read(base / "metadata.db")
    out = {}
    for key, bucket in db.root.buckets[b"v1"].buckets[b"snapshots"].buckets.items():
        snapshot_id = uvarint(bucket.items[b"id"])
        out[key.decode().split("/", 2)[-1]] = base / "snapshots" / str(snapshot_id)
    return out


def test_layer_inodes_match_the_disk(seeded: Seeded) -> None:
    runtime = DockerRuntime(seeded.engine.url)
    try:
        inventory = runtime.inventory()
        counts = runtime.layer_inodes(list(inventory.layers))
    finally:
        runtime.close()
    assert set(counts) == set(inventory.layers)  # every layer of a local engine is counted
    root = Path(inventory.engine.data_root or "")
    if inventory.engine.image_store == "overlay2":
        truth = {c: _overlay2_truth(root, c) for c in counts}
    else:
        dirs = _snapshot_dirs(root)
        truth = {c: _inodes(dirs[c]) for c in counts}  # the snapshot directory, fs/ and work/
    assert counts == truth


def test_unknown_chain_ids_are_left_out(seeded: Seeded) -> None:
    runtime = DockerRuntime(seeded.engine.url)
    try:
        assert runtime.layer_inodes(["sha256:" + "0" * 64, "not-a-digest"]) == {}
    finally:
        runtime.close()
