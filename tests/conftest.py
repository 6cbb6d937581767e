"""Session fixtures: a private engine per configuration, seeded once with the small fixture.

Engine tests run against real engines started here (never the host's). Which configurations
run is `RECLAIM_TEST_ENGINES` (comma separated; default all three). Each engine is started
once per session and stopped, by pid, with everything it mounted, when its tests are done.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from sandbox import engines
from sandbox.content import FixtureSpec, build_fixture
from sandbox.engines import ENGINE_KINDS, SandboxEngine
from sandbox.seed import SeededTruth, seed

# Every reclaim these tests run (in-process or as a subprocess) keeps its ledger here, never
# in the host's /var/lib/reclaim.
os.environ["RECLAIM_STATE_DIR"] = tempfile.mkdtemp(prefix="reclaim-test-state-")

KINDS = tuple(
    k for k in os.environ.get("RECLAIM_TEST_ENGINES", ",".join(ENGINE_KINDS)).split(",") if k
)


@dataclass(frozen=True)
class Seeded:
    engine: SandboxEngine
    truth: SeededTruth

    def client(self) -> docker.APIClient:
        return docker.APIClient(base_url=self.engine.url, version="auto", timeout=120)


@contextmanager
def private_engine(kind: str, prefix: str) -> Iterator[SandboxEngine]:
    """An engine of its own, for a module whose tests delete what they find or stop the engine:
    started under a short directory in /tmp, stopped by pid and removed after."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        started = engines.start(kind, base)
        try:
            yield started
        finally:
            engines.stop(started, remove=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _engine_base() -> Path:
    # Short and under /tmp: the engine's unix sockets live below it.
    return Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))


class EnginePool:
    """Seeded engines started on first use, one per configuration, stopped at session end."""

    def __init__(self) -> None:
        self._seeded: dict[str, Seeded] = {}
        self._bases: list[Path] = []

    def get(self, kind: str) -> Seeded:
        if kind not in self._seeded:
            if os.geteuid() != 0:
                pytest.fail("engine tests need root (they start private engines)")
            base = _engine_base()
            self._bases.append(base)
            engine = engines.start(kind, base)
            client = docker.APIClient(base_url=engine.url, version="auto", timeout=300)
            try:
                work = base / "seed"
                work.mkdir()
                truth = seed(client, build_fixture(FixtureSpec.small()), work)
            except BaseException:
                engines.stop(engine, remove=True)
                raise
            finally:
                client.close()
            self._seeded[kind] = Seeded(engine, truth)
        return self._seeded[kind]

    def close(self) -> None:
        for seeded in self._seeded.values():
            engines.stop(seeded.engine, remove=True)
        for base in self._bases:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def engine_pool() -> Iterator[EnginePool]:
    pool = EnginePool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session", params=KINDS)
def seeded(request: pytest.FixtureRequest, engine_pool: EnginePool) -> Seeded:
    """A private engine of each configuration, seeded with the small fixture. Tests that
    change it must only touch objects they created themselves."""
    return engine_pool.get(str(request.param))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regen-golden", action="store_true", default=False,
                     help="rewrite the golden plan files from the current planner")
