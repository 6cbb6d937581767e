"""The private sandbox engines: each kind starts, has the storage it promises, runs a container,
and leaves nothing behind (no process, no mount) when stopped, also after a crash."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from sandbox import debian, engines
from sandbox.engines import ENGINE_KINDS, SandboxEngine
from tests.rootfs import busybox_rootfs_tar

IMAGE = "sandbox-busybox:1"
ROOT = Path(__file__).resolve().parents[2]

needs_root_and_docker = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("dockerd", path=engines.SYSTEM_PATH) is None,
    reason="needs root and Debian's docker.io (engines.ensure_host_packages())",
)


@pytest.fixture
def base_dir() -> Iterator[Path]:
    # Short and under /tmp: the engine's unix sockets live below it.
    path = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
    try:
        yield path
    finally:
        engines.stop_dir(path, remove=True)
        shutil.rmtree(path, ignore_errors=True)


def client_for(engine: SandboxEngine) -> Any:
    return docker.APIClient(base_url=engine.url, version="auto", timeout=60)


def import_busybox(client: Any) -> None:
    client.import_image(src=io.BytesIO(busybox_rootfs_tar()), repository="sandbox-busybox", tag="1")


def create(client: Any, *command: str) -> str:
    host_config = client.create_host_config(network_mode="none")
    container = client.create_container(
        IMAGE, command=list(command), host_config=host_config, network_disabled=True
    )
    return str(container["Id"])


def assert_storage(engine: SandboxEngine, info: dict[str, Any]) -> None:
    status = [" ".join(map(str, pair)) for pair in info.get("DriverStatus") or []]
    if engine.kind == "docker26-containerd":
        assert info["Driver"] == "overlayfs"
        assert any("io.containerd.snapshotter.v1" in s for s in status), status
        assert not (engine.data_root / "image" / "overlay2").exists()
        assert not (engine.data_root / "overlay2").exists()
        assert (engine.data_root / "containerd" / "daemon").is_dir()
    else:
        assert info["Driver"] == "overlay2"
        assert (engine.data_root / "image" / "overlay2").is_dir()


def assert_nothing_left(engine: SandboxEngine) -> None:
    assert not engines.engine_processes(engine)
    assert not Path(f"/proc/{engine.pid}/cmdline").exists() or not engines.is_running(engine)
    assert not engines.mounts_under([engine.base_dir])


@needs_root_and_docker
@pytest.mark.engine
@pytest.mark.parametrize("kind", ENGINE_KINDS)
def test_engine_runs_a_container_and_stops_clean(kind: str, base_dir: Path) -> None:
    engine = engines.start(kind, base_dir)
    try:
        assert engine.kind == kind
        assert engine.url == f"unix://{base_dir}/d.sock"
        assert engine.version.startswith("20.10." if kind == "docker20" else "26.1.")
        assert engines.load_state(base_dir) == engine
        client = client_for(engine)
        assert_storage(engine, client.info())

        import_busybox(client)
        cid = create(client, "sh", "-c", "echo ok")
        client.start(cid)
        assert client.wait(cid, timeout=60)["StatusCode"] == 0
        assert client.logs(cid) == b"ok\n"

        engine = engines.restart(engine)
        assert engines.load_state(base_dir) == engine
        client = client_for(engine)
        assert [t for i in client.images() for t in i.get("RepoTags") or []] == [IMAGE]
        assert client.inspect_container(cid)["State"]["ExitCode"] == 0
    finally:
        engines.stop(engine)
    assert_nothing_left(engine)
    engines.stop(engine)  # idempotent
    engines.stop_dir(base_dir, remove=True)
    assert not base_dir.exists()


@needs_root_and_docker
@pytest.mark.engine
@pytest.mark.parametrize("kind", ENGINE_KINDS)
def test_killed_engine_is_cleaned_up_from_another_process(kind: str, base_dir: Path) -> None:
    engine = engines.start(kind, base_dir)
    client = client_for(engine)
    import_busybox(client)
    cid = create(client, "sleep", "600")
    client.start(cid)
    container_pid = int(client.inspect_container(cid)["State"]["Pid"])

    engines.kill9(engine)
    assert not engines.is_running(engine)
    # A crash leaves the shim, the container and its root filesystem mount behind.
    assert engines.engine_processes(engine)
    assert Path(f"/proc/{container_pid}").exists()
    assert engines.mounts_under([engine.data_root, engine.exec_root])

    # `sandbox` is importable from the repository root, not from the installed package.
    cli = [sys.executable, "-m", "sandbox.engines"]
    status = subprocess.run([*cli, "status", "--dir", str(base_dir)], capture_output=True,
                            cwd=ROOT)
    assert status.returncode == 1
    subprocess.run([*cli, "stop", "--dir", str(base_dir)], check=True, capture_output=True,
                   cwd=ROOT)

    assert_nothing_left(engine)
    assert not Path(f"/proc/{container_pid}").exists()

    # The data survives: the same dir starts again with the image still there.
    engine = engines.start(kind, base_dir)
    try:
        assert [t for i in client_for(engine).images() for t in i.get("RepoTags") or []] == [IMAGE]
    finally:
        engines.stop(engine, remove=True)
    assert not base_dir.exists()


@needs_root_and_docker
@pytest.mark.engine
def test_start_refuses_a_second_engine_in_the_same_dir(base_dir: Path) -> None:
    engine = engines.start("docker20", base_dir)
    try:
        with pytest.raises(engines.SandboxError, match="already running"):
            engines.start("docker20", base_dir)
    finally:
        engines.stop(engine)


def test_socket_paths_that_are_too_long_are_refused() -> None:
    with pytest.raises(engines.SandboxError, match="too long"):
        engines.start("docker20", Path("/tmp") / ("x" * 80))


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(engines.SandboxError, match="unknown engine kind"):
        engines.start("podman5", tmp_path)


def test_stop_dir_of_a_missing_or_empty_dir_does_nothing(tmp_path: Path) -> None:
    engines.stop_dir(tmp_path / "never-created")
    engines.stop_dir(tmp_path, remove=False)
    assert engines.load_state(tmp_path) is None


def test_mirror_is_taken_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# comment\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://security.debian.org/debian-security"
        " bookworm-security main\n"
        "deb-src http://src.example/debian bookworm main\n"
    )
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(
        "Types: deb\n"
        "# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "URIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n"
    )
    (parts / "other.list.disabled").write_text("deb http://wrong.example/ bookworm main\n")
    sources = debian.host_sources(tmp_path)
    assert debian.pick_mirror(sources, "bookworm") == "http://mirror.example/debian"
    assert debian.pick_mirror(sources, "trixie") is None


def test_one_line_sources_with_spaced_options() -> None:
    text = "deb [ signed-by=/k.gpg arch=amd64 ] http://m.example/debian bookworm main contrib\n"
    assert debian.parse_one_line_sources(text) == [
        debian.AptSource("http://m.example/debian", ("bookworm",), ("main", "contrib"))
    ]


def test_disabled_deb822_stanzas_are_ignored() -> None:
    text = "Enabled: no\nTypes: deb\nURIs: http://a.example/debian\nSuites: bookworm\n"
    assert debian.parse_deb822_sources(text) == []
