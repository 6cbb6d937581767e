"""A stateful in-memory engine with Docker's removal semantics, for unit tests and the
contract suite.

It is a model of an engine, not a recorder of calls: removing a tag really removes it, a layer
disappears when its last image goes, and the engine's refusals (409) happen where Docker's do.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import datetime

from reclaim.errors import EngineUnreachable, InUse, NotFound
from reclaim.model import (
    Blob,
    BuildCache,
    Container,
    ContainerState,
    EngineInfo,
    Event,
    Image,
    Inventory,
    Layer,
    Volume,
)
from reclaim.ondisk.digests import chain_ids
from reclaim.runtimes.base import Progress, no_progress

FAKE_ENGINE = EngineInfo(
    runtime="docker",
    endpoint="fake://",
    version="0.0-fake",
    api_version="1.41",
    data_root=None,
    storage_driver="overlay2",
    image_store="overlay2",
    engine_id="FAKE",
)


class FakeRuntime:
    def __init__(self, engine: EngineInfo = FAKE_ENGINE) -> None:
        self.engine = engine
        self.images: dict[str, Image] = {}
        self.layers: dict[str, Layer] = {}
        self.blobs: dict[str, Blob] = {}
        self.containers: dict[str, Container] = {}
        self.volumes: dict[str, Volume] = {}
        self.build_cache = BuildCache(0, 0, 0)
        self.closed = False
        # The engine's event log, oldest first (a real engine keeps only its last ~256).
        self.event_log: list[Event] = []
        # While down, every call that needs the engine fails as an unreachable one does.
        self.down = False
        self._tag_owner: dict[str, str] = {}
        self._volumes_made = 0
        # Open use watches: told of every container created and every name given.
        self._watches: list[FakeUseWatch] = []
        # Inodes each layer holds on disk, by chain id; a layer without one cannot be counted
        # (as on a store the adapter cannot read).
        self.inodes: dict[str, int] = {}

    # -- building state --------------------------------------------------------------------

    def add_image(
        self,
        image_id: str,
        *,
        tags: Iterable[str] = (),
        layers: Iterable[tuple[str, int]] = (),
        inodes: Iterable[int | None] | None = None,
        blobs: Iterable[tuple[str, int]] = (),
        created: datetime | None = None,
        tagged_at: datetime | None = None,
        labels: Mapping[str, str] | None = None,
        metadata_bytes: int = 0,
    ) -> Image:
        """`layers` are (diff id, size) base first; chain ids are derived as an engine does.
        `inodes`, one per layer (None: cannot be counted), are what `layer_inodes` reports
        for a layer new to the store."""
        layer_list = list(layers)
        diff_ids = [d for d, _ in layer_list]
        chain = chain_ids(diff_ids)
        counts = list(inodes) if inodes is not None else [None] * len(layer_list)
        if len(counts) != len(layer_list):
            raise ValueError("inodes: one count (or None) per layer")
        parent: str | None = None
        for chain_id, (diff_id, size), count in zip(chain, layer_list, counts, strict=True):
            if chain_id not in self.layers:
                self.layers[chain_id] = Layer(chain_id, diff_id, size, parent)
                if count is not None:
                    self.inodes[chain_id] = count
            parent = chain_id
        blob_list = list(blobs)
        for digest, size in blob_list:
            self.blobs.setdefault(digest, Blob(digest, size))
        tag_tuple = tuple(tags)
        for tag in tag_tuple:  # a tag names one image: moving it untags the other
            other = self.images.get(self._tag_owner.get(tag, ""))
            if other is not None and other.id != image_id:
                self.images[other.id] = other._replace(
                    tags=tuple(t for t in other.tags if t != tag)
                )
            self._tag_owner[tag] = image_id
            for watch in self._watches:
                watch.named(image_id, tag)
        image = Image(
            id=image_id,
            tags=tag_tuple,
            digests=(),
            created=created,
            chain=tuple(chain),
            blobs=tuple(d for d, _ in blob_list),
            labels=dict(labels or {}),
            engine_size=sum(s for _, s in layer_list) + sum(s for _, s in blob_list),
            metadata_bytes=metadata_bytes,
            tagged_at=tagged_at,
        )
        self.images[image_id] = image
        return image

    def add_container(self, container: Container) -> Container:
        if container.image_id not in self.images:
            raise NotFound(f"no such image {container.image_id}")
        self.containers[container.id] = container
        for watch in self._watches:
            watch.created(container.image_id, container.name)
        return container

    def add_volume(self, volume: Volume) -> Volume:
        # Each volume created is a new instance, even under a name used before.
        if not volume.instance:
            self._volumes_made += 1
            volume = volume._replace(instance=f"fake-volume-{self._volumes_made}")
        self.volumes[volume.name] = volume
        return volume

    def set_state(self, container_id: str, state: ContainerState, **times: datetime) -> None:
        self.containers[container_id] = self.containers[container_id]._replace(
            state=state, **times  # type: ignore[arg-type]
        )

    def emit(self, event: Event) -> Event:
        """Something happened on the engine: it is in the log for `events()` to replay."""
        self.event_log.append(event)
        return event

    # -- Runtime ---------------------------------------------------------------------------

    def info(self) -> EngineInfo:
        self._check_up()
        return self.engine

    def inventory(self, *, sizes: bool = False, progress: Progress = no_progress) -> Inventory:
        self._check_up()
        progress("listing", 1, 1)
        users: dict[str, list[str]] = {}
        for c in self.containers.values():
            for m in c.mounts:
                if m.type == "volume" and m.name:
                    users.setdefault(m.name, []).append(c.id)
        volumes = tuple(
            v._replace(used_by=tuple(users.get(v.name, ()))) for v in self.volumes.values()
        )
        # What removing a container frees is measured apart (`container_bytes`), as the
        # Docker adapter does.
        containers = tuple(
            c._replace(disk_bytes=None) if sizes else c._replace(rw_bytes=None, disk_bytes=None)
            for c in self.containers.values()
        )
        return Inventory(
            engine=self.engine,
            images=tuple(self.images.values()),
            layers=dict(self.layers),
            containers=containers,
            volumes=volumes,
            blobs=dict(self.blobs),
            build_cache=self.build_cache,
            layer_source="api",
        )

    def layer_inodes(self, chain_ids: Collection[str]) -> dict[str, int]:
        self._check_up()
        return {c: self.inodes[c] for c in chain_ids if c in self.layers and c in self.inodes}

    def container_bytes(self, container_ids: Collection[str]) -> dict[str, int]:
        """The `disk_bytes` the containers were added with; a container added without
        cannot be measured (as on a data root the adapter cannot read)."""
        self._check_up()
        found = {cid: self.containers[cid].disk_bytes for cid in container_ids
                 if cid in self.containers}
        return {cid: n for cid, n in found.items() if n is not None}

    def image_refs(self, image_id: str) -> tuple[str, ...] | None:
        image = self.images.get(image_id)
        return None if image is None else image.tags

    def image_users(self, image_id: str) -> tuple[str, ...]:
        return tuple(c.id for c in self.containers.values() if c.image_id == image_id)

    def prune_build_cache(self, keep_storage: int | None, older_than: float | None) -> int:
        freed = self.build_cache.reclaimable_bytes or 0
        self.build_cache = BuildCache(0, (self.build_cache.bytes or 0) - freed, 0)
        return freed

    def remove_image(self, ref: str) -> None:
        """Docker's rules, without force: a tag is removed even if the image is in use when
        other tags remain (the trap reclaim's policy must avoid); the last tag, or the id, is
        refused while any container uses the image; an id with several tags is refused."""
        image = self._resolve(ref)
        in_use = any(c.image_id == image.id for c in self.containers.values())
        if ref in image.tags:
            if len(image.tags) > 1:
                self.images[image.id] = image._replace(
                    tags=tuple(t for t in image.tags if t != ref)
                )
                del self._tag_owner[ref]
                return
            if in_use:
                raise InUse(f"conflict: unable to remove repository reference {ref!r} "
                            "(must force) - container is using its referenced image")
        else:
            if len(image.tags) > 1:
                raise InUse(f"conflict: unable to delete {ref} (must be forced) - image is "
                            "referenced in multiple repositories")
            if in_use:
                raise InUse(f"conflict: unable to delete {ref} (cannot be forced) - image is "
                            "being used by a container")
        del self.images[image.id]
        for tag in image.tags:
            del self._tag_owner[tag]
        self._collect()

    def remove_image_ref(self, ref: str) -> bool:
        image = self._resolve(ref)
        self.remove_image(ref)
        return image.id not in self.images

    def tag_image(self, image_id: str, ref: str) -> None:
        self._check_up()
        image = self.images.get(image_id)
        if image is None:
            raise NotFound(f"no such image: {image_id}")
        if ref in self._tag_owner:
            raise InUse(f"{ref} names another image")
        self.images[image_id] = image._replace(tags=(*image.tags, ref))
        self._tag_owner[ref] = image_id
        for watch in self._watches:
            watch.named(image_id, ref)

    def watch_uses(self, since: datetime) -> FakeUseWatch:
        """A watch the engine tells at once of what happens from now (`since` is now for an
        engine that runs on the caller's clock); `lose()` ends it as a broken stream would."""
        self._check_up()
        watch = FakeUseWatch(self)
        self._watches.append(watch)
        return watch

    def remove_container(self, container_id: str) -> None:
        container = self.containers.get(container_id)
        if container is None:
            raise NotFound(f"no such container: {container_id}")
        if not container.state.stopped:
            raise InUse(f"cannot remove container {container_id}: it is {container.state.value}")
        del self.containers[container_id]

    def volume_instance(self, name: str) -> str | None:
        self._check_up()
        volume = self.volumes.get(name)
        return None if volume is None else volume.instance

    def remove_volume(self, name: str) -> None:
        if name not in self.volumes:
            raise NotFound(f"no such volume: {name}")
        if any(m.type == "volume" and m.name == name
               for c in self.containers.values() for m in c.mounts):
            raise InUse(f"remove {name}: volume is in use")
        del self.volumes[name]

    def image_id(self, ref: str) -> str:
        self._check_up()
        return self._resolve(ref).id

    def events(self, since: datetime | None, until: datetime | None = None) -> Iterator[Event]:
        """The logged events from `since` (inclusive, as the engine's filter is) to `until`,
        then the end of the stream: an in-memory engine has no future to wait for. With no
        `since` only new events would come, so nothing does."""
        self._check_up()
        if since is None:
            return iter(())
        # A snapshot: events emitted while the caller iterates belong to its next stream.
        return iter([e for e in self.event_log
                     if e.time >= since and (until is None or e.time <= until)])

    def close(self) -> None:
        self.closed = True

    # -- internals -------------------------------------------------------------------------

    def _check_up(self) -> None:
        if self.down:
            raise EngineUnreachable(f"cannot reach the engine at {self.engine.endpoint}")

    def _resolve(self, ref: str) -> Image:
        if ref in self.images:
            return self.images[ref]
        if ref in self._tag_owner:
            return self.images[self._tag_owner[ref]]
        matches = [i for i in self.images.values()
                   if len(ref) >= 12 and i.id.split(":", 1)[-1].startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        raise NotFound(f"no such image: {ref}")

    def _collect(self) -> None:
        """Drop layers and blobs no image refers to any more, as the engine does."""
        live_layers = {c for i in self.images.values() for c in i.chain}
        live_blobs = {d for i in self.images.values() for d in i.blobs}
        self.layers = {k: v for k, v in self.layers.items() if k in live_layers}
        self.inodes = {k: v for k, v in self.inodes.items() if k in live_layers}
        self.blobs = {k: v for k, v in self.blobs.items() if k in live_blobs}


class FakeUseWatch:
    """The fake engine's use watch: its events arrive the moment they happen."""

    def __init__(self, engine: FakeRuntime) -> None:
        self._engine = engine
        self.used: dict[str, str] = {}  # image id -> a container created from it
        self.given: dict[str, str] = {}  # a name given to some image -> that image
        self.lost = False

    @property
    def live(self) -> bool:
        return not self.lost

    def created(self, image_id: str, name: str) -> None:
        self.used.setdefault(image_id, name)

    def named(self, image_id: str, ref: str) -> None:
        self.given[ref] = image_id

    def lose(self) -> None:
        self.lost = True

    def why_not(self, image_id: str, refs: tuple[str, ...]) -> str | None:
        if image_id in self.used:
            return f"container {self.used[image_id]} was created from it"
        for ref, owner in self.given.items():
            if owner == image_id:
                return f"it was tagged {ref} meanwhile"
        for ref in refs:
            if ref in self.given:
                return f"{ref} was just given to an image ({self.given[ref]})"
        return None

    def close(self) -> None:
        if self in self._engine._watches:
            self._engine._watches.remove(self)
