"""The command line at its edges, on real engines: output that cannot be written, a locale or
a terminal width that cannot show the tables as they are, a damaged or read-only ledger, and
numbers out of any range. Each is one line and the contract's exit code, never a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Seeded
from tests.readonly import read_only

pytestmark = pytest.mark.engine


def reclaim(seeded: Seeded, *args: str, env: dict[str, str] | None = None,
            **popen: Any) -> subprocess.CompletedProcess[str]:
    """The real command line, as a shell runs it (whole process)."""
    popen.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        [sys.executable, "-m", "reclaim", "--engine", seeded.engine.url, *args],
        stderr=subprocess.PIPE, text=True, timeout=300, check=False,
        env={**os.environ, **(env or {})}, **popen,
    )


# -- output ----------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["df"], ["df", "-v"], ["df", "--json"]])
def test_df_into_a_full_disk_exits_74_with_one_line(seeded: Seeded, args: list[str]) -> None:
    with open("/dev/full", "w") as full:
        done = reclaim(seeded, *args, stdout=full)
    assert done.returncode == 74, done.stderr
    assert done.stderr.splitlines() == ["reclaim: write error: No space left on device"]


def test_df_with_stdout_closed_exits_74_with_one_line(seeded: Seeded) -> None:
    done = reclaim(seeded, "df", stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(1))
    assert done.returncode == 74, done.stderr
    assert done.stderr.splitlines() == ["reclaim: write error: standard output is closed"]


@pytest.mark.parametrize("args", [["df"], ["df", "-v"], ["df", "--json"]])
def test_df_into_a_closed_pipe_ends_quietly(seeded: Seeded, args: list[str]) -> None:
    # `reclaim df | head -1`, with head gone before the first write.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = reclaim(seeded, *args, stdout=write_end)
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert done.stderr == ""  # no traceback, no "Exception ignored" at exit


def test_df_in_an_ascii_only_locale_replaces_what_it_cannot_show(seeded: Seeded) -> None:
    done = reclaim(seeded, "df", "-v",
                   env={"LANG": "C", "LC_ALL": "C", "PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr
    assert "RECLAIMABLE" in done.stdout
    # Anonymous volumes' names are shortened with an ellipsis, which ASCII has not.
    assert any(len(line) > 12 and "?" in line for line in done.stdout.splitlines())


@pytest.mark.parametrize("columns", ["0", "-1", "x"])
def test_df_with_a_nonsensical_width_prints_the_table(seeded: Seeded, columns: str) -> None:
    done = reclaim(seeded, "df", env={"COLUMNS": columns})
    assert done.returncode == 0, done.stderr
    assert "RECLAIMABLE" in done.stdout
    assert "Images" in done.stdout


# -- the ledger --------------------------------------------------------------------------------

# A policy that deletes nothing even where it runs to the end: everything was seen within
# the last ten years. Only the failure is under test; the seeded engine is shared.
HARMLESS = ["--min-age", "3650d", "--quota", "0", "--yes"]


def images_now(seeded: Seeded) -> dict[str, list[str]]:
    client = seeded.client()
    try:
        return {i["Id"]: sorted(i.get("RepoTags") or []) for i in client.images(all=True)}
    finally:
        client.close()


def damage_middle_pages(path: Path) -> bytes:
    """Garbage over every page but the first: the header and the schema read as before, the
    tables do not."""
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    assert len(data) >= 3 * page
    damaged = data[:page] + (b"garbage!" * len(data))[: len(data) - page]
    path.write_bytes(damaged)
    return damaged


@pytest.mark.parametrize("command", [["df"], ["df", "--json"], ["plan", "--max-age", "30d"],
                                     ["apply", *HARMLESS]])
def test_a_ledger_damaged_in_its_middle_is_one_line_and_exit_2(
    seeded: Seeded, tmp_path: Path, command: list[str]
) -> None:
    assert reclaim(seeded, "--state-dir", str(tmp_path), "df").returncode == 0
    (ledger,) = tmp_path.glob("docker-*.db")
    damaged = damage_middle_pages(ledger)
    before = images_now(seeded)
    done = reclaim(seeded, "--state-dir", str(tmp_path), *command)
    assert done.returncode == 2, done.stderr
    err = done.stderr.splitlines()
    assert err[0].startswith(f"reclaim: the state database {ledger} is damaged"), err
    assert "--reset-state" in done.stderr
    assert "Traceback" not in done.stderr
    assert ledger.read_bytes() == damaged  # never silently reset
    assert images_now(seeded) == before


@pytest.mark.parametrize("limit", [str(10**30), "0"])
def test_history_takes_a_limit_of_any_size(seeded: Seeded, tmp_path: Path, limit: str) -> None:
    done = reclaim(seeded, "--state-dir", str(tmp_path), "history", "-n", limit)
    assert done.returncode == 0, done.stderr


def test_history_refuses_a_negative_limit(seeded: Seeded, tmp_path: Path) -> None:
    done = reclaim(seeded, "--state-dir", str(tmp_path), "history", "-n", "-5")
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1


# -- a state directory apply cannot write -------------------------------------------------------


def apply_refused(seeded: Seeded, state: Path) -> str:
    before = images_now(seeded)
    done = reclaim(seeded, "--state-dir", str(state), "apply", *HARMLESS)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert images_now(seeded) == before
    return done.stderr.splitlines()[0]


def test_apply_with_a_state_dir_that_is_a_file(seeded: Seeded, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("")
    assert apply_refused(seeded, state) == (
        f"reclaim: the state directory {state} is not a directory")


def test_apply_with_a_read_only_state_dir(seeded: Seeded, tmp_path: Path) -> None:
    assert reclaim(seeded, "--state-dir", str(tmp_path), "df").returncode == 0
    with read_only(tmp_path):  # no lock file in it yet
        assert apply_refused(seeded, tmp_path).startswith(
            f"reclaim: cannot open the apply lock {tmp_path / 'apply.lock'}")
    done = reclaim(seeded, "--state-dir", str(tmp_path), "apply", *HARMLESS)
    assert done.returncode == 0, done.stderr
    with read_only(tmp_path):  # the lock file there, the ledger's companions not
        assert "the state database" in apply_refused(seeded, tmp_path)


def test_apply_with_a_read_only_ledger(seeded: Seeded, tmp_path: Path) -> None:
    assert reclaim(seeded, "--state-dir", str(tmp_path), "df").returncode == 0
    (ledger,) = tmp_path.glob("docker-*.db")
    # Forgotten images: the catch-up before planning has to write them again.
    with sqlite3.connect(ledger) as db:
        db.execute("DELETE FROM images")
    with read_only(ledger):
        assert apply_refused(seeded, tmp_path).startswith(
            f"reclaim: cannot write the state database {ledger}")
