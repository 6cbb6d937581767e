"""The usage containerd's overlayfs snapshotter records for each committed snapshot, read from
its own bbolt file under Docker's data root (the project's read-only reader).

When containerd commits a snapshot it measures its `fs/` (bytes allocated, inodes) and keeps
both under the snapshot's key, `<namespace>/<sequence>/<name>`; committed image layers are
named by their chain id. Used for the containerd image store's layer sizes (`df`) and inode
counts (inode watermarks), and to find a container's snapshots (named by the container's id,
and `<id>-init`) for what removing it frees.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass

from reclaim.ondisk import bbolt

_ROOT = ("containerd", "daemon", "io.containerd.snapshotter.v1.overlayfs")
DB = (*_ROOT, "metadata.db")
# Each snapshot's files: `snapshots/<id>/{fs,work}`, `id` being the number in its record.
SNAPSHOTS = (*_ROOT, "snapshots")
_COMMITTED = 3  # containerd's snapshot kind for a committed (read-only) snapshot


@dataclass(frozen=True)
class Usage:
    size: int | None
    inodes: int | None


def committed(data_root: str, namespace: str | None = None) -> dict[str, Usage] | None:
    """Name -> usage of every committed snapshot (of `namespace`, or of any), or None when
    the database cannot be read."""
    try:
        db = bbolt.read(os.path.join(data_root, *DB))
    except (OSError, bbolt.BoltError):
        return None
    snapshots = db.root.buckets.get(b"v1", bbolt.Bucket()).buckets.get(b"snapshots")
    found: dict[str, Usage] = {}
    for key, bucket in (snapshots.buckets if snapshots else {}).items():
        parts = key.decode("utf-8", "replace").split("/", 2)
        if len(parts) != 3 or (namespace is not None and parts[0] != namespace):
            continue
        if uvarint(bucket.items.get(b"kind", b"")) != _COMMITTED:
            continue
        found[parts[2]] = Usage(varint(bucket.items.get(b"size", b"")),
                                varint(bucket.items.get(b"inodes", b"")))
    return found


def snapshot_dirs(data_root: str, names: Collection[str]) -> dict[str, str] | None:
    """Name -> directory (`snapshots/<id>`) of the snapshots, of any kind and in any
    namespace, whose name is in `names`; None when the database cannot be read."""
    wanted = set(names)
    try:
        db = bbolt.read(os.path.join(data_root, *DB))
    except (OSError, bbolt.BoltError):
        return None
    snapshots = db.root.buckets.get(b"v1", bbolt.Bucket()).buckets.get(b"snapshots")
    base = os.path.join(data_root, *SNAPSHOTS)
    found: dict[str, str] = {}
    for key, bucket in (snapshots.buckets if snapshots else {}).items():
        parts = key.decode("utf-8", "replace").split("/", 2)
        if len(parts) != 3 or parts[2] not in wanted:
            continue
        number = uvarint(bucket.items.get(b"id", b""))
        if number is not None:
            found[parts[2]] = os.path.join(base, str(number))
    return found


def uvarint(raw: bytes) -> int | None:
    value = shift = 0
    for byte in raw:
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7
    return None


def varint(raw: bytes) -> int | None:
    """Go's `binary.PutVarint`: zigzag-encoded signed integers."""
    unsigned = uvarint(raw)
    if unsigned is None:
        return None
    return (unsigned >> 1) ^ -(unsigned & 1)
