"""fsck's sizing against `du -sbx` on the same tree of small files, page cache warm and cold.

Builds (once, reused when present, repaired when directories are missing or short) a tree of N
small files in directories of 1,000, then times `du -sbx` and reclaim's `size_paths` on it,
alternating, and prints the medians and the ratio measured in the same run:

- warm: one untimed `du -sbx` first, so dentries and inodes are cached;
- cold: `sync; echo 3 > /proc/sys/vm/drop_caches` before each timing of each tool (root only;
  this empties the page cache of the whole machine).

Both tools must report the same apparent bytes (and reclaim the same allocated bytes as
`du -sx -B1`). Exits 1 when reclaim is slower than `du -sbx` in a mode.

    python bench/bench_fsck.py [--files 1000000] [--dir /tmp/reclaim-bench-fsck] [--runs 3]
                               [--mode both|warm|cold] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from reclaim.ondisk.sizing import DEFAULT_WORKERS, size_paths

PER_DIR = 1000


def build(root: str, files: int) -> None:
    """Create the tree, or the directories of it that are missing or incomplete."""
    marker = os.path.join(root, f".built-{files}")
    payload = b"x" * 100
    os.makedirs(root, exist_ok=True)
    for d in range((files + PER_DIR - 1) // PER_DIR):
        sub = os.path.join(root, f"d{d:05}")
        want = min(PER_DIR, files - d * PER_DIR)
        if os.path.exists(marker) and os.path.isdir(sub) and len(os.listdir(sub)) == want:
            continue
        os.makedirs(sub, exist_ok=True)
        for i in range(want):
            fd = os.open(os.path.join(sub, f"f{i:04}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.write(fd, payload[: (i % 100) + 1])
            os.close(fd)
    open(marker, "w").close()


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def time_du(root: str) -> tuple[float, float, int]:
    start, cpu = time.perf_counter(), cpu_seconds()
    out = subprocess.run(["du", "-sbx", root], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, cpu_seconds() - cpu, int(out.stdout.split()[0])


def time_reclaim(root: str, workers: int) -> tuple[float, float, int]:
    start, cpu = time.perf_counter(), cpu_seconds()
    [size] = size_paths([root], workers=workers)
    return time.perf_counter() - start, cpu_seconds() - cpu, size.apparent


@dataclass
class Row:
    name: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    apparent: set[int] = field(default_factory=set)


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run_mode(mode: str, root: str, runs: int, workers: int) -> tuple[list[Row], str]:
    rows = [Row("du -sbx"), Row(f"reclaim ({workers} workers)")]
    if mode == "warm":
        rows.append(Row("reclaim (1 process)"))
        time_du(root)  # warm the page cache (dentries and inodes)
    before = load()
    for _ in range(runs):
        for row in rows:
            if mode == "cold":
                drop_caches()
            if row.name == "du -sbx":
                wall, cpu, apparent = time_du(root)
            else:
                wall, cpu, apparent = time_reclaim(root, 1 if "1 process" in row.name
                                                   else workers)
            row.wall.append(wall)
            row.cpu.append(cpu)
            row.apparent.add(apparent)
            print(f"  {mode} {row.name}: {wall:.3f}s wall, {cpu:.3f}s CPU", file=sys.stderr)
    return rows, f"{before} → {load()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--dir", default="/tmp/reclaim-bench-fsck")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mode", choices=["both", "warm", "cold"], default="both")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    args = parser.parse_args()
    modes = ["warm", "cold"] if args.mode == "both" else [args.mode]
    if "cold" in modes and os.geteuid() != 0:
        raise SystemExit("the cold-cache mode drops the page cache and needs root")
    root = os.path.join(args.dir, f"tree-{args.files}")
    began = time.perf_counter()
    build(root, args.files)
    print(f"tree: {args.files:,} files in {root} (ready in {time.perf_counter() - began:.1f}s)")

    # the allocated bytes once, untimed: du -B1 counts st_blocks * 512 like reclaim does
    du_alloc = int(subprocess.run(["du", "-sx", "-B1", root], capture_output=True, text=True,
                                  check=True).stdout.split()[0])
    [size] = size_paths([root], workers=args.workers)
    if size.allocated != du_alloc:
        raise SystemExit(f"allocated bytes disagree: du {du_alloc:,}, reclaim {size.allocated:,}")

    failed = []
    print(f"{os.cpu_count()} CPUs; wall and CPU seconds are medians of {args.runs} runs, "
          "alternating the tools")
    print("| cache | what | wall s | CPU s | vs du -sbx | apparent bytes | load avg 1/5/15 min "
          "(before → after) |")
    print("|---|---|---:|---:|---:|---:|---|")
    for mode in modes:
        rows, loads = run_mode(mode, root, args.runs, args.workers)
        du = statistics.median(rows[0].wall)
        for row in rows:
            wall = statistics.median(row.wall)
            sizes = ", ".join(f"{a:,}" for a in sorted(row.apparent))
            print(f"| {mode} | {row.name} | {wall:.3f} | {statistics.median(row.cpu):.3f} | "
                  f"{wall / du:.2f}x | {sizes} | {loads} |")
        if len({a for row in rows for a in row.apparent}) != 1:
            raise SystemExit(f"apparent bytes disagree in the {mode} runs")
        if statistics.median(rows[1].wall) > du:
            failed.append(mode)
    if failed:
        print(f"target missed (reclaim slower than du -sbx): {', '.join(failed)}")
        raise SystemExit(1)
    print("target met: reclaim at least as fast as du -sbx, " + " and ".join(modes))


if __name__ == "__main__":
    main()
