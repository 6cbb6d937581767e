"""A ledger that fails after it opened: a page damaged deep in the file, met by whichever
query reads it; a file that cannot be written any more. The command says so in one line,
names the file, exits 2, and leaves the file as it was."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reclaim.cli import main
from reclaim.commands.session import Session
from reclaim.errors import EXIT_USAGE
from reclaim.recorder import Recorder
from reclaim.runtimes.fake import FakeRuntime
from reclaim.state.store import StateError, Store, failure
from reclaim.state.usage import Ledger
from tests.readonly import read_only

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def iid(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"image-{n}".encode()).hexdigest()


def fake_engine(images: int = 50) -> FakeRuntime:
    fake = FakeRuntime()
    for n in range(images):
        fake.add_image(iid(n), tags=[f"app{n}:1"], layers=[(iid(1000 + n), 1000 + n)])
    return fake


def damage_middle_pages(path: Path) -> bytes:
    """Garbage over every page but the first: the header and the schema read as before, the
    tables do not."""
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    assert len(data) >= 3 * page, "too small a file to damage in the middle"
    damaged = data[:page] + (b"garbage!" * len(data))[: len(data) - page]
    path.write_bytes(damaged)
    return damaged


def test_a_damaged_page_met_by_a_query_is_a_state_error_naming_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "docker-TEST.db"
    ledger = Ledger(Store(path))
    Recorder(ledger).catch_up(fake_engine().inventory(), T0)
    ledger.store.close()
    damage_middle_pages(path)
    ledger = Ledger(Store(path))  # the header is intact: the opening succeeds
    try:
        with pytest.raises(sqlite3.DatabaseError) as info:
            ledger.images()
    finally:
        ledger.store.close()
    mapped = failure(info.value)
    assert isinstance(mapped, StateError)
    assert mapped.exit_code == EXIT_USAGE
    assert str(path) in mapped.message and "damaged" in mapped.message
    assert "--reset-state" in (mapped.hint or "")


def test_errors_that_are_not_about_the_file_stay_unexpected() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a UNIQUE)")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as info:
        conn.execute("INSERT INTO t VALUES (1)")
    assert failure(info.value) is None
    with pytest.raises(sqlite3.OperationalError) as syntax:
        conn.execute("SELEC 1")
    assert failure(syntax.value) is None


# -- through the command line, with a fake engine ---------------------------------------------


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeRuntime:
    """The commands' runtime, a stateful fake: nothing here touches an engine."""
    fake = fake_engine()
    monkeypatch.setattr(Session, "open_runtime", lambda self, **kw: fake)
    return fake


def run(tmp_path: Path, *args: str) -> int:
    return main(["--state-dir", str(tmp_path), *args])


@pytest.mark.parametrize("command", [["df"], ["df", "--json"], ["plan", "--max-age", "30d"],
                                     ["history"]])
def test_a_ledger_damaged_in_its_middle_pages_stops_the_command_in_one_line(
    engine: FakeRuntime, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    assert run(tmp_path, "df") == 0
    (ledger,) = tmp_path.glob("docker-*.db")
    damaged = damage_middle_pages(ledger)
    capsys.readouterr()
    assert run(tmp_path, *command) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"reclaim: the state database {ledger} is damaged")
    assert "--reset-state" in err[1] and len(err) == 2
    assert ledger.read_bytes() == damaged  # never silently reset
    assert run(tmp_path, "--reset-state", *command) == 0


def test_a_read_only_ledger_is_one_line_when_a_write_is_refused(
    engine: FakeRuntime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "df") == 0
    (ledger,) = tmp_path.glob("docker-*.db")
    engine.add_image(iid(999), tags=["new:1"], layers=[(iid(1999), 10)])  # to be recorded
    capsys.readouterr()
    with read_only(ledger):
        assert run(tmp_path, "df") == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"reclaim: cannot write the state database {ledger}")
    assert "Traceback" not in "\n".join(err)


@pytest.mark.parametrize("limit", [str(10**30), str(2**63), "0", "3"])
def test_history_takes_any_limit(engine: FakeRuntime, tmp_path: Path, limit: str) -> None:
    assert run(tmp_path, "history", "-n", limit) == 0


def test_history_refuses_a_negative_limit_in_one_line(
    engine: FakeRuntime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "history", "-n", "-1") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "-1" in err[0]
