"""`reclaim df --json` against `docker system df` on a private engine seeded at scale.

Starts a sandbox engine of the given kind, seeds it with a scaled fixture (1,000 images and
2,000 containers by default), puts a counting proxy in front of its socket, and measures in the
same run:

  - `reclaim df --json` as a whole process (start-up included): wall time, peak RSS, API calls;
    its usage ledger is private to the run (--state-dir under the sandbox dir), and the first
    run, which creates it, is reported on its own row;
  - `docker system df -v` and `docker system df` (the Debian client, /usr/bin/docker);
  - the two raw listings (images, containers) fetched and decoded in-process, on the engine's
    own socket: what any inventory costs the engine at least;
  - reading imagedb and layerdb from disk in-process, as reclaim does on overlay2;
  - with --slow, one `docker image inspect` process per image (what docker-gc does).

Prints a markdown table and PASS/FAIL against the targets, and exits 1 if a check or a target
fails. With --keep DIR the seeded engine is kept in DIR (stopped, not removed) and reused by the
next run with the same kind and counts.

    python bench/bench_df.py [--kind docker20] [--images 1000] [--containers 2000]
                             [--repeat 3] [--keep DIR] [--json FILE] [--slow]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# `sandbox` is a folder of the repository, not part of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from apiproxy import CountingProxy
from reclaim.ondisk.digests import chain_ids
from reclaim.runtimes.docker.disk import Overlay2Metadata
from sandbox import engines
from sandbox.content import FixtureSpec, build_fixture
from sandbox.seed import SeededTruth, seed

DOCKER_CLIENT = "/usr/bin/docker"
TRUTH_FILE = "bench-truth.json"
PROXY_SOCKET = "p.sock"
STATE_DIR = "reclaim-state"
MiB = 1024 * 1024

# The targets for `reclaim df`. The issue sets the API-call target for the overlay2 path;
# `df` now reads the containerd image store's records from disk too, so it is checked on
# every kind.
MAX_WALL_RATIO = 0.5
MAX_API_CALLS = 5
MAX_RSS_MB = 150.0


@dataclass
class Measure:
    what: str
    walls: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    api_calls: list[int] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # of the last run, for the JSON
    note: str = ""
    failures: list[str] = field(default_factory=list)  # runs that failed, and why

    @property
    def wall(self) -> float:
        """Median over the runs that succeeded; NaN if none did."""
        return statistics.median(self.walls) if self.walls else float("nan")

    @property
    def rss_mb(self) -> float | None:
        return max(self.rss_kib) / 1024 if self.rss_kib else None

    @property
    def calls(self) -> int | None:
        return max(self.api_calls) if self.api_calls else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "wall_s_median": round(self.wall, 4) if self.walls else None,
            "walls_s": [round(w, 4) for w in self.walls],
            "peak_rss_mb": None if self.rss_mb is None else round(self.rss_mb, 1),
            "api_calls": self.calls,
            "api_calls_per_run": self.api_calls,
            "requests_last_run": self.requests,
            "note": self.note,
            "failures": self.failures,
        }


@dataclass(frozen=True)
class Run:
    wall: float
    rss_kib: int
    returncode: int
    stdout: bytes
    stderr: bytes


@dataclass
class Check:
    name: str
    passed: bool | None  # None: does not apply
    detail: str

    @property
    def verdict(self) -> str:
        return "n/a" if self.passed is None else ("PASS" if self.passed else "FAIL")


# --- running things ---------------------------------------------------------------------------


# Runs one command and reports its own figures. The peak RSS of a child (ru_maxrss) also counts
# the memory of the process it was forked from, up to the exec: the kernel keeps the high-water
# mark of the old address space, and with vfork that is the parent's whole peak (this benchmark's,
# after seeding, ~65 MB). So the command is forked by this small launcher, not by the benchmark,
# and the launcher's own size (~5 MB) is the floor of what can be measured.
LAUNCHER = """
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(report, "w") as f:
    f.write("%r %d %d" % (wall, usage.ru_maxrss, os.waitstatus_to_exitcode(status)))
"""


def run_process(cmd: Sequence[str], env: dict[str, str]) -> Run:
    """Wall time from fork to reaping (the launcher's own start-up excluded), and the command's
    peak RSS (ru_maxrss, KiB), as the launcher saw them with os.wait4."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", prefix="rb-run-") as report:
        launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, report.name, *cmd]
        proc = subprocess.Popen(launcher, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=env)
        _, status, _ = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise BenchError(f"the launcher for {cmd[0]} exited {proc.returncode}")
        wall, rss_kib, returncode = report.read().split()
        out.seek(0)
        err.seek(0)
        return Run(float(wall), int(rss_kib), int(returncode), out.read(), err.read())


def measure_process(
    what: str,
    cmd: Sequence[str],
    env: dict[str, str],
    proxy: CountingProxy,
    repeat: int,
    check: Callable[[Run], None],
    into: Measure | None = None,
) -> Measure:
    """Runs `cmd` `repeat` times (adding to `into` when given). A run that fails (exit status,
    or `check`) is recorded as a failure with its reason and left out of the figures: a tool
    failing is a result too."""
    m = into if into is not None else Measure(what)
    for n in range(len(m.walls) + len(m.failures), len(m.walls) + len(m.failures) + repeat):
        proxy.reset()
        run = run_process(cmd, env)
        requests = proxy.reset()
        try:
            if run.returncode != 0:
                tail = run.stderr.decode(errors="replace").strip()[-500:]
                raise BenchError(f"exited {run.returncode} after {run.wall:.1f} s: {tail}")
            check(run)
        except (BenchError, ValueError, KeyError, TypeError) as exc:
            m.failures.append(f"run {n + 1}: {exc}")
            say(f"  {what} failed: {exc}")
            continue
        m.walls.append(run.wall)
        m.rss_kib.append(run.rss_kib)
        m.api_calls.append(len(requests))
        m.requests = requests
    return m


def measure_inprocess(what: str, repeat: int, fn: Callable[[], object], note: str) -> Measure:
    m = Measure(what, note=note)
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        m.walls.append(time.perf_counter() - t0)
    return m


class BenchError(RuntimeError):
    """A tool under test failed, or answered something other than the engine holds."""


# --- the measured operations ------------------------------------------------------------------


def raw_listings(sock: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """GET /images/json?all=1 and /containers/json?all=1 on the engine's socket, decoded."""
    out: list[list[dict[str, Any]]] = []
    for path in ("/images/json?all=1", "/containers/json?all=1"):
        status, body = engines.api_get(sock, path, timeout=600.0)
        if status != 200:
            raise BenchError(f"GET {path}: HTTP {status}")
        out.append(json.loads(body))
    return out[0], out[1]


def read_overlay2(data_root: Path, image_ids: Sequence[str]) -> int:
    """imagedb and layerdb of every image, as reclaim reads them (each image's layers read
    again, no cache across images). Returns the layer reads made."""
    meta = Overlay2Metadata(data_root)
    reads = 0
    for image_id in image_ids:
        config = meta.image_config(image_id)
        chain = chain_ids(config.diff_ids)
        parent: str | None = None
        for depth, (chain_id, diff_id) in enumerate(zip(chain, config.diff_ids, strict=True)):
            meta.layer(chain_id, diff_id, parent, depth)
            parent = chain_id
            reads += 1
    return reads


def check_reclaim_json(image_ids: set[str], container_ids: set[str]) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        doc = json.loads(run.stdout)
        got_images = {str(i["id"]) for i in doc["images"]}
        got_containers = {str(c["id"]) for c in doc["containers"]}
        if got_images != image_ids:
            raise BenchError(
                f"reclaim df lists {len(got_images)} images, the engine "
                f"{len(image_ids)} ({len(image_ids - got_images)} missing)"
            )
        if got_containers != container_ids:
            raise BenchError(
                f"reclaim df lists {len(got_containers)} containers, the engine "
                f"{len(container_ids)}"
            )

    return check


def check_docker_verbose(n_images: int) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        text = run.stdout.decode(errors="replace")
        if "Images space usage:" not in text:
            raise BenchError("docker system df -v printed no image section")
        section = text.split("Images space usage:", 1)[1].split("Containers space usage:", 1)[0]
        rows = [ln for ln in section.strip().splitlines()[1:] if ln.strip()]
        if len(rows) != n_images:
            raise BenchError(f"docker system df -v lists {len(rows)} images, not {n_images}")

    return check


def no_check(_run: Run) -> None:
    return None


# --- the engine -------------------------------------------------------------------------------


def seeded_engine(
    kind: str, base: Path, spec: FixtureSpec, reuse: bool
) -> tuple[engines.SandboxEngine, SeededTruth, bool, float | None]:
    """The engine (started here unless one already runs in `base`), its truth, whether this
    process started it, and the seconds it took to build and seed the fixture (None if an
    earlier run's seeding was reused)."""
    truth_path = base / TRUTH_FILE
    previous = engines.load_state(base) if reuse else None
    if previous is not None and engines.is_running(previous) and previous.kind == kind:
        engine, started = previous, False
    else:
        engine, started = engines.start(kind, base), True
    try:
        if reuse and truth_path.exists():
            truth = SeededTruth.load(truth_path)
            if truth.spec == spec:
                return engine, truth, started, None
            raise BenchError(
                f"{base} was seeded with another fixture; use another --keep dir or remove it"
            )
        client = docker.APIClient(base_url=engine.url, version="auto", timeout=600)
        work = base / "seed-work"
        try:
            t0 = time.perf_counter()
            fixture = build_fixture(spec)
            truth = seed(client, fixture, work, progress=lambda msg: say(f"  seed: {msg}"))
            seed_s = time.perf_counter() - t0
        finally:
            client.close()
            shutil.rmtree(work, ignore_errors=True)
        truth.save(truth_path)
        return engine, truth, started, seed_s
    except BaseException:
        if started:
            engines.stop(engine, remove=not reuse)
        raise


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def client_version() -> str:
    proc = subprocess.run([DOCKER_CLIENT, "--version"], capture_output=True, text=True,
                          check=False)
    return proc.stdout.strip()


# --- report -----------------------------------------------------------------------------------


def table(measures: Sequence[Measure], reference: Measure | None) -> str:
    lines = [
        "| what | wall s (median) | peak RSS MB | API calls | vs `docker system df -v` |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in measures:
        rss = "—" if m.rss_mb is None else f"{m.rss_mb:.1f}"
        calls = "—" if m.calls is None else str(m.calls)
        comparable = m.walls and reference is not None and reference.walls
        ratio = f"{m.wall / reference.wall:.2f}x" if comparable and reference else "—"
        notes = [m.note] if m.note else []
        if m.failures:
            notes.append(f"{len(m.failures)} of {len(m.failures) + len(m.walls)} runs failed")
        what = f"{m.what} ({'; '.join(notes)})" if notes else m.what
        wall = f"{m.wall:.3f}" if m.walls else "failed"
        lines.append(f"| {what} | {wall} | {rss} | {calls} | {ratio} |")
    return "\n".join(lines)


def targets(
    reclaim: Measure, docker_v: Measure, first: Measure
) -> list[Check]:
    """The targets apply to the steady state (the runs after the first, which made the
    ledger); a failure of the first run still fails the correctness check."""
    calls = reclaim.calls or 0
    rss = reclaim.rss_mb or 0.0
    failures = [f"first {f}" for f in first.failures] + reclaim.failures
    runs = len(first.walls) + len(reclaim.walls) + len(failures)
    if reclaim.walls and docker_v.walls:
        ratio = reclaim.wall / docker_v.wall
        wall = Check(
            "wall time at most half of `docker system df -v`",
            ratio <= MAX_WALL_RATIO,
            f"{reclaim.wall:.3f} s vs {docker_v.wall:.3f} s (ratio {ratio:.2f}, "
            f"target ≤ {MAX_WALL_RATIO})",
        )
    else:
        wall = Check("wall time at most half of `docker system df -v`", False,
                     "no successful run to compare")
    return [
        Check(
            "`reclaim df --json` exits 0 and lists every image and container",
            not failures,
            f"{runs - len(failures)} of {runs} runs" + "".join(f"; {f}" for f in failures),
        ),
        wall,
        Check(f"at most {MAX_API_CALLS} API calls", calls <= MAX_API_CALLS, f"{calls} calls"),
        Check(
            f"peak RSS under {MAX_RSS_MB:.0f} MB",
            rss < MAX_RSS_MB,
            f"{rss:.1f} MB",
        ),
    ]


# --- main -------------------------------------------------------------------------------------


def compile_reclaim() -> None:
    """Byte-compile reclaim as an installation does. Where PYTHONDONTWRITEBYTECODE is set
    (as on this machine), a module changed since its last .pyc would otherwise be compiled
    again by every run, 30 ms for the runtime module alone, which no installed reclaim pays."""
    import compileall

    import reclaim

    compileall.compile_dir(os.path.dirname(reclaim.__file__), quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=engines.ENGINE_KINDS, default="docker20")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--containers", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the seeded engine in DIR (short, under /tmp) and reuse it")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument("--slow", action="store_true",
                        help="also time one `docker image inspect` process per image")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    engines.ensure_host_packages()
    compile_reclaim()
    reuse = args.keep is not None
    base = (args.keep.resolve() if reuse
            else Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp")))
    base.mkdir(parents=True, exist_ok=True)
    spec = FixtureSpec.scaled(images=args.images, containers=args.containers)

    say(f"starting a {args.kind} engine in {base}")
    engine, truth, started, seed_s = seeded_engine(args.kind, base, spec, reuse)
    proxy: CountingProxy | None = None
    try:
        proxy = CountingProxy(base / PROXY_SOCKET, engine.socket)
        if seed_s is not None:
            say(f"seeded in {seed_s:.1f} s ({truth.timings})")
        else:
            say(f"reusing the seeded engine in {base}")
        overlay2 = truth.engine.image_store == "overlay2"

        listed_images, listed_containers = raw_listings(engine.socket)
        image_ids = {str(i["Id"]) for i in listed_images}
        container_ids = {str(c["Id"]) for c in listed_containers}
        if len(image_ids) != spec.image_count or len(container_ids) != spec.container_count:
            raise BenchError(
                f"the engine holds {len(image_ids)} images and {len(container_ids)} containers, "
                f"the fixture {spec.image_count} and {spec.container_count}"
            )

        env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT",)}
        docker_env = dict(env, DOCKER_HOST=proxy.url)
        measures: list[Measure] = []
        load_before = os.getloadavg()

        # reclaim keeps a usage ledger (SQLite) and catches it up on every run: a private one
        # here, empty before the first run, so the host's is never touched.
        state_dir = base / STATE_DIR
        shutil.rmtree(state_dir, ignore_errors=True)
        reclaim_cmd = [sys.executable, "-m", "reclaim", "--engine", proxy.url,
                       "--state-dir", str(state_dir), "df", "--json"]
        check_reclaim = check_reclaim_json(image_ids, container_ids)
        say("reclaim df --json, first run")
        first = measure_process("`reclaim df --json`, first run", reclaim_cmd, env, proxy, 1,
                                check_reclaim)
        first.note = "new, empty ledger; one run"
        measures.append(first)
        # The two compared tools take turns, so that both meet the same swings of a shared
        # machine's speed (seen here to halve and double within a minute).
        say("reclaim df --json and docker system df -v, in turns")
        reclaim, docker_v = Measure("`reclaim df --json`"), Measure("`docker system df -v`")
        for _ in range(args.repeat):
            measure_process(reclaim.what, reclaim_cmd, env, proxy, 1, check_reclaim, reclaim)
            measure_process(docker_v.what, [DOCKER_CLIENT, "system", "df", "-v"], docker_env,
                            proxy, 1, check_docker_verbose(len(image_ids)), docker_v)
        measures += [reclaim, docker_v]
        say("docker system df")
        measures.append(measure_process(
            "`docker system df`", [DOCKER_CLIENT, "system", "df"], docker_env, proxy,
            args.repeat, no_check,
        ))
        say("raw listings")
        raw = measure_inprocess(
            "raw listings `GET /images/json` + `/containers/json`", args.repeat,
            lambda: raw_listings(engine.socket), "in-process, fetched and decoded",
        )
        raw.api_calls = [2] * args.repeat
        measures.append(raw)
        if overlay2:
            say("imagedb + layerdb from disk")
            ordered = [str(i["Id"]) for i in listed_images]
            measures.append(measure_inprocess(
                "imagedb + layerdb from disk", args.repeat,
                lambda: read_overlay2(engine.data_root, ordered), "in-process",
            ))
        if args.slow:
            say("docker image inspect, one process per image")
            measures.append(inspect_per_image(sorted(image_ids), docker_env, proxy))

        load_after = os.getloadavg()
        checks = targets(reclaim, docker_v, first)
        print(f"## `reclaim df` on {args.kind} (engine {truth.engine.version}, image store "
              f"{truth.engine.image_store}): {len(image_ids)} images, "
              f"{len(container_ids)} containers\n")
        if seed_s is not None:
            print(f"Seeded in {seed_s:.1f} s. Median of {args.repeat} runs.\n")
        else:
            print(f"Seeding reused from {base}. Median of {args.repeat} runs.\n")
        print(f"Load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after "
              f"the measurements, on {os.cpu_count()} CPUs.\n")
        print(table(measures, docker_v))
        print()
        for c in checks:
            print(f"- {c.verdict}: {c.name}: {c.detail}")
        if args.json is not None:
            doc = {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "kind": args.kind,
                "engine": asdict(truth.engine),
                "client": client_version(),
                "images": len(image_ids),
                "containers": len(container_ids),
                "repeat": args.repeat,
                "cpus": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in load_after],
                "seed_s": None if seed_s is None else round(seed_s, 1),
                "seed_timings": dict(truth.timings),
                "measures": [m.to_dict() for m in measures],
                "ratio_reclaim_vs_docker_system_df_v": (
                    round(reclaim.wall / docker_v.wall, 3)
                    if reclaim.walls and docker_v.walls else None
                ),
                "targets": [asdict(c) for c in checks],
            }
            args.json.write_text(json.dumps(doc, indent=2) + "\n")
        return 0 if all(c.passed is not False for c in checks) else 1
    finally:
        if proxy is not None:
            proxy.close()
        if started:
            say(f"stopping the engine in {base}")
            engines.stop(engine, remove=not reuse)


def inspect_per_image(image_ids: Sequence[str], env: dict[str, str],
                      proxy: CountingProxy) -> Measure:
    """One `docker image inspect` process per image, one after the other; run once."""
    m = Measure("`docker image inspect` per image", note="one process per image, one run")
    proxy.reset()
    t0 = time.perf_counter()
    peak = 0
    for image_id in image_ids:
        run = run_process([DOCKER_CLIENT, "image", "inspect", image_id], env)
        if run.returncode != 0:
            raise BenchError(f"docker image inspect {image_id} exited {run.returncode}")
        peak = max(peak, run.rss_kib)
    m.walls.append(time.perf_counter() - t0)
    m.rss_kib.append(peak)
    m.api_calls.append(len(proxy.reset()))
    return m


if __name__ == "__main__":
    sys.exit(main())
