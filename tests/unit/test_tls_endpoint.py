"""TLS to a tcp:// endpoint, as the docker client speaks it: DOCKER_TLS_VERIFY verifies the
engine's certificate against DOCKER_CERT_PATH's ca.pem and presents its cert.pem and key.pem.
The server is real (python's http.server behind python's ssl, asking for a client certificate
as `dockerd --tlsverify` does) and the certificates are made by the openssl command line."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from reclaim.errors import EngineUnreachable, UsageError
from reclaim.model import EngineInfo
from reclaim.runtimes.docker import DockerRuntime
from tests import servers
from tests.certs import Certs, make_ca, make_certs
from tests.servers import run_cli, within

SLACK = 10.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _server_context(certs: Certs) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    ctx.load_verify_locations(cafile=certs.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED  # as dockerd --tlsverify: no client cert, no answer
    return ctx


@pytest.fixture
def engine(certs: Certs) -> Iterator[tuple[str, servers.Seen]]:
    with servers.docker_api_server(_server_context(certs)) as (url, seen):
        yield url, seen


@pytest.fixture
def tls_env(certs: Certs, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(certs.client_dir))
    monkeypatch.delenv("DOCKER_TLS", raising=False)
    return certs.client_dir


@pytest.mark.parametrize("scheme", ["tcp", "https"])
def test_docker_tls_verify_connects_verifies_and_presents_the_client_cert(
    engine: tuple[str, servers.Seen], tls_env: Path, scheme: str
) -> None:
    url, seen = engine
    url = url.replace("tcp://", f"{scheme}://")
    runtime = DockerRuntime(url, timeout=5)

    def calls() -> EngineInfo:
        info = runtime.info()
        # Kept alive: the later calls (of the same thread) ride the first one's connection
        # and handshake.
        runtime.image_refs("sha256:" + "a" * 64)
        runtime.remove_volume("v1")
        return info

    try:
        info = within(SLACK, calls)
    finally:
        runtime.close()
    assert (info.version, info.api_version, info.endpoint) == ("26.1.5", "1.45", url)
    assert seen.clients == ["client"]
    assert seen.connections == 1
    assert seen.requests == ["GET /v1.41/info", f"GET /v1.41/images/sha256:{'a' * 64}/json",
                             "DELETE /v1.41/volumes/v1?force=false"]


def test_the_event_stream_over_tls(engine: tuple[str, servers.Seen], tls_env: Path) -> None:
    url, _ = engine
    runtime = DockerRuntime(url, timeout=0.5)
    try:
        event = within(SLACK, lambda: next(runtime.events(None)))
    finally:
        runtime.close()
    assert (event.type, event.action, event.name) == ("image", "tag", "fx/web:2")


def test_df_over_tls_is_exit_0(engine: tuple[str, servers.Seen], tls_env: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    url, seen = engine
    code, err, _ = run_cli(["--engine", url, "df"], capsys)
    assert code == 0, err
    assert seen.clients and set(seen.clients) == {"client"}


def test_a_wrong_ca_is_a_clear_exit_3(
    engine: tuple[str, servers.Seen], tls_env: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, seen = engine
    other = tmp_path / "other"
    shutil.copytree(tls_env, other)
    other_ca, _ = make_ca(tmp_path / "other-ca", "other")
    shutil.copy(other_ca, other / "ca.pem")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(other))
    code, err, took = run_cli(["--engine", url, "df"], capsys)
    assert code == 3, err
    assert err[0].startswith(f"reclaim: TLS with the engine at {url} failed: its certificate "
                             "is not trusted ("), err
    assert len(err) == 2 and "ca.pem" in err[1], err
    assert took < SLACK
    assert seen.requests == []  # nothing was asked of an engine that was not proven


def test_no_client_certificate_is_exit_3(
    engine: tuple[str, servers.Seen], tls_env: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, seen = engine
    only_ca = tmp_path / "only-ca"
    only_ca.mkdir()
    shutil.copy(tls_env / "ca.pem", only_ca / "ca.pem")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(only_ca))
    code, err, _ = run_cli(["--engine", url, "df"], capsys)
    assert code == 3, err
    assert err[0].startswith(f"reclaim: TLS with the engine at {url} failed: "), err
    assert seen.requests == []


def test_a_missing_ca_file_is_bad_usage_naming_it(
    tls_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))
    code, err, _ = run_cli(["--engine", "tcp://127.0.0.1:2376", "df"], capsys)
    assert code == 2, err
    assert err[0].startswith(f"reclaim: TLS: cannot use {tmp_path / 'ca.pem'} ("), err


def test_without_docker_tls_verify_a_tls_endpoint_is_not_spoken_to_in_tls(
    engine: tuple[str, servers.Seen], monkeypatch: pytest.MonkeyPatch
) -> None:
    """tcp:// is plain HTTP unless the environment asks for TLS, as for docker."""
    url, seen = engine
    for name in ("DOCKER_TLS_VERIFY", "DOCKER_TLS", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    runtime = DockerRuntime(url, timeout=2)
    try:
        with pytest.raises(EngineUnreachable):
            within(SLACK, runtime.info)
    finally:
        runtime.close()
    assert seen.handshake_failures and seen.requests == []


def test_plain_http_to_a_tls_engine_says_to_set_docker_tls_verify(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Docker engine started with --tlsverify answers plain HTTP as Go's server does."""
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)

    def go_tls_port(path: str) -> tuple[int, str, bytes]:
        return 400, "text/plain", b"Client sent an HTTP request to an HTTPS server.\n"

    with servers.web_server(go_tls_port) as url:
        code, err, _ = run_cli(["--engine", url, "df"], capsys)
    assert code == 3
    assert err[0] == f"reclaim: the engine at {url} speaks TLS: reclaim spoke plain HTTP", err
    assert "DOCKER_TLS_VERIFY" in err[1]


def test_docker_tls_speaks_tls_without_verifying(
    engine: tuple[str, servers.Seen], certs: Certs, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DOCKER_TLS alone (docker's --tls): encrypted, the engine's certificate unchecked; the
    client certificate is still presented."""
    url, seen = engine
    no_ca = tmp_path / "no-ca"
    no_ca.mkdir()
    for name in ("cert.pem", "key.pem"):
        shutil.copy(certs.client_dir / name, no_ca / name)
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.setenv("DOCKER_TLS", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(no_ca))
    runtime = DockerRuntime(url, timeout=5)
    try:
        assert within(SLACK, runtime.info).version == "26.1.5"
    finally:
        runtime.close()
    assert seen.clients == ["client"]


def test_an_unreadable_client_key_is_bad_usage(tls_env: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tls_env, broken)
    (broken / "key.pem").write_text("not a key\n")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(broken))
    runtime = DockerRuntime("tcp://127.0.0.1:9", timeout=2)
    try:
        with pytest.raises(UsageError) as caught:
            runtime.info()
    finally:
        runtime.close()
    assert str(broken / "key.pem") in caught.value.message
