"""The host-wide apply lock between real processes: the one refused names the process that
holds the lock, never one that is gone; a child of the holder does not keep it; a state
directory that cannot hold a lock file is one line and exit 2.

Processes are synchronised by what they write to a pipe, never by sleeping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reclaim.errors import EXIT_PARTIAL, EXIT_USAGE, UsageError
from reclaim.lock import LOCK_NAME, LockBusy, apply_lock
from tests.readonly import read_only

HOLD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from reclaim.lock import apply_lock

    with apply_lock(Path(sys.argv[1]), wait=False):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes it
""")

# Takes the lock as a holder does in the moment before it writes its pid (and never does).
HOLD_WITHOUT_WRITING = textwrap.dedent("""
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    sys.stdin.read()
""")

FORK_AND_LEAVE = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from reclaim.lock import apply_lock

    with apply_lock(Path(sys.argv[1]), wait=False):
        ready_r, ready_w = os.pipe()
        if os.fork() == 0:  # the child outlives its parent, holding nothing
            os.close(ready_r)
            print(f"child {os.getpid()}", flush=True)
            os.write(ready_w, b"x")
            sys.stdin.read()
            os._exit(0)
        os.close(ready_w)
        os.read(ready_r, 1)
    # the parent exits here
""")


@contextmanager
def process(script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)
        assert proc.stdout is not None
        proc.stdout.close()


def line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def busy(state: Path) -> str:
    with pytest.raises(LockBusy) as info, apply_lock(state, wait=False):
        pass
    assert info.value.exit_code == EXIT_PARTIAL
    return info.value.message


def test_the_process_refused_names_the_one_holding_the_lock(tmp_path: Path) -> None:
    with process(HOLD, str(tmp_path)) as holder:
        assert line(holder) == "held"
        message = busy(tmp_path)
        assert f"(pid {holder.pid})" in message
        assert "--no-wait" in message
        waited: list[str] = []

        def let_go(message: str) -> None:
            waited.append(message)
            assert holder.stdin is not None
            holder.stdin.close()  # the holder ends, and the lock is this process's

        # The one that waits says whom it waits for, then has the lock once that one ends.
        with apply_lock(tmp_path, wait=True, on_wait=let_go):
            pass
        assert f"(pid {holder.pid})" in waited[0] and "waiting" in waited[0]
    with apply_lock(tmp_path, wait=False):
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert (tmp_path / LOCK_NAME).read_text() == ""  # and emptied on release


@pytest.mark.parametrize("ended", ["exited", "killed"])
def test_a_previous_holder_is_never_named(tmp_path: Path, ended: str) -> None:
    with process(HOLD, str(tmp_path)) as previous:
        assert line(previous) == "held"
        if ended == "killed":  # no chance to empty the file: its pid stays in it
            previous.send_signal(signal.SIGKILL)
    gone = previous.pid
    # A new holder that has the lock and has not written its pid yet.
    with process(HOLD_WITHOUT_WRITING, str(tmp_path / LOCK_NAME)) as holder:
        assert line(holder) == "held"
        message = busy(tmp_path)
    assert f"pid {gone}" not in message
    assert "(pid unknown)" in message


def test_a_child_of_the_holder_does_not_keep_the_lock(tmp_path: Path) -> None:
    with process(FORK_AND_LEAVE, str(tmp_path)) as parent:
        child = int(line(parent).split()[1])
        assert parent.wait(timeout=60) == 0
        os.kill(child, 0)  # the child lives on...
        with apply_lock(tmp_path, wait=False):  # ...and the lock went with its parent
            pass


# -- a state directory that cannot hold the lock -------------------------------------------


def refused(state: Path) -> UsageError:
    with pytest.raises(UsageError) as info, apply_lock(state, wait=False):
        pass
    assert info.value.exit_code == EXIT_USAGE
    assert "\n" not in info.value.message
    return info.value


def test_a_state_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("")
    assert refused(state).message == f"the state directory {state} is not a directory"
    assert "not a directory" in refused(state / "below").message


def test_a_read_only_state_dir_is_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with read_only(state):
        error = refused(state)
    assert error.message.startswith(f"cannot open the apply lock {state / LOCK_NAME}: ")
    assert "--state-dir" in (error.hint or "")
    with read_only(tmp_path):
        assert refused(tmp_path / "new").message.startswith(
            f"cannot create the state directory {tmp_path / 'new'}: ")


def test_a_read_only_lock_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text("")
    with read_only(tmp_path / LOCK_NAME):
        assert refused(tmp_path).message.startswith("cannot open the apply lock")
