"""The Docker Engine adapter.

Inventory is taken in bulk: one call each for the engine's info, images, containers and
volumes (and one for the build cache on engines that can list it alone). Layer chains and sizes
come from the data root's metadata when it is readable and laid out as overlay2, which costs no
API call at all; otherwise, and always for the containerd image store, from image inspect and
history, a bounded number of calls in flight at once.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Collection, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.parse import quote

from reclaim.errors import NotFound, UsageError
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
    Mount,
    Volume,
)
from reclaim.ondisk.digests import chain_ids, is_hex64
from reclaim.runtimes.base import Progress, no_progress
from reclaim.runtimes.docker.disk import (
    TIMED_STATES,
    ContentStore,
    MetadataUnreadable,
    Overlay2Metadata,
    containers_on_disk,
    read_container_state,
)
from reclaim.runtimes.docker.events import (
    UseWatch,
    _event_from_message,
    _event_time_param,
    json_messages,
)
from reclaim.runtimes.docker.recordcache import RecordCache
from reclaim.runtimes.docker.volumes import _volume_bytes
from reclaim.timeutil import parse_time
from reclaim.transport import FORMS, EngineClient, Stream, not_docker, problem

DEFAULT_ENDPOINT = "unix:///var/run/docker.sock"
# How long one call waits for the engine, by kind of call. /info comes first on every run and
# says within seconds whether an engine is there at all; the listings and removals of a big
# host take longer; the build-cache prune deletes as it goes and can take minutes.
PROBE_TIMEOUT = 10.0
CALL_TIMEOUT = 120.0
PRUNE_TIMEOUT = 600.0
# The oldest API reclaim speaks (Docker 20.10). Pinning it saves the version probe that
# `version="auto"` costs on every run; newer engines serve it unchanged.
BASE_API = "1.41"
ANONYMOUS_VOLUME_LABEL = "com.docker.volume.anonymous"
# Classic-builder history entries that made no layer. A pattern, not a compiled one: only
# the API fallback needs it, and `re` compiles it there once (df's start-up need not).
_EMPTY_LAYER_HINT = (
    r"#\(nop\)|^(ENV|CMD|LABEL|EXPOSE|ENTRYPOINT|USER|ARG|HEALTHCHECK|STOPSIGNAL|SHELL|"
    r"VOLUME|MAINTAINER|ONBUILD|WORKDIR)\b"
)

T = TypeVar("T")


def resolve_endpoint(engine: str | None) -> str:
    """The engine's URL: `engine` (the --engine flag), else DOCKER_HOST, else the default
    socket. `UsageError`, naming where the URL came from, when it is not one reclaim can use."""
    if engine is not None:
        source, url = "--engine", engine
    elif os.environ.get("DOCKER_HOST"):
        source, url = "DOCKER_HOST", os.environ["DOCKER_HOST"]
    else:
        return DEFAULT_ENDPOINT
    wrong = problem(url)
    if wrong is not None:
        raise UsageError(f"{source} {url!r}: not an engine URL ({wrong}); give {FORMS}")
    return url


class LayerInfo(NamedTuple):
    chain: tuple[str, ...]
    layers: tuple[Layer, ...]
    blobs: tuple[Blob, ...] = ()
    metadata_bytes: int = 0
    tagged_at: str | None = None
    # Read from the image's config on disk (the overlay2 path only).
    created: str | None = None
    labels: dict[str, str] | None = None


class DockerRuntime:
    def __init__(
        self,
        endpoint: str | None = None,
        *,
        timeout: float | None = None,
        api_workers: int = 8,
        read_disk: bool = True,
        listings_from_disk: bool = False,
        record_cache_dir: str | None = None,
    ) -> None:
        self.endpoint = resolve_endpoint(endpoint)
        self.api_workers = api_workers
        self.read_disk = read_disk
        # `df` reads the image and container records the engine keeps on disk instead of
        # waiting for its listings, which on a big host are most of what `docker system df
        # -v` waits for. plan and apply keep asking the engine: what they delete is decided
        # on the engine's own word.
        self.listings_from_disk = listings_from_disk
        # Where those records are kept between runs (recordcache.py); None: read every time.
        self.record_cache_dir = record_cache_dir
        self._records: RecordCache | None = None
        # `timeout` (the --timeout flag) is every call's deadline; /info waits at most
        # PROBE_TIMEOUT of it.
        self.timeout = CALL_TIMEOUT if timeout is None else timeout
        self.prune_timeout = PRUNE_TIMEOUT if timeout is None else timeout
        self.probe_timeout = min(PROBE_TIMEOUT, self.timeout)
        self._engine = EngineClient(self.endpoint, BASE_API, self.timeout)
        self._info: EngineInfo | None = None
        self._container_count: int | None = None
        self._image_count: int | None = None
        self._server_api = BASE_API

    @property
    def api_calls(self) -> int:
        """Engine API calls made, for the benchmark's "how many calls" column."""
        return self._engine.calls

    def _get(
        self, path: str, what: str, params: dict[str, Any] | None = None,
        api_version: str | None = None, *, timeout: float | None = None, probe: bool = False,
    ) -> tuple[Any, dict[str, str]]:
        """One GET: the decoded JSON and the response headers (lower-case names). It waits
        `timeout` seconds at most, by default the call deadline."""
        return self._engine.get(path, what, params, api_version=api_version, timeout=timeout,
                                probe=probe)

    def _get_json(self, path: str, what: str, **params: Any) -> Any:
        return self._get(path, what, params)[0]

    # -- Runtime -------------------------------------------------------------------------

    def info(self) -> EngineInfo:
        if self._info is None:
            # The first call, and the probe: its answer's shape tells a Docker engine from
            # whatever else may listen there, at no extra call.
            raw, headers = self._get("/info", "engine info", timeout=self.probe_timeout,
                                     probe=True)
            # Every answer names the engine's own API version: no separate probe needed.
            self._server_api = headers.get("api-version") or BASE_API
            if not isinstance(raw, dict) or "ServerVersion" not in raw:
                raise not_docker(self.endpoint)
            self._container_count = raw.get("Containers")
            self._image_count = raw.get("Images")
            driver = str(raw.get("Driver", ""))
            status = {str(k): str(v) for k, v in raw.get("DriverStatus") or []}
            snapshotter = "snapshotter" in status.get("driver-type", "")
            self._info = EngineInfo(
                runtime="docker",
                endpoint=self.endpoint,
                version=str(raw["ServerVersion"]),
                api_version=self._server_api,
                data_root=raw.get("DockerRootDir") or None,
                storage_driver=driver,
                image_store="containerd" if snapshotter else driver,
                engine_id=str(raw.get("ID", "")),
            )
        return self._info

    def inventory(self, *, sizes: bool = False, progress: Progress = no_progress) -> Inventory:
        info = self.info()
        progress("listing", 0, None)
        # The engine builds its answers while this process reads the image store: the
        # container, volume and build-cache listings run beside the image work.
        if self.read_disk and info.data_root and (self.listings_from_disk
                                                  or self.record_cache_dir is not None):
            self._records = RecordCache(self._record_cache_path(info), info.data_root)
        volumes_call = _Background(lambda: self._get_json("/volumes", "list volumes"))
        system_df_call = _Background(lambda: self._system_df(info, sizes))
        # Reading records is this process's own work, bound by the interpreter: for `df` it
        # runs here (in threads it only adds switching); otherwise beside the engine's answers.
        here = self.listings_from_disk
        prefetch = _Background(lambda: self._prefetch_overlay2(info), here=here)
        containers_call = _Background(lambda: self._container_listing(info, sizes), here=here)
        try:
            prefetched = prefetch.result() if here else None
            raw_images = self._image_listing_from_disk(info, prefetched)
            from_store = None if raw_images is not None else self._containerd_store_from_disk(info)
            if from_store is not None:
                raw_images, layer_infos = from_store
                layer_source = "disk"
            else:
                if raw_images is None:
                    raw_images = self._get_json("/images/json", "list images", all=1)
                    prefetched = prefetch.result()
                layer_infos, layer_source = self._layer_infos(info, raw_images, progress,
                                                              prefetched)
            disk_containers, raw_containers = containers_call.result()
            raw_volumes = (volumes_call.result() or {}).get("Volumes") or []
            system_df = system_df_call.result()
        finally:
            # Nothing is left in flight when the inventory returns or fails.
            for call in (volumes_call, system_df_call, prefetch, containers_call):
                call.wait()
        if self._records is not None:
            self._records.save()

        layers: dict[str, Layer] = {}
        blobs: dict[str, Blob] = {}
        images: list[Image] = []
        for raw in raw_images:
            image_id = str(raw["Id"])
            li = layer_infos[image_id]
            for layer in li.layers:
                layers.setdefault(layer.chain_id, layer)
            for blob in li.blobs:
                blobs.setdefault(blob.digest, blob)
            images.append(
                Image(
                    id=image_id,
                    tags=tuple(t for t in raw.get("RepoTags") or () if t != "<none>:<none>"),
                    digests=tuple(
                        d for d in raw.get("RepoDigests") or () if d != "<none>@<none>"
                    ),
                    created=parse_time(raw.get("Created")),
                    chain=li.chain,
                    blobs=tuple(b.digest for b in li.blobs),
                    labels=dict(raw.get("Labels") or {}),
                    engine_size=int(raw.get("Size") or 0),
                    metadata_bytes=li.metadata_bytes,
                    tagged_at=parse_time(li.tagged_at),
                )
            )

        containers = (disk_containers if disk_containers is not None
                      else self._containers(info, raw_containers, progress))
        volumes = self._volumes(raw_volumes, containers, system_df)
        return Inventory(
            engine=info,
            images=tuple(images),
            layers=layers,
            containers=tuple(containers),
            volumes=tuple(volumes),
            blobs=blobs,
            build_cache=_build_cache(system_df),
            layer_source=layer_source,
        )

    def image_refs(self, image_id: str) -> tuple[str, ...] | None:
        """The image's tags now, or None when it is gone."""
        try:
            raw = self._get_json(f"/images/{image_id}/json", f"inspect image {image_id}")
        except NotFound:
            return None
        return tuple(t for t in raw.get("RepoTags") or () if t != "<none>:<none>")

    def image_users(self, image_id: str) -> tuple[str, ...]:
        """Ids of the containers (any state) created from this image."""
        raw = self._get_json(
            "/containers/json", f"containers of image {image_id}", all=1,
            filters=json.dumps({"ancestor": [image_id]}),
        )
        # `ancestor` also matches images built on top of this one; keep only direct users.
        return tuple(str(c["Id"]) for c in raw if c.get("ImageID") == image_id)

    def prune_build_cache(self, keep_storage: int | None, older_than: float | None) -> int:
        """The engine's own build-cache prune; returns the bytes it says it freed."""
        params: dict[str, Any] = {}
        if keep_storage is not None:
            params["keep-storage"] = keep_storage
        if older_than is not None:
            params["filters"] = json.dumps({"until": [f"{int(older_than)}s"]})
        result = self._engine.send("POST", "/build/prune", "prune build cache", params,
                                   timeout=self.prune_timeout)
        return int((result or {}).get("SpaceReclaimed") or 0)

    def remove_image(self, ref: str) -> None:
        self.remove_image_ref(ref)

    def remove_image_ref(self, ref: str) -> bool:
        """Remove one reference (a tag, or the id of an image with no tags left), never
        forced. True when the engine says it deleted the image itself, not only the tag: the
        answer lists `Deleted` records then, so no second look is needed."""
        records = self._engine.send("DELETE", f"/images/{quote(ref, safe='/:')}",
                                    f"remove image {ref}", {"force": "false", "noprune": "false"},
                                    call=f"/images/{ref}")
        return any(isinstance(r, dict) and r.get("Deleted") for r in records or ())

    def tag_image(self, image_id: str, ref: str) -> None:
        """Put a tag back on an image (apply restores the tags it removed from an image that a
        container started using meanwhile)."""
        repo, _, tag = ref.rpartition(":")
        if not repo or "/" in tag:
            repo, tag = ref, "latest"
        self._engine.send("POST", f"/images/{image_id}/tag",
                          f"tag image {image_id[:19]} as {ref}", {"repo": repo, "tag": tag})

    def remove_container(self, container_id: str) -> None:
        self._engine.send("DELETE", f"/containers/{container_id}",
                          f"remove container {container_id[:12]}", {"v": "false", "force": "false"})

    def remove_volume(self, name: str) -> None:
        self._engine.send("DELETE", f"/volumes/{quote(name, safe='')}", f"remove volume {name}",
                          {"force": "false"}, call=f"/volumes/{name}")

    def watch_uses(self, since: datetime) -> UseWatch | None:
        """A live watch, from the engine's event stream, of what makes an image's tags unsafe
        to remove: a container created from it, a tag added to it or moved onto or off one
        of its names. `since` (before the inventory a plan is checked against) closes the gap
        between that inventory and the stream: the engine subscribes a stream only after it
        has sent the answer's headers, and replays what it buffered since `since`.

        None unless the engine is on this host (a unix socket): `since` is this host's time,
        and the replay is exact only on the engine's own clock. apply then re-checks before
        every tag."""
        if self._engine.endpoint.kind != "unix":
            return None
        return UseWatch(self, since)

    def image_id(self, ref: str) -> str:
        """The id of the image a reference (tag, digest or id) names now; `NotFound` if none."""
        raw = self._get_json(f"/images/{ref}/json", f"inspect image {ref}")
        return str(raw["Id"])

    def events(self, since: datetime | None, until: datetime | None = None) -> Iterator[Event]:
        """Container and image events from `since` (the engine replays what it still holds,
        ~256 events) on, until `until` or for as long as the connection lasts.

        The iterator ends, silently, when the engine closes the stream or the connection
        breaks; the caller reconnects with `since` and reconciles either way. Failing to
        connect at all raises `EngineUnreachable` (or another mapped error).
        """
        params: dict[str, str] = {"filters": json.dumps({"type": ["container", "image"]})}
        if since is not None:
            params["since"] = _event_time_param(since)
        if until is not None:
            params["until"] = _event_time_param(until)
        stream = self._event_stream(params)
        try:
            for message in json_messages(stream):
                event = _event_from_message(message)
                if event is not None:
                    yield event
        except OSError:
            return  # a broken stream ends, as the engine closing it does
        finally:
            stream.close()

    def _event_stream(self, params: dict[str, str]) -> Stream:
        """The engine's event stream, on a connection of its own: the connect and the
        answer's headers have the call deadline, the stream then none."""
        return self._engine.stream("/events", "events", params)

    def close(self) -> None:
        self._engine.close()

    # -- layers --------------------------------------------------------------------------

    def _record_cache_path(self, info: EngineInfo) -> str | None:
        if self.record_cache_dir is None:
            return None
        return os.path.join(self.record_cache_dir, f"docker-{info.state_name}.records")

    def _prefetch_overlay2(self, info: EngineInfo) -> dict[str, LayerInfo] | None:
        """Every image the store holds on disk, read while the engine is still answering the
        image listing. Images caught mid-write are left to the read after the listing."""
        if not (self.read_disk and info.image_store == "overlay2" and info.data_root):
            return None
        try:
            meta = Overlay2Metadata(info.data_root, cache=self._records)
            ids = ["sha256:" + name for name in os.listdir(meta.configs_dir)]
            return self._layers_from_overlay2(meta, ids, no_progress, skip_unreadable=True)
        except (MetadataUnreadable, OSError):
            return None

    def _layer_infos(
        self,
        info: EngineInfo,
        raw_images: list[dict[str, Any]],
        progress: Progress,
        prefetched: dict[str, LayerInfo] | None = None,
    ) -> tuple[dict[str, LayerInfo], str]:
        ids = [str(raw["Id"]) for raw in raw_images]
        if self.read_disk and info.image_store == "overlay2" and info.data_root:
            try:
                found = {i: prefetched[i] for i in ids if prefetched and i in prefetched}
                rest = [i for i in ids if i not in found]
                if rest:
                    meta = Overlay2Metadata(info.data_root)
                    found.update(self._layers_from_overlay2(meta, rest, progress))
                return found, "disk"
            except MetadataUnreadable:
                pass  # e.g. a remote engine, or not root: the API knows the same facts
        content = None
        if self.read_disk and info.image_store == "containerd" and info.data_root:
            try:
                content = ContentStore(
                    Path(info.data_root)
                    / "containerd"
                    / "daemon"
                    / "io.containerd.content.v1.content"
                )
            except MetadataUnreadable:
                content = None
        return self._layers_from_api(ids, content, progress), "api"

    def _layers_from_overlay2(
        self, meta: Overlay2Metadata, ids: list[str], progress: Progress,
        *, skip_unreadable: bool = False,
    ) -> dict[str, LayerInfo]:
        known: dict[str, Layer] = {}
        result: dict[str, LayerInfo] = {}
        for n, image_id in enumerate(ids):
            try:
                config = meta.image_config(image_id)
                chain = config.chain or chain_ids(config.diff_ids)
                own: list[Layer] = []
                parent: str | None = None
                for depth, (chain_id, diff_id) in enumerate(
                    zip(chain, config.diff_ids, strict=True)
                ):
                    layer = known.get(chain_id)
                    if layer is None:
                        layer = known[chain_id] = meta.layer(chain_id, diff_id, parent, depth)
                    own.append(layer)
                    parent = chain_id
            except MetadataUnreadable:
                if skip_unreadable:
                    continue
                raise
            result[image_id] = LayerInfo(
                chain=tuple(chain),
                layers=tuple(own),
                metadata_bytes=config.config_bytes,
                tagged_at=meta.last_tag_time(image_id),
                created=config.created,
                labels=config.labels,
            )
            if n % 256 == 0:
                progress("reading layers", n, len(ids))
        return result

    def _layers_from_api(
        self, ids: list[str], content: ContentStore | None, progress: Progress
    ) -> dict[str, LayerInfo]:
        done = 0

        def one(image_id: str) -> tuple[str, LayerInfo]:
            nonlocal done
            inspect = self._get_json(f"/images/{image_id}/json", f"inspect image {image_id}")
            history = self._get_json(f"/images/{image_id}/history",
                                     f"history of image {image_id}")
            diff_ids = list((inspect.get("RootFS") or {}).get("Layers") or [])
            sizes = _layer_sizes_from_history(history, len(diff_ids))
            chain = chain_ids(diff_ids)
            layers = tuple(
                Layer(chain_id=c, diff_id=d, size=s, parent=chain[i - 1] if i else None)
                for i, (c, d, s) in enumerate(zip(chain, diff_ids, sizes, strict=True))
            )
            blobs: tuple[Blob, ...] = ()
            if content is not None:
                digests, _ = content.image_blobs(image_id)
                blobs = tuple(Blob(d, content.size(d) or 0) for d in dict.fromkeys(digests))
            tagged = (inspect.get("Metadata") or {}).get("LastTagTime")
            done += 1
            progress("inspecting images", done, len(ids))
            return image_id, LayerInfo(chain=tuple(chain), layers=layers, blobs=blobs,
                                       tagged_at=tagged)

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.api_workers) as pool:
            return dict(pool.map(one, ids))

    def container_bytes(self, container_ids: Collection[str]) -> dict[str, int]:
        """What removing each container frees on disk, read from the storage driver's own
        directories under the data root (disk.py), without the engine's slow sized
        listing; containers it cannot read (a remote engine, another driver) are left out:
        unknown."""
        from reclaim.runtimes.docker.disk import container_disk_bytes

        info = self.info()
        if not (self.read_disk and info.data_root and container_ids):
            return {}
        return container_disk_bytes(info.data_root, info.image_store, container_ids)

    def layer_inodes(self, chain_ids: Collection[str]) -> dict[str, int]:
        """Inodes each layer holds, from the engine's own records on disk (layerinodes.py);
        a remote engine, an unreadable data root or another store: unknown (empty)."""
        # Imported here: only the planner under an inode watermark needs it, not df's start-up.
        from reclaim.runtimes.docker.layerinodes import (
            containerd_layer_inodes,
            overlay2_layer_inodes,
        )

        info = self.info()
        if not (self.read_disk and info.data_root):
            return {}
        if info.image_store == "overlay2":
            return overlay2_layer_inodes(info.data_root, chain_ids)
        if info.image_store == "containerd":
            return containerd_layer_inodes(info.data_root, chain_ids)
        return {}

    # -- containers and volumes ----------------------------------------------------------

    def _image_listing_from_disk(
        self, info: EngineInfo, prefetched: dict[str, LayerInfo] | None
    ) -> list[dict[str, Any]] | None:
        """`GET /images/json?all=1` as the engine would answer it, from the image store on
        disk: every image config, its references from repositories.json, its size the sum of
        its layers'. None (ask the engine) unless every image the engine counts was read."""
        if not prefetched or len(prefetched) != self._image_count or not info.data_root:
            return None
        try:
            refs = Overlay2Metadata(info.data_root).references()
        except MetadataUnreadable:
            return None
        listing = []
        for image_id, li in prefetched.items():
            own = sorted(refs.get(image_id, ()))
            created = parse_time(li.created)
            listing.append({
                "Id": image_id,
                "RepoTags": [r for r in own if "@" not in r],
                "RepoDigests": [r for r in own if "@" in r],
                "Created": int(created.timestamp()) if created else None,
                "Labels": li.labels or {},
                "Size": sum(layer.size for layer in li.layers),
            })
        return listing

    def _containerd_store_from_disk(
        self, info: EngineInfo
    ) -> tuple[list[dict[str, Any]], dict[str, LayerInfo]] | None:
        """The image listing and every image's layers on the containerd image store, from
        containerd's own records on disk (containerd_store.py), where the engine needs a slow
        listing and two calls per image. None (ask the engine) unless the engine counts as
        many image records as were read."""
        if not (self.listings_from_disk and self.read_disk and info.data_root
                and info.image_store == "containerd"):
            return None
        from reclaim.runtimes.docker.containerd_store import read_store

        store = read_store(info.data_root)
        if store is None or store.records != self._image_count:
            return None
        listing: list[dict[str, Any]] = []
        infos: dict[str, LayerInfo] = {}
        for image in store.images:
            created = parse_time(image.created)
            blobs = tuple(Blob(digest, size) for digest, size in dict(image.blobs).items())
            layers = tuple(
                Layer(chain_id=c, diff_id=d, size=size, parent=image.chain[i - 1] if i else None)
                for i, (c, d, size) in enumerate(
                    zip(image.chain, image.diff_ids, image.layer_sizes, strict=True))
            )
            listing.append({
                "Id": image.id,
                "RepoTags": image.tags,
                "RepoDigests": image.digests,
                "Created": int(created.timestamp()) if created else None,
                "Labels": image.labels or {},
                # The engine's figure on this store: the unpacked layers and the blobs.
                "Size": sum(image.layer_sizes) + sum(b.size for b in blobs),
            })
            infos[image.id] = LayerInfo(
                chain=tuple(image.chain), layers=layers, blobs=blobs,
                tagged_at=image.tagged_at.isoformat() if image.tagged_at else None,
            )
        return listing, infos

    def _container_listing(
        self, info: EngineInfo, sizes: bool
    ) -> tuple[list[Container] | None, list[dict[str, Any]]]:
        """The containers read from their records on disk (`df` only), else (None and) the
        engine's listing."""
        if self.listings_from_disk and self.read_disk and info.data_root and not sizes:
            # (Sizes of the writable layers are the engine's to measure.)
            on_disk = containers_on_disk(info.data_root, self._records)
            # The same count as the engine's own says this is the engine's data root (not a
            # local directory that happens to have the remote engine's path) and that no
            # container came or went meanwhile; anything else: ask the engine.
            if on_disk is not None and len(on_disk) == self._container_count:
                return on_disk, []
        return None, list(self._get_json("/containers/json", "list containers", all=1,
                                         size=int(sizes)))

    def _containers(
        self, info: EngineInfo, raw_containers: list[dict[str, Any]], progress: Progress
    ) -> list[Container]:
        """Start and finish times are not in the listing. They are read from each container's
        `config.v2.json` when the data root is readable, else inspected (bounded concurrency)."""
        data_root = Path(info.data_root) if info.data_root else None
        # Only stopped containers' times are needed (TIMED_STATES).
        parsed = [ContainerState.parse(str(raw.get("State") or "")) for raw in raw_containers]
        wanted = [str(raw["Id"]) for raw, state in zip(raw_containers, parsed, strict=True)
                  if state in TIMED_STATES]
        states: dict[str, dict[str, Any] | None] = {}
        if self.read_disk and data_root is not None:
            for cid in wanted:
                states[cid] = read_container_state(data_root, cid)
        missing = [cid for cid in wanted if states.get(cid) is None]
        if missing:
            def inspect_state(cid: str) -> tuple[str, dict[str, Any] | None]:
                try:
                    got = self._get_json(f"/containers/{cid}/json",
                                         f"inspect container {cid[:12]}")
                except NotFound:
                    return cid, None  # removed since the listing
                return cid, got.get("State")

            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=self.api_workers) as pool:
                states.update(pool.map(inspect_state, missing))
            progress("inspecting containers", len(missing), len(missing))

        containers: list[Container] = []
        for raw, container_state in zip(raw_containers, parsed, strict=True):
            cid = str(raw["Id"])
            state = states.get(cid) or {}
            names = raw.get("Names") or []
            containers.append(
                Container(
                    id=cid,
                    name=str(names[0]).lstrip("/") if names else cid[:12],
                    image_id=str(raw.get("ImageID") or ""),
                    state=container_state,
                    created=parse_time(raw.get("Created")),
                    started=parse_time(state.get("StartedAt")) if state else None,
                    finished=parse_time(state.get("FinishedAt")) if state else None,
                    rw_bytes=int(raw["SizeRw"]) if raw.get("SizeRw") is not None else None,
                    mounts=tuple(
                        Mount(
                            type=str(m.get("Type") or ""),
                            name=m.get("Name"),
                            source=str(m.get("Source") or ""),
                            destination=str(m.get("Destination") or ""),
                        )
                        for m in raw.get("Mounts") or []
                    ),
                    labels=dict(raw.get("Labels") or {}),
                )
            )
        return containers

    def _volumes(
        self,
        raw_volumes: list[dict[str, Any]],
        containers: list[Container],
        system_df: dict[str, Any] | None,
    ) -> list[Volume]:
        users: dict[str, list[str]] = {}
        for container in containers:
            for mount in container.mounts:
                if mount.type == "volume" and mount.name:
                    users.setdefault(mount.name, []).append(container.id)
        engine_sizes: dict[str, int] = {}
        for raw in (system_df or {}).get("Volumes") or []:
            size = (raw.get("UsageData") or {}).get("Size", -1)
            if isinstance(size, int) and size >= 0:
                engine_sizes[str(raw["Name"])] = size
        volumes = []
        for raw in raw_volumes:
            name = str(raw["Name"])
            labels = dict(raw.get("Labels") or {})
            options = dict(raw.get("Options") or {})
            driver = str(raw.get("Driver") or "local")
            mountpoint = str(raw.get("Mountpoint") or "")
            size = engine_sizes.get(name)
            disk: int | None = None
            if self.read_disk and driver == "local" and not options:
                content, disk = _volume_bytes(mountpoint)
                if size is None:
                    size = content
            volumes.append(
                Volume(
                    name=name,
                    driver=driver,
                    labels=labels,
                    anonymous=ANONYMOUS_VOLUME_LABEL in labels or is_hex64(name),
                    mountpoint=mountpoint,
                    bytes=size,
                    used_by=tuple(users.get(name, ())),
                    options=options,
                    created=parse_time(raw.get("CreatedAt")),
                    instance=self._volume_instance(raw),
                    disk_bytes=disk,
                )
            )
        return volumes

    def _volume_instance(self, raw: dict[str, Any]) -> str:
        """`Volume.instance`: the engine's CreatedAt (to the second), and for a local volume
        whose directory this process can read, that directory's inode and change time (to
        the nanosecond; the directory holds only `_data`, so nothing changes it after its
        creation but a chmod or chown, and then the volume is merely taken for a new one)."""
        marker = str(raw.get("CreatedAt") or "")
        mountpoint = str(raw.get("Mountpoint") or "")
        if self.read_disk and mountpoint and str(raw.get("Driver") or "local") == "local" \
                and not raw.get("Options"):
            try:
                st = os.stat(os.path.dirname(mountpoint))
            except OSError:
                return marker
            marker += f"/{st.st_ino}.{st.st_ctime_ns}"
        return marker

    def volume_instance(self, name: str) -> str | None:
        try:
            raw = self._get_json(f"/volumes/{quote(name, safe='')}", f"inspect volume {name}")
        except NotFound:
            return None
        return self._volume_instance(raw) if isinstance(raw, dict) else None

    def _system_df(self, info: EngineInfo, sizes: bool) -> dict[str, Any] | None:
        """The build cache. Engines from 23.0 (API 1.42) list it alone, cheaply; older ones only
        inside the whole `/system/df`, which sizes every container and volume too, so that is
        asked for only with `--sizes`."""
        if sizes:
            return dict(self._get_json("/system/df", "disk usage"))
        if _api_at_least(info.api_version, "1.42"):
            # Asked at the engine's own API version: Docker 26 answers the same request made
            # at 1.42 with a crash (a nil dereference in its handler).
            return dict(self._get("/system/df", "build cache", {"type": "build-cache"},
                                  api_version=info.api_version)[0])
        return None


class _Background(Generic[T]):
    """One call, run on a thread of its own (or at once with `here`); `result()` waits for it
    and raises what it raised. What `concurrent.futures` would do for the inventory's few side
    calls, without the imports (logging, traceback, ...) it adds to `df`'s start-up. The API
    fallbacks that fan out over many calls still use its thread pool."""

    def __init__(self, fn: Callable[[], T], *, here: bool = False) -> None:
        self._fn = fn
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if here:
            self._run()
        else:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # handed to whoever asks for the result
            self._error = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def result(self) -> T:
        self.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set when no error was raised


def _build_cache(system_df: dict[str, Any] | None) -> BuildCache:
    if system_df is None or system_df.get("BuildCache") is None:
        return BuildCache(None, None, None)
    records = system_df["BuildCache"] or []
    # A shared record is also counted inside the records that share it, so, as `docker system
    # df` does, only unshared records are added up.
    own = [r for r in records if not r.get("Shared")]
    total = sum(int(r.get("Size") or 0) for r in own)
    reclaimable = sum(int(r.get("Size") or 0) for r in own if not r.get("InUse"))
    return BuildCache(count=len(records), bytes=total, reclaimable_bytes=reclaimable)


def _layer_sizes_from_history(history: list[dict[str, Any]], n_layers: int) -> list[int]:
    """Per-layer sizes, base first, from image history (newest first, with entries for
    instructions that made no layer). Entries with bytes are layers; among empty ones, those
    that look like metadata-only instructions are dropped first."""
    entries = list(reversed(history or []))
    surplus = len(entries) - n_layers
    if surplus > 0:
        droppable = [
            i
            for i, e in enumerate(entries)
            if not e.get("Size") and re.search(_EMPTY_LAYER_HINT, str(e.get("CreatedBy") or ""))
        ]
        other_empty = [
            i for i, e in enumerate(entries) if not e.get("Size") and i not in set(droppable)
        ]
        drop = set((droppable + other_empty)[:surplus])
        entries = [e for i, e in enumerate(entries) if i not in drop]
    sizes = [int(e.get("Size") or 0) for e in entries[:n_layers]]
    return sizes + [0] * (n_layers - len(sizes))


def _api_at_least(version: str, minimum: str) -> bool:
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", v)[:2])

    return parts(version) >= parts(minimum)
