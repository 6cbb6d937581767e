"""Where the output goes wrong: a closed pipe, a full disk, a closed standard output, a locale
that cannot show every character, a nonsensical terminal width. Each is an exit code and at
most one line, never a traceback, and the tables still print where they can."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reclaim import output
from reclaim.cli import main
from reclaim.df import DfReport, build_report
from reclaim.errors import EXIT_CLOSED_PIPE, EXIT_IOERR, ClosedPipe, OutputFailed
from reclaim.model import Volume
from reclaim.runtimes.fake import FakeRuntime

NOW = datetime(2026, 3, 1, tzinfo=UTC)
ANONYMOUS = "f" * 64  # shown shortened, with an ellipsis


def report() -> DfReport:
    fake = FakeRuntime()
    fake.add_image("sha256:" + "a" * 64, tags=["web:1"], layers=[("sha256:" + "1" * 64, 4096)])
    fake.add_volume(Volume(ANONYMOUS, "local", {}, True, "/v", 10, ()))
    return build_report(fake.inventory(), {}, NOW)


@pytest.fixture
def stdout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("COLUMNS", raising=False)
    yield


def test_a_width_of_zero_columns_still_prints_the_tables(
    stdout: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for nonsense in ("0", "-3", "abc", "99999999999999999999", "3"):
        monkeypatch.setenv("COLUMNS", nonsense)
        output.show_df(report(), verbose=True)
        out = capsys.readouterr().out
        assert "RECLAIMABLE" in out, nonsense
        assert "web:1" in out, nonsense
        assert max(len(line) for line in out.splitlines()) > 40, nonsense


def test_a_sensible_width_is_taken(
    stdout: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    output.show_df(report(), verbose=True)
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 60


def test_an_ascii_only_locale_degrades_instead_of_crashing(
    stdout: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = io.BytesIO()
    ascii_out = io.TextIOWrapper(raw, encoding="ascii", errors="strict")
    monkeypatch.setattr(sys, "stdout", ascii_out)
    output.show_df(report(), verbose=True)
    ascii_out.flush()
    text = raw.getvalue().decode("ascii")
    assert "RECLAIMABLE" in text
    assert ANONYMOUS[:12] + "?" in text  # the ellipsis, replaced


def test_a_full_disk_behind_stdout_is_an_output_error(
    stdout: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open("/dev/full", "w") as full:
        monkeypatch.setattr(sys, "stdout", full)
        with pytest.raises(OutputFailed, match="No space left on device") as info:
            output.show_df(report(), verbose=False)
        assert info.value.exit_code == EXIT_IOERR == 74
        with pytest.raises(OutputFailed):
            output.emit_json(report().to_json())
        output.discard_stdout()  # what is still buffered goes nowhere, without an error


def test_a_closed_pipe_is_told_apart(stdout: None, monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "w") as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)
        with pytest.raises(ClosedPipe) as info:
            output.show_df(report(), verbose=True)
        assert info.value.exit_code == EXIT_CLOSED_PIPE == 141
        with pytest.raises(ClosedPipe):
            output.emit_json(report().to_json())
        output.discard_stdout()


def test_a_closed_stdout_is_an_output_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", None)
    with pytest.raises(OutputFailed, match="standard output is closed"):
        output.show_df(report(), verbose=False)
    with pytest.raises(OutputFailed, match="standard output is closed"):
        output.emit_json({})


# -- the whole command, as a shell runs it ----------------------------------------------------
# `fsck --purge` on an empty data root prints a line without asking any engine.


def reclaim(tmp_path: Path, *args: str, **popen: object) -> subprocess.CompletedProcess[str]:
    (tmp_path / "data").mkdir(exist_ok=True)
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "reclaim", "--state-dir", str(tmp_path / "state"), "fsck",
         "--data-root", str(tmp_path / "data"), "--purge", *args],
        stderr=subprocess.PIPE, text=True, timeout=120, check=False, **popen,
    )


@pytest.mark.parametrize("as_json", [False, True])
def test_stdout_on_a_full_disk_exits_74_with_one_line(tmp_path: Path, as_json: bool) -> None:
    with open("/dev/full", "w") as full:
        done = reclaim(tmp_path, *(["--json"] if as_json else []), stdout=full)
    assert done.returncode == 74
    assert done.stderr.splitlines() == ["reclaim: write error: No space left on device"]


def test_a_closed_stdout_exits_74_with_one_line(tmp_path: Path) -> None:
    done = reclaim(tmp_path, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(1))
    assert done.returncode == 74
    assert done.stderr.splitlines() == ["reclaim: write error: standard output is closed"]


@pytest.mark.parametrize("as_json", [False, True])
def test_a_closed_pipe_ends_quietly_with_141(tmp_path: Path, as_json: bool) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write
    try:
        done = reclaim(tmp_path, *(["--json"] if as_json else []), stdout=write_end)
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert done.stderr == ""  # no traceback, no "Exception ignored" at exit


def test_the_boundary_maps_a_closed_stdout_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(sys, "stdout", None)
    code = main(["--state-dir", str(tmp_path / "state"), "fsck", "--data-root",
                 str(tmp_path / "data"), "--purge"])
    assert code == 74
    assert capsys.readouterr().err.splitlines() == [
        "reclaim: write error: standard output is closed"]
