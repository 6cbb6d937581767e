"""Put a fixture into a fresh engine and record what the engine called everything.

The ground truth is decided in memory by `build_fixture`; seeding adds only what the engine
chooses: image ids (the config digest on overlay2, the manifest digest on the containerd image
store), container ids, and the labels the engine version gives anonymous volumes. The result
round-trips through JSON, so a demo or a benchmark can keep it beside its sandbox.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import docker
from docker.utils import version_gte

from reclaim.model import ContainerState
from sandbox.archive import chain_ids
from sandbox.content import (
    ANONYMOUS_VOLUME_LABEL,
    EPOCH,
    ContainerTruth,
    Fixture,
    FixtureSpec,
    GroundTruth,
    Store,
    VolumeTruth,
)

Progress = Callable[[str], None]

SCHEMA = "reclaim.sandbox.truth/v1"
# The API version from which the engine labels anonymous volumes (Docker 23.0).
ANONYMOUS_LABEL_API = "1.42"


class SeedError(RuntimeError):
    """The engine did not end up holding what the fixture describes."""


@dataclass(frozen=True)
class EngineFacts:
    version: str
    api_version: str
    storage_driver: str
    # "overlay2" or "containerd" (the containerd image store), else the driver's name.
    image_store: str
    data_root: str


@dataclass(frozen=True)
class SeededTruth:
    """The ground truth of a seeded engine, with the engine's own ids for everything."""

    spec: FixtureSpec
    truth: GroundTruth
    engine: EngineFacts
    image_ids: Mapping[str, str]  # image key -> engine image id
    container_ids: Mapping[str, str]  # container name -> engine container id
    timings: Mapping[str, float] = field(default_factory=dict)  # seconds per phase

    @property
    def store(self) -> Store:
        """The accounting that fits the engine: anything that is not the containerd image
        store keeps one unpacked copy per layer, as overlay2 does."""
        return "containerd" if self.engine.image_store == "containerd" else "overlay2"

    def image_key(self, image_id: str) -> str:
        for key, iid in self.image_ids.items():
            if iid == image_id:
                return key
        raise KeyError(image_id)

    def container_name(self, container_id: str) -> str:
        for name, cid in self.container_ids.items():
            if cid == container_id:
                return name
        raise KeyError(container_id)

    def container_layers(self, name_or_id: str) -> tuple[str, ...]:
        """The chain ids a container keeps alive (its image's whole chain)."""
        name = name_or_id if name_or_id in self.container_ids else self.container_name(name_or_id)
        return self.truth.container_layers(name)

    def exclusive_bytes(self, image_key: str, store: Store | None = None) -> int:
        return self.truth.exclusive_bytes(image_key, store or self.store)

    def freed_bytes(self, image_keys: Iterable[str], store: Store | None = None) -> int:
        return self.truth.freed_bytes(image_keys, store or self.store)

    def to_json(self) -> str:
        doc = {
            "schema": SCHEMA,
            "spec": self.spec.to_dict(),
            "engine": dataclasses.asdict(self.engine),
            "image_ids": dict(self.image_ids),
            "container_ids": dict(self.container_ids),
            "timings": dict(self.timings),
            "truth": self.truth.to_dict(),
            # Derived, for readers that are not this module: what each engine object pins.
            "engine_containers": [
                {
                    "id": self.container_ids[c.name],
                    "name": c.name,
                    "image_id": self.image_ids[c.image],
                    "state": c.state.value,
                    "layers": list(self.truth.container_layers(c.name)),
                }
                for c in self.truth.containers
                if c.name in self.container_ids
            ],
        }
        return json.dumps(doc, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SeededTruth:
        doc = json.loads(text)
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} document (schema {doc.get('schema')!r})")
        return cls(
            spec=FixtureSpec.from_dict(doc["spec"]),
            truth=GroundTruth.from_dict(doc["truth"]),
            engine=EngineFacts(**doc["engine"]),
            image_ids=dict(doc["image_ids"]),
            container_ids=dict(doc["container_ids"]),
            timings=dict(doc["timings"]),
        )

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> SeededTruth:
        return cls.from_json(path.read_text())


def engine_facts(client: docker.APIClient) -> EngineFacts:
    info = client.info()
    version = client.version()
    driver = str(info.get("Driver", ""))
    status = {str(k): str(v) for k, v in info.get("DriverStatus") or []}
    snapshotter = status.get("driver-type") == "io.containerd.snapshotter.v1"
    store = "containerd" if snapshotter else driver
    return EngineFacts(
        version=str(version.get("Version", "")),
        api_version=str(version.get("ApiVersion", "")),
        storage_driver=driver,
        image_store=store,
        data_root=str(info.get("DockerRootDir", "")),
    )


def seed(
    client: docker.APIClient,
    fixture: Fixture,
    workdir: Path,
    *,
    progress: Progress | None = None,
    images_per_archive: int = 250,
    workers: int = 8,
    load_workers: int = 2,
    keep_archives: bool = False,
) -> SeededTruth:
    """Loads the fixture's images, creates its volumes and containers and brings the
    containers to their states. Meant for a fresh engine: names must not exist yet."""
    say = progress or (lambda _msg: None)
    timings: dict[str, float] = {}
    facts = engine_facts(client)
    say(f"engine {facts.version} (API {facts.api_version}), image store {facts.image_store}")

    with _timed(timings, "archives"):
        archives = fixture.write_archives(workdir, images_per_archive=images_per_archive)
    with _timed(timings, "load"), ThreadPoolExecutor(max_workers=max(1, load_workers)) as lp:
        done = itertools.count(1)

        def load(path: Path) -> None:
            _load(client, path)
            if not keep_archives:
                path.unlink()
            say(f"loaded archive {next(done)}/{len(archives)}")

        list(lp.map(load, archives))
    with _timed(timings, "resolve"):
        image_ids = _resolve_images(client, fixture.truth)
    say(f"{len(image_ids)} images in the engine")

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        with _timed(timings, "volumes"):
            volumes = list(pool.map(lambda v: _create_volume(client, v, facts), fixture.volumes))
        say(f"{len(volumes)} volumes")
        # Tagged images are used by name, as `docker run` would; a dangling one only by id.
        refs = {i.key: image_ids[i.key] if i.dangling else i.key for i in fixture.images}
        with _timed(timings, "containers"):
            created = list(
                pool.map(lambda c: _create_container(client, c, refs[c.image]), fixture.containers)
            )
        container_ids = dict(zip((c.name for c in fixture.containers), created, strict=True))
        say(f"{len(container_ids)} containers created")
        with _timed(timings, "volume-data"):
            _fill_volumes(client, volumes, fixture, container_ids, image_ids)
        with _timed(timings, "start"):
            to_start = [c for c in fixture.containers if c.state is not ContainerState.CREATED]
            list(pool.map(lambda c: _bring_to_state(client, c, container_ids[c.name]), to_start))
        say(f"{len(to_start)} containers started")

    truth = dataclasses.replace(fixture.truth, volumes=tuple(volumes))
    return SeededTruth(fixture.spec, truth, facts, image_ids, container_ids, timings)


@contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        timings[phase] = round(time.monotonic() - start, 3)


def _load(client: docker.APIClient, path: Path) -> None:
    # Streamed from the file, never read whole. Progress messages (quiet=False) keep the
    # response alive while the engine registers layers, so a long load does not hit the
    # client's read timeout.
    with path.open("rb") as f:
        for msg in client.load_image(f, quiet=False):
            if isinstance(msg, dict) and (msg.get("error") or msg.get("errorDetail")):
                detail = msg.get("errorDetail") or {}
                raise SeedError(f"docker load {path.name}: {msg.get('error') or detail}")


def _resolve_images(client: docker.APIClient, truth: GroundTruth) -> dict[str, str]:
    """Engine image ids by image key: tagged images by their first tag, dangling ones by the
    chain of their layers (the only thing an untagged image is known by)."""
    by_tag: dict[str, str] = {}
    untagged: list[str] = []
    # One listing: it is the slow call on the containerd image store (sizes per image).
    for entry in client.images():
        tags = [t for t in entry.get("RepoTags") or [] if t != "<none>:<none>"]
        for tag in tags:
            by_tag[tag] = entry["Id"]
        if not tags:
            untagged.append(entry["Id"])
    by_chain = truth.by_top_chain()
    ids: dict[str, str] = {}
    for image_id in untagged:
        layers = client.inspect_image(image_id).get("RootFS", {}).get("Layers") or []
        if not layers:
            continue
        img = by_chain.get(chain_ids(layers)[-1])
        if img is not None and img.dangling:
            ids[img.key] = image_id
    missing: list[str] = []
    for img in truth.images:
        if img.dangling:
            if img.key not in ids:
                missing.append(img.key)
            continue
        found = {by_tag.get(tag) for tag in img.tags}
        if None in found or len(found) != 1:
            missing.append(img.key)
            continue
        ids[img.key] = by_tag[img.key]
    if missing:
        raise SeedError(f"images not found in the engine as the fixture has them: {missing}")
    return ids


def _create_volume(
    client: docker.APIClient, volume: VolumeTruth, facts: EngineFacts
) -> VolumeTruth:
    labels = dict(volume.labels)
    # Engines from 23.0 mark the anonymous volumes they create themselves; ours are created
    # by name, so they get the mark by hand where the engine would have set it.
    if volume.anonymous and version_gte(facts.api_version, ANONYMOUS_LABEL_API):
        labels[ANONYMOUS_VOLUME_LABEL] = ""
    client.create_volume(name=volume.name, driver="local", labels=labels)
    return dataclasses.replace(volume, labels=labels)


def _create_container(client: docker.APIClient, c: ContainerTruth, image_ref: str) -> str:
    host_config = client.create_host_config(
        network_mode="none",
        binds=[f"{name}:{dest}:rw" for name, dest in c.mounts],
    )
    res = client.create_container(
        image=image_ref,
        command=list(c.command),
        name=c.name,
        labels=dict(c.labels),
        host_config=host_config,
        network_disabled=True,
    )
    return str(res["Id"])


def _volume_tar(volume: VolumeTruth) -> bytes:
    buf = io.BytesIO()
    mtime = int(EPOCH.timestamp())
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        dirs = sorted({str(Path(f.path).parent) for f in volume.files} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = mtime
            tar.addfile(info)
        for f in volume.files:
            data = f.content()
            info = tarfile.TarInfo(f.path)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = mtime
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _fill_volumes(
    client: docker.APIClient,
    volumes: Iterable[VolumeTruth],
    fixture: Fixture,
    container_ids: Mapping[str, str],
    image_ids: Mapping[str, str],
) -> None:
    """Writes each volume's files through the engine (a copy into a container that mounts
    it), so it works wherever the API does, not only where the data root is local. Dangling
    volumes get theirs through a helper container that is removed again."""
    mounts_of = {c.name: dict(c.mounts) for c in fixture.containers}
    orphans: list[VolumeTruth] = []
    for v in volumes:
        if not v.files:
            continue
        if not v.used_by:
            orphans.append(v)
            continue
        user = v.used_by[0]
        client.put_archive(container_ids[user], mounts_of[user][v.name], _volume_tar(v))
    if not orphans:
        return
    helper_image = next(iter(image_ids.values()))
    host_config = client.create_host_config(
        network_mode="none", binds=[f"{v.name}:/fill/{n}:rw" for n, v in enumerate(orphans)]
    )
    helper = client.create_container(
        image=helper_image,
        command=["true"],
        name=f"{fixture.spec.name}-seed-helper",
        host_config=host_config,
        network_disabled=True,
    )["Id"]
    try:
        for n, v in enumerate(orphans):
            client.put_archive(helper, f"/fill/{n}", _volume_tar(v))
    finally:
        # Without v=True: the volumes were created by name and must stay, now dangling.
        client.remove_container(helper)


def _bring_to_state(client: docker.APIClient, c: ContainerTruth, container_id: str) -> None:
    client.start(container_id)
    if c.state is ContainerState.EXITED:
        result = client.wait(container_id, timeout=120)
        if result.get("StatusCode") != 0:
            raise SeedError(f"{c.name} exited with {result}")
