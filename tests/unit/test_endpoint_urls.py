"""A malformed engine URL, from --engine or DOCKER_HOST, is bad usage: one line naming where it
came from, exit 2, before anything connects."""

from __future__ import annotations

import pytest

from reclaim.errors import UsageError
from reclaim.runtimes.docker import resolve_endpoint
from tests.servers import run_cli

MALFORMED = ["http://[::1", "foo://x", "", "tcp://host:notaport", "tcp://host:99999",
             "tcp://host", "tcp://", "unix://", "/var/run/docker.sock", "ssh://host/path",
             "tcp://host:2375?x=1", "tcp://a b:2375"]


@pytest.mark.parametrize("url", MALFORMED)
def test_a_malformed_engine_url_is_bad_usage_naming_the_flag(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err, _ = run_cli(["--engine", url, "df"], capsys)
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith(f"reclaim: --engine {url!r}: not an engine URL"), err
    assert "unix:///PATH" in err[0]


def test_a_malformed_docker_host_is_named_as_such(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "http://[::1")
    code, err, _ = run_cli(["df"], capsys)
    assert code == 2
    assert len(err) == 1 and "DOCKER_HOST 'http://[::1'" in err[0], err


@pytest.mark.parametrize("url", ["unix:///run/docker.sock", "unix://relative.sock",
                                 "tcp://127.0.0.1:2375", "tcp://[::1]:2375",
                                 "http://engine:2375", "https://engine.example:2376/",
                                 "ssh://me@engine", "ssh://engine:2222", "engine:2375"])
def test_well_formed_engine_urls_are_taken_as_given(url: str) -> None:
    assert resolve_endpoint(url) == url


def test_no_flag_and_no_docker_host_is_the_default_socket(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert resolve_endpoint(None) == "unix:///var/run/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert resolve_endpoint(None) == "tcp://127.0.0.1:2375"
    with pytest.raises(UsageError):
        resolve_endpoint("")  # given, and empty: not the same as not given
