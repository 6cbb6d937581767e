"""Accounting alone, on the in-memory runtime: 20,000 images, 200,000 layers, 50,000 containers.

Measures building the piece graph, every image's exclusive and shared bytes, and the bytes that
deleting every unused image frees (what `reclaim df` computes), plus the whole df report.

    python bench/bench_accounting.py [--images N] [--layers N] [--containers N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import time
from datetime import UTC, datetime

from reclaim.accounting import Accounting
from reclaim.df import build_report
from reclaim.lastuse import usage_from_inventory
from reclaim.model import Container, ContainerState
from reclaim.runtimes.fake import FakeRuntime


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def populate(images: int, layers: int, containers: int, seed: int = 7) -> FakeRuntime:
    """Families share a base and a runtime; each image adds its own layers until the store
    holds `layers` distinct layers."""
    rng = random.Random(seed)
    # Inode counts come from a generator of their own, so the sizes stay as they always were.
    inode_rng = random.Random(seed + 1)
    fake = FakeRuntime()
    families = max(1, images // 20)
    own_total = max(images, layers - 50 - families)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(images):
        family = n % families
        chain = [(digest(f"base-{family % 50}"), rng.randrange(1 << 20, 1 << 26)),
                 (digest(f"runtime-{family}"), rng.randrange(1 << 20, 1 << 24))]
        chain += [(digest(f"own-{n}-{k}"), rng.randrange(1, 1 << 22))
                  for k in range(own_total // images + (n < own_total % images))]
        # A base holds a system's files, a runtime many more, an image's own layers a few.
        inodes = [inode_rng.randrange(2_000, 8_000), inode_rng.randrange(5_000, 30_000)]
        inodes += [inode_rng.randrange(1, 2_000) for _ in chain[2:]]
        fake.add_image(digest(f"image-{n}"), tags=[f"app{family}:{n}"], layers=chain,
                       inodes=inodes, tagged_at=now, metadata_bytes=2048)
    ids = list(fake.images)
    states = list(ContainerState)
    for n in range(containers):
        fake.add_container(Container(
            id=f"{n:064x}", name=f"c{n}", image_id=ids[rng.randrange(len(ids) // 2)],
            state=states[n % len(states)], created=now,
        ))
    return fake


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--layers", type=int, default=200_000)
    parser.add_argument("--containers", type=int, default=50_000)
    args = parser.parse_args()

    inventory = populate(args.images, args.layers, args.containers).inventory()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    t0 = time.perf_counter()
    accounting = Accounting(inventory)
    t1 = time.perf_counter()
    exclusive = sum(accounting.image_bytes(i.id).exclusive for i in inventory.images)
    freed = accounting.freed_by(accounting.unused_images())
    t2 = time.perf_counter()
    now = datetime(2026, 1, 2, tzinfo=UTC)
    report = build_report(inventory, usage_from_inventory(inventory, now), now)
    t3 = time.perf_counter()

    print(json.dumps({
        "images": len(inventory.images),
        "layers": len(inventory.layers),
        "containers": len(inventory.containers),
        "build_graph_s": round(t1 - t0, 3),
        "exclusive_all_and_freed_s": round(t2 - t1, 3),
        "accounting_s": round(t2 - t0, 3),
        "df_report_s": round(t3 - t2, 3),
        "total_bytes": accounting.total_bytes(),
        "sum_exclusive": exclusive,
        "freed_unused": freed,
        "report_reclaimable": report.image_total.reclaimable_bytes,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_accounting_mb": round(rss_before / 1024, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
