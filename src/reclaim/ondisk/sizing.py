"""Sizing trees: apparent and allocated bytes, each inode once, no symlink followed, never
across a mount point.

Sizing is the slow part of fsck. With a warm cache the walk is bound by the CPU (one fstatat
per entry, and the interpreter around it), with a cold cache by the CPU and the disk together:
threads do not help the first, since the interpreter runs one at a time. So a large tree is
sized by forked worker processes:

- the caller's process sizes the first entries itself, breadth first, so small trees (most
  quarantine batches, tests) never pay for starting processes, and what is left over is a
  frontier of directories that is split evenly over the workers;
- each worker walks its directories depth first and, whenever another worker is waiting,
  hands it the older half of its stack (the shallower, larger subtrees) through a queue, so
  an uneven split evens out; a directory with many entries is cut into chunks of names, so a
  single huge directory is spread too;
- per entry there is one fstatat relative to the directory (cheaper than `DirEntry.stat()`,
  which resolves the whole path again: `os.lstat(name)` in the directory a worker has
  changed to, the cheapest call for it) and a few comparisons; only inodes
  with several links are remembered, and the caller's process merges them, so an inode
  reached by names in different workers is counted once.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue
import stat
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Any

# One worker process per CPU keeps every CPU busy with a warm cache; twice that is meant to
# keep reads in flight with a cold cache while other workers compute.
DEFAULT_WORKERS = 2 * (os.cpu_count() or 2)
# Entries the caller's process sizes before starting workers: a tree this small is sized
# sooner than processes start.
INLINE_ENTRIES = 20_000
# A directory with more names than this is sized in chunks that other workers can take.
CHUNK = 2_000
_PROGRESS_EVERY = 0.1  # seconds between progress reports from a worker
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# What is left to size: the index of the top-level path it counts for, the device of that
# path (nothing on another device is counted), a directory, and the names in it to size
# (None: all of them, and the directory counts as visited).
_Job = tuple[int, int, str, "list[str] | None"]


@dataclass(frozen=True)
class Size:
    apparent: int = 0
    allocated: int = 0
    files: int = 0

    def __add__(self, other: Size) -> Size:
        return Size(self.apparent + other.apparent, self.allocated + other.allocated,
                    self.files + other.files)


class _Walker:
    """Totals per top-level path from the directories one process has sized."""

    def __init__(self, n: int, *, here: bool = False) -> None:
        # here: stat names relative to the working directory, changed to each directory in
        # turn; only in a worker process, whose working directory is nobody else's.
        self.here = here
        self.apparent = [0] * n
        self.blocks = [0] * n
        self.files = [0] * n
        # inodes with several links, counted only when the totals are merged: (dev, ino) ->
        # (the lowest path index that reached it, size, blocks)
        self.linked: dict[tuple[int, int], tuple[int, int, int]] = {}
        self.dirs = 0
        self.entries = 0

    def count(self, index: int, st: os.stat_result) -> None:
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            self.link(index, st)
        else:
            self.apparent[index] += st.st_size
            self.blocks[index] += st.st_blocks
            self.files[index] += 1

    def link(self, index: int, st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        seen = self.linked.get(key)
        if seen is None or index < seen[0]:
            self.linked[key] = (index, st.st_size, st.st_blocks)

    def scan(self, job: _Job, out: list[_Job]) -> None:
        """Size the names of one job; the subdirectories found, and the chunks of a large
        directory beyond the first, are appended to `out` as further jobs."""
        index, dev, path, names = job
        if names is None:
            self.dirs += 1
        try:
            fd = os.open(path, _DIR_FLAGS)
        except OSError:
            return  # vanished or unreadable mid-walk: counted as empty
        try:
            if names is None:
                try:
                    names = os.listdir(fd)
                except OSError:
                    return
                if len(names) > CHUNK:
                    out.extend((index, dev, path, names[i:i + CHUNK])
                               for i in range(CHUNK, len(names), CHUNK))
                    names = names[:CHUNK]
            self.entries += len(names)
            prefix = path if path.endswith("/") else path + "/"
            apparent = blocks = files = 0
            if self.here:
                # os.lstat(name) costs less than os.stat(name, dir_fd=..., ...): no keyword
                # arguments to parse, the same fstatat underneath.
                os.fchdir(fd)
                lstat = os.lstat
            else:
                lstat = functools.partial(os.stat, dir_fd=fd, follow_symlinks=False)
            isdir = stat.S_ISDIR
            # The hot loop: most entries are files with one link on the same device, and
            # they cost one call and three comparisons.
            for name in names:
                try:
                    st = lstat(name)
                except OSError:
                    continue
                if st.st_dev != dev:
                    continue  # a mount point: another filesystem's bytes are not ours
                if st.st_nlink > 1 or isdir(st.st_mode):
                    if isdir(st.st_mode):
                        out.append((index, dev, prefix + name, None))
                    else:
                        self.link(index, st)
                        continue
                apparent += st.st_size
                blocks += st.st_blocks
                files += 1
            self.apparent[index] += apparent
            self.blocks[index] += blocks
            self.files[index] += files
        finally:
            os.close(fd)

    def merge(self, apparent: list[int], blocks: list[int], files: list[int],
              linked: dict[tuple[int, int], tuple[int, int, int]]) -> None:
        for i in range(len(self.apparent)):
            self.apparent[i] += apparent[i]
            self.blocks[i] += blocks[i]
            self.files[i] += files[i]
        for key, (index, size, nblocks) in linked.items():
            seen = self.linked.get(key)
            if seen is None or index < seen[0]:
                self.linked[key] = (index, size, nblocks)

    def sizes(self) -> list[Size]:
        apparent, blocks, files = list(self.apparent), list(self.blocks), list(self.files)
        for index, size, nblocks in self.linked.values():
            apparent[index] += size
            blocks[index] += nblocks
            files[index] += 1
        return [Size(a, b * 512, f) for a, b, f in zip(apparent, blocks, files, strict=True)]


class _Shared:
    """What the workers share: a queue of jobs handed over, and under one lock the number of
    workers waiting for work and the number of job lists not finished yet."""

    def __init__(self, ctx: Any, workers: int) -> None:
        self.tasks: Queue[list[_Job] | None] = ctx.Queue()
        self.results: Queue[tuple[Any, ...]] = ctx.Queue()
        self.lock = ctx.Lock()
        self.idle: Any = ctx.RawValue("i", 0)
        self.unfinished: Any = ctx.RawValue("i", workers)
        self.workers = workers

    def give(self, stack: list[_Job]) -> bool:
        """Hand the older half of `stack` to a waiting worker, if one is waiting."""
        with self.lock:
            if self.idle.value == 0:
                return False
            self.idle.value -= 1
            self.unfinished.value += 1  # before the put, so the count never reaches 0 early
        half = len(stack) // 2
        self.tasks.put(stack[:half])
        del stack[:half]
        return True

    def finished(self) -> None:
        """One job list is done and this worker waits for another; the last one out tells
        everybody to stop."""
        with self.lock:
            self.unfinished.value -= 1
            self.idle.value += 1
            last = self.unfinished.value == 0
        if last:
            for _ in range(self.workers):
                self.tasks.put(None)


def _work(me: int, n: int, jobs: list[_Job], shared: _Shared) -> None:
    """A worker process: size its share, take handed-over shares until told to stop, then send
    its totals."""
    try:
        walker = _Walker(n, here=True)
        reported = 0
        last = time.monotonic()
        item: list[_Job] | None = jobs
        while item is not None:
            stack = item[::-1]  # popped from the end: the first job first
            while stack:
                walker.scan(stack.pop(), stack)
                # idle is read without the lock: a stale value only delays a hand-over
                if len(stack) > 1 and shared.idle.value:
                    shared.give(stack)
                now = time.monotonic()
                if now - last >= _PROGRESS_EVERY:
                    shared.results.put(("progress", walker.dirs - reported))
                    reported, last = walker.dirs, now
            shared.finished()
            item = shared.tasks.get()
        shared.results.put(("totals", me, walker.apparent, walker.blocks, walker.files,
                            walker.linked, walker.dirs - reported))
    except BaseException as exc:  # the parent must hear of it rather than wait forever
        shared.results.put(("error", me, f"{type(exc).__name__}: {exc}"))


def size_paths(
    paths: list[str],
    *,
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[int], None] | None = None,
    inline: int = INLINE_ENTRIES,
) -> list[Size]:
    """The size of each path (a directory tree, a file or a symlink), the path itself included.
    A hard-linked inode is counted once over all paths, for the lowest-indexed path that
    reaches it. `progress` is called with the number of directories sized so far. Up to
    `workers` processes are forked once `inline` entries have been sized here."""
    walker = _Walker(len(paths))
    pending: deque[_Job] = deque()
    for i, path in enumerate(paths):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        walker.count(i, st)
        if stat.S_ISDIR(st.st_mode):
            # absolute: workers change their working directory
            pending.append((i, st.st_dev, os.path.abspath(path), None))

    last = time.monotonic()
    while pending and (workers <= 1 or walker.entries < inline):
        out: list[_Job] = []
        walker.scan(pending.popleft(), out)
        pending.extend(out)
        if progress is not None and time.monotonic() - last >= _PROGRESS_EVERY:
            progress(walker.dirs)
            last = time.monotonic()
    if pending:
        _fan_out(walker, list(pending), workers, progress)
    if progress is not None:
        progress(walker.dirs)
    return walker.sizes()


def _fan_out(walker: _Walker, frontier: list[_Job], workers: int,
             progress: Callable[[int], None] | None) -> None:
    """Size the frontier in worker processes and merge their totals into `walker`."""
    # fork: the workers start at once and inherit everything they need; they only call os
    # functions and the queues, so locks held by other threads at the fork do not matter.
    ctx = multiprocessing.get_context("fork")
    shared = _Shared(ctx, workers)
    procs = [ctx.Process(target=_work, daemon=True,
                         args=(k, len(walker.apparent), frontier[k::workers], shared))
             for k in range(workers)]
    for p in procs:
        p.start()
    waiting = set(range(workers))
    try:
        while waiting:
            # A worker that had already exited before this wait and whose totals are still
            # not in the queue afterwards never sent them.
            gone = {k for k in waiting if procs[k].exitcode is not None}
            try:
                msg = shared.results.get(timeout=1.0)
            except queue.Empty:
                if gone:
                    raise RuntimeError("a sizing worker process died") from None
                continue
            if msg[0] == "progress":
                walker.dirs += msg[1]
                if progress is not None:
                    progress(walker.dirs)
            elif msg[0] == "totals":
                _, me, apparent, blocks, files, linked, dirs = msg
                walker.merge(apparent, blocks, files, linked)
                walker.dirs += dirs
                waiting.discard(me)
            else:
                raise RuntimeError(f"a sizing worker failed: {msg[2]}")
    finally:
        for p in procs:
            if waiting:
                p.terminate()
            p.join()
        shared.tasks.close()
        shared.results.close()
