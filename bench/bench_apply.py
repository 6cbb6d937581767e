"""`reclaim apply` against `docker rmi` on a private engine: images deleted per second.

Starts a sandbox engine of the given kind and writes a fixture of N unused images once (tiny
layers, one to three tags per image, a few untagged ones). Before each round the same archives
are loaded again, so every round deletes fresh, identical content:

  1. `reclaim apply --min-age 0s --quota 0 --yes --json`, as a process: images deleted (from
     the JSON), wall time, and the predicted bytes against the measured drop of `du -sbx` on
     the data root (and reclaim's own measure, from two inventories);
  2. `docker rmi <tags of one image>`, one process per image, one after the other;
  3. one `docker rmi` with the tags of all the images.

Untagged images are removed by id. Wall times are whole processes, start-up included, and
images/s is images gone over the wall time. With --repeat N, rounds 1 and 3 run N times each,
alternating which goes first, so that both see the same swings of a shared machine's load; the
verdict compares their medians. Round 2 (slow: one process per image) runs once, and not at
all with --no-loop. Each round's 1-minute load average is recorded beside it. With --profile a
last round runs reclaim apply under cProfile, through a counting proxy that also notes when
each request was sent, and prints where the time went and the API calls per image.

    python bench/bench_apply.py [--kind docker20] [--images 200] [--repeat 3] [--no-loop]
                                [--json FILE] [--profile]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, SupportsIndex

# `sandbox` is a folder of the repository, not part of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from apiproxy import CountingProxy
from sandbox import engines
from sandbox.content import Fixture, FixtureSpec, build_fixture

DOCKER_CLIENT = "/usr/bin/docker"
PROXY_SOCKET = "p.sock"
# The target: reclaim apply deletes at least as many images per second as one `docker rmi`
# call with every image.
TARGET_RATIO = 1.0


class BenchError(RuntimeError):
    """A tool under test failed, or the engine does not hold what a round expects."""


@dataclass
class Round:
    what: str
    images_before: int
    images_gone: int
    wall: float
    du_before: int
    du_after: int
    processes: int = 1
    predicted_bytes: int | None = None
    reclaim_freed_bytes: int | None = None
    deleted: int | None = None
    skipped: int | None = None
    failed: int | None = None
    note: str = ""
    load: float = 0.0

    @property
    def per_second(self) -> float:
        return self.images_gone / self.wall if self.wall else 0.0

    @property
    def du_drop(self) -> int:
        return self.du_before - self.du_after

    def to_dict(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["images_per_s"] = round(self.per_second, 2)
        doc["du_drop"] = self.du_drop
        return doc


class TimedRequests(list[str]):
    """The proxy's request list, noting when each request was seen."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def extend(self, paths: Iterable[str]) -> None:
        now = time.monotonic()
        found = list(paths)
        with self._lock:
            self.times.extend((now, p) for p in found)
        super().extend(found)

    def append(self, path: str) -> None:
        self.extend([path])

    def insert(self, index: SupportsIndex, path: str) -> None:
        raise NotImplementedError


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- the fixture ------------------------------------------------------------------------------


def spec_for(images: int) -> FixtureSpec:
    """N images with tiny layers, one to three tags each (the scaled fixture with more tags),
    no containers and no volumes: only archives are loaded, nothing else is seeded."""
    base = FixtureSpec.scaled(images=images, containers=0)
    return dataclasses.replace(
        base, name="ap", tags_per_image=(1, 3), dangling_named_volumes=0,
        dangling_anonymous_volumes=0,
    )


def load(client: docker.APIClient, archives: Sequence[Path]) -> None:
    for path in archives:
        with path.open("rb") as f:
            for msg in client.load_image(f, quiet=False):
                if isinstance(msg, dict) and (msg.get("error") or msg.get("errorDetail")):
                    raise BenchError(f"docker load {path.name}: {msg}")


def listed(client: docker.APIClient) -> dict[str, tuple[str, ...]]:
    """Image id -> the refs that remove it: its tags, or its id when it has none."""
    out: dict[str, tuple[str, ...]] = {}
    for entry in client.images(all=True):
        tags = tuple(t for t in entry.get("RepoTags") or () if t != "<none>:<none>")
        out[str(entry["Id"])] = tags or (str(entry["Id"]),)
    return out


def du(path: Path) -> int:
    os.sync()
    proc = subprocess.run(["du", "-sbx", str(path)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0 and not proc.stdout:
        raise BenchError(f"du -sbx {path}: {proc.stderr.strip()}")
    return int(proc.stdout.split()[0])


def fresh(client: docker.APIClient, archives: Sequence[Path], fixture: Fixture,
          data_root: Path) -> tuple[dict[str, tuple[str, ...]], int]:
    """Load the fixture again into an empty engine; its images and the data root's size."""
    left = listed(client)
    if left:
        # The previous round's tool left these (its row says how many); cleared here, by the
        # benchmark, so that the next round starts from the same empty engine.
        say(f"the previous round left {len(left)} images, e.g. {sorted(left.items())[:3]}; "
            "removing them")
        for image_id in left:
            client.remove_image(image_id, force=True)
        if listed(client):
            raise BenchError("the engine still holds images from the previous round")
    load(client, archives)
    images = listed(client)
    if len(images) != fixture.spec.image_count:
        raise BenchError(f"the engine holds {len(images)} images after loading, the fixture "
                         f"{fixture.spec.image_count}")
    return images, du(data_root)


# --- the rounds -------------------------------------------------------------------------------


def reclaim_cmd(url: str, state_dir: Path) -> list[str]:
    return ["--engine", url, "--state-dir", str(state_dir), "apply", "--min-age", "0s",
            "--quota", "0", "--yes", "--json"]


def round_reclaim(client: docker.APIClient, engine: engines.SandboxEngine,
                  images: dict[str, tuple[str, ...]], du_before: int, work: Path) -> Round:
    state_dir = Path(tempfile.mkdtemp(prefix="state-", dir=work))
    cmd = [sys.executable, "-m", "reclaim", *reclaim_cmd(engine.url, state_dir)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"reclaim apply exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace')[-2000:]}")
    doc = json.loads(proc.stdout)
    left = listed(client)
    deleted = [d for d in doc["deleted"] if d["kind"] == "image"]
    return Round(
        "`reclaim apply --min-age 0s --quota 0 --yes --json`", len(images),
        len(images) - len(left), wall, du_before, du(engine.data_root),
        predicted_bytes=int(doc["predicted_bytes"]), reclaim_freed_bytes=int(doc["freed_bytes"]),
        deleted=len(deleted), skipped=len(doc["skipped"]), failed=len(doc["failed"]),
    )


def docker_rmi(refs: Sequence[str], env: dict[str, str]) -> None:
    proc = subprocess.run([DOCKER_CLIENT, "rmi", *refs], capture_output=True, env=env,
                          check=False)
    if proc.returncode != 0:
        raise BenchError(f"docker rmi exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace')[-2000:]}")


def round_rmi_loop(client: docker.APIClient, engine: engines.SandboxEngine,
                   images: dict[str, tuple[str, ...]], du_before: int,
                   env: dict[str, str]) -> Round:
    t0 = time.perf_counter()
    for refs in images.values():
        docker_rmi(refs, env)
    wall = time.perf_counter() - t0
    left = listed(client)
    return Round("`docker rmi <tags of one image>`, one process per image", len(images),
                 len(images) - len(left), wall, du_before, du(engine.data_root),
                 processes=len(images))


def round_rmi_once(client: docker.APIClient, engine: engines.SandboxEngine,
                   images: dict[str, tuple[str, ...]], du_before: int,
                   env: dict[str, str]) -> Round:
    refs = [r for image_refs in images.values() for r in image_refs]
    t0 = time.perf_counter()
    docker_rmi(refs, env)
    wall = time.perf_counter() - t0
    left = listed(client)
    return Round(f"one `docker rmi` with all {len(refs)} refs", len(images),
                 len(images) - len(left), wall, du_before, du(engine.data_root))


# --- the profile ------------------------------------------------------------------------------

_VERSION = re.compile(r"^/v1\.\d+")
_HEX = re.compile(r"(sha256:)?[0-9a-f]{12,64}")


def is_delete(request: str) -> bool:
    """The proxy sees request paths only; docker-py's image removal is the one request here
    with `force=` in its query."""
    return endpoint(request).startswith("DELETE ")


def endpoint(request: str) -> str:
    """A request path with its version, ids and image refs taken out."""
    path, _, query = _VERSION.sub("", request).partition("?")
    if path.startswith("/images/") and "force=" in query:
        return "DELETE /images/{ref} (remove a tag, or the image by id)"
    if path.startswith("/images/") and path.endswith("/json") and path != "/images/json":
        return "GET /images/{id}/json (image_refs: the image's tags now)"
    if path == "/containers/json" and "ancestor" in query:
        return "GET /containers/json?filters=ancestor (image_users)"
    if path == "/events":
        return "GET /events (the use watch: one stream for the whole apply)"
    return "GET " + _HEX.sub("{id}", path) + (f"?{query}" if query else "")


@dataclass
class Profile:
    wall: float
    images: int
    calls: Counter[str] = field(default_factory=Counter)
    phases: dict[str, float] = field(default_factory=dict)
    top: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall, 3), "images": self.images,
                "api_calls": dict(self.calls.most_common()),
                "phases_s": {k: round(v, 3) for k, v in self.phases.items()},
                "cprofile_top": self.top}


def round_profile(client: docker.APIClient, engine: engines.SandboxEngine,
                  images: dict[str, tuple[str, ...]], work: Path) -> Profile:
    """reclaim apply under cProfile (main thread only) through a proxy that notes when each
    request went out; the phases come from those times."""
    proxy = CountingProxy(work / PROXY_SOCKET, engine.socket)
    timed = TimedRequests()
    proxy.requests = timed
    out = work / "apply.prof"
    state_dir = Path(tempfile.mkdtemp(prefix="state-", dir=work))
    cmd = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "reclaim",
           *reclaim_cmd(proxy.url, state_dir)]
    try:
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, check=False)
        end = time.monotonic()
    finally:
        proxy.close()
    if proc.returncode != 0:
        raise BenchError(f"reclaim apply (profiled) exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace')[-2000:]}")
    if listed(client):
        raise BenchError("the profiled apply left images behind")
    times = sorted(timed.times)
    calls = Counter(endpoint(r) for _, r in times)
    deletes = [t for t, r in times if is_delete(r)]
    phases: dict[str, float] = {"whole process": end - start}
    if times:
        phases["start-up until the first request"] = times[0][0] - start
    if deletes:
        phases["first request to first DELETE (inventory, ledger, plan, re-validation)"] = \
            deletes[0] - times[0][0]
        phases["first DELETE to last DELETE (re-checks and deletions)"] = deletes[-1] - deletes[0]
        phases["last DELETE to exit (inventory after, journal, output)"] = end - deletes[-1]
    stream = io.StringIO()
    stats = pstats.Stats(str(out), stream=stream)
    stats.sort_stats("cumulative").print_stats(30)
    return Profile(end - start, len(images), calls, phases, stream.getvalue())


# --- report -----------------------------------------------------------------------------------


def mb(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:.2f}"


def table(rounds: Sequence[Round], reference: float) -> str:
    """One row per round, in the order they ran; `reference` is the median images/s of one
    `docker rmi`."""
    lines = [
        "| # | what | load 1m | images gone | processes | wall s | images/s | "
        "vs one `docker rmi` (median) | predicted MB | reclaim measured MB | `du -sbx` drop MB "
        "| predicted / du |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in enumerate(rounds, 1):
        ratio = r.per_second / reference if reference else 0.0
        pred_du = ("—" if r.predicted_bytes is None or not r.du_drop
                   else f"{r.predicted_bytes / r.du_drop:.3f}")
        lines.append(
            f"| {n} | {r.what} | {r.load:.1f} | {r.images_gone}/{r.images_before} | "
            f"{r.processes} | {r.wall:.2f} | {r.per_second:.1f} | {ratio:.2f}x | "
            f"{mb(r.predicted_bytes)} | {mb(r.reclaim_freed_bytes)} | {r.du_drop / 1e6:.2f} | "
            f"{pred_du} |"
        )
    return "\n".join(lines)


def client_version() -> str:
    proc = subprocess.run([DOCKER_CLIENT, "--version"], capture_output=True, text=True,
                          check=False)
    return proc.stdout.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=engines.ENGINE_KINDS, default="docker20")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument("--profile", action="store_true",
                        help="a last round: reclaim apply under cProfile, API calls counted")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of reclaim apply and of one docker rmi, alternated")
    parser.add_argument("--no-loop", action="store_true",
                        help="skip the docker rmi loop (one process per image)")
    args = parser.parse_args(argv)
    if args.images < 2:
        parser.error("--images must be at least 2")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    engines.ensure_host_packages()
    base = Path(tempfile.mkdtemp(prefix="ra-", dir="/tmp"))
    spec = spec_for(args.images)
    say(f"starting a {args.kind} engine in {base}")
    engine = engines.start(args.kind, base)
    client: docker.APIClient | None = None
    try:
        client = docker.APIClient(base_url=engine.url, version="auto", timeout=600)
        version = str(client.version().get("Version", ""))
        work = base / "work"
        work.mkdir()
        t0 = time.perf_counter()
        fixture = build_fixture(spec)
        archives = fixture.write_archives(work / "archives")
        say(f"{spec.image_count} images written in {time.perf_counter() - t0:.1f} s")
        env = dict(os.environ, DOCKER_HOST=engine.url)
        env.pop("DOCKER_CONTEXT", None)
        load_before = os.getloadavg()

        def timed(make: Any, *extra: Any) -> Round:
            images, size = fresh(client, archives, fixture, engine.data_root)
            load = os.getloadavg()[0]
            done: Round = make(client, engine, images, size, *extra)
            done.load = load
            return done

        rounds: list[Round] = []
        for n in range(args.repeat):
            # Alternated, so that neither tool always runs first into a load swing.
            order = [(round_reclaim, work), (round_rmi_once, env)]
            for make, extra in order if n % 2 == 0 else order[::-1]:
                say(f"repetition {n + 1}/{args.repeat}: {make.__name__}")
                rounds.append(timed(make, extra))
        if not args.no_loop:
            say("docker rmi, one process per image")
            rounds.append(timed(round_rmi_loop, env))
        load_after = os.getloadavg()
        profile: Profile | None = None
        if args.profile:
            say("reclaim apply under cProfile, through the counting proxy")
            images, _ = fresh(client, archives, fixture, engine.data_root)
            profile = round_profile(client, engine, images, work)

        ours = [r for r in rounds if r.what.startswith("`reclaim")]
        theirs = [r for r in rounds if r.what.startswith("one `docker rmi`")]
        reclaim_rate = statistics.median(r.per_second for r in ours)
        once_rate = statistics.median(r.per_second for r in theirs)
        ratio = reclaim_rate / once_rate if once_rate else 0.0
        pairs = [a.per_second / b.per_second for a, b in zip(ours, theirs, strict=True)
                 if b.per_second]
        passed = ratio >= TARGET_RATIO and all(r.images_gone == r.images_before for r in ours)
        print(f"## `reclaim apply` vs `docker rmi` on {args.kind} (engine {version}): "
              f"{spec.image_count} unused images\n")
        print(f"Client {client_version()}. Fresh identical images loaded before each round. "
              f"Load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after, "
              f"on {os.cpu_count()} CPUs.\n")
        print(table(rounds, once_rate))
        print()
        print(f"- {'PASS' if passed else 'FAIL'}: reclaim apply at least as many images/s as "
              f"one `docker rmi` (medians of {args.repeat}): {reclaim_rate:.1f} vs "
              f"{once_rate:.1f} (ratio {ratio:.2f}; per repetition "
              f"{', '.join(f'{p:.2f}' for p in pairs)})")
        if profile is not None:
            print("\n### where the time goes (profiled run, through the proxy)\n")
            for name, secs in profile.phases.items():
                print(f"- {name}: {secs:.2f} s")
            print(f"\nAPI calls ({sum(profile.calls.values())} for {profile.images} images):\n")
            for what, n in profile.calls.most_common():
                print(f"- {what}: {n} ({n / profile.images:.2f} per image)")
            print("\n```\n" + profile.top.strip() + "\n```")
        if args.json is not None:
            args.json.write_text(json.dumps({
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "kind": args.kind,
                "engine_version": version,
                "client": client_version(),
                "images": spec.image_count,
                "cpus": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in load_after],
                "rounds": [r.to_dict() for r in rounds],
                "repeat": args.repeat,
                "ratio_reclaim_vs_one_rmi": round(ratio, 3),
                "ratio_per_repetition": [round(p, 3) for p in pairs],
                "target_met": passed,
                "profile": None if profile is None else profile.to_dict(),
            }, indent=2) + "\n")
        return 0 if passed else 1
    finally:
        if client is not None:
            client.close()
        say(f"stopping the engine in {base}")
        engines.stop(engine, remove=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
