"""What a local volume holds on disk, counted as the engine and `du -sbx` count it."""

from __future__ import annotations

import os


def _volume_bytes(mountpoint: str) -> tuple[int | None, int | None]:
    """The bytes of the files in a local volume (what the engine's own figure counts), and
    what removing it frees as `du -sbx` counts it: those, every directory under `_data` and
    `_data` itself, and the volume's own directory (`volumes/<name>/`) with what else it
    holds (`opts.json`). One walk; None where the volume cannot be read."""
    walked = _tree_bytes(mountpoint)
    if walked is None:
        return None, None
    files, directories = walked
    head, tail = os.path.split(mountpoint.rstrip("/"))
    if tail != "_data":
        return files, files + directories
    try:
        own = os.lstat(head).st_size
        with os.scandir(head) as entries:
            for entry in entries:
                if entry.name != "_data" and not entry.is_dir(follow_symlinks=False):
                    own += entry.stat(follow_symlinks=False).st_size
    except OSError:
        return files, None
    return files, files + directories + own


def _tree_bytes(path: str) -> tuple[int, int] | None:
    """Apparent bytes under `path`: of its files (and symlinks), each inode once, and of its
    directories, `path` itself included; never following symlinks or crossing into another
    filesystem (a volume's `_data` can hold an NFS mount)."""
    if not path:
        return None
    try:
        top = os.lstat(path)
    except OSError:
        return None
    seen: set[tuple[int, int]] = set()
    total = 0
    directories = top.st_size
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev != top.st_dev:
                continue
            if entry.is_dir(follow_symlinks=False):
                directories += st.st_size
                stack.append(entry.path)
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_size
    return total, directories
