"""Docker's containerd image store, read from disk for `df`.

The engine answers an image listing on this store slowly (far more slowly than on overlay2:
bench/README.md) and has no per-layer figures without two calls per image. The same
facts are on disk, under `<data-root>/containerd/daemon/`:

- the image records (one per name: `repo:tag`, `repo@digest` or `moby-dangling@<digest>`,
  each pointing at a target manifest) in containerd's metadata database, a bbolt file read
  with reclaim's own read-only reader (ondisk/bbolt.py);
- manifests and configs in the content store (`blobs/sha256/<hex>`);
- each unpacked layer's usage (the bytes and inodes containerd measured when it committed the
  snapshot) in the overlayfs snapshotter's own bbolt file, under the layer's chain id. These
  are the figures the engine's image history reports, byte for byte.

Anything this reader does not handle, such as several namespaces holding images or an index
as a target (a multi-platform image, whose platform the engine picks), makes it answer None,
and the caller asks the engine instead.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reclaim.ondisk import bbolt, snapshotter
from reclaim.ondisk.digests import chain_ids
from reclaim.runtimes.docker.disk import ContentStore, MetadataUnreadable

_DAEMON = ("containerd", "daemon")
_METADATA = (*_DAEMON, "io.containerd.metadata.v1.bolt", "meta.db")
_CONTENT = (*_DAEMON, "io.containerd.content.v1.content")
_MANIFESTS = frozenset({
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
})
_DANGLING = "moby-dangling@"
_GO_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class StoredImage:
    id: str  # the target manifest's digest: the engine's image id on this store
    tags: list[str]
    digests: list[str]
    created: str | None
    labels: dict[str, str] | None
    diff_ids: list[str]
    chain: list[str]
    layer_sizes: list[int]
    blobs: list[tuple[str, int]]
    tagged_at: datetime | None


@dataclass(frozen=True)
class Store:
    records: int  # image records (names), as the engine counts its images in /info
    images: list[StoredImage]


def read_store(data_root: str) -> Store | None:
    try:
        meta = bbolt.read(os.path.join(data_root, *_METADATA))
        content = ContentStore(os.path.join(data_root, *_CONTENT))
    except (OSError, bbolt.BoltError, MetadataUnreadable):
        return None
    namespaces = meta.root.buckets.get(b"v1", bbolt.Bucket()).buckets
    with_images = [(name, ns) for name, ns in namespaces.items()
                   if ns.buckets.get(b"images", bbolt.Bucket()).buckets]
    if len(with_images) != 1:
        return None  # none, or several (a Kubernetes node's k8s.io beside moby): ask
    namespace, ns = with_images[0]
    usage = snapshotter.committed(data_root, namespace.decode("utf-8", "replace"))
    if usage is None:
        return None
    sizes = {name: u.size for name, u in usage.items() if u.size is not None and u.size >= 0}

    by_target: dict[str, list[tuple[str, datetime | None]]] = {}
    records = ns.buckets[b"images"].buckets
    for raw_name, record in records.items():
        target = record.buckets.get(b"target")
        if target is None:
            return None
        if target.items.get(b"mediatype", b"").decode() not in _MANIFESTS:
            return None  # an index: the engine picks the platform
        digest = target.items.get(b"digest", b"").decode()
        by_target.setdefault(digest, []).append(
            (raw_name.decode("utf-8", "replace"), _go_time(record.items.get(b"updatedat"))))

    images = []
    try:
        for image_id, names in by_target.items():
            image = _image(content, sizes, image_id, names)
            if image is None:
                return None
            images.append(image)
    except MetadataUnreadable:
        return None
    return Store(records=len(records), images=images)


def _image(content: ContentStore, sizes: dict[str, int], image_id: str,
           names: list[tuple[str, datetime | None]]) -> StoredImage | None:
    manifest = content.read_json(image_id)
    config_digest = str((manifest.get("config") or {}).get("digest") or "")
    config = content.read_json(config_digest)
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    chain = chain_ids(diff_ids)
    if any(c not in sizes for c in chain):
        return None  # a layer not unpacked (or not committed yet)
    blobs = []
    for digest in [image_id, config_digest,
                   *(str(x.get("digest") or "") for x in manifest.get("layers") or [])]:
        size = content.size(digest)
        if size is not None:
            blobs.append((digest, size))
    tags: list[str] = []
    repos: list[str] = []
    for name, _ in names:
        if name.startswith(_DANGLING):
            continue
        familiar = _familiar(name)
        repo = familiar.split("@", 1)[0] if "@" in familiar else familiar.rsplit(":", 1)[0]
        if "@" not in familiar:
            tags.append(familiar)
        if repo not in repos:
            repos.append(repo)
    stamps = [when for _, when in names if when is not None]
    created = config.get("created")
    labels = (config.get("config") or {}).get("Labels")
    return StoredImage(
        id=image_id,
        tags=sorted(tags),
        digests=sorted(f"{repo}@{image_id}" for repo in repos),
        created=created if isinstance(created, str) else None,
        labels=labels if isinstance(labels, dict) else None,
        diff_ids=[str(d) for d in diff_ids],
        chain=chain,
        layer_sizes=[sizes[c] for c in chain],
        blobs=blobs,
        tagged_at=max(stamps) if stamps else None,
    )


def _familiar(name: str) -> str:
    """A reference as the engine shows it: Docker Hub's domain and `library/` left out."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _go_time(raw: Any) -> datetime | None:
    """Go's `time.MarshalBinary`: version 1, seconds since year 1, nanoseconds, zone."""
    if not isinstance(raw, bytes) or len(raw) < 15 or raw[0] != 1:
        return None
    seconds, nanos = struct.unpack(">qi", raw[1:13])
    return _GO_EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
