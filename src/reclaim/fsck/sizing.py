"""Sizing trees: apparent and allocated bytes, each inode once, no symlink followed, never
across a mount point.

Sizing is the slow part of fsck. Directories are handed to a thread pool one by one (not one
tree per thread), so a single huge layer is spread over all workers; scandir and lstat release
the GIL while they wait on the kernel, which is where the time goes with a cold cache.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

DEFAULT_WORKERS = min(16, (os.cpu_count() or 2) * 2)


@dataclass(frozen=True)
class Size:
    apparent: int = 0
    allocated: int = 0
    files: int = 0

    def __add__(self, other: Size) -> Size:
        return Size(self.apparent + other.apparent, self.allocated + other.allocated,
                    self.files + other.files)


class _Tally:
    """Running totals per top-level path, and the inodes with several links already counted."""

    def __init__(self, n: int) -> None:
        self.apparent = [0] * n
        self.allocated = [0] * n
        self.files = [0] * n
        self.linked: set[tuple[int, int]] = set()
        self.lock = threading.Lock()

    def first_time(self, dev: int, ino: int) -> bool:
        with self.lock:
            if (dev, ino) in self.linked:
                return False
            self.linked.add((dev, ino))
            return True


def _scan_dir(path: str, dev: int, index: int, tally: _Tally) -> tuple[list[str], int, int, int]:
    """One directory's entries: their bytes, and the subdirectories to visit next."""
    apparent = allocated = files = 0
    subdirs: list[str] = []
    try:
        it = os.scandir(path)
    except OSError:
        return subdirs, 0, 0, 0  # vanished or unreadable mid-walk: counted as empty
    with it:
        for entry in it:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev != dev:
                continue  # a mount point: another filesystem's bytes are not ours to count
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode) \
                    and not tally.first_time(st.st_dev, st.st_ino):
                continue
            apparent += st.st_size
            allocated += st.st_blocks * 512
            files += 1
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(entry.path)
    return subdirs, apparent, allocated, files


def size_paths(
    paths: list[str],
    *,
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[int], None] | None = None,
) -> list[Size]:
    """The size of each path (a directory tree, a file or a symlink), the path itself included.
    A hard-linked inode is counted once over all paths, for the first path that reaches it."""
    tally = _Tally(len(paths))
    roots: list[tuple[str, int, int]] = []
    for i, path in enumerate(paths):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        tally.apparent[i] += st.st_size
        tally.allocated[i] += st.st_blocks * 512
        tally.files[i] += 1
        if stat.S_ISDIR(st.st_mode):
            roots.append((path, st.st_dev, i))

    done_dirs = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        running: dict[Future[tuple[list[str], int, int, int]], tuple[int, int]] = {}
        for path, dev, i in roots:
            running[pool.submit(_scan_dir, path, dev, i, tally)] = (dev, i)
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                dev, i = running.pop(future)
                subdirs, apparent, allocated, files = future.result()
                tally.apparent[i] += apparent
                tally.allocated[i] += allocated
                tally.files[i] += files
                for sub in subdirs:
                    running[pool.submit(_scan_dir, sub, dev, i, tally)] = (dev, i)
                done_dirs += 1
            if progress is not None:
                progress(done_dirs)
    return [Size(tally.apparent[i], tally.allocated[i], tally.files[i]) for i in range(len(paths))]
