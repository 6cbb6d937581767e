"""fsck's sizing against `du -sbx` on the same tree of small files, page cache warm.

Builds (once, reused when present) a tree of N small files in directories of 1,000, then times
`du -sbx` and reclaim's `size_paths` on it, alternating, and prints the medians and the ratio
measured in the same run. Both must agree on the apparent bytes.

    python bench/bench_fsck.py [--files 1000000] [--dir /tmp/reclaim-bench-fsck] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

from reclaim.fsck.sizing import DEFAULT_WORKERS, size_paths

PER_DIR = 1000


def build(root: str, files: int) -> None:
    marker = os.path.join(root, f".built-{files}")
    if os.path.exists(marker):
        return
    os.makedirs(root, exist_ok=True)
    payload = b"x" * 100
    for d in range((files + PER_DIR - 1) // PER_DIR):
        sub = os.path.join(root, f"d{d:05}")
        os.makedirs(sub, exist_ok=True)
        for i in range(min(PER_DIR, files - d * PER_DIR)):
            fd = os.open(os.path.join(sub, f"f{i:04}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.write(fd, payload[: (i % 100) + 1])
            os.close(fd)
    open(marker, "w").close()


def time_du(root: str) -> tuple[float, int]:
    start = time.perf_counter()
    out = subprocess.run(["du", "-sbx", root], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, int(out.stdout.split()[0])


def time_reclaim(root: str, workers: int) -> tuple[float, int]:
    start = time.perf_counter()
    [size] = size_paths([root], workers=workers)
    return time.perf_counter() - start, size.apparent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--dir", default="/tmp/reclaim-bench-fsck")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    root = os.path.join(args.dir, f"tree-{args.files}")
    began = time.perf_counter()
    build(root, args.files)
    print(f"tree: {args.files:,} files in {root} (ready in {time.perf_counter() - began:.1f}s)")
    time_du(root)  # warm the page cache (dentries and inodes)
    results: dict[str, list[float]] = {"du -sbx": [], f"reclaim ({DEFAULT_WORKERS} threads)": [],
                                       "reclaim (1 thread)": []}
    sizes: dict[str, int] = {}
    for _ in range(args.runs):
        for name in results:
            if name == "du -sbx":
                seconds, apparent = time_du(root)
            else:
                seconds, apparent = time_reclaim(root, 1 if "1 thread" in name else
                                                 DEFAULT_WORKERS)
            results[name].append(seconds)
            sizes[name] = apparent
    du = statistics.median(results["du -sbx"])
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"| what | wall s (median of {args.runs}) | vs du -sbx | apparent bytes |")
    print("|---|---:|---:|---:|")
    for name, times in results.items():
        median = statistics.median(times)
        print(f"| {name} | {median:.3f} | {median / du:.2f}x | {sizes[name]:,} |")
    if len(set(sizes.values())) != 1:
        raise SystemExit(f"sizes disagree: {sizes}")


if __name__ == "__main__":
    main()
