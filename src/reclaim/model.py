"""The runtime-neutral model: what every adapter turns its engine's answers into.

Everything here is a frozen value. Bytes are integers; times are aware UTC datetimes or None.

The value types are `typing.NamedTuple`s, not frozen data classes: `df` builds thousands of
them per run on a big host and pays for their definitions at start-up, and a named tuple is
cheaper to define and to build (bench/README.md, "Notes behind the code"). Being tuples, they
compare equal to any tuple of the same values; they are never mixed with other tuples.
Mappings default to the shared, read-only `EMPTY_MAP`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

# What a state file name keeps of an engine id ("ABCD:EFGH:..." or a UUID).
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")

# The default of every Mapping field: one empty mapping, shared and read-only.
EMPTY_MAP: Mapping[str, str] = MappingProxyType({})


class ContainerState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"

    @classmethod
    def parse(cls, value: str) -> ContainerState:
        # A dictionary lookup rather than cls(...): inventories parse thousands of these.
        # An engine state we do not know is treated as the most conservative one: a
        # container that may be running.
        found = cls._value2member_map_.get(value.lower())
        return found if isinstance(found, cls) else cls.RUNNING

    @property
    def stopped(self) -> bool:
        return self in (ContainerState.EXITED, ContainerState.DEAD, ContainerState.CREATED)


class Layer(NamedTuple):
    """One unpacked layer on disk, identified by its chain id.

    `size` is the bytes the layer occupies on disk (the engine's own figure for it).
    Two layers with the same diff id on different parents have different chain ids and are
    stored twice, so they are two Layers.
    """

    chain_id: str
    diff_id: str
    size: int
    parent: str | None = None
    # The engine's bookkeeping for the layer on disk (its metadata entry, the layer's own
    # directories and link), freed with it. Known where the data root is read; else 0.
    metadata_bytes: int = 0

    @property
    def disk_bytes(self) -> int:
        return self.size + self.metadata_bytes


class Blob(NamedTuple):
    """A content-store blob (containerd image store): a compressed or uncompressed layer
    archive, a config or a manifest, kept beside the unpacked layer."""

    digest: str
    size: int


class Image(NamedTuple):
    id: str
    tags: tuple[str, ...]
    digests: tuple[str, ...]
    created: datetime | None
    # Chain ids of the image's layers, base first.
    chain: tuple[str, ...]
    # Content-store blobs the image needs (empty on stores that keep no blobs, e.g. overlay2).
    blobs: tuple[str, ...] = ()
    labels: Mapping[str, str] = EMPTY_MAP
    # The engine's own Size figure: shared layers counted once per image. Shown, never summed.
    engine_size: int = 0
    # Bytes of per-image metadata the store keeps (image config etc.), freed with the image.
    metadata_bytes: int = 0
    # When the image got its current local name (tag time), where the engine records it.
    tagged_at: datetime | None = None

    @property
    def dangling(self) -> bool:
        return not self.tags


class Mount(NamedTuple):
    type: str  # "volume", "bind", "tmpfs", ...
    name: str | None  # volume name for type "volume"
    source: str
    destination: str


class Container(NamedTuple):
    id: str
    name: str
    image_id: str
    state: ContainerState
    created: datetime | None
    started: datetime | None = None
    finished: datetime | None = None
    rw_bytes: int | None = None
    mounts: tuple[Mount, ...] = ()
    labels: Mapping[str, str] = EMPTY_MAP
    # What removing the container frees on disk (its read-write and init layers, its
    # directory with logs and config), as `du -sbx` counts it. Not in an inventory: measured
    # for the containers a plan removes only (`Runtime.container_bytes`); None: unknown.
    disk_bytes: int | None = None


class Volume(NamedTuple):
    name: str
    driver: str
    labels: Mapping[str, str]
    anonymous: bool
    mountpoint: str
    bytes: int | None
    used_by: tuple[str, ...]  # container ids
    options: Mapping[str, str] = EMPTY_MAP
    created: datetime | None = None
    # Which volume of that name this is: a volume removed and created again under the same
    # name is another volume, with other data. The adapter's marker of this one (the engine's
    # creation time, and where the data root is readable the volume directory's inode and
    # change time, which tell apart two volumes created within the same second).
    instance: str = ""
    # What removing the volume frees on disk, as `du -sbx` counts it: `bytes` (its files)
    # and its directories, `volumes/<name>/` included. None where it was not read.
    disk_bytes: int | None = None

    @property
    def dangling(self) -> bool:
        return not self.used_by


class BuildCache(NamedTuple):
    # Shadows tuple.count on purpose: the adapters fill it in by this name (df's JSON "count").
    count: int | None  # type: ignore[assignment]
    bytes: int | None
    reclaimable_bytes: int | None


class EngineInfo(NamedTuple):
    runtime: str  # "docker", "podman", "containerd"
    endpoint: str
    version: str
    api_version: str
    data_root: str | None
    storage_driver: str
    # "overlay2", "containerd" (image store), ... how layers are laid out.
    image_store: str
    engine_id: str = ""

    @property
    def identity(self) -> str:
        """What tells this engine from every other one on the host: its id and its data root.
        The id alone does not: Docker 20.10 derives it from /etc/docker/key.json, which every
        dockerd on a host shares whatever its data root."""
        return f"{self.engine_id or self.endpoint}@{self.data_root or ''}"

    @property
    def state_name(self) -> str:
        """The engine's part of a state file's name: `<id>-<crc32 of the data root>`."""
        from binascii import crc32  # a builtin module: free to import

        safe = _UNSAFE_IN_NAME.sub("_", self.engine_id or self.endpoint).strip("_") or "unknown"
        return f"{safe}-{crc32((self.data_root or '').encode()):08x}"

    def to_json(self) -> dict[str, str | None]:
        """The `engine` object of the JSON contract (df, plan)."""
        return {"runtime": self.runtime, "endpoint": self.endpoint, "version": self.version,
                "data_root": self.data_root, "storage_driver": self.storage_driver}


class Inventory(NamedTuple):
    engine: EngineInfo
    images: tuple[Image, ...]
    layers: Mapping[str, Layer]  # by chain id
    containers: tuple[Container, ...]
    volumes: tuple[Volume, ...]
    # By digest. Empty and read-only by default, as EMPTY_MAP (which holds str values).
    blobs: Mapping[str, Blob] = MappingProxyType({})
    build_cache: BuildCache = BuildCache(None, None, None)
    # How the layer figures were obtained ("disk", "api"), for the record.
    layer_source: str = "api"


class Event(NamedTuple):
    """One engine event that matters for usage."""

    time: datetime
    type: str  # "container" or "image"
    action: str  # "create", "start", "exec_start", "die", "destroy", "pull", "tag", "delete"...
    id: str  # the container id, or the image id or reference
    image: str | None = None  # a container event's image, as the engine names it ("from")
    name: str | None = None  # a container event's container name
