"""A deterministic fixture (images, containers, volumes) and its ground truth.

`build_fixture(spec)` decides everything in memory, without an engine: the layers of every
image, which images and containers need each layer, and the bytes each store keeps for it.
Tests and benchmarks compare what reclaim reports against these figures.

Images come in families. A family shares a base (with a static busybox, so containers can
run), a runtime and a few deps variants; each image adds its own app and config layers, so no
two images have the same chain and the top chain id identifies an image. Two special cases are
built in on purpose: an image whose top layer deletes a lower file (a whiteout), and an app
layer whose tar is byte-identical on two different parents (one diff id, two chain ids).
"""

from __future__ import annotations

import hashlib
import itertools
import platform
import random
import shutil
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from reclaim.model import ContainerState
from sandbox.archive import (
    ArchiveImage,
    Entry,
    LayerDigest,
    LayerSpec,
    chain_ids,
    data_entry,
    digest_layer,
    file_entry,
    image_config,
    symlink_entry,
    whiteout_entry,
    write_archive,
)

Store = Literal["overlay2", "containerd"]
STORES: tuple[Store, ...] = ("overlay2", "containerd")

KiB = 1024
MiB = 1024 * KiB

FIXTURE_LABEL = "org.reclaim.fixture"
ANONYMOUS_VOLUME_LABEL = "com.docker.volume.anonymous"
# Every timestamp in a fixture counts from here, so archives are byte-identical run to run.
EPOCH = datetime(2023, 1, 2, tzinfo=UTC)
BUSYBOX_APPLETS = ("sh", "sleep", "true")
FAMILY_NAMES = ("web", "api", "worker", "db", "cache", "proxy", "batch", "auth", "search", "mail")

Range = tuple[int, int]


@dataclass(frozen=True)
class FixtureSpec:
    """What to generate. Byte ranges are inclusive and per layer; counts scale freely."""

    name: str = "fx"
    seed: int = 1
    families: int = 5
    images_per_family: int = 6  # tagged images per family
    tags_per_image: Range = (1, 3)
    dangling_images: int = 3
    deps_variants: int = 2
    base_bytes: Range = (7 * MiB, 9 * MiB)  # besides busybox
    runtime_bytes: Range = (4 * MiB, 7 * MiB)
    deps_bytes: Range = (1 * MiB, 3 * MiB)
    app_bytes: Range = (2 * MiB, 5 * MiB)
    config_bytes: Range = (2 * KiB, 64 * KiB)
    running: int = 4
    exited: int = 6
    created: int = 3
    named_volumes: int = 3
    anonymous_volumes: int = 3
    dangling_named_volumes: int = 3
    dangling_anonymous_volumes: int = 2
    volume_file_bytes: Range = (1 * KiB, 64 * KiB)
    whiteout_images: int = 1
    shared_diff_pairs: int = 1
    # Each image's config files in a layer of their own. Without it they join the app layer:
    # one layer less per image, which halves load time at scale (engines spend their time per
    # layer, not per byte).
    config_layer: bool = True
    # Put busybox in every base layer so containers can start. Without it nothing can run,
    # which is fine when every container stays in "created".
    runnable: bool = True
    # None: the host's, so that a busybox copied from the host matches the image's platform.
    architecture: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{f.name} must not be negative")
            if isinstance(value, tuple) and not (0 <= value[0] <= value[1]):
                raise ValueError(f"{f.name} must be a range (low, high) with 0 <= low <= high")
        if self.families < 1 or self.images_per_family < 1:
            raise ValueError("a fixture needs at least one family with one image")
        if self.tags_per_image[0] < 1:
            raise ValueError("a tagged image has at least one tag")
        if self.deps_variants < 1:
            raise ValueError("deps_variants must be at least 1")
        if not self.runnable and (self.running or self.exited):
            raise ValueError("running or exited containers need runnable images")
        if self.shared_diff_pairs and self.families < 2:
            raise ValueError("a same-diff-id pair needs two families (two different parents)")
        slots = self.families * self.images_per_family
        if 2 * self.shared_diff_pairs + self.whiteout_images > slots:
            raise ValueError("not enough tagged images for the whiteout and pair images")
        if (self.named_volumes or self.anonymous_volumes) and not self.container_count:
            raise ValueError("used volumes need at least one container")

    @property
    def container_count(self) -> int:
        return self.running + self.exited + self.created

    @property
    def image_count(self) -> int:
        return self.families * self.images_per_family + self.dangling_images

    @classmethod
    def small(cls, seed: int = 1) -> FixtureSpec:
        """A handful of images (about 15 MB of layers) for fast engine tests."""
        return cls(
            seed=seed,
            families=2,
            images_per_family=2,
            tags_per_image=(1, 2),
            dangling_images=1,
            base_bytes=(1 * MiB, 2 * MiB),
            runtime_bytes=(1 * MiB, 2 * MiB),
            deps_bytes=(256 * KiB, 512 * KiB),
            app_bytes=(256 * KiB, 1 * MiB),
            config_bytes=(1 * KiB, 8 * KiB),
            running=1,
            exited=1,
            created=1,
            named_volumes=1,
            anonymous_volumes=1,
            dangling_named_volumes=1,
            dangling_anonymous_volumes=1,
            volume_file_bytes=(512, 4 * KiB),
        )

    @classmethod
    def scaled(
        cls,
        images: int = 1000,
        containers: int = 2000,
        *,
        seed: int = 1,
        running: int = 0,
        exited: int = 0,
    ) -> FixtureSpec:
        """Many images with tiny layers, for benchmarks: loading cost is per layer and per
        image, not per byte. Containers are created but not started unless asked, since
        starting thousands takes minutes and the inventory does not care."""
        if images < 2:
            raise ValueError("a scaled fixture needs at least two images")
        if running + exited > containers:
            raise ValueError("more running and exited containers than containers")
        dangling = max(1, images // 25)
        families = max(2, (images - dangling) // 50)
        per_family = (images - dangling) // families
        dangling = images - families * per_family
        return cls(
            seed=seed,
            families=families,
            images_per_family=per_family,
            tags_per_image=(1, 2),
            dangling_images=dangling,
            base_bytes=(8 * KiB, 32 * KiB),
            runtime_bytes=(4 * KiB, 16 * KiB),
            deps_bytes=(2 * KiB, 8 * KiB),
            app_bytes=(1 * KiB, 8 * KiB),
            config_bytes=(256, 2 * KiB),
            running=running,
            exited=exited,
            created=containers - running - exited,
            named_volumes=10 if containers else 0,
            anonymous_volumes=10 if containers else 0,
            dangling_named_volumes=10,
            dangling_anonymous_volumes=10,
            volume_file_bytes=(256, 4 * KiB),
            config_layer=False,
            runnable=bool(running or exited),
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> FixtureSpec:
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()}
        return cls(**kwargs)


# --- the ground truth -------------------------------------------------------------------


@dataclass(frozen=True)
class LayerTruth:
    """One unpacked layer (by chain id) and who needs it."""

    chain_id: str
    diff_id: str
    parent: str | None
    content_bytes: int  # overlay2 layerdb `size`
    tar_bytes: int  # the layer blob in the containerd content store
    allocated_bytes: int  # the unpacked snapshot's blocks (containerd snapshotter usage)
    images: tuple[str, ...]  # image keys
    containers: tuple[str, ...]  # container names


@dataclass(frozen=True)
class ImageTruth:
    key: str  # first tag, or dangling-N
    tags: tuple[str, ...]
    family: str
    created: str
    config_digest: str  # the image id on overlay2
    config_bytes: int
    diff_ids: tuple[str, ...]
    chain: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    whiteout: bool = False

    @property
    def top_chain_id(self) -> str:
        return self.chain[-1]

    @property
    def dangling(self) -> bool:
        return not self.tags


@dataclass(frozen=True)
class VolumeFile:
    path: str  # relative to the volume root
    size: int
    seed: str

    def content(self) -> bytes:
        return random.Random(self.seed).randbytes(self.size)


@dataclass(frozen=True)
class VolumeTruth:
    name: str
    anonymous: bool
    labels: Mapping[str, str]
    used_by: tuple[str, ...]  # container names
    files: tuple[VolumeFile, ...] = ()

    @property
    def dangling(self) -> bool:
        return not self.used_by

    @property
    def data_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class ContainerTruth:
    name: str
    image: str  # image key
    state: ContainerState
    command: tuple[str, ...]
    labels: Mapping[str, str]
    mounts: tuple[tuple[str, str], ...] = ()  # (volume name, destination)


@dataclass(frozen=True)
class GroundTruth:
    """Who needs what, and how many bytes each store keeps for it."""

    images: tuple[ImageTruth, ...]
    layers: Mapping[str, LayerTruth]  # by chain id
    containers: tuple[ContainerTruth, ...]
    volumes: tuple[VolumeTruth, ...]

    def image(self, key: str) -> ImageTruth:
        for img in self.images:
            if img.key == key:
                return img
        raise KeyError(key)

    def container(self, name: str) -> ContainerTruth:
        for c in self.containers:
            if c.name == name:
                return c
        raise KeyError(name)

    def by_top_chain(self) -> dict[str, ImageTruth]:
        return {img.top_chain_id: img for img in self.images}

    def blob_sizes(self) -> dict[str, int]:
        """Layer blobs by diff id: our layer tars are uncompressed, so the blob digest is the
        diff id, and one tar on two parents is one blob."""
        return {layer.diff_id: layer.tar_bytes for layer in self.layers.values()}

    def total_bytes(self, store: Store) -> int:
        """Every layer once: what the images take on disk together."""
        snapshots = sum(self._unpacked(layer, store) for layer in self.layers.values())
        if store == "containerd":
            return snapshots + sum(self.blob_sizes().values())
        return snapshots

    def image_size(self, key: str, store: Store) -> int:
        """An image's layers counted as if it were alone (shared layers included): the kind
        of figure an engine reports as `Size`. Never to be summed across images."""
        img = self.image(key)
        total = sum(self._unpacked(self.layers[c], store) for c in img.chain)
        if store == "containerd":
            total += sum(self.layers[c].tar_bytes for c in img.chain)
        return total

    def exclusive_bytes(self, image_key: str, store: Store) -> int:
        """Bytes no other image and no container needs."""
        return self.freed_bytes({image_key}, store)

    def freed_bytes(self, image_keys: Iterable[str], store: Store) -> int:
        """What deleting these images frees: every layer (and, for containerd, every layer
        blob) whose every user is in the set and that no container needs."""
        keys = set(image_keys)
        unknown = keys - {img.key for img in self.images}
        if unknown:
            raise KeyError(f"unknown image keys: {sorted(unknown)}")
        if store not in STORES:
            raise ValueError(f"unknown store {store!r}")
        freed = 0
        for layer in self.layers.values():
            if not layer.containers and layer.images and set(layer.images) <= keys:
                freed += self._unpacked(layer, store)
        if store == "containerd":
            blob_users: dict[str, set[str]] = {}
            pinned: set[str] = set()
            for layer in self.layers.values():
                blob_users.setdefault(layer.diff_id, set()).update(layer.images)
                if layer.containers:
                    pinned.add(layer.diff_id)
            for diff_id, size in self.blob_sizes().items():
                users = blob_users[diff_id]
                if diff_id not in pinned and users and users <= keys:
                    freed += size
        return freed

    def container_layers(self, name: str) -> tuple[str, ...]:
        """The chain ids a container keeps alive: its image's whole chain."""
        return self.image(self.container(name).image).chain

    @staticmethod
    def _unpacked(layer: LayerTruth, store: Store) -> int:
        return layer.allocated_bytes if store == "containerd" else layer.content_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": [
                {
                    "key": i.key,
                    "tags": list(i.tags),
                    "family": i.family,
                    "created": i.created,
                    "config_digest": i.config_digest,
                    "config_bytes": i.config_bytes,
                    "diff_ids": list(i.diff_ids),
                    "chain": list(i.chain),
                    "labels": dict(i.labels),
                    "whiteout": i.whiteout,
                }
                for i in self.images
            ],
            "layers": [
                {
                    "chain_id": layer.chain_id,
                    "diff_id": layer.diff_id,
                    "parent": layer.parent,
                    "content_bytes": layer.content_bytes,
                    "tar_bytes": layer.tar_bytes,
                    "allocated_bytes": layer.allocated_bytes,
                    "images": list(layer.images),
                    "containers": list(layer.containers),
                }
                for layer in self.layers.values()
            ],
            "containers": [
                {
                    "name": c.name,
                    "image": c.image,
                    "state": c.state.value,
                    "command": list(c.command),
                    "labels": dict(c.labels),
                    "mounts": [list(m) for m in c.mounts],
                }
                for c in self.containers
            ],
            "volumes": [
                {
                    "name": v.name,
                    "anonymous": v.anonymous,
                    "labels": dict(v.labels),
                    "used_by": list(v.used_by),
                    "files": [{"path": f.path, "size": f.size, "seed": f.seed} for f in v.files],
                }
                for v in self.volumes
            ],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> GroundTruth:
        images = tuple(
            ImageTruth(
                key=i["key"],
                tags=tuple(i["tags"]),
                family=i["family"],
                created=i["created"],
                config_digest=i["config_digest"],
                config_bytes=i["config_bytes"],
                diff_ids=tuple(i["diff_ids"]),
                chain=tuple(i["chain"]),
                labels=dict(i["labels"]),
                whiteout=i["whiteout"],
            )
            for i in doc["images"]
        )
        layers = {
            d["chain_id"]: LayerTruth(
                chain_id=d["chain_id"],
                diff_id=d["diff_id"],
                parent=d["parent"],
                content_bytes=d["content_bytes"],
                tar_bytes=d["tar_bytes"],
                allocated_bytes=d["allocated_bytes"],
                images=tuple(d["images"]),
                containers=tuple(d["containers"]),
            )
            for d in doc["layers"]
        }
        containers = tuple(
            ContainerTruth(
                name=c["name"],
                image=c["image"],
                state=ContainerState(c["state"]),
                command=tuple(c["command"]),
                labels=dict(c["labels"]),
                mounts=tuple((m[0], m[1]) for m in c["mounts"]),
            )
            for c in doc["containers"]
        )
        volumes = tuple(
            VolumeTruth(
                name=v["name"],
                anonymous=v["anonymous"],
                labels=dict(v["labels"]),
                used_by=tuple(v["used_by"]),
                files=tuple(VolumeFile(f["path"], f["size"], f["seed"]) for f in v["files"]),
            )
            for v in doc["volumes"]
        )
        return cls(images, layers, containers, volumes)


@dataclass(frozen=True)
class Fixture:
    """A built fixture: the truth, plus what is needed to write its archives."""

    spec: FixtureSpec
    truth: GroundTruth
    layer_specs: Mapping[str, LayerSpec] = field(repr=False)  # by diff id
    configs: Mapping[str, bytes] = field(repr=False)  # by image key

    @property
    def images(self) -> tuple[ImageTruth, ...]:
        return self.truth.images

    @property
    def layers(self) -> Mapping[str, LayerTruth]:
        return self.truth.layers

    @property
    def containers(self) -> tuple[ContainerTruth, ...]:
        return self.truth.containers

    @property
    def volumes(self) -> tuple[VolumeTruth, ...]:
        return self.truth.volumes

    def exclusive_bytes(self, image_key: str, store: Store) -> int:
        return self.truth.exclusive_bytes(image_key, store)

    def freed_bytes(self, image_keys: Iterable[str], store: Store) -> int:
        return self.truth.freed_bytes(image_keys, store)

    def archive_images(self, keys: Iterable[str] | None = None) -> list[ArchiveImage]:
        wanted = None if keys is None else set(keys)
        return [
            ArchiveImage(self.configs[img.key], img.diff_ids, img.tags or None)
            for img in self.truth.images
            if wanted is None or img.key in wanted
        ]

    def write_archives(self, workdir: Path, *, images_per_archive: int = 250) -> list[Path]:
        """Writes the images into `docker save` archives of at most `images_per_archive`
        images each (one `docker load` per archive keeps each request bounded). Images go in
        family order, so a family's shared layers are repeated in few archives."""
        if images_per_archive < 1:
            raise ValueError("images_per_archive must be at least 1")
        workdir.mkdir(parents=True, exist_ok=True)
        images = self.archive_images()
        paths: list[Path] = []
        for n, start in enumerate(range(0, len(images), images_per_archive)):
            path = workdir / f"{self.spec.name}-{n:03d}.tar"
            chunk = images[start : start + images_per_archive]
            write_archive(path, chunk, self.layer_specs, mtime=int(EPOCH.timestamp()))
            paths.append(path)
        return paths


# --- building ---------------------------------------------------------------------------


def find_busybox() -> Path:
    """A statically linked busybox from the host: it runs in an image with nothing else."""
    candidates = [shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"]
    for c in candidates:
        if c and Path(c).is_file() and is_static_elf(Path(c).read_bytes()):
            return Path(c)
    raise FileNotFoundError(
        "runnable fixtures need a statically linked busybox (Debian: busybox-static)"
    )


def is_static_elf(data: bytes) -> bool:
    """True for an ELF executable with no program interpreter (PT_INTERP), i.e. one that needs
    no dynamic loader inside the image."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        return False
    is64, little = data[4] == 2, data[5] == 1
    end = "<" if little else ">"
    if is64:
        (phoff,) = struct.unpack_from(end + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 54)
    else:
        (phoff,) = struct.unpack_from(end + "I", data, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 42)
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + 4 > len(data):
            return False
        (p_type,) = struct.unpack_from(end + "I", data, off)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def host_architecture() -> str:
    machine = platform.machine().lower()
    return {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
        "armv7l": "arm",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
        "riscv64": "riscv64",
    }.get(machine, machine)


def _rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _hex64(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    """`total` bytes in `parts` files, none empty unless there are too few bytes."""
    parts = max(1, min(parts, total)) if total else 1
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    bounds = [0, *cuts, total]
    return [b - a for a, b in itertools.pairwise(bounds)]


def _random_files(
    directory: str, stem: str, byte_range: Range, seed: str, *, max_files: int = 3
) -> list[Entry]:
    rng = random.Random(seed + "/sizes")
    total = rng.randint(*byte_range)
    sizes = _split(total, rng.randint(1, max_files), rng)
    return [
        file_entry(f"{directory}/{stem}{k}.bin", size, f"{seed}/{k}")
        for k, size in enumerate(sizes)
    ]


@dataclass
class _Built:
    layer: LayerSpec
    digest: LayerDigest
    created_by: str


class _Builder:
    def __init__(self, spec: FixtureSpec, busybox: bytes | None) -> None:
        self.spec = spec
        self.busybox = busybox
        self.arch = spec.architecture or host_architecture()
        self.layer_specs: dict[str, LayerSpec] = {}
        self.tar_sizes: dict[str, int] = {}

    def seed(self, *parts: object) -> str:
        return "/".join(map(str, (self.spec.name, self.spec.seed, *parts)))

    def layer(self, entries: Iterable[Entry], mtime: datetime, created_by: str) -> _Built:
        spec = LayerSpec.of(entries, int(mtime.timestamp()))
        digest = digest_layer(spec)
        self.layer_specs.setdefault(digest.diff_id, spec)
        self.tar_sizes[digest.diff_id] = digest.tar_bytes
        return _Built(spec, digest, created_by)


@dataclass
class _Family:
    name: str
    created: datetime
    base: _Built
    runtime: _Built
    deps: list[_Built]
    deps_files: list[str]  # the first file of each deps variant, for whiteouts


def _family_name(f: int) -> str:
    return FAMILY_NAMES[f] if f < len(FAMILY_NAMES) else f"fam{f:03d}"


def _family(b: _Builder, f: int) -> _Family:
    spec = b.spec
    name = _family_name(f)
    created = EPOCH + timedelta(days=7 * f)
    base_entries: list[Entry] = []
    if b.busybox is not None:
        base_entries.append(data_entry("bin/busybox", b.busybox, mode=0o755))
        base_entries += [symlink_entry(f"bin/{applet}", "busybox") for applet in BUSYBOX_APPLETS]
    base_entries += _random_files(f"usr/share/{name}", "base", spec.base_bytes, b.seed(f, "base"))
    base = b.layer(base_entries, created, f"base: busybox and {name} system files")
    runtime = b.layer(
        _random_files(f"opt/{name}/runtime", "lib", spec.runtime_bytes, b.seed(f, "runtime")),
        created + timedelta(hours=1),
        f"runtime for {name}",
    )
    deps: list[_Built] = []
    deps_files: list[str] = []
    for v in range(spec.deps_variants):
        entries = _random_files(
            f"usr/lib/{name}/deps{v}", "mod", spec.deps_bytes, b.seed(f, "deps", v)
        )
        deps_files.append(entries[0].path)
        deps.append(b.layer(entries, created + timedelta(hours=2), f"deps variant {v}"))
    return _Family(name, created, base, runtime, deps, deps_files)


@dataclass
class _ImagePlan:
    family: int
    index: int  # within the family; dangling images come after the tagged ones
    key: str
    tags: tuple[str, ...]
    whiteout: bool = False
    app_from: str | None = None  # key of the image whose app layer this one reuses


def _plan_images(spec: FixtureSpec) -> list[_ImagePlan]:
    plans: list[_ImagePlan] = []
    rng = random.Random(f"{spec.name}/{spec.seed}/tags")
    by_slot: dict[tuple[int, int], _ImagePlan] = {}
    for f in range(spec.families):
        repo = f"{spec.name}/{_family_name(f)}"
        for i in range(spec.images_per_family):
            n = rng.randint(*spec.tags_per_image)
            tags = [f"{repo}:1.{i}", *(f"{repo}:1.{i}-r{k}" for k in range(1, n))]
            if i == spec.images_per_family - 1 and spec.tags_per_image[1] > 1:
                tags.append(f"{repo}:latest")
            plan = _ImagePlan(f, i, tags[0], tuple(tags))
            by_slot[(f, i)] = plan
        for d in range(f, spec.dangling_images, spec.families):
            plans_index = spec.images_per_family + d // spec.families
            by_slot[(f, plans_index)] = _ImagePlan(f, plans_index, f"dangling-{d}", ())
    # Special images are spread over families: slot order is image index, then family.
    free = [(f, i) for i in range(spec.images_per_family) for f in range(spec.families)]
    for _ in range(spec.shared_diff_pairs):
        a = free.pop(0)
        b = next(s for s in free if s[0] != a[0])
        free.remove(b)
        by_slot[b].app_from = by_slot[a].key
    for _ in range(spec.whiteout_images):
        by_slot[free.pop(0)].whiteout = True
    for f in range(spec.families):
        plans += sorted((p for s, p in by_slot.items() if s[0] == f), key=lambda p: p.index)
    return plans


def _slug(key: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in key.split("/")[-1])


def _containers(
    spec: FixtureSpec, images: Sequence[ImageTruth]
) -> tuple[list[ContainerTruth], list[VolumeTruth]]:
    rng = random.Random(f"{spec.name}/{spec.seed}/containers")
    tagged = [img.key for img in images if not img.dangling]
    dangling = [img.key for img in images if img.dangling]
    states = (
        [ContainerState.RUNNING] * spec.running
        + [ContainerState.EXITED] * spec.exited
        + [ContainerState.CREATED] * spec.created
    )
    # One container keeps a dangling image alive (by id, as after a re-tag): an exited one
    # where there is one, the common case of a stale container pinning an old build.
    on_dangling = next(
        (n for n, s in enumerate(states) if s is ContainerState.EXITED), 0 if states else None
    )
    names: list[str] = []
    counters: dict[ContainerState, int] = {}
    for s in states:
        counters[s] = counters.get(s, 0) + 1
        names.append(f"{spec.name}-{s.value}-{counters[s] - 1}")

    volumes: list[VolumeTruth] = []
    mounts: dict[str, list[tuple[str, str]]] = {n: [] for n in names}

    def files(vname: str) -> tuple[VolumeFile, ...]:
        vrng = random.Random(f"{spec.name}/{spec.seed}/volume/{vname}")
        count = vrng.randint(1, 3)
        return tuple(
            VolumeFile(
                f"data/part{k}.bin" if k else "state.db",
                vrng.randint(*spec.volume_file_bytes),
                f"{spec.name}/{spec.seed}/volume/{vname}/{k}",
            )
            for k in range(count)
        )

    def add_volume(vname: str, anonymous: bool, users: list[str]) -> None:
        labels = {FIXTURE_LABEL: spec.name}
        for u in users:
            mounts[u].append((vname, f"/vol/{vname[:12]}"))
        volumes.append(VolumeTruth(vname, anonymous, labels, tuple(users), files(vname)))

    for v in range(spec.named_volumes):
        users = [names[v % len(names)]]
        # The first named volume is shared by two containers, as data volumes often are.
        if v == 0 and len(names) > 1:
            users.append(names[-1])
        add_volume(f"{spec.name}-data-{v}", False, users)
    for v in range(spec.anonymous_volumes):
        add_volume(_hex64(spec.name, spec.seed, "anon", v), True, [names[(v + 1) % len(names)]])
    for v in range(spec.dangling_named_volumes):
        add_volume(f"{spec.name}-orphan-{v}", False, [])
    for v in range(spec.dangling_anonymous_volumes):
        add_volume(_hex64(spec.name, spec.seed, "anon-dangling", v), True, [])

    containers: list[ContainerTruth] = []
    for n, (name, state) in enumerate(zip(names, states, strict=True)):
        image = dangling[0] if n == on_dangling and dangling else rng.choice(tagged)
        if state is ContainerState.EXITED:
            command: tuple[str, ...] = ("true",)
        else:
            # A shell that exits on SIGTERM: `sleep` alone as PID 1 ignores it, and every stop
            # (and the engine's shutdown) would wait out the 10 s grace period.
            command = ("sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait")
        labels = {FIXTURE_LABEL: spec.name, f"{FIXTURE_LABEL}.state": state.value}
        containers.append(ContainerTruth(name, image, state, command, labels, tuple(mounts[name])))
    return containers, volumes


def build_fixture(spec: FixtureSpec | None = None, *, busybox: Path | None = None) -> Fixture:
    """Computes every image, layer and container of `spec`, and the ground truth, in memory.
    Layer bytes are generated to hash them and dropped; `write_archives` generates them
    again."""
    spec = spec or FixtureSpec()
    bb: bytes | None = None
    if spec.runnable:
        bb = (busybox or find_busybox()).read_bytes()
        if not is_static_elf(bb):
            raise ValueError(f"{busybox} is not a statically linked executable")
    b = _Builder(spec, bb)
    families = [_family(b, f) for f in range(spec.families)]

    images: list[ImageTruth] = []
    configs: dict[str, bytes] = {}
    apps: dict[str, _Built] = {}
    for plan in _plan_images(spec):
        fam = families[plan.family]
        created = fam.created + timedelta(hours=3 + 2 * plan.index)
        variant = plan.index % spec.deps_variants
        slug = _slug(plan.key)
        cfg_entries = _random_files(
            f"etc/{fam.name}",
            f"{slug}-",
            spec.config_bytes,
            b.seed(plan.key, "config"),
            max_files=1,
        )
        if plan.whiteout:
            cfg_entries.append(whiteout_entry(fam.deps_files[variant]))
        if plan.app_from is not None:
            app = apps[plan.app_from]
        else:
            app_entries = _random_files(
                f"app/{slug}", "part", spec.app_bytes, b.seed(plan.key, "app")
            )
            if not spec.config_layer:
                app_entries += cfg_entries
            app = b.layer(app_entries, created, f"app {plan.key}")
        apps[plan.key] = app
        built = [fam.base, fam.runtime, fam.deps[variant], app]
        if spec.config_layer:
            built.append(b.layer(cfg_entries, created, f"config {plan.key}"))
        diff_ids = tuple(x.digest.diff_id for x in built)
        labels = {FIXTURE_LABEL: spec.name, f"{FIXTURE_LABEL}.family": fam.name}
        config = image_config(
            architecture=b.arch,
            created=_rfc3339(created),
            diff_ids=diff_ids,
            history=[x.created_by for x in built],
            cmd=["sleep", "100000"] if spec.runnable else ["/app/run"],
            env=["PATH=/bin", f"FIXTURE_IMAGE={plan.key}"],
            labels=labels,
        )
        configs[plan.key] = config
        images.append(
            ImageTruth(
                key=plan.key,
                tags=plan.tags,
                family=fam.name,
                created=_rfc3339(created),
                config_digest="sha256:" + hashlib.sha256(config).hexdigest(),
                config_bytes=len(config),
                diff_ids=diff_ids,
                chain=tuple(chain_ids(diff_ids)),
                labels=labels,
                whiteout=plan.whiteout,
            )
        )

    if len({img.top_chain_id for img in images}) != len(images):
        raise AssertionError("two images have the same layer chain")
    containers, volumes = _containers(spec, images)
    layers = _layer_truth(images, containers, b)
    truth = GroundTruth(tuple(images), layers, tuple(containers), tuple(volumes))
    return Fixture(spec, truth, dict(b.layer_specs), configs)


def _layer_truth(
    images: Sequence[ImageTruth], containers: Sequence[ContainerTruth], b: _Builder
) -> dict[str, LayerTruth]:
    by_key = {img.key: img for img in images}
    users: dict[str, list[str]] = {}
    pinned: dict[str, list[str]] = {}
    parents: dict[str, tuple[str, str | None]] = {}
    for img in images:
        for i, (chain, diff) in enumerate(zip(img.chain, img.diff_ids, strict=True)):
            users.setdefault(chain, []).append(img.key)
            parents[chain] = (diff, img.chain[i - 1] if i else None)
    for c in containers:
        for chain in by_key[c.image].chain:
            pinned.setdefault(chain, []).append(c.name)
    out: dict[str, LayerTruth] = {}
    for chain, (diff, parent) in parents.items():
        spec = b.layer_specs[diff]
        out[chain] = LayerTruth(
            chain_id=chain,
            diff_id=diff,
            parent=parent,
            content_bytes=spec.content_bytes,
            tar_bytes=b.tar_sizes[diff],
            allocated_bytes=spec.allocated_bytes,
            images=tuple(users[chain]),
            containers=tuple(pinned.get(chain, ())),
        )
    return out
