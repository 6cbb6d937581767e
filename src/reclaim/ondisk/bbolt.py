"""A read-only reader of bbolt (BoltDB) files: BuildKit's `snapshots.db`, `volumes/metadata.db`.

The engine owns these files while it runs. This reader never opens them for writing, never takes
a lock (bbolt's flock would make a starting engine wait on us), and never maps them writable: it
reads pages with pread. Both meta pages are checked (magic, version, FNV-1a checksum) and the
valid one with the higher transaction id is used, as bbolt itself does. A file that is being
written while we walk it is detected by reading the meta again afterwards; the walk is retried,
and refused if it never settles.

Format (go.etcd.io/bbolt, version 2):
  page header   id u64 · flags u16 · count u16 · overflow u32                      (16 bytes)
  meta          magic u32 · version u32 · page_size u32 · flags u32 · root bucket {root u64,
                sequence u64} · freelist u64 · pgid u64 · txid u64 · checksum u64
  branch elem   pos u32 · ksize u32 · pgid u64                                     (16 bytes)
  leaf elem     flags u32 · pos u32 · ksize u32 · vsize u32                        (16 bytes)
  bucket value  root u64 · sequence u64, then, when root == 0, an inline page
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

MAGIC = 0xED0CDAED
VERSION = 2
PAGE_HEADER = struct.Struct("<QHHI")
META = struct.Struct("<IIII QQ Q Q Q Q")
# The checksum covers the meta struct up to (not including) the checksum field.
META_CHECKSUMMED = META.size - 8
BRANCH_ELEM = struct.Struct("<IIQ")
LEAF_ELEM = struct.Struct("<IIII")
BUCKET_HEADER = struct.Struct("<QQ")

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
BUCKET_LEAF_FLAG = 0x01

# bbolt's default page size is the OS page size; these are the sizes tried for the second meta
# page when the first one (which records the size) is damaged.
FALLBACK_PAGE_SIZES = (4096, 8192, 16384, 65536)
MAX_DEPTH = 64
RETRIES = 5

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = 0xFFFFFFFFFFFFFFFF


class BoltError(Exception):
    """The file is not a bbolt database we can trust: refused, never guessed at."""


def fnv1a64(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK
    return h


@dataclass(frozen=True)
class Meta:
    page_size: int
    root: int
    freelist: int
    high_water: int  # pgid: pages at or above it are not part of the database
    txid: int


@dataclass
class Bucket:
    """One bucket: plain key/value pairs and nested buckets."""

    items: dict[bytes, bytes] = field(default_factory=dict)
    buckets: dict[bytes, Bucket] = field(default_factory=dict)

    def walk(self, path: tuple[bytes, ...] = ()) -> list[tuple[tuple[bytes, ...], bytes, bytes]]:
        """Every (bucket path, key, value) pair at any depth, nested buckets first-level keys
        included with an empty value (their names are data too: snapshot keys, volume names)."""
        out: list[tuple[tuple[bytes, ...], bytes, bytes]] = []
        for key, value in self.items.items():
            out.append((path, key, value))
        for name, child in self.buckets.items():
            out.append((path, name, b""))
            out.extend(child.walk((*path, name)))
        return out


@dataclass(frozen=True)
class BoltFile:
    path: str
    meta: Meta
    root: Bucket


def _parse_meta(buf: bytes, offset: int) -> Meta | None:
    """The meta at `offset` (a page start) if its magic, version and checksum hold."""
    start = offset + PAGE_HEADER.size
    raw = buf[start : start + META.size]
    if len(raw) < META.size:
        return None
    _, flags, _, _ = PAGE_HEADER.unpack_from(buf, offset)
    magic, version, page_size, _, root, _, freelist, pgid, txid, checksum = META.unpack(raw)
    if magic != MAGIC or version != VERSION or not flags & META_PAGE:
        return None
    if fnv1a64(raw[:META_CHECKSUMMED]) != checksum:
        return None
    if page_size < 512 or page_size & (page_size - 1):
        return None
    return Meta(page_size=page_size, root=root, freelist=freelist, high_water=pgid, txid=txid)


class _Reader:
    def __init__(self, fd: int, size: int, meta: Meta) -> None:
        self.fd = fd
        self.size = size
        self.meta = meta

    def page(self, pgid: int) -> bytes:
        ps = self.meta.page_size
        if pgid < 2 or pgid >= self.meta.high_water:
            raise BoltError(
                f"page {pgid} is outside the database (high water {self.meta.high_water})"
            )
        head = os.pread(self.fd, PAGE_HEADER.size, pgid * ps)
        if len(head) < PAGE_HEADER.size:
            raise BoltError(f"page {pgid} lies past the end of the file")
        page_id, _, _, overflow = PAGE_HEADER.unpack(head)
        if page_id != pgid:
            raise BoltError(f"page {pgid} says it is page {page_id}")
        length = (overflow + 1) * ps
        if pgid * ps + length > self.size:
            raise BoltError(f"page {pgid} with {overflow} overflow pages runs past the file")
        return os.pread(self.fd, length, pgid * ps)

    def bucket(self, root: int, inline: bytes | None, depth: int) -> Bucket:
        if depth > MAX_DEPTH:
            raise BoltError("buckets nested deeper than any real database")
        out = Bucket()
        if inline is not None:
            self._node(inline, out, depth, set())
        else:
            self._node(self.page(root), out, depth, set())
        return out

    def _node(self, page: bytes, out: Bucket, depth: int, seen: set[int]) -> None:
        if len(page) < PAGE_HEADER.size:
            raise BoltError("truncated page")
        pgid, flags, count, _ = PAGE_HEADER.unpack_from(page, 0)
        if flags & BRANCH_PAGE:
            for i in range(count):
                at = PAGE_HEADER.size + i * BRANCH_ELEM.size
                if at + BRANCH_ELEM.size > len(page):
                    raise BoltError(f"branch page {pgid}: element {i} past the page")
                _, _, child = BRANCH_ELEM.unpack_from(page, at)
                if child in seen:
                    raise BoltError(f"page {child} is reached twice: the tree has a cycle")
                seen.add(child)
                self._node(self.page(child), out, depth, seen)
        elif flags & LEAF_PAGE:
            for i in range(count):
                at = PAGE_HEADER.size + i * LEAF_ELEM.size
                if at + LEAF_ELEM.size > len(page):
                    raise BoltError(f"leaf page {pgid}: element {i} past the page")
                eflags, pos, ksize, vsize = LEAF_ELEM.unpack_from(page, at)
                kstart = at + pos
                vend = kstart + ksize + vsize
                if vend > len(page):
                    raise BoltError(f"leaf page {pgid}: element {i} runs past the page")
                key = page[kstart : kstart + ksize]
                value = page[kstart + ksize : vend]
                if eflags & BUCKET_LEAF_FLAG:
                    if len(value) < BUCKET_HEADER.size:
                        raise BoltError(f"bucket {key!r}: truncated header")
                    root, _ = BUCKET_HEADER.unpack_from(value, 0)
                    inline = value[BUCKET_HEADER.size :] if root == 0 else None
                    out.buckets[key] = self.bucket(root, inline, depth + 1)
                else:
                    out.items[key] = value
        else:
            raise BoltError(f"page {pgid} has flags {flags:#x}; expected a branch or leaf page")


def _metas(fd: int, size: int) -> Meta:
    page0 = os.pread(fd, 4096, 0)
    meta0 = _parse_meta(page0, 0)
    sizes = [meta0.page_size] if meta0 is not None else list(FALLBACK_PAGE_SIZES)
    meta1: Meta | None = None
    for ps in sizes:
        if ps * 2 > size:
            continue
        meta1 = _parse_meta(os.pread(fd, 4096, ps), 0)
        if meta1 is not None and meta1.page_size == ps:
            break
        meta1 = None
    valid = [m for m in (meta0, meta1) if m is not None]
    if not valid:
        raise BoltError("neither meta page is valid (magic, version or checksum)")
    return max(valid, key=lambda m: m.txid)


def read(path: str | os.PathLike[str]) -> BoltFile:
    """The whole database as nested buckets. Raises BoltError for anything not trustworthy,
    OSError when the file cannot be opened or read."""
    name = os.fspath(path)
    # O_NOFOLLOW: a symlink planted in the engine's data root must not make us read elsewhere.
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for _ in range(RETRIES):
            size = os.fstat(fd).st_size
            if size < 2 * 512:
                raise BoltError(f"{name}: {size} bytes is too short for a bbolt database")
            meta = _metas(fd, size)
            if meta.high_water * meta.page_size > size:
                raise BoltError(f"{name}: the meta page claims more pages than the file holds")
            try:
                root = _Reader(fd, size, meta).bucket(meta.root, None, 0)
            except BoltError:
                # The engine may have committed while we walked (pages reused): if the meta
                # moved on, read again; if not, the file really is damaged.
                if _metas(fd, os.fstat(fd).st_size).txid != meta.txid:
                    continue
                raise
            if _metas(fd, os.fstat(fd).st_size).txid == meta.txid:
                return BoltFile(path=name, meta=meta, root=root)
        raise BoltError(f"{name}: changed on every one of {RETRIES} reads; try again")
    except BoltError as exc:
        if str(exc).startswith(name):
            raise
        raise BoltError(f"{name}: {exc}") from exc
    finally:
        os.close(fd)
