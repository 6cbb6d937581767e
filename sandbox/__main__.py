"""`python -m sandbox demo|stop|provision`: what `make demo`, `make demo-stop` and
`make provision` run.

The demo shows reclaim on the engine the host already runs, read-only, when one answers;
otherwise it starts a private sandbox engine, seeds it with generated images, containers and
volumes, and shows `reclaim df` and `reclaim df -v` on it. The sandbox keeps running (so that
reclaim can be tried on it by hand) until `make demo-stop`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import docker

from reclaim.runtimes.docker import resolve_endpoint
from sandbox import debian, engines
from sandbox.content import FixtureSpec, build_fixture
from sandbox.seed import SeededTruth, seed

TRUTH_FILE = "truth.json"


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def _host_engine_answers() -> str | None:
    """The host's own engine, if one answers (DOCKER_HOST or the default socket)."""
    url = resolve_endpoint(None)
    try:
        client = docker.APIClient(base_url=url, version="1.41", timeout=3)
        client.ping()
        client.close()
    except Exception:  # any failure just means "no engine here": the sandbox is used
        return None
    return url


def _reclaim(url: str, *args: str, state_dir: Path | None = None) -> None:
    state = ["--state-dir", str(state_dir)] if state_dir else []
    command = [sys.executable, "-m", "reclaim", "--engine", url, *state, *args]
    shown = " ".join(["--engine", url, *state, *args])
    print(f"\n$ reclaim {shown}", flush=True)
    subprocess.run(command, check=False)


def demo(base: Path, kind: str) -> int:
    host = _host_engine_answers()
    if host is not None and not os.environ.get("RECLAIM_DEMO_SANDBOX"):
        _say(f"an engine answers at {host}: showing reclaim on it (read-only)")
        _reclaim(host, "df")
        _reclaim(host, "df", "-v")
        print("\n(set RECLAIM_DEMO_SANDBOX=1 to use a private sandbox engine instead)")
        return 0

    engines.ensure_host_packages()
    base.mkdir(parents=True, exist_ok=True)
    engine = engines.load_state(base)
    if engine is None or not engines.is_running(engine):
        _say(f"starting a private {kind} engine in {base}")
        engine = engines.start(kind, base)
    else:
        _say(f"the sandbox engine in {base} is already running")
    truth_path = base / TRUTH_FILE
    if not truth_path.exists():
        _say("seeding it: image families sharing base, runtime and deps layers, several tags "
             "per image, dangling images, running/exited/created containers, volumes")
        started = time.monotonic()
        client = docker.APIClient(base_url=engine.url, version="auto", timeout=600)
        work = base / "seed"
        work.mkdir(exist_ok=True)
        truth = seed(client, build_fixture(FixtureSpec()), work)
        client.close()
        truth.save(truth_path)
        _say(f"seeded in {time.monotonic() - started:.1f} s")
    truth = SeededTruth.load(truth_path)
    images = len(truth.image_ids)
    _say(f"{images} images, {len(truth.container_ids)} containers; the generator's truth: "
         f"{truth.truth.total_bytes(truth.store) / 2**20:.1f} MiB of unique layer bytes")

    # The sandbox's ledger stays with the sandbox (removed by demo-stop), not in the host's.
    state = base / "state"
    _reclaim(engine.url, "df", state_dir=state)
    _reclaim(engine.url, "df", "-v", state_dir=state)
    print(
        f"\nThe sandbox engine keeps running at {engine.url} (pid {engine.pid}).\n"
        f"Try: .venv/bin/reclaim --engine {engine.url} --state-dir {state} df --json\n"
        "Stop it and remove its data with: make demo-stop"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="show reclaim on a seeded sandbox engine")
    p_demo.add_argument("--dir", type=Path, required=True)
    p_demo.add_argument("--kind", choices=engines.ENGINE_KINDS, default="docker20")
    p_stop = sub.add_parser("stop", help="stop the sandbox engine in DIR")
    p_stop.add_argument("--dir", type=Path, required=True)
    p_stop.add_argument("--remove", action="store_true")
    sub.add_parser("provision", help="install and fetch every engine the tests use")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return demo(args.dir.absolute(), args.kind)
        if args.command == "stop":
            if engines.load_state(args.dir) is None:
                _say(f"no sandbox engine in {args.dir}")
                return 0
            engines.stop_dir(args.dir, remove=args.remove)
            _say(f"stopped the sandbox engine in {args.dir}")
            return 0
        engines.ensure_host_packages()
        # Docker 26 from trixie, unpacked into the cache (fetched once, reused after).
        tree = debian.fetch_unpacked(engines.TRIXIE_PACKAGES, suite="trixie",
                                     drop_binaries=("runc",))
        _say(f"engines ready: Debian's docker.io, and {tree.root}")
        return 0
    except (engines.SandboxError, debian.DebianFetchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
