"""Content-addressed names as the engines write them: `sha256:<64 hex>` digests, bare 64-hex ids
(images, layers, containers, anonymous volumes) and layer chain ids."""

from __future__ import annotations

import re

_HEX64 = re.compile(r"[0-9a-f]{64}")


def is_hex64(text: str) -> bool:
    """Whether `text` is exactly 64 lower-case hex digits (nothing after them, not even a
    newline), the form of every id an engine names a file or directory after."""
    return _HEX64.fullmatch(text) is not None


def digest_hex(digest: str) -> str | None:
    """The hex part of a `sha256:<64 hex>` digest, or None if it is anything else (so that a
    crafted id can never become a path outside the store)."""
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or not _HEX64.fullmatch(hexpart):
        return None
    return hexpart


def chain_ids(diff_ids: list[str]) -> list[str]:
    """ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    import hashlib  # here: df's start-up finds every chain in its record cache

    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            digest = hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest()
            chain.append("sha256:" + digest)
    return chain
