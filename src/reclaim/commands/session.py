"""What every command needs to reach its engine and its state: which runtime at which
endpoint, the state directory, and where to say what it notices on the way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from reclaim.model import EngineInfo
from reclaim.runtimes.base import Runtime
from reclaim.runtimes.registry import open_runtime
from reclaim.state import store as state_store
from reclaim.state.usage import Ledger


def utc_now() -> datetime:
    return datetime.now(UTC)


def _quiet(message: str) -> None:
    """The notices of a session nobody listens to."""


@dataclass(frozen=True)
class Session:
    runtime: str = "docker"
    engine: str | None = None
    state_dir: str | None = None
    reset_state: bool = False
    timeout: float | None = None
    notify: Callable[[str], None] = field(default=_quiet, compare=False)

    @property
    def state_directory(self) -> Path:
        return Path(self.state_dir) if self.state_dir else state_store.default_state_dir()

    def open_runtime(self, *, listings_from_disk: bool = False) -> Runtime:
        return open_runtime(self.runtime, self.engine, timeout=self.timeout,
                            state_dir=str(self.state_directory),
                            listings_from_disk=listings_from_disk)

    def open_ledger(self, engine: EngineInfo) -> Ledger:
        """The engine's usage ledger. With `reset_state` the old file is moved aside first
        (never deleted), for a database that cannot be read any more."""
        directory = self.state_directory
        path = state_store.ledger_path(directory, engine.runtime, engine.state_name)
        if self.reset_state:
            aside = state_store.reset(path)
            if aside is not None:
                self.notify(f"the old state database was moved aside to {aside}")
        elif not path.exists():
            legacy = state_store.legacy_ledger_path(directory, engine.runtime,
                                                    engine.engine_id or engine.endpoint)
            if state_store.adopt_legacy(legacy, path, engine.identity):
                self.notify(f"the state database {legacy} (named by the engine id alone) was "
                            f"copied to {path}, which this engine keeps from now")
        store = state_store.Store(path)
        try:
            store.bind_engine(engine.identity)
        except BaseException:
            store.close()
            raise
        return Ledger(store)
