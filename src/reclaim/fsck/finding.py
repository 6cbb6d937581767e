"""One finding of fsck: a path under the data root, its class, the evidence and what may be done.

Its own module so that the per-layout analyses (overlay2 in scan.py, aufs.py, legacyvolumes.py)
build findings without importing the scan that calls them.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import Any

ACTIONABLE = frozenset({"orphan-layer", "orphan-volume"})


@dataclass(frozen=True)
class Finding:
    path: str  # relative to the data root
    cls: str
    evidence: list[str]
    bytes: int = 0
    apparent_bytes: int = 0
    action: str = "none"
    # a layer's l/<short> symlink, moved with it when the `link` file names it
    link: str | None = None

    @property
    def actionable(self) -> bool:
        return self.cls in ACTIONABLE

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "class": self.cls, "bytes": self.bytes,
                "apparent_bytes": self.apparent_bytes, "evidence": list(self.evidence),
                "action": self.action}


def still_in_flight(changed: float, *, now: float, engine_running: bool,
                    newest_write_set: float | None, min_age: float) -> str | None:
    """Why a layer directory that nothing references may still be the engine's work in
    progress (the evidence line), or None. Only while the engine runs: a layer registration
    as new as the directory, or a change younger than the age threshold."""
    if not engine_running:
        return None
    if newest_write_set and newest_write_set >= changed - 2:
        return "a layer registration (layerdb/tmp/write-set-*) is as new as it"
    if now - changed < min_age:
        return (f"changed {int(now - changed)}s ago, under the {int(min_age)}s threshold "
                "while the engine runs")
    return None


def not_a_directory(rel: str, mode: int) -> Finding:
    """Where a layer or volume directory is expected and something else stands: never acted
    on, and a symlink never followed."""
    symlink = " (a symlink: never followed)" if stat.S_ISLNK(mode) else ""
    return Finding(rel, "unknown", ["not a directory" + symlink])
