"""`plan`: the dry run. The steps up to a plan (inventory, the filesystem's figures, what the
removed containers free, layer inodes when a watermark needs them, the ledger's catch-up)
are `make_plan`, which `apply` shares."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from reclaim.commands.session import Session, utc_now
from reclaim.model import EngineInfo, Inventory
from reclaim.policy.plan import (
    FilesystemUsage,
    Plan,
    freeable_layers,
    plan,
    removed_containers,
    wants_layer_inodes,
)
from reclaim.policy.rules import Policy
from reclaim.recorder import Recorder
from reclaim.runtimes.base import (
    ContainerSizing,
    LayerInodeCounting,
    Progress,
    Runtime,
    no_progress,
)
from reclaim.state.usage import Ledger


class Planned(NamedTuple):
    plan: Plan
    # The inventory the plan was made from, with its removed containers measured.
    inventory: Inventory
    # Open, caught up with `inventory`; the caller closes it.
    ledger: Ledger


def filesystem_usage(engine: EngineInfo) -> FilesystemUsage | None:
    """The filesystem that holds the engine's data root, or None where it is not on this
    host (a remote engine: % sizes and watermarks cannot be resolved here)."""
    if not engine.data_root:
        return None
    try:
        st = os.statvfs(engine.data_root)
    except OSError:
        return None
    return FilesystemUsage(
        total_bytes=st.f_blocks * st.f_frsize,
        used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize,
        total_inodes=st.f_files,
        used_inodes=st.f_files - st.f_ffree,
    )


def measure_containers(session: Session, runtime: Runtime, inventory: Inventory,
                       container_ids: list[str]) -> Inventory:
    """The inventory with `disk_bytes` filled in for these containers, where measured."""
    if not container_ids:
        return inventory
    if not isinstance(runtime, ContainerSizing):
        session.notify("this engine's adapter cannot measure what removing a container frees; "
                       "container actions count 0 bytes")
        return inventory
    measured = runtime.container_bytes(container_ids)
    return inventory._replace(containers=tuple(
        c._replace(disk_bytes=measured[c.id]) if c.id in measured else c
        for c in inventory.containers))


def make_plan(session: Session, runtime: Runtime, policy: Policy, *,
              progress: Progress = no_progress,
              now: Callable[[], datetime] = utc_now) -> Planned:
    inventory = runtime.inventory(progress=progress)
    filesystem = filesystem_usage(inventory.engine)
    when = now()
    # What removing a container frees is read from its storage on disk: only for the
    # containers this plan removes.
    removing = removed_containers(inventory, policy, when)
    inventory = measure_containers(session, runtime, inventory, removing)
    # Counting a layer's inodes reads its records on disk: only when an inode watermark is
    # crossed, and only the layers a deletion could free.
    layer_inodes = None
    if wants_layer_inodes(policy, filesystem):
        if isinstance(runtime, LayerInodeCounting):
            layer_inodes = runtime.layer_inodes(freeable_layers(inventory, removing))
        else:
            session.notify("this engine's adapter cannot count layer inodes; every layer "
                           "counts as unknown for the inode watermarks")
    ledger = session.open_ledger(inventory.engine)
    try:
        Recorder(ledger).catch_up(inventory, when)
        made = plan(inventory, ledger.images(), policy, when, filesystem=filesystem,
                    volume_since=ledger.volume_dangling_since(), layer_inodes=layer_inodes)
    except BaseException:
        ledger.store.close()
        raise
    return Planned(made, inventory, ledger)


def plan_command(session: Session, policy: Policy, *, progress: Progress = no_progress,
                 now: Callable[[], datetime] = utc_now) -> Plan:
    runtime = session.open_runtime()
    try:
        planned = make_plan(session, runtime, policy, progress=progress, now=now)
        planned.ledger.store.close()
    finally:
        runtime.close()
    return planned.plan
