"""Read-only access to the metadata Docker keeps under its data root.

Reading it costs one small file per image and per layer, where the API would need two calls per
image. Nothing here writes, locks or
follows a symlink out of the data root; whatever cannot be read makes the caller fall back to
the API, never guess.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from reclaim.model import Container, ContainerState, Layer, Mount
from reclaim.ondisk.digests import chain_ids, digest_hex, is_hex64
from reclaim.runtimes.docker.recordcache import RecordCache
from reclaim.timeutil import parse_time

# The name of an overlay2 layer's short link under `l/`.
_SHORT_LINK = re.compile(r"[0-9A-Z]{26}")


class MetadataUnreadable(Exception):
    """The on-disk metadata is missing, unreadable or not what we expect."""


class ImageConfig(NamedTuple):
    """An image config's facts; the record cache keeps them as a list in this order."""

    diff_ids: list[str]
    config_bytes: int
    created: str | None = None
    labels: dict[str, str] | None = None
    # The chain ids of diff_ids (a hash per layer: kept in the record cache with the rest).
    chain: list[str] | None = None


_IMAGE_FIELDS = len(ImageConfig._fields)


class Overlay2Metadata:
    """`image/overlay2/{imagedb,layerdb}` and `containers/` of one Docker data root.

    Paths are plain strings here: with thousands of files to open, pathlib's joins cost more
    than the reads themselves."""

    def __init__(self, data_root: str | os.PathLike[str], driver: str = "overlay2",
                 cache: RecordCache | None = None) -> None:
        self.root = os.fspath(data_root)
        self.driver = driver
        self.cache = cache
        self.image_dir = os.path.join(self.root, "image", driver)
        self.configs_dir = os.path.join(self.image_dir, "imagedb", "content", "sha256")
        self._configs = self.configs_dir + "/"
        self._metadata = os.path.join(self.image_dir, "imagedb", "metadata", "sha256") + "/"
        self._layerdb = os.path.join(self.image_dir, "layerdb", "sha256") + "/"
        if not os.path.isdir(self.configs_dir):
            raise MetadataUnreadable(f"no readable image store at {self.image_dir}")
        if not os.access(self._layerdb, os.R_OK | os.X_OK):
            raise MetadataUnreadable(f"layer store at {self.image_dir} is not readable")
        self._tagged: set[str] | None = None

    def image_config(self, image_id: str) -> ImageConfig:
        hexpart = digest_hex(image_id)
        if hexpart is None:
            raise MetadataUnreadable(f"unexpected image id {image_id!r}")
        if self.cache is not None:
            hit = self.cache.image(hexpart)
            if isinstance(hit, list) and len(hit) == _IMAGE_FIELDS:
                return ImageConfig._make(hit)
        path = self._configs + hexpart
        try:
            with open(path, "rb") as f:
                raw = f.read()
            config = json.loads(raw)
            diff_ids = list(config["rootfs"]["diff_ids"] or [])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MetadataUnreadable(f"image config {path}: {exc}") from exc
        if not all(isinstance(d, str) and digest_hex(d) for d in diff_ids):
            raise MetadataUnreadable(f"image config {path}: malformed diff ids")
        created = config.get("created")
        labels = (config.get("config") or {}).get("Labels")
        found = ImageConfig(diff_ids=diff_ids, config_bytes=len(raw),
                            created=created if isinstance(created, str) else None,
                            labels=labels if isinstance(labels, dict) else None,
                            chain=chain_ids(diff_ids))
        if self.cache is not None:
            self.cache.put_image(hexpart, list(found))
        return found

    def references(self) -> dict[str, list[str]]:
        """Image id -> its references (`repo:tag` and `repo@digest`, as the engine shows them),
        from `repositories.json`, which the engine rewrites whole on every tag change."""
        try:
            with open(os.path.join(self.image_dir, "repositories.json"), "rb") as f:
                repositories = json.loads(f.read()).get("Repositories") or {}
            refs: dict[str, list[str]] = {}
            for by_ref in repositories.values():
                for ref, image_id in by_ref.items():
                    refs.setdefault(str(image_id), []).append(str(ref))
        except FileNotFoundError:
            return {}  # no image was ever tagged
        except (OSError, ValueError, AttributeError) as exc:
            raise MetadataUnreadable(f"repositories.json in {self.image_dir}: {exc}") from exc
        return refs

    def layer(self, chain_id: str, diff_id: str, parent: str | None, depth: int = 0) -> Layer:
        """`depth` is the layer's place in its chain (0 for a base layer)."""
        hexpart = digest_hex(chain_id)
        if hexpart is None:
            raise MetadataUnreadable(f"unexpected chain id {chain_id!r}")
        if self.cache is not None:
            hit = self.cache.layer(hexpart)
            if isinstance(hit, list) and len(hit) == 2:
                cached_size, cached_bookkeeping = hit  # as put_layer below keeps them
                return Layer(chain_id=chain_id, diff_id=diff_id, size=cached_size,
                             parent=parent, metadata_bytes=cached_bookkeeping)
        entry = self._layerdb + hexpart
        try:
            with open(entry + "/size", "rb") as f:
                size = int(f.read().strip())
        except (OSError, ValueError) as exc:
            raise MetadataUnreadable(f"layer size {entry}/size: {exc}") from exc
        metadata_bytes = self._bookkeeping_bytes(entry, size, depth)
        if self.cache is not None:
            self.cache.put_layer(hexpart, [size, metadata_bytes])
        return Layer(chain_id=chain_id, diff_id=diff_id, size=size, parent=parent,
                     metadata_bytes=metadata_bytes)

    def _bookkeeping_bytes(self, entry: str, size: int, depth: int) -> int:
        """What the engine keeps for a layer besides its files' bytes, as `du -b` counts it:
        the layerdb entry (cache-id, diff, size, parent, tar-split), the layer directory with
        its diff/ (and work/ above the base), link, lower, the `l/` short link, and the
        directories inside the layer's content (the layer's `size` counts file bytes only).

        The sizes of the fixed files follow from the layout, every directory is taken to be as
        large as the layerdb entry's own, and the content's directories are counted from the
        layer's tar-split, which names every entry of the layer once."""
        try:
            directory = os.lstat(entry).st_size
            tar_split = os.stat(entry + "/tar-split.json.gz").st_size
        except OSError:
            return 0
        digest_file = len("sha256:") + 64
        files = 64 + digest_file + len(str(size)) + tar_split  # cache-id, diff, size, tar-split
        directories = 3 + _content_directories(entry)  # + the layerdb entry, layer dir, diff/
        if depth:
            files += digest_file  # parent
            # work/ (work/work/ appears only once the layer was a mount's upper directory,
            # which a layer unpacked from an archive never was).
            directories += 1
            files += 28 * depth - 1  # lower: "l/<26 chars>" per ancestor, ':'-joined
        files += 26 + len("../") + 64 + len("/diff")  # link, and the l/<short> symlink
        return directories * directory + files

    def last_tag_time(self, image_id: str) -> str | None:
        """When the image was last tagged here. Only some images have it (Docker records it
        on tag and commit, not on load), so the directory is listed once instead of failing
        to open a file per image."""
        if self._tagged is None:
            try:
                self._tagged = set(os.listdir(self._metadata))
            except OSError:
                self._tagged = set()
        hexpart = digest_hex(image_id)
        if hexpart is None or hexpart not in self._tagged:
            return None
        try:
            with open(self._metadata + hexpart + "/lastUpdated") as f:
                return f.read().strip() or None
        except OSError:
            return None


def read_container_state(data_root: Path, container_id: str) -> dict[str, Any] | None:
    """`State` of `containers/<id>/config.v2.json` (StartedAt, FinishedAt, ...), or None."""
    if not is_hex64(container_id):
        return None
    path = data_root / "containers" / container_id / "config.v2.json"
    try:
        state = json.loads(path.read_bytes()).get("State")
    except (OSError, ValueError, AttributeError):
        return None
    return state if isinstance(state, dict) else None


# A tar-split record of an archive entry whose name ends in "/": a directory.
# (A pattern: `re` compiles it on first use, which df's start-up on a known host never makes.)
_DIRECTORY_ENTRY = rb'"type":1,"name":"[^"]*/"'


def _content_directories(entry: str) -> int:
    import gzip  # here: only a layer read for the first time needs it, not df's start-up

    try:
        with gzip.open(entry + "/tar-split.json.gz", "rb") as f:
            return len(re.findall(_DIRECTORY_ENTRY, f.read()))
    except (OSError, EOFError, gzip.BadGzipFile):
        return 0  # counted as none: the estimate stays a little low


# A container's times matter only once it stopped: a running one uses its image now, and a
# created one never started (its creation time is known without them).
TIMED_STATES = frozenset({ContainerState.EXITED, ContainerState.DEAD})


def containers_on_disk(data_root: str, cache: RecordCache | None = None) -> list[Container] | None:
    """Every container, from its `config.v2.json` under `containers/`, newest first as the
    engine lists them; None when the directory cannot be listed (the caller then asks the
    engine).

    The engine writes these files atomically on every state change and loads its containers
    from them when it starts, so they say what its listing says. A directory whose file cannot
    be read is a container being created or removed right now: it is left out, as the listing
    may also leave it out."""
    base = os.path.join(data_root, "containers")
    try:
        names = os.listdir(base)
    except OSError:
        return None
    found: list[tuple[float, str, list[Any]]] = []
    for cid in names:
        if not is_hex64(cid):
            continue
        path = f"{base}/{cid}/config.v2.json"
        try:
            st = os.stat(path)
        except OSError:
            continue
        # A rewrite is a new file renamed into place: a new inode and change time.
        stamp = (st.st_ino, st.st_ctime_ns, st.st_size)
        record = cache.container(cid, stamp) if cache is not None else None
        if record is None:
            record = _container_record(path)
            if record is None:
                continue
            if cache is not None:
                cache.put_container(cid, stamp, record)
        found.append((record[_CREATED], cid, record))
    found.sort(key=lambda entry: entry[:2], reverse=True)
    return [_container(cid, record) for _, cid, record in found]


# A container's record, as the record cache keeps it: a plain list of these, in this order
# (marshal writes no named tuples), read back by unpacking in `_container`. The creation time
# is seconds, exact (0.0 when unknown); start and finish times seconds or None; each mount
# [type, volume name, source, destination], as `Mount`.
CONTAINER_RECORD = ("name", "image_id", "state", "created", "labels", "mounts", "started",
                    "finished")
# Where the creation time is in it: the engine lists containers newest first.
_CREATED = CONTAINER_RECORD.index("created")


def _container_record(path: str) -> list[Any] | None:
    """The record (CONTAINER_RECORD) of a container's `config.v2.json`; None when it cannot be
    read."""
    try:
        with open(path, "rb") as f:
            raw = json.loads(f.read())
        state = raw["State"]
        config = raw.get("Config") or {}
        created = raw.get("Created")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(state, dict):
        return None
    exact = parse_time(created) if isinstance(created, str) else None
    started, finished = parse_time(state.get("StartedAt")), parse_time(state.get("FinishedAt"))
    labels = config.get("Labels")
    return [
        str(raw.get("Name") or "").lstrip("/"),  # name
        str(raw.get("Image") or ""),  # image_id
        _state_string(state),  # state
        exact.timestamp() if exact else 0.0,  # created
        labels if isinstance(labels, dict) else {},  # labels
        [[str(m.get("Type") or ""), m.get("Name") or None, str(m.get("Source") or ""),
          str(m.get("Destination") or "")]
         for m in (raw.get("MountPoints") or {}).values() if isinstance(m, dict)],  # mounts
        started.timestamp() if started else None,  # started
        finished.timestamp() if finished else None,  # finished
    ]


def _container(cid: str, record: list[Any]) -> Container:
    name, image_id, word, created, labels, mounts, started, finished = record  # CONTAINER_RECORD
    state = ContainerState.parse(word)
    timed = state in TIMED_STATES
    return Container(
        id=cid,
        name=name,
        image_id=image_id,
        state=state,
        # Whole seconds, as the engine's listing gives them.
        created=datetime.fromtimestamp(int(created), UTC) if created else None,
        started=datetime.fromtimestamp(started, UTC) if timed and started is not None else None,
        finished=(datetime.fromtimestamp(finished, UTC)
                  if timed and finished is not None else None),
        mounts=tuple(Mount._make(m) for m in mounts),
        labels=labels,
    )


def _state_string(state: dict[str, Any]) -> str:
    """The engine's own derivation of a container's state word from its persisted flags."""
    if state.get("Running"):
        if state.get("Paused"):
            return "paused"
        if state.get("Restarting"):
            return "restarting"
        return "running"
    if state.get("RemovalInProgress"):
        return "removing"
    if state.get("Dead"):
        return "dead"
    started = str(state.get("StartedAt") or "")
    if not started or started.startswith("0001-"):
        return "created"
    return "exited"


# -- what removing a container frees ----------------------------------------------------------


def container_disk_bytes(data_root: str, image_store: str, container_ids: Collection[str]
                         ) -> dict[str, int]:
    """What removing each container frees on disk, read from the storage driver's own
    directories: `containers/<id>/` (config, logs, hostname, ...), and its read-write and init
    layers with their records (overlay2: `layerdb/mounts/<id>/`, `overlay2/<mount-id>/`,
    `overlay2/<mount-id>-init/` and their `l/` links; the containerd image store: the
    snapshots named `<id>` and `<id>-init`). Containers whose storage cannot be found are
    left out (unknown): another driver, a container mid-removal, or a data root that is not
    this engine's (a remote engine's path that happens to exist here: the container's own
    directory, named by its 256-bit id, is the proof that it is).

    Counted as apparent bytes, each inode once, not across a mount point: what `du -sbx`
    counts, and the unit of every other figure the plan adds up (an overlay2 layer's size is
    the bytes of its files and the bookkeeping estimate is `du -b`'s, a volume's is `du
    -b`'s), so that one plan never sums two units. What the filesystem gains in blocks is
    measured apart (apply's statvfs figure)."""
    from reclaim.ondisk.sizing import size_paths  # here: only plan and apply need it

    paths = container_storage(data_root, image_store, container_ids)
    flat = [(cid, path) for cid, own in paths.items() for path in own]
    sizes = size_paths([path for _, path in flat])
    found: dict[str, int] = dict.fromkeys(paths, 0)
    for (cid, _), size in zip(flat, sizes, strict=True):
        found[cid] += size.apparent
    return found


def container_storage(data_root: str, image_store: str, container_ids: Collection[str]
                      ) -> dict[str, list[str]]:
    """The paths under the data root that removing each container deletes (see
    `container_disk_bytes`); containers whose storage cannot be found are left out."""
    root = os.fspath(data_root)
    own: dict[str, list[str]] = {}
    for cid in container_ids:
        if is_hex64(cid) and os.path.isdir(f"{root}/containers/{cid}"):
            own[cid] = [f"{root}/containers/{cid}"]
    if image_store == "containerd":
        from reclaim.ondisk import snapshotter

        names = [n for cid in own for n in (cid, cid + "-init")]
        dirs = snapshotter.snapshot_dirs(root, names)
        if dirs is None:
            return {}
        for cid, paths in own.items():
            # The active read-write snapshot is the container's; without it the container
            # is mid-creation or mid-removal: unknown.
            if cid not in dirs:
                paths.clear()
                continue
            paths.append(dirs[cid])
            if cid + "-init" in dirs:
                paths.append(dirs[cid + "-init"])
    elif image_store == "overlay2":
        for cid, paths in own.items():
            layers = _overlay2_layers(root, cid)
            if layers is None:
                paths.clear()
            else:
                paths.extend(layers)
    else:
        return {}
    return {cid: paths for cid, paths in own.items() if paths}


def _overlay2_layers(root: str, cid: str) -> list[str] | None:
    """A container's layer records and directories on overlay2; None when its mount record
    cannot be read or names something that is not a layer id."""
    mounts = f"{root}/image/overlay2/layerdb/mounts/{cid}"
    try:
        with open(mounts + "/mount-id") as f:
            mount_id = f.read().strip()
    except OSError:
        return None
    if not is_hex64(mount_id):
        return None
    try:
        with open(mounts + "/init-id") as f:
            init_id: str | None = f.read().strip()
    except OSError:
        init_id = None  # a container made without an init layer
    if init_id is not None and init_id != mount_id + "-init":
        return None
    paths = [mounts]
    for layer in (mount_id, init_id):
        if layer is None:
            continue
        directory = f"{root}/overlay2/{layer}"
        paths.append(directory)
        try:
            with open(directory + "/link") as f:
                link = f.read().strip()
        except OSError:
            continue
        if _SHORT_LINK.fullmatch(link):
            paths.append(f"{root}/overlay2/l/{link}")
    return paths


class ContentStore:
    """containerd's content store (`blobs/sha256/<hex>`), as used by Docker's containerd image
    store under `<data-root>/containerd/daemon/io.containerd.content.v1.content`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.blobs = Path(root) / "blobs" / "sha256"
        if not os.access(self.blobs, os.R_OK | os.X_OK):
            raise MetadataUnreadable(f"no readable content store at {self.blobs}")

    def path(self, digest: str) -> Path | None:
        hexpart = digest_hex(digest)
        return None if hexpart is None else self.blobs / hexpart

    def size(self, digest: str) -> int | None:
        path = self.path(digest)
        try:
            return None if path is None else path.stat().st_size
        except OSError:
            return None

    def read_json(self, digest: str) -> dict[str, Any]:
        path = self.path(digest)
        if path is None:
            raise MetadataUnreadable(f"unexpected digest {digest!r}")
        try:
            value = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise MetadataUnreadable(f"blob {digest}: {exc}") from exc
        if not isinstance(value, dict):
            raise MetadataUnreadable(f"blob {digest} is not a JSON object")
        return value

    def image_blobs(self, image_id: str) -> tuple[list[str], str | None]:
        """Every blob an image (index or manifest digest) keeps locally: the index, the
        manifests of the platforms present, their configs and layer blobs. Also the config
        digest of the first complete manifest (to read diff ids from)."""
        found: list[str] = []
        config_digest: str | None = None
        pending = [image_id]
        while pending:
            digest = pending.pop()
            if self.size(digest) is None:
                continue  # a platform or layer that was never fetched: not on disk
            found.append(digest)
            doc = self.read_json(digest)
            if "manifests" in doc:  # an index: follow the platforms that are present
                pending.extend(str(m["digest"]) for m in doc["manifests"] if "digest" in m)
                continue
            config = doc.get("config", {}).get("digest")
            if isinstance(config, str) and self.size(config) is not None:
                found.append(config)
                config_digest = config_digest or config
            for layer in doc.get("layers", []):
                layer_digest = str(layer.get("digest", ""))
                if self.size(layer_digest) is not None:
                    found.append(layer_digest)
        return found, config_digest
