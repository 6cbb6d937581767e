"""The error boundary: expected failures are one line and the contract's exit code."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from reclaim.cli import main


def test_unreachable_engine_exits_3_and_names_the_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"unix://{tmp_path}/nothing.sock"
    assert main(["--engine", url, "df"]) == 3
    err = capsys.readouterr().err
    assert url in err
    assert "--engine" in err
    assert "Traceback" not in err


def test_permission_denied_on_the_socket_exits_3_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "engine.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    real_connect = socket.socket.connect

    def refuse(self: socket.socket, address: object) -> None:
        if address == str(path):
            raise PermissionError(13, "Permission denied")
        real_connect(self, address)  # type: ignore[arg-type]

    # Root may open any socket, so the refusal a non-root user meets is simulated here.
    monkeypatch.setattr(socket.socket, "connect", refuse)
    try:
        assert main(["--engine", f"unix://{path}", "df"]) == 3
    finally:
        server.close()
    err = capsys.readouterr().err
    assert "permission denied" in err
    assert "group" in err


@pytest.mark.parametrize("argv", [["df", "--no-such-flag"], ["no-such-command"],
                                  ["--runtime", "lxc", "df"]])
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_unsupported_runtime_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runtime", "podman", "df"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "podman" in err[0]
