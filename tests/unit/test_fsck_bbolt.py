"""The read-only bbolt reader on databases written here page by page: leaf and branch pages,
inline and page-backed buckets, overflow pages, and damaged copies that must be refused."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from reclaim.ondisk import bbolt

PS = 4096


def _page(pgid: int, flags: int, count: int, body: bytes, overflow: int = 0) -> bytes:
    raw = bbolt.PAGE_HEADER.pack(pgid, flags, count, overflow) + body
    size = (overflow + 1) * PS
    assert len(raw) <= size
    return raw + b"\0" * (size - len(raw))


def _leaf_body(items: list[tuple[bytes, bytes, int]]) -> tuple[int, bytes]:
    """Leaf elements then their key/value data; `pos` is relative to each element."""
    n = len(items)
    elems = b""
    data = b""
    for i, (key, value, flags) in enumerate(items):
        elem_at = i * bbolt.LEAF_ELEM.size
        pos = n * bbolt.LEAF_ELEM.size + len(data) - elem_at
        elems += bbolt.LEAF_ELEM.pack(flags, pos, len(key), len(value))
        data += key + value
    return n, elems + data


def _leaf(pgid: int, items: list[tuple[bytes, bytes, int]], overflow: int = 0) -> bytes:
    n, body = _leaf_body(items)
    return _page(pgid, bbolt.LEAF_PAGE, n, body, overflow)


def _inline_bucket(items: list[tuple[bytes, bytes, int]]) -> bytes:
    n, body = _leaf_body(items)
    return bbolt.BUCKET_HEADER.pack(0, 0) + bbolt.PAGE_HEADER.pack(0, bbolt.LEAF_PAGE, n, 0) + body


def _meta(pgid: int, root: int, high: int, txid: int) -> bytes:
    fields = [bbolt.MAGIC, bbolt.VERSION, PS, 0, root, 0, 0, high, txid]
    raw = struct.pack("<IIII QQ Q Q Q", *fields)
    return _page(pgid, bbolt.META_PAGE, 0, raw + struct.pack("<Q", bbolt.fnv1a64(raw)))


def write_db(path: Path, *, txid: int = 7) -> None:
    """root (page 2, branch) -> leaves 3 and 4; leaf 4 holds a page-backed bucket (page 5)
    whose value of 6000 bytes sits in an overflow page; leaf 3 an inline bucket."""
    big = bytes(range(256)) * 24  # 6144 bytes: needs an overflow page
    leaf3 = _leaf(3, [
        (b"inline", _inline_bucket([(b"a", b"1", 0), (b"b", b"2", 0)]), bbolt.BUCKET_LEAF_FLAG),
        (b"plain", b"value", 0),
    ])
    leaf4 = _leaf(4, [(b"volumes", bbolt.BUCKET_HEADER.pack(5, 0), bbolt.BUCKET_LEAF_FLAG)])
    leaf5 = _leaf(5, [(b"big", big, 0), (b"named1", b'{"Name":"named1"}', 0)], overflow=1)
    branch_elems = b""
    keys = [b"inline", b"volumes"]
    data = b""
    for i, (key, child) in enumerate(zip(keys, (3, 4), strict=True)):
        pos = len(keys) * bbolt.BRANCH_ELEM.size + len(data) - i * bbolt.BRANCH_ELEM.size
        branch_elems += bbolt.BRANCH_ELEM.pack(pos, len(key), child)
        data += key
    branch = _page(2, bbolt.BRANCH_PAGE, 2, branch_elems + data)
    high = 7
    content = (_meta(0, 2, high, txid) + _meta(1, 2, high, txid - 1) + branch + leaf3 + leaf4
               + leaf5)
    path.write_bytes(content)


def test_reads_branches_inline_and_overflow(tmp_path: Path) -> None:
    db = tmp_path / "metadata.db"
    write_db(db)
    tree = bbolt.read(db)
    assert tree.meta.txid == 7
    assert tree.root.items == {b"plain": b"value"}
    assert tree.root.buckets[b"inline"].items == {b"a": b"1", b"b": b"2"}
    volumes = tree.root.buckets[b"volumes"]
    assert volumes.items[b"named1"] == b'{"Name":"named1"}'
    assert volumes.items[b"big"] == bytes(range(256)) * 24
    walked = {(p, k) for p, k, _ in tree.root.walk()}
    assert ((b"volumes",), b"named1") in walked
    assert ((), b"volumes") in walked


def test_a_bad_checksum_on_one_meta_falls_back_to_the_other(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    write_db(db)
    raw = bytearray(db.read_bytes())
    raw[16 + 40] ^= 0xFF  # txid of meta 0: its checksum no longer holds
    db.write_bytes(bytes(raw))
    assert bbolt.read(db).meta.txid == 6  # meta 1's


@pytest.mark.parametrize("offset", [16, 16 + 4, 16 + 56])  # magic, version, checksum
def test_both_metas_damaged_is_refused(tmp_path: Path, offset: int) -> None:
    db = tmp_path / "x.db"
    write_db(db)
    raw = bytearray(db.read_bytes())
    raw[offset] ^= 0xFF
    raw[PS + offset] ^= 0xFF
    db.write_bytes(bytes(raw))
    with pytest.raises(bbolt.BoltError, match="meta"):
        bbolt.read(db)


def test_pages_outside_the_file_and_cycles_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    write_db(db)
    raw = bytearray(db.read_bytes())
    # the branch's second child -> page 2 itself
    struct.pack_into("<Q", raw, 2 * PS + 16 + 16 + 8, 2)
    db.write_bytes(bytes(raw))
    with pytest.raises(bbolt.BoltError):
        bbolt.read(db)
    (tmp_path / "short.db").write_bytes(b"\0" * 100)
    with pytest.raises(bbolt.BoltError, match="too short"):
        bbolt.read(tmp_path / "short.db")


def test_opens_read_only_without_following_symlinks(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    write_db(db)
    before = db.read_bytes(), db.stat().st_mtime_ns
    db.chmod(0o400)
    bbolt.read(db)
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before
    link = tmp_path / "link.db"
    link.symlink_to(db)
    with pytest.raises(OSError):
        bbolt.read(link)
    assert not any(p.name.endswith((".lock", "-journal")) for p in tmp_path.iterdir())
    assert os.stat(db).st_mode & 0o777 == 0o400


def test_fnv1a64_known_values() -> None:
    assert bbolt.fnv1a64(b"") == 0xCBF29CE484222325
    assert bbolt.fnv1a64(b"a") == 0xAF63DC4C8601EC8C
