"""fsck's refusals. Every one of them means "nothing was touched".

They exit with 2 (bad input): fsck's input is the data root, and a refusal says that this
tree, as it is now, cannot be proven safe to act on (unreadable metadata, an unknown layout,
work in flight); what fixes it is a change of input (another --data-root, the engine stopped,
permissions), never a retry of the same command. 3 stays for engines the API cannot reach,
1 for a batch where some items moved and others did not.
"""

from __future__ import annotations

from reclaim.errors import EXIT_PARTIAL, EXIT_USAGE, ReclaimError


class FsckRefused(ReclaimError):
    """fsck will not prove anything about this data root; nothing was touched."""

    exit_code = EXIT_USAGE


class Unreadable(FsckRefused):
    """Part of the reference set could not be read: the rest proves nothing."""


class UnsafeName(FsckRefused):
    """Metadata names a path that is not a plain name inside the data root."""


class PartialAction(ReclaimError):
    """A quarantine, restore or purge stopped half-way; the manifest says what was done."""

    exit_code = EXIT_PARTIAL
