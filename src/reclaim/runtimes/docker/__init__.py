"""The Docker Engine adapter (adapter.py), its event stream (events.py), and the readers of
what Docker keeps under its data root: overlay2 metadata and container records (disk.py),
the containerd image store's records (containerd_store.py), the record cache between runs
(recordcache.py), layer inodes (layerinodes.py) and volume bytes (volumes.py)."""

from __future__ import annotations

from reclaim.runtimes.docker.adapter import (
    CALL_TIMEOUT,
    DEFAULT_ENDPOINT,
    PROBE_TIMEOUT,
    PRUNE_TIMEOUT,
    DockerRuntime,
    resolve_endpoint,
)
from reclaim.runtimes.docker.events import UseWatch

__all__ = [
    "CALL_TIMEOUT",
    "DEFAULT_ENDPOINT",
    "PROBE_TIMEOUT",
    "PRUNE_TIMEOUT",
    "DockerRuntime",
    "UseWatch",
    "resolve_endpoint",
]
