"""apply's live use watch replays the engine's events from this host's time, which is exact
only on the engine's own clock: it is opened for a unix socket, never for a remote engine,
where apply re-checks before every tag instead."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reclaim.runtimes.docker import DockerRuntime
from tests import servers


@pytest.mark.parametrize("url", ["tcp://127.0.0.1:2375", "https://engine.example:2376",
                                 "ssh://me@engine.example"])
def test_no_use_watch_for_a_remote_engine(url: str) -> None:
    runtime = DockerRuntime(url)
    try:
        assert runtime.watch_uses(datetime.now(UTC)) is None
    finally:
        runtime.close()


def test_a_use_watch_for_a_unix_socket(sock_dir: Path) -> None:
    with servers.silent_server(sock_dir / "s.sock") as url:
        runtime = DockerRuntime(url, timeout=0.5)
        try:
            watch = runtime.watch_uses(datetime.now(UTC))
            assert watch is not None
            watch.close()
        finally:
            runtime.close()
