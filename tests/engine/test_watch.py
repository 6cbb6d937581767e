"""`reclaim watch` against a real engine of its own: uses recorded across a stop, an engine
restart and a gap longer than the engine's event buffer; the same answers without the daemon
from container timestamps; and a ledger that survives kill -9 under heavy event traffic.

The engine is private to this module (it is restarted, and flooded with events), so the seeded
engines other tests share stay as they are.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from reclaim.timeutil import parse_time
from sandbox import engines
from sandbox.engines import SandboxEngine
from tests.conftest import KINDS
from tests.rootfs import busybox_rootfs_tar

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("dockerd", path=engines.SYSTEM_PATH) is None,
        reason="needs root and Debian's docker.io (engines.ensure_host_packages())",
    ),
]

KIND = "docker20" if "docker20" in KINDS or not KINDS else KINDS[0]
DEADLINE = 60.0


@dataclass
class Box:
    """The module's engine; `restart` replaces it (same dirs, new process)."""

    engine: SandboxEngine

    @property
    def url(self) -> str:
        return self.engine.url

    def client(self) -> Any:
        return docker.APIClient(base_url=self.url, version="auto", timeout=120)


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    # Short and under /tmp: the engine's unix sockets live below it.
    base = Path(tempfile.mkdtemp(prefix="rw-", dir="/tmp"))
    try:
        engine = engines.start(KIND, base)
        client = docker.APIClient(base_url=engine.url, version="auto", timeout=120)
        try:
            for name in ("watch-x", "watch-y", "watch-never", "watch-churn"):
                rootfs = busybox_rootfs_tar(name, applets=("sh", "true"))
                client.import_image(src=io.BytesIO(rootfs), repository=name, tag="1")
        finally:
            client.close()
        yield Box(engine)
    finally:
        engines.stop_dir(base, remove=True)
        shutil.rmtree(base, ignore_errors=True)


def image_id(client: Any, ref: str) -> str:
    return str(client.inspect_image(ref)["Id"])


def run_container(client: Any, image: str, *, keep: bool) -> str:
    host_config = client.create_host_config(network_mode="none")
    cid = str(client.create_container(image, command=["true"], host_config=host_config,
                                      network_disabled=True)["Id"])
    client.start(cid)
    client.wait(cid, timeout=60)
    if not keep:
        client.remove_container(cid)
    return cid


def churn(client: Any, image: str, times: int) -> None:
    """Two events each time (create, destroy), none of them uses of the images checked."""
    host_config = client.create_host_config(network_mode="none")
    for _ in range(times):
        cid = client.create_container(image, command=["true"], host_config=host_config,
                                      network_disabled=True)["Id"]
        client.remove_container(cid)


class Watch:
    """`reclaim watch -v` as a process of its own, as a service manager runs it."""

    def __init__(self, url: str, state_dir: Path, log: Path) -> None:
        self.log = log
        self._fh = log.open("ab")
        self.offset = log.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reclaim", "--engine", url, "--state-dir", str(state_dir),
             "watch", "-v"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._fh,
        )

    def text(self) -> str:
        return self.log.read_bytes()[self.offset:].decode(errors="replace")

    def wait_for(self, needle: str, timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.proc.poll() is None, f"watch exited {self.proc.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {needle!r} in the log:\n{self.text()}"
            time.sleep(0.05)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._fh.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._fh.close()


def df(url: str, state_dir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "reclaim", "--engine", url, "--state-dir", str(state_dir),
         "df", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def ran_at() -> datetime:
    # `df --json` gives times to the second: a use in this second is "at or after" it.
    return datetime.now(UTC).replace(microsecond=0)


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(i["id"]): i for i in doc["images"]}


def when(value: Any) -> datetime:
    parsed = parse_time(value)
    assert parsed is not None, value
    return parsed


def test_watch_keeps_uses_across_a_restart_and_a_long_gap(box: Box, tmp_path: Path) -> None:
    state = tmp_path / "state"
    log = tmp_path / "watch.log"
    log.touch()
    client = box.client()
    x, y, never = (image_id(client, f"watch-{n}:1") for n in ("x", "y", "never"))

    watch = Watch(box.url, state, log)
    watch.wait_for("event=caught-up")
    x_ran = ran_at()
    # Removed at once: afterwards only the recorded events know that X was used.
    run_container(client, "watch-x:1", keep=False)
    watch.wait_for("event=destroy")
    assert watch.stop() == 0
    client.close()

    box.engine = engines.restart(box.engine)
    client = box.client()
    y_ran = ran_at()
    run_container(client, "watch-y:1", keep=True)
    # More than the engine's buffer of 256 events while nobody watches.
    churn(client, "watch-churn:1", 160)
    client.close()

    watch = Watch(box.url, state, log)
    watch.wait_for("event=caught-up")
    assert watch.stop() == 0

    images = by_id(df(box.url, state))
    assert when(images[x]["last_used"]) >= x_ran
    assert images[x]["last_used_source"] == "event"
    assert when(images[y]["last_used"]) >= y_ran
    assert images[never]["last_used"] is None
    assert images[never]["first_seen"] is not None


def test_df_alone_gets_uses_from_container_timestamps(box: Box, tmp_path: Path) -> None:
    state = tmp_path / "state"  # a ledger `reclaim watch` never wrote
    client = box.client()
    try:
        x, y, never = (image_id(client, f"watch-{n}:1") for n in ("x", "y", "never"))
        x_ran = ran_at()
        run_container(client, "watch-x:1", keep=True)
        y_ran = ran_at()
        run_container(client, "watch-y:1", keep=True)
    finally:
        client.close()

    images = by_id(df(box.url, state))
    assert when(images[x]["last_used"]) >= x_ran
    assert when(images[y]["last_used"]) >= y_ran
    assert images[x]["last_used_source"] == images[y]["last_used_source"] == "container"
    assert images[never]["last_used"] is None
    assert images[never]["first_seen"] is not None


def test_kill_9_never_damages_the_ledger(box: Box, tmp_path: Path) -> None:
    state = tmp_path / "state"
    log = tmp_path / "watch.log"
    log.touch()
    stop = threading.Event()
    errors: list[BaseException] = []

    def traffic() -> None:
        client = box.client()
        try:
            while not stop.is_set():
                run_container(client, "watch-churn:1", keep=False)
                churn(client, "watch-churn:1", 5)
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    background = threading.Thread(target=traffic, daemon=True)
    background.start()
    rng = random.Random(9)
    try:
        for round_ in range(15):
            watch = Watch(box.url, state, log)
            time.sleep(rng.uniform(0.3, 2.0))  # killed at start-up, catch-up or mid-stream
            watch.kill()
            databases = list(state.glob("*.db"))
            assert len(databases) <= 1, databases
            if databases:
                conn = sqlite3.connect(databases[0])
                try:
                    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", round_
                finally:
                    conn.close()
            assert df(box.url, state)["schema"] == "reclaim.df/v1"
    finally:
        stop.set()
        background.join(timeout=60)
    assert not errors, errors
    # The traffic really was recorded between the kills.
    assert "event=create" in log.read_text()
