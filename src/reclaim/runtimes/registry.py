"""Opens the runtime `--runtime` names, at an endpoint: the one place above the adapters that
knows which adapters exist. Each adapter is imported only when it is opened."""

from __future__ import annotations

from reclaim.errors import UsageError
from reclaim.runtimes.base import Runtime

RUNTIMES = ("docker", "podman", "containerd")


def open_runtime(name: str, endpoint: str | None, *, timeout: float | None = None,
                 state_dir: str | None = None, listings_from_disk: bool = False) -> Runtime:
    """`state_dir` holds what the adapter caches between runs; `listings_from_disk` lets it
    read its engine's records from disk where it can (df), instead of asking for listings."""
    if name == "docker":
        from reclaim.runtimes.docker import DockerRuntime

        return DockerRuntime(endpoint, timeout=timeout, listings_from_disk=listings_from_disk,
                             record_cache_dir=state_dir)
    if name in RUNTIMES:
        raise UsageError(f"--runtime {name}: not supported yet; use --runtime docker")
    raise UsageError(f"--runtime {name}: unknown; choose from {', '.join(RUNTIMES)}")
