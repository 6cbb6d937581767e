"""The usage ledger and `reclaim watch`: ingest rate, resident memory, catch-up after a gap.

Measures, in one run:

  - events ingested per second: a synthetic stream of container and image events (tags known
    to the ledger, ids, a few unknown references) written through `Recorder.handle` in batches
    of 500, as `reclaim watch` writes them (target >= 5,000/s);
  - `reclaim watch` resident memory (VmRSS, and VmHWM, from /proc/<pid>/status) once it has
    caught up on a sandbox engine seeded with 1,000 images and 2,000 containers (target < 60 MB);
  - the time `reclaim watch` takes to catch up after a gap of 10,000 events made while it was
    stopped: from the process start to its `event=caught-up` line, with its checkpoint checked to
    have reached the last event the engine still held (target < 5 s).

Prints a markdown table with PASS/FAIL and exits 1 if a target fails.

    python bench/bench_ledger.py [--kind docker20] [--events 50000] [--gap 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# `sandbox` is a folder of the repository, not part of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from bench_df import BenchError, say, seeded_engine
from reclaim.model import Event
from reclaim.recorder import Recorder
from reclaim.runtimes.fake import FakeRuntime
from reclaim.state.store import Store
from reclaim.state.usage import Ledger
from sandbox import engines
from sandbox.content import FixtureSpec

MIN_EVENTS_PER_S = 5000.0
MAX_RSS_MB = 60.0
MAX_CATCH_UP_S = 5.0
BATCH = 500


@dataclass
class Row:
    what: str
    value: str
    target: str
    passed: bool | None  # None: no target


# --- ingest rate ------------------------------------------------------------------------------


def synthetic_events(n: int, images: list[tuple[str, str]], seed: int = 7) -> list[Event]:
    """A day of a busy host in miniature: containers created, started, exec'd into, stopped
    and removed; now and then an image tagged or pulled. Container events name their image by
    tag (as `docker run busybox:1` does) or by id, some by a tag nobody knows."""
    rng = random.Random(seed)
    t = datetime(2026, 11, 25, tzinfo=UTC)
    events: list[Event] = []
    serial = 0
    while len(events) < n:
        image_id, tag = rng.choice(images)
        ref = tag if rng.random() < 0.7 else image_id
        if rng.random() < 0.01:
            ref = f"unknown/{serial}:1"
        serial += 1
        cid = f"{serial:064x}"
        for action in ("create", "start", "exec_start: sh", "die", "destroy"):
            t += timedelta(microseconds=rng.randint(1, 2000))
            events.append(Event(t, "container", action, cid, image=ref, name=f"c{serial}"))
        if rng.random() < 0.05:
            t += timedelta(microseconds=1)
            events.append(Event(t, "image", rng.choice(("tag", "pull")), image_id,
                                name=tag))
    return events[:n]


def ingest_rate(n: int, work: Path) -> tuple[float, float]:
    """Events per second through `Recorder.handle` in batches; and the seconds it took."""
    fake = FakeRuntime()
    images = []
    for i in range(1000):
        image_id = f"sha256:{i:064x}"
        tag = f"bench/app-{i}:1"
        fake.add_image(image_id, tags=[tag], layers=[(f"sha256:{i:063x}f", 1)])
        images.append((image_id, tag))
    store = Store(work / "ingest.db")
    try:
        ledger = Ledger(store)
        now = datetime(2026, 11, 25, 12, tzinfo=UTC)
        recorder = Recorder(ledger, resolve=lambda ref: None)  # unknown refs: the engine says 404
        recorder.catch_up(fake.inventory(), now)
        events = synthetic_events(n, images)
        t0 = time.perf_counter()
        for start in range(0, len(events), BATCH):
            recorder.handle(events[start:start + BATCH], now)
        elapsed = time.perf_counter() - t0
        if ledger.checkpoint() != events[-1].time:
            raise BenchError("the checkpoint did not reach the last event")
    finally:
        store.close()
    return n / elapsed, elapsed


# --- reclaim watch on a seeded engine ---------------------------------------------------------


class WatchProcess:
    def __init__(self, url: str, state_dir: Path, log: Path) -> None:
        self.log = log
        self._fh = log.open("ab")
        self.offset = log.stat().st_size
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reclaim", "--engine", url, "--state-dir", str(state_dir),
             "watch"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._fh,
        )

    def wait_for(self, needle: str, timeout: float = 300.0) -> float:
        """Seconds from the process start until `needle` appears in its log."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log.read_bytes()[self.offset:].decode(errors="replace")
            if needle in text:
                return time.perf_counter() - self.started
            if self.proc.poll() is not None:
                raise BenchError(f"reclaim watch exited {self.proc.returncode}:\n{text}")
            if time.monotonic() > deadline:
                raise BenchError(f"no {needle!r} from reclaim watch in {timeout:.0f} s")
            time.sleep(0.01)

    def status_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise BenchError(f"no {field} for pid {self.proc.pid}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        finally:
            self._fh.close()
        if code != 0:
            raise BenchError(f"reclaim watch exited {code} on SIGTERM")


def make_gap(client: Any, n: int, image: str) -> datetime:
    """`n` events on the engine: a fifth container create/remove pairs, the rest tag/untag
    pairs (cheap, so the gap is made in seconds). Returns the engine time of the last one."""
    pairs = n // 2
    containers = pairs // 5
    host_config = client.create_host_config(network_mode="none")

    def container_pair(i: int) -> None:
        cid = client.create_container(image, command=["true"], host_config=host_config,
                                      network_disabled=True)["Id"]
        client.remove_container(cid)

    def tag_pair(i: int) -> None:
        client.tag(image, "bench-gap", f"t{i}")
        client.remove_image(f"bench-gap:t{i}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(container_pair, range(containers)))
        list(pool.map(tag_pair, range(pairs - containers)))
    last = None
    for message in client.events(since=int(time.time()) - 3600, until=int(time.time()) + 1,
                                 decode=True):
        last = message
    if last is None:
        raise BenchError("the engine reports no events")
    return datetime.fromtimestamp(int(last["timeNano"]) / 1e9, UTC)


def checkpoint(state_dir: Path) -> datetime | None:
    databases = list(state_dir.glob("*.db"))
    if len(databases) != 1:
        raise BenchError(f"expected one ledger in {state_dir}, found {databases}")
    conn = sqlite3.connect(databases[0])
    try:
        row = conn.execute("SELECT value FROM checkpoint WHERE key = 'events_since'").fetchone()
    finally:
        conn.close()
    return None if row is None else datetime.fromtimestamp(float(row[0]), UTC)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=engines.ENGINE_KINDS, default="docker20")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--containers", type=int, default=2000)
    parser.add_argument("--events", type=int, default=50000)
    parser.add_argument("--gap", type=int, default=10000)
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the seeded engine in DIR (short, under /tmp) and reuse it")
    args = parser.parse_args(argv)

    rows: list[Row] = []
    work = Path(tempfile.mkdtemp(prefix="rbl-"))
    try:
        rate, seconds = ingest_rate(args.events, work)
        say(f"ingest: {args.events} events in {seconds:.2f} s")
        rows.append(Row(f"events ingested per second ({args.events:,} events, batches of "
                        f"{BATCH}, `Recorder.handle`)", f"{rate:,.0f}/s",
                        f">= {MIN_EVENTS_PER_S:,.0f}/s", rate >= MIN_EVENTS_PER_S))

        engines.ensure_host_packages()
        reuse = args.keep is not None
        base = (args.keep.resolve() if reuse
                else Path(tempfile.mkdtemp(prefix="rbl-", dir="/tmp")))
        base.mkdir(parents=True, exist_ok=True)
        spec = FixtureSpec.scaled(images=args.images, containers=args.containers)
        say(f"starting a {args.kind} engine in {base}")
        engine, _truth, started, _seed_s = seeded_engine(args.kind, base, spec, reuse)
        client = docker.APIClient(base_url=engine.url, version="auto", timeout=600)
        try:
            scratch = next(t for i in client.images() for t in i.get("RepoTags") or ()
                           if t != "<none>:<none>")
            state = work / "state"
            log = work / "watch.log"
            log.touch()

            watch = WatchProcess(engine.url, state, log)
            first = watch.wait_for("event=caught-up")
            rss = watch.status_kib("VmRSS") / 1024
            hwm = watch.status_kib("VmHWM") / 1024
            watch.stop()
            say(f"first start caught up in {first:.2f} s, VmRSS {rss:.1f} MB, VmHWM {hwm:.1f} MB")
            rows.append(Row(f"`reclaim watch` VmRSS after catching up ({args.images:,} images, "
                            f"{args.containers:,} containers; VmHWM {hwm:.1f} MB)",
                            f"{rss:.1f} MB", f"< {MAX_RSS_MB:.0f} MB", rss < MAX_RSS_MB))
            rows.append(Row("`reclaim watch` first start to caught-up (empty ledger)",
                            f"{first:.2f} s", "—", None))

            t0 = time.perf_counter()
            last_event = make_gap(client, args.gap, scratch)
            say(f"made {args.gap} events in {time.perf_counter() - t0:.1f} s")
            watch = WatchProcess(engine.url, state, log)
            gap_s = watch.wait_for("event=caught-up")
            reached = checkpoint(state)
            watch.stop()
            ok = reached is not None and reached >= last_event - timedelta(microseconds=1)
            say(f"caught up after the gap in {gap_s:.2f} s; checkpoint {reached}, "
                f"last event {last_event}")
            rows.append(Row(f"`reclaim watch` start to caught-up after a gap of {args.gap:,} "
                            "events (checkpoint at the last event: "
                            f"{'yes' if ok else 'no'})", f"{gap_s:.2f} s",
                            f"< {MAX_CATCH_UP_S:.0f} s", ok and gap_s < MAX_CATCH_UP_S))
        finally:
            client.close()
            if started:
                engines.stop(engine, remove=not reuse)
            if not reuse:
                shutil.rmtree(base, ignore_errors=True)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)

    print(f"\n{engine.kind} {engine.version}\n")
    print("| what | measured | target | verdict |")
    print("|---|---:|---|---|")
    for row in rows:
        verdict = "—" if row.passed is None else ("PASS" if row.passed else "**FAIL**")
        print(f"| {row.what} | {row.value} | {row.target} | {verdict} |")
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
