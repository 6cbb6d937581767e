"""ssh:// endpoints, reached as the docker client reaches them: `ssh [-l USER] [-p PORT] -- HOST
docker system dial-stdio`, whose standard input and output carry the engine's API. The `ssh`
here is a stand-in first on PATH that records its arguments and relays its standard streams
to a real Docker-like server on 127.0.0.1, as `docker system dial-stdio` relays the remote
engine's socket."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reclaim.runtimes.docker import DockerRuntime
from tests import servers
from tests.servers import run_cli, within

SLACK = 10.0

RELAY = """\
import json, os, socket, sys, threading
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(json.dumps({"pid": os.getpid(), "args": sys.argv[1:]}) + "\\n")
host, port = os.environ["FAKE_SSH_TARGET"].rsplit(":", 1)
engine = socket.create_connection((host, int(port)))
def up():
    while data := os.read(0, 65536):
        engine.sendall(data)
    engine.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := engine.recv(65536):
    os.write(1, data)
"""


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Puts the stand-in `ssh` first on PATH, relaying to a Docker-like server; yields its
    log (one JSON line per ssh started: its pid and arguments)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(f"#!{sys.executable}\n{RELAY}")
    ssh.chmod(0o755)
    log = tmp_path / "ssh.log"
    with servers.docker_api_server() as (url, _):
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_SSH_LOG", str(log))
        monkeypatch.setenv("FAKE_SSH_TARGET", url.removeprefix("tcp://"))
        yield log


def _started(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_an_ssh_endpoint_runs_docker_system_dial_stdio(fake_ssh: Path) -> None:
    runtime = DockerRuntime("ssh://me@engine.example:2222", timeout=5)

    def calls() -> str:
        version = runtime.info().version
        runtime.remove_volume("v1")  # an answer without a body, on the same relay
        return version

    try:
        assert within(SLACK, calls) == "26.1.5"
    finally:
        runtime.close()
    [started] = _started(fake_ssh)
    assert started["args"] == ["-T", "-l", "me", "-p", "2222", "--", "engine.example",
                               "docker", "system", "dial-stdio"]
    assert _gone(int(str(started["pid"])))  # closing the client ends the relay


def test_the_event_stream_over_ssh(fake_ssh: Path) -> None:
    runtime = DockerRuntime("ssh://engine.example", timeout=0.5)
    try:
        event = within(SLACK, lambda: next(runtime.events(None)))
    finally:
        runtime.close()
    assert (event.action, event.name) == ("tag", "fx/web:2")
    assert all(s["args"] == ["-T", "--", "engine.example", "docker", "system", "dial-stdio"]
               for s in _started(fake_ssh))


def test_df_over_ssh_is_exit_0(fake_ssh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, _ = run_cli(["--engine", "ssh://engine.example", "df"], capsys)
    assert code == 0, err


def test_no_ssh_command_is_an_unreachable_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code, err, _ = run_cli(["--engine", "ssh://engine.example", "df"], capsys)
    assert code == 3
    assert err[0] == "reclaim: cannot reach the Docker engine at ssh://engine.example", err
