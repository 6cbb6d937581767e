"""The planner alone, on the in-memory runtime: 20,000 images, 200,000 layers, 50,000 containers.

The store is populated as bench_accounting.py does it, and every image gets a usage record
(first seen, last use or none, tag time) spread over the past year. `plan()` is then timed for
a few policies:

  - quota:   a quota of half the image store (least recently used first); half the images
             are in use, so it cannot be met and every allowed image goes;
  - quota90: a quota of 90% of the store, which the unused images can meet;
  - max-age: max_age 30d;
  - mixed:   keep patterns, keep_latest 3 and the same quota;
  - inodes:  inode watermarks (above high_inodes, down to low_inodes), with the per-layer inode
             counts the fake holds (what the CLI asks the runtime for, outside the plan);
  - both:    byte and inode watermarks at once;
  - reused:  the first quota again, with the piece graph built once beforehand and passed in
             (`plan(accounting=...)`), as a caller that plans several times from one
             inventory can do. Every other row builds the graph inside the plan, as the CLI.

Each policy is planned `--repeat` times; the median and the best wall time are reported, with
the CPU time of the process during the plan (steadier than wall time on a loaded machine) and
the peak RSS of the whole process. The target is under 2 s per plan.

    python bench/bench_plan.py [--images N] [--layers N] [--containers N] [--repeat N]
                               [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_accounting import populate
from reclaim.accounting import Accounting
from reclaim.lastuse import LastUse, Usage
from reclaim.model import Inventory
from reclaim.policy.plan import FilesystemUsage, Plan, freeable_layers, plan
from reclaim.policy.rules import Policy, build_policy

TARGET_S = 2.0
# bench_accounting's populate() stamps every tag at this time.
POPULATED_AT = datetime(2026, 1, 1, tzinfo=UTC)
NOW = POPULATED_AT + timedelta(days=400)


@dataclass
class Result:
    name: str
    settings: Mapping[str, Any]
    walls: list[float]
    cpus: list[float]
    actions: int
    kept: int
    predicted_bytes: int
    warnings: int

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def best(self) -> float:
        return min(self.walls)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.name,
            "settings": dict(self.settings),
            "wall_s_median": round(self.median, 3),
            "wall_s_best": round(self.best, 3),
            "walls_s": [round(w, 3) for w in self.walls],
            "cpu_s_median": round(self.cpu, 3),
            "cpus_s": [round(c, 3) for c in self.cpus],
            "deletions": self.actions,
            "kept": self.kept,
            "predicted_bytes": self.predicted_bytes,
            "warnings": self.warnings,
            "target_met": self.median < TARGET_S,
        }


def usage_records(inventory: Inventory, seed: int = 11) -> dict[str, Usage]:
    """A record for every image: first seen up to a year before NOW, and (for three in four)
    a last use between then and NOW, from an event or a container."""
    rng = random.Random(seed)
    out: dict[str, Usage] = {}
    for image in inventory.images:
        first = NOW - timedelta(seconds=rng.randrange(3600, 365 * 86400))
        last: LastUse | None = None
        if rng.random() < 0.75:
            span = int((NOW - first).total_seconds())
            when = first + timedelta(seconds=rng.randrange(0, max(1, span)))
            last = LastUse(when, rng.choice(("event", "container")), "")
        out[image.id] = Usage(image.id, first, last, image.tagged_at, image.tags)
    return out


def filesystem(store_bytes: int, freeable_inodes: int) -> FilesystemUsage:
    """A filesystem for the watermark rows: the store is most of it, 95% of its bytes and
    inodes are in use, and the unused images hold about a third of what going from 95% down
    to 85% of the inodes needs twice over (so the inode target can be met)."""
    total_inodes = 3 * freeable_inodes
    return FilesystemUsage(total_bytes=store_bytes * 21 // 20, used_bytes=store_bytes,
                           total_inodes=total_inodes, used_inodes=total_inodes * 95 // 100)


def policies(store_bytes: int) -> list[tuple[str, dict[str, Any], str]]:
    """(name, image settings, what else the plan gets: "", "fs" or "reuse")."""
    half = f"{store_bytes // 2}B"  # a size says its unit
    return [
        ("quota (half the store, LRU)", {"quota": half}, ""),
        # Half the store cannot be met (half the images are in use): every allowed image goes.
        # A quota the unused images can meet also runs the drop-back pass of the eviction.
        ("quota (90% of the store, met, LRU)", {"quota": f"{store_bytes * 9 // 10}B"}, ""),
        ("max_age 30d", {"max_age": "30d"}, ""),
        ("keep patterns + keep_latest 3 + quota", {
            "keep": ["app1*:*", "app7?:*", "app42:*"],
            "keep_latest": 3,
            "quota": half,
        }, ""),
        ("inode watermarks 90% -> 85% (met, LRU)",
         {"high_inodes": "90%", "low_inodes": "85%"}, "fs"),
        ("byte 90% -> 85% and inode 90% -> 85% watermarks",
         {"high": "90%", "low": "85%", "high_inodes": "90%", "low_inodes": "85%"}, "fs"),
        ("quota (half the store), graph built once and passed in", {"quota": half}, "reuse"),
    ]


def run(inventory: Inventory, usage: Mapping[str, Usage], name: str,
        settings: Mapping[str, Any], repeat: int, extra: Mapping[str, Any]) -> Result:
    policy: Policy = build_policy({"images": settings})
    walls: list[float] = []
    cpus: list[float] = []
    made: Plan | None = None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        made = plan(inventory, usage, policy, NOW, **extra)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    assert made is not None
    return Result(name, settings, walls, cpus, len(made.actions), len(made.kept),
                  made.predicted_bytes, len(made.warnings))


def table(results: Sequence[Result]) -> str:
    lines = [
        "| policy | wall s (median) | wall s (best) | CPU s (median) | deletions | "
        f"kept (all kinds) | predicted GB | warnings | < {TARGET_S:g} s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        verdict = "PASS" if r.median < TARGET_S else "FAIL"
        lines.append(f"| {r.name} | {r.median:.3f} | {r.best:.3f} | {r.cpu:.3f} | {r.actions:,} | "
                     f"{r.kept:,} | {r.predicted_bytes / 1e9:.1f} | {r.warnings} | {verdict} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--layers", type=int, default=200_000)
    parser.add_argument("--containers", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    t0 = time.perf_counter()
    fake = populate(args.images, args.layers, args.containers)
    inventory = fake.inventory()
    usage = usage_records(inventory)
    # What the CLI asks the runtime for under an inode watermark (I/O, outside the plan).
    layer_inodes = fake.layer_inodes(freeable_layers(inventory))
    store_bytes = Accounting(inventory).total_bytes()
    freeable_inodes = Accounting(inventory, layer_inodes).freed_inodes_by(
        [i.id for i in inventory.images])
    fs = filesystem(store_bytes, freeable_inodes)
    setup_s = time.perf_counter() - t0
    c0 = time.process_time()
    graph = Accounting(inventory)
    graph_cpu_s = time.process_time() - c0
    rss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    extras: dict[str, dict[str, Any]] = {
        "": {},
        "fs": {"filesystem": fs, "layer_inodes": layer_inodes},
        "reuse": {"accounting": graph},
    }
    load_before = os.getloadavg()
    results = [run(inventory, usage, name, settings, args.repeat, extras[extra])
               for name, settings, extra in policies(store_bytes)]
    load_after = os.getloadavg()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"## `plan()` on {len(inventory.images):,} images, {len(inventory.layers):,} layers, "
          f"{len(inventory.containers):,} containers\n")
    print(f"Store {store_bytes / 1e9:.1f} GB; set-up (populate, usage, accounting) "
          f"{setup_s:.1f} s; building the piece graph alone {graph_cpu_s:.3f} s CPU. Median of "
          f"{args.repeat} plans per policy. Load average (1 min) {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after, on {os.cpu_count()} CPUs.\n")
    print(table(results))
    print()
    print(f"Peak RSS {rss_peak:.0f} MB (after set-up {rss_setup:.0f} MB).")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "images": len(inventory.images),
            "layers": len(inventory.layers),
            "containers": len(inventory.containers),
            "store_bytes": store_bytes,
            "setup_s": round(setup_s, 2),
            "graph_cpu_s": round(graph_cpu_s, 3),
            "filesystem": {"total_bytes": fs.total_bytes, "used_bytes": fs.used_bytes,
                           "total_inodes": fs.total_inodes, "used_inodes": fs.used_inodes},
            "repeat": args.repeat,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
            "peak_rss_mb": round(rss_peak, 1),
            "rss_after_setup_mb": round(rss_setup, 1),
            "results": [r.to_dict() for r in results],
        }, indent=2) + "\n")
    return 0 if all(r.median < TARGET_S for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
