"""fsck's sizer on real trees built here: each inode once (also when its names are sized by
different worker processes), no symlink followed, no mount point crossed, totals equal to an
independent walk, progress reported, and a failing worker reported rather than waited for."""

from __future__ import annotations

import os
import random
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reclaim.ondisk import sizing
from reclaim.ondisk.sizing import Size, size_paths


def expected(paths: list[Path]) -> list[Size]:
    """The same totals by a plain walk: lstat of everything under each path that is on the
    path's device, an inode with several links counted for the first path that reaches it."""
    seen: set[tuple[int, int]] = set()
    out = []
    for top in paths:
        try:
            top_st = os.lstat(top)
        except FileNotFoundError:
            out.append(Size())
            continue
        sts = [top_st]
        todo = [str(top)] if stat.S_ISDIR(top_st.st_mode) else []
        while todo:
            d = todo.pop()
            for name in os.listdir(d):
                st = os.lstat(os.path.join(d, name))
                if st.st_dev == top_st.st_dev:
                    sts.append(st)
                    if stat.S_ISDIR(st.st_mode):
                        todo.append(os.path.join(d, name))
        apparent = blocks = files = 0
        for st in sts:
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            apparent += st.st_size
            blocks += st.st_blocks
            files += 1
        out.append(Size(apparent, blocks * 512, files))
    return out


def generate(root: Path, seed: int) -> None:
    """Nested directories with files of many sizes, sparse files, hard links inside and across
    directories, symlinks to files and directories, empty directories, one wide directory."""
    rnd = random.Random(seed)
    dirs = [root]
    root.mkdir()
    for i in range(40):
        d = rnd.choice(dirs) / f"d{i}"
        d.mkdir()
        dirs.append(d)
    files: list[Path] = []
    for i in range(300):
        f = rnd.choice(dirs) / f"f{i}"
        f.write_bytes(b"z" * rnd.choice([0, 1, 100, 4095, 4096, 4097, 70000]))
        files.append(f)
    for i in range(5):
        sparse = rnd.choice(dirs) / f"sparse{i}"
        with open(sparse, "wb") as fh:
            fh.seek(5_000_000 + i)
            fh.write(b"end")
    for i in range(30):
        os.link(rnd.choice(files), rnd.choice(dirs) / f"hl{i}")
    for i in range(20):
        target = rnd.choice(files + dirs)
        (rnd.choice(dirs) / f"sl{i}").symlink_to(target)
    wide = root / "wide"
    wide.mkdir()
    for i in range(120):
        (wide / f"w{i}").write_bytes(b"w" * i)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Workers are forked, so they see the patched value: every directory of more than 7
    # names is cut into chunks that other workers may take.
    monkeypatch.setattr(sizing, "CHUNK", 7)
    yield


@pytest.mark.parametrize(("workers", "inline"), [(1, 0), (2, 0), (3, 0), (4, 50)])
def test_totals_equal_an_independent_walk(tmp_path: Path, small_chunks: None, workers: int,
                                          inline: int) -> None:
    generate(tmp_path / "t", seed=7)
    (tmp_path / "alone").write_bytes(b"a" * 1234)
    paths = [tmp_path / "t", tmp_path / "t" / "d3", tmp_path / "alone", tmp_path / "missing"]
    got = size_paths([str(p) for p in paths], workers=workers, inline=inline)
    want = expected(paths)
    assert got == want
    assert got[0].allocated < got[0].apparent  # the sparse files are mostly holes
    assert got[3] == Size()  # a path that does not exist counts as empty


def test_apparent_bytes_agree_with_du(tmp_path: Path) -> None:
    generate(tmp_path / "t", seed=11)
    [got] = size_paths([str(tmp_path / "t")], workers=2, inline=0)
    du_b = subprocess.run(["du", "-sbx", str(tmp_path / "t")], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    du_alloc = subprocess.run(["du", "-sx", "-B1", str(tmp_path / "t")], capture_output=True,
                              text=True, check=True).stdout.split()[0]
    assert (got.apparent, got.allocated) == (int(du_b), int(du_alloc))


def test_hard_links_in_different_workers_count_once(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "s1").mkdir(parents=True)
    (root / "s2").mkdir()
    (root / "s1" / "x").write_bytes(b"x" * 50000)
    os.link(root / "s1" / "x", root / "s2" / "y")
    os.link(root / "s1" / "x", root / "s2" / "z")
    # inline=1: this process sizes the root only; s1 and s2 are the frontier, split over the
    # two workers (s1 to the first, s2 to the second), each of them sees a name of the inode
    [got] = size_paths([str(root)], workers=2, inline=1)
    dirs = sum(os.lstat(d).st_size for d in (root, root / "s1", root / "s2"))
    assert got.apparent == dirs + 50000
    assert got.files == 4  # r, s1, s2, one inode for x, y and z

    # across top-level paths, sized by different workers: counted for the first path only
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "big").write_bytes(b"b" * 80000)
    os.link(a / "big", b / "big")
    got_a, got_b = size_paths([str(a), str(b)], workers=2, inline=0)
    assert got_a.apparent == os.lstat(a).st_size + 80000
    assert got_b.apparent == os.lstat(b).st_size
    assert (got_a.files, got_b.files) == (2, 1)
    # the lower index wins whichever worker reports first
    got_b, got_a = size_paths([str(b), str(a)], workers=2, inline=0)
    assert got_b.apparent == os.lstat(b).st_size + 80000
    assert got_a.apparent == os.lstat(a).st_size


@pytest.mark.parametrize("workers", [1, 2])
def test_symlinks_are_not_followed(tmp_path: Path, workers: int) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"y" * 300000)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "to-file").symlink_to(outside / "big")
    (tree / "to-dir").symlink_to(outside)
    [got] = size_paths([str(tree)], workers=workers, inline=0)
    links = len(str(outside / "big")) + len(str(outside))
    assert got.apparent == os.lstat(tree).st_size + links
    assert got.files == 3
    # a path that is itself a symlink counts as the link
    [link] = size_paths([str(tree / "to-dir")], workers=workers, inline=0)
    assert link == Size(len(str(outside)), os.lstat(tree / "to-dir").st_blocks * 512, 1)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tree" / "mnt"
    mnt.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("workers", [1, 3])
def test_a_mount_point_is_not_crossed(tmp_path: Path, tmpfs: Path, workers: int) -> None:
    tree = tmpfs.parent
    (tree / "here").write_bytes(b"h" * 1000)
    (tmpfs / "there").write_bytes(b"t" * 2_000_000)
    (tmpfs / "sub").mkdir()
    (tmpfs / "sub" / "deeper").write_bytes(b"d" * 1000)
    [got] = size_paths([str(tree)], workers=workers, inline=0)
    assert got == Size(os.lstat(tree).st_size + 1000,
                       (os.lstat(tree).st_blocks + os.lstat(tree / "here").st_blocks) * 512, 2)
    du_b = subprocess.run(["du", "-sbx", str(tree)], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    assert got.apparent == int(du_b)


@pytest.mark.parametrize(("workers", "inline"), [(1, 0), (3, 0), (2, 10**9)])
def test_progress_counts_every_directory(tmp_path: Path, small_chunks: None, workers: int,
                                        inline: int) -> None:
    generate(tmp_path / "t", seed=3)
    ndirs = sum(1 for _ in os.walk(tmp_path / "t"))
    calls: list[int] = []
    size_paths([str(tmp_path / "t")], workers=workers, inline=inline, progress=calls.append)
    assert calls, "progress was never reported"
    assert calls == sorted(calls)
    assert calls[-1] == ndirs


def test_a_failing_worker_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generate(tmp_path / "t", seed=5)

    def broken(self: object, job: object, out: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(sizing._Walker, "scan", broken)  # inherited by the forked workers
    with pytest.raises(RuntimeError, match="disk on fire"):
        size_paths([str(tmp_path / "t")], workers=2, inline=0)


def test_relative_paths_in_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # workers change their working directory as they go; a relative path must still mean
    # what it meant to the caller
    generate(tmp_path / "t", seed=13)
    monkeypatch.chdir(tmp_path)
    got = size_paths(["t", "t/wide"], workers=2, inline=0)
    assert got == expected([tmp_path / "t", tmp_path / "t" / "wide"])
    assert os.getcwd() == str(tmp_path)
