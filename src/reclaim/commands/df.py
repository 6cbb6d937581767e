"""`df`: where the bytes are, and how many are reclaimable."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from reclaim.commands.session import Session, utc_now
from reclaim.df import DfReport, build_report
from reclaim.recorder import Recorder
from reclaim.runtimes.base import Progress, no_progress


def df(session: Session, *, sizes: bool = False, progress: Progress = no_progress,
       now: Callable[[], datetime] = utc_now) -> DfReport:
    runtime = session.open_runtime(listings_from_disk=True)
    try:
        inventory = runtime.inventory(sizes=sizes, progress=progress)
    finally:
        runtime.close()
    when = now()
    # The catch-up every command does first: container timestamps are uses even when
    # `reclaim watch` never ran.
    ledger = session.open_ledger(inventory.engine)
    try:
        Recorder(ledger).catch_up(inventory, when)
        usage = ledger.images()
    finally:
        ledger.store.close()
    return build_report(inventory, usage, when)
