"""`watch`: records image use from the engine's events until SIGTERM or SIGINT."""

from __future__ import annotations

from reclaim.commands.session import Session
from reclaim.watch import LogFn, Watcher


def watch_command(session: Session, *, verbose: bool, log: LogFn) -> int:
    """The exit code the watcher ends with."""
    runtime = session.open_runtime()
    try:
        ledger = session.open_ledger(runtime.info())
        try:
            return Watcher(runtime, ledger, verbose=verbose, log=log).run()
        finally:
            ledger.store.close()
    finally:
        runtime.close()
