"""`reclaim df`: where the bytes are and how many could be reclaimed.

The report is one object; the human table and the JSON both come from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from reclaim.accounting import Accounting
from reclaim.lastuse import Usage
from reclaim.model import Container, Image, Inventory, Volume
from reclaim.timeutil import format_time

DF_SCHEMA = "reclaim.df/v1"


# NamedTuples, not data classes, as the model is (see reclaim.model): one per image.
class ImageRow(NamedTuple):
    image: Image
    size: int
    exclusive: int
    shared: int
    containers: tuple[str, ...]
    usage: Usage | None


class Total(NamedTuple):
    # Shadows tuple.count on purpose: the fields are the df JSON totals' keys, by name.
    count: int  # type: ignore[assignment]
    bytes: int | None
    reclaimable_bytes: int | None
    active: int | None = None


class DfReport(NamedTuple):
    inventory: Inventory
    now: datetime
    images: tuple[ImageRow, ...]
    image_total: Total
    container_total: Total
    volume_total: Total
    build_cache_total: Total
    # What adding up the engine's own per-image sizes would claim (shown to explain the gap).
    engine_size_sum: int

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": DF_SCHEMA,
            "engine": self.inventory.engine.to_json(),
            "images": [_image_json(row) for row in self.images],
            "containers": [_container_json(c) for c in self.inventory.containers],
            "volumes": [_volume_json(v) for v in self.inventory.volumes],
            "totals": {
                "images": _total_json(self.image_total),
                "containers": _total_json(self.container_total),
                "volumes": _total_json(self.volume_total),
                "build_cache": _total_json(self.build_cache_total),
            },
        }


def build_report(inventory: Inventory, usage: Mapping[str, Usage], now: datetime) -> DfReport:
    accounting = Accounting(inventory)
    users: dict[str, list[str]] = {}
    for c in inventory.containers:
        users.setdefault(c.image_id, []).append(c.id)

    rows = []
    for image in inventory.images:
        b = accounting.image_bytes(image.id)
        rows.append(
            ImageRow(
                image=image,
                size=b.size,
                exclusive=b.exclusive,
                shared=b.shared,
                containers=tuple(users.get(image.id, ())),
                usage=usage.get(image.id),
            )
        )

    image_total = Total(
        count=len(inventory.images),
        bytes=accounting.total_bytes(),
        # Every image no container of any state uses, deleted together.
        reclaimable_bytes=accounting.freed_by(accounting.unused_images()),
        active=sum(1 for i in inventory.images if i.id in accounting.used_images),
    )
    return DfReport(
        inventory=inventory,
        now=now,
        images=tuple(rows),
        image_total=image_total,
        container_total=_container_total(inventory.containers),
        volume_total=_volume_total(inventory.volumes),
        build_cache_total=Total(
            count=inventory.build_cache.count or 0,
            bytes=inventory.build_cache.bytes,
            reclaimable_bytes=inventory.build_cache.reclaimable_bytes,
        ),
        engine_size_sum=sum(i.engine_size for i in inventory.images),
    )


def _container_total(containers: tuple[Container, ...]) -> Total:
    known = all(c.rw_bytes is not None for c in containers)
    return Total(
        count=len(containers),
        bytes=sum(c.rw_bytes or 0 for c in containers) if known else None,
        reclaimable_bytes=(
            sum(c.rw_bytes or 0 for c in containers if c.state.stopped) if known else None
        ),
        active=sum(1 for c in containers if not c.state.stopped),
    )


def _volume_total(volumes: tuple[Volume, ...]) -> Total:
    known = all(v.bytes is not None for v in volumes)
    return Total(
        count=len(volumes),
        bytes=sum(v.bytes or 0 for v in volumes) if known else None,
        reclaimable_bytes=sum(v.bytes or 0 for v in volumes if v.dangling) if known else None,
        active=sum(1 for v in volumes if not v.dangling),
    )


def _image_json(row: ImageRow) -> dict[str, Any]:
    last = row.usage.last_use if row.usage else None
    return {
        "id": row.image.id,
        "tags": list(row.image.tags),
        "digests": list(row.image.digests),
        "created": format_time(row.image.created),
        "size": row.size,
        "exclusive_bytes": row.exclusive,
        "shared_bytes": row.shared,
        "containers": list(row.containers),
        "last_used": format_time(last.when) if last else None,
        "last_used_source": last.source if last else None,
        # Beyond v1's fields: when reclaim first saw the image, and what its age for policy
        # is counted from (last use, else the later of tag time and first seen).
        "first_seen": format_time(row.usage.first_seen) if row.usage else None,
        "age_basis": (
            {"since": format_time(row.usage.age_basis.when), "source": row.usage.age_basis.source}
            if row.usage else None
        ),
    }


def _container_json(c: Container) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "image_id": c.image_id,
        "state": c.state.value,
        "created": format_time(c.created),
        "finished_at": format_time(c.finished),
        "rw_bytes": c.rw_bytes,
    }


def _volume_json(v: Volume) -> dict[str, Any]:
    return {
        "name": v.name,
        "anonymous": v.anonymous,
        "dangling": v.dangling,
        "bytes": v.bytes,
        "used_by": list(v.used_by),
    }


def _total_json(t: Total) -> dict[str, Any]:
    return {"count": t.count, "bytes": t.bytes, "reclaimable_bytes": t.reclaimable_bytes}
