"""The command line: parsing at the edge, one error boundary that picks the exit code.

Commands build a result object; `output` is the only module that shows it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from reclaim import __version__, output
from reclaim.df import build_report
from reclaim.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    ReclaimError,
    UsageError,
)
from reclaim.model import EngineInfo
from reclaim.recorder import Recorder
from reclaim.runtimes.docker import DockerRuntime
from reclaim.state import store as state_store
from reclaim.state.usage import Ledger
from reclaim.watch import Watcher

RUNTIMES = ("docker", "podman", "containerd")


@dataclass
class Globals:
    engine: str | None
    runtime: str
    state_dir: str | None
    config: str | None
    reset_state: bool = False


def _open_ledger(g: Globals, engine: EngineInfo) -> Ledger:
    """The engine's usage ledger. With --reset-state the old file is moved aside first (never
    deleted), for a database that cannot be read any more."""
    directory = Path(g.state_dir) if g.state_dir else state_store.default_state_dir()
    path = state_store.ledger_path(directory, engine.runtime, engine.engine_id or engine.endpoint)
    if g.reset_state:
        aside = state_store.reset(path)
        if aside is not None:
            output.warning(f"the old state database was moved aside to {aside}")
    return Ledger(state_store.Store(path))


def _open_runtime(g: Globals) -> DockerRuntime:
    if g.runtime != "docker":
        raise UsageError(f"--runtime {g.runtime}: not supported yet; use --runtime docker")
    return DockerRuntime(g.engine)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--engine", metavar="URL", help="Engine endpoint (default: DOCKER_HOST, then the "
              "engine's default socket).")
@click.option("--runtime", type=click.Choice(RUNTIMES), default="docker", show_default=True)
@click.option("--state-dir", metavar="DIR", help="Where reclaim keeps its ledger.")
@click.option("--config", metavar="FILE", help="TOML configuration file.")
@click.option("--reset-state", is_flag=True,
              help="Move an unreadable state database aside and start a new one.")
@click.version_option(__version__, prog_name="reclaim")
@click.pass_context
def cli(
    ctx: click.Context, engine: str | None, runtime: str, state_dir: str | None,
    config: str | None, reset_state: bool,
) -> None:
    """reclaim: get disk back from container engines, safely, and explain every decision."""
    ctx.obj = Globals(engine=engine, runtime=runtime, state_dir=state_dir, config=config,
                      reset_state=reset_state)


@cli.command()
@click.option("-v", "--verbose", is_flag=True, help="List every image, container and volume.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (reclaim.df/v1).")
@click.option("--sizes", is_flag=True,
              help="Also ask the engine for container read-write bytes (slow on big hosts).")
@click.pass_obj
def df(g: Globals, verbose: bool, as_json: bool, sizes: bool) -> None:
    """Where the bytes are, and how many are reclaimable."""
    runtime = _open_runtime(g)
    try:
        with output.progress(enabled=not as_json) as progress:
            inventory = runtime.inventory(sizes=sizes, progress=progress)
    finally:
        runtime.close()
    now = datetime.now(UTC)
    # The catch-up every command does first: container timestamps are uses even when
    # `reclaim watch` never ran.
    ledger = _open_ledger(g, inventory.engine)
    try:
        Recorder(ledger).catch_up(inventory, now)
        usage = ledger.images()
    finally:
        ledger.store.close()
    report = build_report(inventory, usage, now)
    if as_json:
        output.emit_json(report.to_json())
    else:
        output.show_df(report, verbose=verbose)


@cli.command()
@click.option("-v", "--verbose", is_flag=True,
              help="Log one line per event that matters (uses, image arrivals, tags, deletions).")
@click.pass_obj
def watch(g: Globals, verbose: bool) -> None:
    """Record image use from the engine's events until SIGTERM or SIGINT."""
    runtime = _open_runtime(g)
    try:
        ledger = _open_ledger(g, runtime.info())
        try:
            Watcher(runtime, ledger, verbose=verbose, log=output.log_line).run()
        finally:
            ledger.store.close()
    finally:
        runtime.close()


def main(argv: list[str] | None = None) -> int:
    """The error boundary: every expected failure is one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="reclaim", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        output.error(exc.format_message())
        return EXIT_USAGE
    except click.exceptions.Abort:
        output.error("interrupted")
        return EXIT_INTERRUPTED
    except ReclaimError as exc:
        output.error(exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        output.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception:
        log = _write_crash_log()
        output.error(f"unexpected error; the traceback is in {log}")
        return EXIT_UNEXPECTED
    return EXIT_OK


def _write_crash_log() -> str:
    fd, path = tempfile.mkstemp(prefix="reclaim-crash-", suffix=".log")
    with os.fdopen(fd, "w") as log:
        log.write(f"reclaim {__version__} {' '.join(sys.argv)}\n")
        traceback.print_exc(file=log)
    return path


if __name__ == "__main__":
    sys.exit(main())
