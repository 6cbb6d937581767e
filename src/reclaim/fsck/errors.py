"""fsck's refusals. Every one of them means "nothing was touched".

They exit with 2 (bad input): fsck's input is the data root, and a refusal says that this
tree, as it is now, cannot be proven safe to act on (unreadable metadata, an unknown layout,
work in flight); what fixes it is a change of input (another --data-root, the engine stopped,
permissions), never a retry of the same command. 3 stays for engines the API cannot reach,
1 for a batch where some items moved and others did not.
"""

from __future__ import annotations

from typing import Any

from reclaim.errors import EXIT_PARTIAL, EXIT_USAGE, ReclaimError


class FsckRefused(ReclaimError):
    """fsck will not prove anything about this data root; nothing was touched."""

    exit_code = EXIT_USAGE


class Unreadable(FsckRefused):
    """Part of the reference set could not be read: the rest proves nothing."""


class UnsafeName(FsckRefused):
    """Metadata names a path that is not a plain name inside the data root."""


class PartialAction(ReclaimError):
    """A quarantine, restore or purge stopped half-way; the manifest says what was done.
    `done` holds the batches as they were left (what moved, what was purged), so that they can
    still be recorded in the ledger before the error is shown."""

    exit_code = EXIT_PARTIAL

    def __init__(self, message: str, *, hint: str | None = None,
                 done: list[Any] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.done: list[Any] = list(done or [])


class LedgerNotWritten(ReclaimError):
    """The quarantine, restore or purge was done, but the ledger could not record it.

    1 (partial), not 0: what the user asked for happened, and the batch's manifest.json is
    enough to restore it, but the host's record of it is missing and a script must be told.
    Not 2 or 3: nothing about the input or the engine was wrong, and a retry would redo the
    action rather than the record."""

    exit_code = EXIT_PARTIAL
