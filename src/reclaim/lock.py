"""One apply at a time per host: an advisory lock file in the state directory.

flock is released by the kernel when the holder dies, so a crashed apply never leaves a stale
lock behind."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from reclaim.errors import EXIT_PARTIAL, ReclaimError

LOCK_NAME = "apply.lock"


class LockBusy(ReclaimError):
    exit_code = EXIT_PARTIAL


@contextmanager
def apply_lock(state_dir: Path, *, wait: bool,
               on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            message = f"another reclaim apply (pid {holder}) holds {path}"
            if not wait:
                raise LockBusy(message + "; not waiting (--no-wait)") from None
            if on_wait:
                on_wait(message + "; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
