"""Images in `docker save` format, written by our own code so that tests need no registry.

A layer is a small list of entries whose bytes are generated from a seed, so the same
description always gives the same layer tar (and so the same diff id). The archive holds, per
distinct diff id, one `<diffhex>/layer.tar`, one `<confighex>.json` per image and a
`manifest.json` listing `Config`, `RepoTags` and `Layers`: what `docker load` reads on every
engine version that has `manifest.json` (1.10 on), including the containerd image store.
Legacy per-layer `VERSION`/`json` files and `repositories` are only read when `manifest.json`
is missing, so they are left out.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import IO, Any

# The block size overlay2/ext4 allocates in; the containerd snapshotter reports usage as
# st_blocks * 512, which for small files and directories rounds to this.
BLOCK = 4096
WHITEOUT_PREFIX = ".wh."


class EntryKind(StrEnum):
    DIR = "dir"
    FILE = "file"
    SYMLINK = "symlink"
    WHITEOUT = "whiteout"


@dataclass(frozen=True)
class Entry:
    """One member of a layer tar.

    A FILE's bytes are `data` when given (a real binary), else `size` pseudo-random bytes from
    `seed`: incompressible, so the sizes on disk are real. A WHITEOUT is written as the empty
    regular file `.wh.<name>` in the directory of the path it deletes.
    """

    path: str
    kind: EntryKind
    size: int = 0
    seed: str = ""
    data: bytes | None = field(default=None, repr=False, compare=False)
    target: str = ""
    mode: int = 0o644

    def __post_init__(self) -> None:
        parts = self.path.split("/")
        if not self.path or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"layer entry path must be relative and normalised: {self.path!r}")
        if self.data is not None and len(self.data) != self.size:
            raise ValueError(f"{self.path}: size {self.size} != len(data) {len(self.data)}")

    @property
    def member_name(self) -> str:
        if self.kind is EntryKind.WHITEOUT:
            p = PurePosixPath(self.path)
            return str(p.parent / (WHITEOUT_PREFIX + p.name)).removeprefix("./")
        return self.path

    def content(self) -> bytes:
        if self.kind is not EntryKind.FILE:
            return b""
        if self.data is not None:
            return self.data
        # A str seed is hashed with SHA-512 by Random, independent of PYTHONHASHSEED.
        return random.Random(self.seed).randbytes(self.size)

    @property
    def content_bytes(self) -> int:
        """What overlay2 counts for this entry in layerdb `size`: st_size of everything but
        directories (its ApplyDiff sums a walk of the diff dir). A whiteout becomes a 0/0
        character device there, size 0; a symlink's st_size is the length of its target."""
        if self.kind is EntryKind.FILE:
            return self.size
        if self.kind is EntryKind.SYMLINK:
            return len(self.target.encode())
        return 0

    @property
    def allocated_bytes(self) -> int:
        """Blocks on ext4 once unpacked. Symlink targets under 60 bytes live in the inode and
        device nodes have no blocks, so both count 0."""
        if self.kind is EntryKind.FILE:
            return -(-self.size // BLOCK) * BLOCK
        if self.kind is EntryKind.DIR:
            return BLOCK
        if self.kind is EntryKind.SYMLINK and len(self.target.encode()) >= 60:
            return BLOCK
        return 0


def file_entry(path: str, size: int, seed: str, mode: int = 0o644) -> Entry:
    return Entry(path, EntryKind.FILE, size=size, seed=seed, mode=mode)


def data_entry(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, EntryKind.FILE, size=len(data), data=data, mode=mode)


def symlink_entry(path: str, target: str) -> Entry:
    return Entry(path, EntryKind.SYMLINK, target=target, mode=0o777)


def whiteout_entry(path: str) -> Entry:
    """Deletes `path` (a file of a lower layer) in the layer that holds this entry."""
    return Entry(path, EntryKind.WHITEOUT)


@dataclass(frozen=True)
class LayerSpec:
    """A layer's contents. Parent directories of every entry are added as explicit entries,
    so the unpacked tree (and its block count) does not depend on how an engine creates
    missing parents."""

    entries: tuple[Entry, ...]
    mtime: int

    @classmethod
    def of(cls, entries: Iterable[Entry], mtime: int) -> LayerSpec:
        given = list(entries)
        names = {e.path for e in given}
        if len(names) != len(given):
            raise ValueError("duplicate paths in a layer")
        dirs: set[str] = set()
        for e in given:
            parts = e.path.split("/")
            dirs.update("/".join(parts[:n]) for n in range(1, len(parts)))
        missing = [Entry(d, EntryKind.DIR, mode=0o755) for d in sorted(dirs - names)]
        # Parents before children, as tar producers write them.
        ordered = sorted([*missing, *given], key=lambda e: e.path.split("/"))
        return cls(tuple(ordered), mtime)

    @property
    def content_bytes(self) -> int:
        return sum(e.content_bytes for e in self.entries)

    @property
    def allocated_bytes(self) -> int:
        # The snapshot's root directory is walked too and takes a block of its own.
        return BLOCK + sum(e.allocated_bytes for e in self.entries)

    def write_tar(self, out: IO[bytes]) -> None:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
            for e in self.entries:
                info = tarfile.TarInfo(e.member_name)
                info.mtime = self.mtime
                info.mode = e.mode
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if e.kind is EntryKind.DIR:
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif e.kind is EntryKind.SYMLINK:
                    info.type = tarfile.SYMTYPE
                    info.linkname = e.target
                    tar.addfile(info)
                else:
                    data = e.content()
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))

    def tar_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.write_tar(buf)
        return buf.getvalue()


class _DigestSink(io.RawIOBase):
    """Counts and hashes what is written, keeping none of it."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.length = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        view = memoryview(b)
        self.digest.update(view)
        self.length += view.nbytes
        return view.nbytes


@dataclass(frozen=True)
class LayerDigest:
    diff_id: str
    tar_bytes: int


def digest_layer(layer: LayerSpec) -> LayerDigest:
    sink = _DigestSink()
    layer.write_tar(sink)  # type: ignore[arg-type]
    return LayerDigest("sha256:" + sink.digest.hexdigest(), sink.length)


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """ChainID as the OCI image spec (and Docker's layerdb, containerd's snapshot keys) define
    it: chain[0] = diff[0]; chain[i] = sha256(chain[i-1] + " " + diff[i]).

    Written here again on purpose (reclaim's own is `reclaim.ondisk.digests.chain_ids`): the
    ground truth must not come from the code it is there to check."""
    out: list[str] = []
    for diff in diff_ids:
        if not out:
            out.append(diff)
        else:
            h = hashlib.sha256(f"{out[-1]} {diff}".encode()).hexdigest()
            out.append("sha256:" + h)
    return out


def image_config(
    *,
    architecture: str,
    created: str,
    diff_ids: Sequence[str],
    history: Sequence[str],
    cmd: Sequence[str],
    env: Sequence[str],
    labels: Mapping[str, str],
) -> bytes:
    """The image config JSON, serialised canonically: its sha256 is the image id on
    overlay2, so the same inputs must give the same bytes."""
    if len(history) != len(diff_ids):
        raise ValueError("one history entry per layer")
    doc: dict[str, Any] = {
        "architecture": architecture,
        "os": "linux",
        "created": created,
        "config": {"Cmd": list(cmd), "Env": list(env), "Labels": dict(labels)},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": created, "created_by": h} for h in history],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class ArchiveImage:
    """One image of an archive: its config bytes, its layers' diff ids (base first) and its
    tags; `repo_tags=None` loads it untagged (dangling)."""

    config: bytes
    diff_ids: tuple[str, ...]
    repo_tags: tuple[str, ...] | None

    @property
    def config_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()


def _hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64:
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexpart


def layer_member(diff_id: str) -> str:
    return f"{_hex(diff_id)}/layer.tar"


def config_member(config_digest: str) -> str:
    return f"{_hex(config_digest)}.json"


def write_archive(
    path: Path,
    images: Sequence[ArchiveImage],
    layers: Mapping[str, LayerSpec],
    *,
    mtime: int,
) -> None:
    """Writes `images` into one `docker save` archive at `path`. Each distinct layer is
    written once however many images use it; its tar is generated again from `layers`
    (by diff id) and checked against the diff id, so a non-deterministic layer is caught here
    rather than as a confusing `docker load` error."""

    def info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.size = size
        ti.type = kind
        ti.mtime = mtime
        ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        ti.uname = ti.gname = "root"
        return ti

    manifest: list[dict[str, Any]] = []
    with tarfile.open(path, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        written: set[str] = set()
        for img in images:
            for diff_id in img.diff_ids:
                if diff_id in written:
                    continue
                data = layers[diff_id].tar_bytes()
                actual = "sha256:" + hashlib.sha256(data).hexdigest()
                if actual != diff_id:
                    raise RuntimeError(f"layer {diff_id} regenerated as {actual}")
                tar.addfile(info(_hex(diff_id), kind=tarfile.DIRTYPE))
                tar.addfile(info(layer_member(diff_id), len(data)), io.BytesIO(data))
                written.add(diff_id)
            name = config_member(img.config_digest)
            tar.addfile(info(name, len(img.config)), io.BytesIO(img.config))
            manifest.append(
                {
                    "Config": name,
                    "RepoTags": list(img.repo_tags) if img.repo_tags is not None else None,
                    "Layers": [layer_member(d) for d in img.diff_ids],
                }
            )
        body = json.dumps(manifest, separators=(",", ":")).encode()
        tar.addfile(info("manifest.json", len(body)), io.BytesIO(body))
