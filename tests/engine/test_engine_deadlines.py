"""A frozen engine (its dockerd stopped with SIGSTOP) fails every call at its deadline, and
is never taken for an engine with nothing in it; the event stream, once open, outlives the
call deadline; and a real engine behind tcp:// is still taken for one.

The engine is private to this module (it is frozen), so the seeded engines other tests share
are never disturbed. Only its own dockerd is ever signalled, and always thawed again.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import docker
import pytest

from reclaim.errors import EngineUnreachable
from reclaim.model import Event
from reclaim.runtimes.docker import PROBE_TIMEOUT, DockerRuntime
from reclaim.sandbox import engines
from reclaim.sandbox.engines import SandboxEngine
from tests import servers
from tests.conftest import KINDS
from tests.rootfs import busybox_rootfs_tar

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("dockerd", path=engines.SYSTEM_PATH) is None,
        reason="needs root and Debian's docker.io (engines.ensure_host_packages())",
    ),
]

# A deadline short enough for the tests, and what a call may take beyond it here.
DEADLINE = 1.0
SLACK = 10.0


@pytest.fixture(scope="module", params=KINDS)
def engine(request: pytest.FixtureRequest) -> Iterator[SandboxEngine]:
    # Short and under /tmp: the engine's unix sockets live below it.
    base = Path(tempfile.mkdtemp(prefix="rd-", dir="/tmp"))
    try:
        started = engines.start(str(request.param), base)
        client = docker.APIClient(base_url=started.url, version="auto", timeout=120)
        try:
            # An image and a container, so that `df` reads both from disk, and a volume.
            client.import_image(src=io.BytesIO(busybox_rootfs_tar("deadline")),
                                repository="deadline", tag="1")
            client.create_container("deadline:1", command=["true"], network_disabled=True,
                                    host_config=client.create_host_config(network_mode="none"))
            client.create_volume("deadline-volume")
        finally:
            client.close()
        yield started
    finally:
        engines.stop_dir(base, remove=True)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def frozen(engine: SandboxEngine) -> Iterator[None]:
    """The engine's dockerd stopped (SIGSTOP) for the block, then always continued: the pid
    is the one its own pid file names, and only if that is this engine's dockerd."""
    pid = int(engine.pidfile.read_text().strip())
    assert pid == engine.pid, (pid, engine.pid)
    assert engines._is_our_dockerd(pid, engine.data_root)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def df(url: str, state_dir: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "reclaim", "--engine", url, "--state-dir", str(state_dir),
         *flags, "df", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    return done, time.monotonic() - began


def test_df_on_a_frozen_engine_fails_at_the_probe_deadline(
    engine: SandboxEngine, tmp_path: Path
) -> None:
    healthy, _ = df(engine.url, tmp_path)  # the record cache and the ledger exist, as on a host
    assert healthy.returncode == 0, healthy.stderr
    with frozen(engine):
        done, took = df(engine.url, tmp_path)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stdout == ""
    first = done.stderr.splitlines()[0]
    assert first == (f"reclaim: the engine at {engine.url} did not answer /info within "
                     f"{PROBE_TIMEOUT:g} s"), done.stderr
    assert took < PROBE_TIMEOUT + SLACK


@pytest.mark.parametrize("from_disk", [True, False], ids=["df", "plan"])
def test_a_timeout_mid_inventory_is_never_taken_for_no_data(
    engine: SandboxEngine, tmp_path: Path, from_disk: bool
) -> None:
    """Frozen after /info answered: every later call of the inventory (the ones `df` still
    makes beside its records on disk, or all the listings) must fail, not come back empty."""
    runtime = DockerRuntime(engine.url, timeout=DEADLINE, listings_from_disk=from_disk,
                            record_cache_dir=str(tmp_path))
    try:
        runtime.info()
        began = time.monotonic()
        with frozen(engine), pytest.raises(EngineUnreachable) as caught:
            runtime.inventory()
        took = time.monotonic() - began
    finally:
        runtime.close()
    assert f"the engine at {engine.url} did not answer /" in caught.value.message
    assert caught.value.message.endswith(f"within {DEADLINE:g} s")
    assert took < DEADLINE + SLACK


def test_removals_and_the_event_stream_on_a_frozen_engine_fail_at_their_deadline(
    engine: SandboxEngine,
) -> None:
    runtime = DockerRuntime(engine.url, timeout=DEADLINE)
    try:
        runtime.info()
        with frozen(engine):
            for call, named in (
                (lambda: runtime.remove_volume("deadline-volume"), "DELETE /volumes/"),
                (lambda: runtime.prune_build_cache(None, None), "POST /build/prune"),
                (lambda: next(runtime.events(None)), "/events"),
            ):
                began = time.monotonic()
                with pytest.raises(EngineUnreachable) as caught:
                    call()
                assert f"did not answer {named}" in caught.value.message
                assert time.monotonic() - began < DEADLINE + SLACK
            watch = runtime.watch_uses(datetime.now(UTC))
            assert watch is not None and not watch.live
            watch.close()
    finally:
        runtime.close()
    # The removal sent to the frozen engine may be done once it wakes (reclaim reported it
    # failed, and never sends it twice): the volume is put back for the other tests.
    client = docker.APIClient(base_url=engine.url, version="auto", timeout=120)
    try:
        client.create_volume("deadline-volume")
    finally:
        client.close()


@pytest.mark.parametrize("over", ["unix", "tcp"])
def test_the_event_stream_outlives_the_call_deadline(engine: SandboxEngine, over: str) -> None:
    """Once the stream's headers are in, a quiet engine is not an error: an event that comes
    long after the deadline still arrives."""
    with servers.tcp_to_unix(engine.socket) as tcp_url:
        url = engine.url if over == "unix" else tcp_url
        runtime = DockerRuntime(url, timeout=0.5)
        got: list[Event] = []
        errors: list[BaseException] = []
        tag = f"deadline:late-{over}"

        def read() -> None:
            try:
                for event in runtime.events(None):
                    got.append(event)
                    if event.action == "tag" and event.name == tag:
                        return
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        client = docker.APIClient(base_url=engine.url, version="auto", timeout=120)
        try:
            # Quiet for three deadlines, then one event.
            time.sleep(1.5)
            assert reader.is_alive(), errors
            repo, _, name = tag.partition(":")
            client.tag("deadline:1", repo, name)
            reader.join(30)
            client.remove_image(tag)
        finally:
            client.close()
            runtime.close()
    assert not errors, errors
    assert not reader.is_alive()
    assert any(e.action == "tag" and e.name == tag for e in got), got


def test_a_docker_engine_over_tcp_is_one(engine: SandboxEngine, tmp_path: Path) -> None:
    with servers.tcp_to_unix(engine.socket) as url:
        done, _ = df(url, tmp_path)
        assert done.returncode == 0, done.stderr
        with frozen(engine):
            frozen_done, took = df(url, tmp_path, "--timeout", "2")
    assert frozen_done.returncode == 3, frozen_done.stderr
    assert frozen_done.stderr.startswith(
        f"reclaim: the engine at {url} did not answer /info within 2 s"), frozen_done.stderr
    assert took < 2 + SLACK
