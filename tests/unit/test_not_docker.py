"""An endpoint that answers, but not as a Docker engine does (a web server's page, a 404 to
/info, another API's JSON, another protocol), is exit 3 and one line: "not a Docker engine".
The servers are real: python's http.server on a unix socket and on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from reclaim.errors import EngineUnsupported
from reclaim.runtimes.docker import DockerRuntime
from tests import servers
from tests.servers import run_cli

NOT_DOCKER = {
    "an HTML page": servers.html_page,
    "404 to /info": servers.html_not_found,
    "JSON of another API": servers.json_not_docker,
}


@pytest.mark.parametrize("over", ["unix", "tcp"])
@pytest.mark.parametrize("what", list(NOT_DOCKER))
def test_a_web_server_is_not_a_docker_engine(
    what: str, over: str, sock_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = sock_dir / "web.sock" if over == "unix" else None
    with servers.web_server(NOT_DOCKER[what], path) as url:
        code, err, _ = run_cli(["--engine", url, "df"], capsys)
    assert code == 3, err
    assert err[0] == f"reclaim: not a Docker engine at {url}", err
    assert len(err) == 2 and "--engine URL" in err[1], err  # the hint
    assert not any("html" in line.lower() for line in err)


@pytest.mark.parametrize("scheme", ["http", "tcp"])
def test_a_web_server_by_http_url_is_not_a_docker_engine(
    scheme: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with servers.web_server(servers.html_page) as url:
        url = url.replace("tcp://", f"{scheme}://")
        code, err, _ = run_cli(["--engine", url, "df"], capsys)
    assert code == 3
    assert err[0] == f"reclaim: not a Docker engine at {url}", err


@pytest.mark.parametrize("over", ["unix", "tcp"])
def test_a_server_of_another_protocol_is_not_a_docker_engine(
    over: str, sock_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = sock_dir / "ssh.sock" if over == "unix" else None
    with servers.banner_server(b"SSH-2.0-OpenSSH_9.2p1\r\n", path) as url:
        code, err, _ = run_cli(["--engine", url, "df"], capsys)
    assert code == 3
    assert err[0] == f"reclaim: not a Docker engine at {url}", err


def test_not_docker_is_an_unsupported_engine(sock_dir: Path) -> None:
    with servers.web_server(servers.html_page, sock_dir / "web.sock") as url:
        runtime = DockerRuntime(url)
        try:
            with pytest.raises(EngineUnsupported):
                runtime.info()
        finally:
            runtime.close()
