"""One apply at a time per host: an advisory lock file in the state directory.

flock is released by the kernel when the holder dies, so a crashed apply never leaves a stale
lock behind.

The holder writes its pid into the lock file while it holds the lock, and empties the file
before it lets go; a process refused the lock reads the pid from there. What it reads can
still be a moment out of date: a new holder that has the lock but has not written yet (the
file then is empty, or names a previous holder that died without emptying it). So a pid is
believed only when that process is alive, and otherwise the reader looks again, briefly,
before saying "unknown".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from reclaim.errors import EXIT_PARTIAL, ReclaimError, UsageError

LOCK_NAME = "apply.lock"
# How long a refused process looks for the holder's pid: the holder writes it right after
# taking the lock, with nothing in between.
_HOLDER_LOOKS = 20
_HOLDER_PAUSE = 0.005

# The lock files this process holds. A child forked while one is held closes its copy: flock
# belongs to the open file, so a child that outlived its parent would otherwise go on holding
# the lock, with the parent's pid, long gone, in the file.
_held: set[int] = set()


def _close_held_in_child() -> None:
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


class LockBusy(ReclaimError):
    exit_code = EXIT_PARTIAL


@contextmanager
def apply_lock(state_dir: Path, *, wait: bool,
               on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    path = state_dir / LOCK_NAME
    fd = _open(state_dir, path)
    try:
        holder = _lock_or_holder(fd)
        if holder is not None:
            message = f"another reclaim apply (pid {holder}) holds {path}"
            if not wait:
                raise LockBusy(message + "; not waiting (--no-wait)")
            if on_wait:
                on_wait(message + "; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        _held.add(fd)
        # Unbuffered writes: the pid is in the file for every reader once pwrite returns.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            # Still holding the lock: the next reader finds an empty file, not this pid.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        _held.discard(fd)
        os.close(fd)


def _open(state_dir: Path, path: Path) -> int:
    hint = "apply needs a state directory it can write (--state-dir, RECLAIM_STATE_DIR)"
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise UsageError(f"the state directory {state_dir} is not a directory",
                         hint=hint) from exc
    except OSError as exc:
        raise UsageError(f"cannot create the state directory {state_dir}: {exc.strerror}",
                         hint=hint) from exc
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot open the apply lock {path}: {exc.strerror}",
                         hint=hint) from exc


def _lock_or_holder(fd: int) -> str | None:
    """None once this process holds the lock; else the pid of the process that does, from
    the lock file, or "unknown" when the file does not name a live process within a few
    looks (the lock is tried again at each: the holder may have let go meanwhile)."""
    for look in range(_HOLDER_LOOKS):
        if look:
            time.sleep(_HOLDER_PAUSE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            return None
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
        if text.isdigit() and _alive(int(text)):
            return text
    return "unknown"


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
