"""How many inodes each layer holds on disk, for the inode watermarks.

Counting is not free (a layer's file list has to be read), so the inventory does not do it:
the planner asks for the layers it may evict, and only when an inode watermark is above high.
Layers that cannot be counted are left out of the answer, which means "unknown".

- overlay2: the layer's `tar-split.json.gz` in layerdb lists every entry of the layer's archive
  once (`"type":1` records; `"type":2` records are raw archive bytes), and each entry is one
  inode in the unpacked `diff/`. Hard links and opaque-directory markers are entries that make
  no inode of their own, so a layer with them is counted a little high. Around that, the
  engine's own files for the layer: the layerdb entry and its files, the layer directory with
  `diff/`, `link` (and `lower`, `work/` above a base layer) and the `l/` link.
- containerd image store: the overlayfs snapshotter records each committed snapshot's usage
  (`inodes`, measured by containerd over the snapshot's `fs/` when it was committed) in its own
  bbolt metadata; around that, the snapshot directory and its `work/`.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Collection

from reclaim.ondisk import snapshotter
from reclaim.ondisk.digests import digest_hex

# layerdb: the entry directory, cache-id, diff, size, tar-split.json.gz; overlay2: the layer
# directory, diff/, link; and the l/<short> symlink, as Docker 20.10 and 26.1 lay them out.
OVERLAY2_BASE_BOOKKEEPING = 9
# Above a base layer: layerdb's `parent`, and `lower`, `work/` (a loaded layer's `work/` is
# empty: `work/work/` appears only where the layer was once a mount's upper directory).
OVERLAY2_UPPER_BOOKKEEPING = OVERLAY2_BASE_BOOKKEEPING + 3
# The snapshot directory and its work/ (fs/ itself is in containerd's own count).
SNAPSHOT_BOOKKEEPING = 2

_ENTRY = b'"type":1,'


def overlay2_layer_inodes(data_root: str, chain_ids: Collection[str]) -> dict[str, int]:
    layerdb = os.path.join(data_root, "image", "overlay2", "layerdb", "sha256")
    counts: dict[str, int] = {}
    for chain_id in chain_ids:
        hexpart = digest_hex(chain_id)
        if hexpart is None:
            continue
        entry = os.path.join(layerdb, hexpart)
        try:
            with gzip.open(os.path.join(entry, "tar-split.json.gz"), "rb") as f:
                entries = f.read().count(_ENTRY)
            has_parent = os.path.exists(os.path.join(entry, "parent"))
            with open(os.path.join(entry, "cache-id")) as f:
                cache_id = f.read().strip()
        except (OSError, EOFError, gzip.BadGzipFile):
            continue  # unknown: not counted rather than guessed
        # The engine marks some layers with an empty `committed` file.
        committed = bool(cache_id) and os.path.exists(
            os.path.join(data_root, "overlay2", cache_id, "committed"))
        counts[chain_id] = entries + int(committed) + (
            OVERLAY2_UPPER_BOOKKEEPING if has_parent else OVERLAY2_BASE_BOOKKEEPING
        )
    return counts


def containerd_layer_inodes(data_root: str, chain_ids: Collection[str]) -> dict[str, int]:
    wanted = set(chain_ids)
    usage = snapshotter.committed(data_root) or {}
    return {name: u.inodes + SNAPSHOT_BOOKKEEPING for name, u in usage.items()
            if name in wanted and u.inodes is not None and u.inodes > 0}
