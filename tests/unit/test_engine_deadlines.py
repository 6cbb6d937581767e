"""Every call to an engine has a deadline suited to it, and a call past it is exit 3 and one
line naming the endpoint and the call. The endpoints are real listening sockets that never
answer, on a unix socket and on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reclaim.errors import EngineUnreachable
from reclaim.runtimes.docker import DockerRuntime
from tests import servers
from tests.servers import run_cli, within

# How long a call on a silent endpoint may take here, its deadline included.
SLACK = 5.0


def silent(over: str, sock_dir: Path) -> AbstractContextManager[str]:
    return servers.silent_server(sock_dir / "silent.sock" if over == "unix" else None)


@pytest.mark.parametrize("given, probe, call, prune", [
    (None, 10.0, 120.0, 600.0),
    (30.0, 10.0, 30.0, 30.0),
    (2.5, 2.5, 2.5, 2.5),
    (900.0, 10.0, 900.0, 900.0),
])
def test_deadlines_by_kind_of_call(given: float | None, probe: float, call: float,
                                   prune: float) -> None:
    runtime = DockerRuntime("unix:///nonexistent.sock", timeout=given)
    assert (runtime.probe_timeout, runtime.timeout, runtime.prune_timeout) == (probe, call, prune)


@pytest.mark.parametrize("over", ["unix", "tcp"])
def test_the_probe_on_a_silent_endpoint_fails_at_its_deadline(over: str, sock_dir: Path) -> None:
    with silent(over, sock_dir) as url:
        runtime = DockerRuntime(url, timeout=0.5)
        try:
            with pytest.raises(EngineUnreachable) as caught:
                within(SLACK, runtime.info)
        finally:
            runtime.close()
    assert caught.value.message == f"the engine at {url} did not answer /info within 0.5 s"
    assert caught.value.hint is not None and "--engine" in caught.value.hint


@pytest.mark.parametrize("over", ["unix", "tcp"])
@pytest.mark.parametrize("call, named", [
    (lambda r: r.remove_volume("v1"), "DELETE /volumes/v1"),
    (lambda r: r.remove_container("c" * 64), f"DELETE /containers/{'c' * 64}"),
    (lambda r: r.remove_image_ref("fx/web:1"), "DELETE /images/fx/web:1"),
    (lambda r: r.tag_image("sha256:" + "a" * 64, "fx/web:2"),
     f"POST /images/sha256:{'a' * 64}/tag"),
    (lambda r: r.prune_build_cache(None, None), "POST /build/prune"),
    (lambda r: r.image_users("sha256:" + "a" * 64), "/containers/json"),
    (lambda r: r.image_refs("sha256:" + "a" * 64), f"/images/sha256:{'a' * 64}/json"),
])
def test_every_call_has_a_deadline(over: str, call: Callable[[DockerRuntime], Any],
                                   named: str, sock_dir: Path) -> None:
    with silent(over, sock_dir) as url:
        runtime = DockerRuntime(url, timeout=0.5)
        try:
            with pytest.raises(EngineUnreachable) as caught:
                within(SLACK, lambda: call(runtime))
        finally:
            runtime.close()
    assert caught.value.message == f"the engine at {url} did not answer {named} within 0.5 s"
    assert caught.value.hint is not None and "--timeout" in caught.value.hint


@pytest.mark.parametrize("over", ["unix", "tcp"])
def test_the_event_stream_connect_has_a_deadline(over: str, sock_dir: Path) -> None:
    with silent(over, sock_dir) as url:
        runtime = DockerRuntime(url, timeout=0.5)
        try:
            with pytest.raises(EngineUnreachable) as caught:
                within(SLACK, lambda: next(runtime.events(None)))
        finally:
            runtime.close()
    assert caught.value.message == f"the engine at {url} did not answer /events within 0.5 s"


def test_the_use_watch_connect_has_a_deadline(sock_dir: Path) -> None:
    with silent("unix", sock_dir) as url:
        runtime = DockerRuntime(url, timeout=0.5)
        try:
            watch = within(SLACK, lambda: runtime.watch_uses(datetime.now(UTC)))
            assert watch is not None
            # Not live: apply goes back to asking the engine before every tag.
            assert not watch.live
            watch.close()
        finally:
            runtime.close()


# -- the --timeout flag ----------------------------------------------------------------------

@pytest.mark.parametrize("over", ["unix", "tcp"])
def test_df_on_a_silent_endpoint_fails_at_the_deadline_naming_the_call(
    over: str, sock_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with silent(over, sock_dir) as url:
        code, err, took = run_cli(["--timeout", "0.5", "--engine", url, "df"], capsys)
    assert code == 3
    assert err[0] == f"reclaim: the engine at {url} did not answer /info within 0.5 s", err
    assert len(err) == 2, err  # and the hint
    assert took < SLACK


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "ten"])
def test_a_bad_timeout_is_bad_usage(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, _ = run_cli(["--timeout", value, "df"], capsys)
    assert code == 2
    assert len(err) == 1 and "--timeout" in err[0], err
