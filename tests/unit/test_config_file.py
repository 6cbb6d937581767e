"""Config files that are not what a config file is (another encoding, a device, a bomb) are one
line and exit 2, never a traceback or a read without end."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from reclaim.cli import main


def run_with_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["--config", str(path), "--engine", "unix:///nonexistent.sock", "plan"])
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_config_file_that_is_not_utf8_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes('[images]\nkeep = ["café:*"]\n'.encode("latin-1"))
    code, err = run_with_config(config, capsys)
    assert code == 2
    assert len(err) == 1 and "not UTF-8" in err[0] and str(config) in err[0]


def test_a_config_that_never_ends_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    def limit_memory() -> None:
        # An unbounded read of /dev/zero fails here rather than taking the machine's memory.
        resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))

    done = subprocess.run(
        [sys.executable, "-m", "reclaim", "--config", "/dev/zero", "plan"],
        capture_output=True, text=True, timeout=120, check=False, preexec_fn=limit_memory,
        env={**os.environ, "RECLAIM_STATE_DIR": str(tmp_path)},
    )
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "/dev/zero" in err[0] and "larger than" in err[0]


def test_a_config_nested_too_deeply_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "deep.toml"
    config.write_text("[images]\nkeep = " + "[" * 50_000 + "\n")
    code, err = run_with_config(config, capsys)
    assert code == 2
    assert len(err) == 1 and "not valid TOML" in err[0]
