"""The command line: parsing at the edge, one error boundary that picks the exit code.

Commands build a result object; `output` is the only module that shows it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from reclaim import __version__, collector, output
from reclaim.commands.session import Session
from reclaim.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    ClosedPipe,
    OutputFailed,
    PartialFailure,
    ReclaimError,
    UsageError,
)
from reclaim.runtimes.registry import RUNTIMES
from reclaim.state import store as state_store
from reclaim.units import human_bytes

if TYPE_CHECKING:
    from reclaim.policy.plan import Action
    from reclaim.policy.rules import Policy

# Only what every command needs is imported above: `df`, run often on big hosts, must not pay
# for the planner, apply, watch and the journal. Each command imports its own.


class Globals(NamedTuple):
    engine: str | None
    runtime: str
    state_dir: str | None
    config: str | None
    reset_state: bool = False
    timeout: float | None = None


def _session(g: Globals) -> Session:
    return Session(runtime=g.runtime, engine=g.engine, state_dir=g.state_dir,
                   reset_state=g.reset_state, timeout=g.timeout, notify=output.warning)


def _seconds(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not 0 < value <= 86400:  # also refuses nan
        raise click.BadParameter("give a number of seconds, more than 0 and at most 86400")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--engine", metavar="URL", help="Engine endpoint (default: DOCKER_HOST, then the "
              "engine's default socket).")
@click.option("--runtime", type=click.Choice(RUNTIMES), default="docker", show_default=True)
@click.option("--state-dir", metavar="DIR", help="Where reclaim keeps its ledger.")
@click.option("--config", metavar="FILE", help="TOML configuration file.")
@click.option("--reset-state", is_flag=True,
              help="Move an unreadable state database aside and start a new one.")
@click.option("--timeout", type=float, metavar="SECONDS", callback=_seconds,
              help="How long one engine call may wait for an answer, in seconds (default 120; "
              "the build-cache prune 600). The first call, /info, waits 10 at most.")
@click.version_option(__version__, prog_name="reclaim")
@click.pass_context
def cli(
    ctx: click.Context, engine: str | None, runtime: str, state_dir: str | None,
    config: str | None, reset_state: bool, timeout: float | None,
) -> None:
    """reclaim: get disk back from container engines, safely, and explain every decision."""
    ctx.obj = Globals(engine=engine, runtime=runtime, state_dir=state_dir, config=config,
                      reset_state=reset_state, timeout=timeout)


@cli.command()
@click.option("-v", "--verbose", is_flag=True, help="List every image, container and volume.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (reclaim.df/v1).")
@click.option("--sizes", is_flag=True,
              help="Also ask the engine for container read-write bytes (slow on big hosts).")
@click.pass_obj
def df(g: Globals, verbose: bool, as_json: bool, sizes: bool) -> None:
    """Where the bytes are, and how many are reclaimable."""
    from reclaim.commands.df import df as df_command
    # A run that builds some hundred thousand objects and no cycles: the cyclic collector
    # would walk them again and again to find none. Paused for the command and its output.
    with collector.paused():
        with output.progress(enabled=not as_json) as progress:
            report = df_command(_session(g), sizes=sizes, progress=progress)
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
    from reclaim.commands.watch import watch_command
    code = watch_command(_session(g), verbose=verbose, log=output.log_line)
    if code:
        raise click.exceptions.Exit(code)


# -- plan, apply, history ------------------------------------------------------------------

_POLICY_FLAGS: tuple[tuple[str, str, str, str], ...] = (
    # (flag, section, setting, help)
    ("--min-age", "images", "min_age", "Never delete an image used more recently (default 1d)."),
    ("--max-age", "images", "max_age", "Delete images unused longer than this."),
    ("--quota", "images", "quota", "Keep the image store at or under this (50G, 20%)."),
    ("--high", "images", "high", "Filesystem usage that starts eviction (bytes or %)."),
    ("--low", "images", "low", "Evict down to this filesystem usage."),
    ("--high-inodes", "images", "high_inodes",
     "Filesystem inodes in use that start eviction (a count or %)."),
    ("--low-inodes", "images", "low_inodes", "Evict down to this many inodes in use."),
    ("--keep-latest", "images", "keep_latest", "Keep the N most recently used tags per repo."),
    ("--dangling", "images", "dangling", "like-others | after-min-age"),
    ("--containers-exited-after", "containers", "exited_after",
     "Remove exited containers finished this long ago (at least 1m: a container that young "
     "may be about to start)."),
    ("--containers-created-after", "containers", "created_after",
     "Remove never-started containers created this long ago (at least 1m: a container that "
     "young may be about to start)."),
    ("--volumes-dangling-after", "volumes", "dangling_after",
     "Remove anonymous volumes dangling this long."),
    ("--build-cache-keep-storage", "build_cache", "keep_storage",
     "Prune the build cache down to this size."),
    ("--build-cache-older-than", "build_cache", "older_than",
     "Prune build cache unused this long."),
)


def _policy_options(fn: Any) -> Any:
    for flag, _section, _setting, help_text in reversed(_POLICY_FLAGS):
        fn = click.option(flag, default=None, metavar="VALUE", help=help_text)(fn)
    fn = click.option("--keep", multiple=True, metavar="GLOB",
                      help="Never delete images whose repo:tag or id matches.")(fn)
    fn = click.option("--keep-label", multiple=True, metavar="KEY[=VALUE]",
                      help="Never delete images with this label.")(fn)
    fn = click.option("--volumes-all", is_flag=True, default=None,
                      help="Named dangling volumes too, not only anonymous ones.")(fn)
    fn = click.option("--volumes-with-containers", is_flag=True, default=None,
                      help="Remove a removed container's anonymous volumes with it "
                      "(as docker rm -v).")(fn)
    return fn


def _policy(g: Globals, flags: dict[str, Any]) -> Policy:
    from reclaim.config import config_path, load_file, policy_from
    settings: dict[str, dict[str, Any]] = {}
    for flag, section, setting, _ in _POLICY_FLAGS:
        value = flags.get(flag.lstrip("-").replace("-", "_"))
        if value is not None:
            settings.setdefault(section, {})[setting] = value
    if flags.get("keep"):
        settings.setdefault("images", {})["keep"] = list(flags["keep"])
    if flags.get("keep_label"):
        settings.setdefault("images", {})["keep_labels"] = list(flags["keep_label"])
    if flags.get("volumes_all"):
        settings.setdefault("volumes", {})["all"] = True
    if flags.get("volumes_with_containers"):
        settings.setdefault("volumes", {})["with_containers"] = True
    return policy_from(load_file(config_path(g.config)), settings)


@cli.command("plan")
@_policy_options
@click.option("-v", "--verbose", is_flag=True, help="List every kept object with its reason.")
@click.option("--json", "as_json", is_flag=True, help="The plan as reclaim.plan/v1 JSON.")
@click.option("-o", "--output", "out", metavar="PLAN.json", help="Also write the plan here.")
@click.pass_obj
def plan_command(g: Globals, /, verbose: bool, as_json: bool, out: str | None,
                 **flags: Any) -> None:
    """The dry run: what would go, why, and how many bytes it frees."""
    from reclaim.commands.plan import plan_command as make
    from reclaim.planfile import plan_to_json
    policy = _policy(g, flags)
    with output.progress(enabled=not as_json) as progress:
        made = make(_session(g), policy, progress=progress)
    document = plan_to_json(made)
    if out:
        output.write_file(Path(out), json.dumps(document, indent=2) + "\n")
    if as_json:
        output.emit_json(document)
    else:
        output.show_plan(made, verbose=verbose, written_to=out)


@cli.command("apply")
@click.argument("plan_file", required=False, metavar="[PLAN.json]")
@_policy_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-wait", is_flag=True, help="Exit 1 if another apply holds the lock.")
@click.option("--json", "as_json", is_flag=True, help="The result as reclaim.apply/v1 JSON.")
@click.pass_obj
def apply_command(g: Globals, /, plan_file: str | None, yes: bool, no_wait: bool, as_json: bool,
                  **flags: Any) -> None:
    """Delete what a plan (a file, or the policy given now) says, re-checking every object."""
    from reclaim.commands.apply import apply_command as carry_out
    from reclaim.planfile import read_plan
    given_policy = any(v not in (None, (), False) for v in flags.values())
    if plan_file and given_policy:
        raise UsageError("give either a plan file or policy flags, not both")
    stored = read_plan(Path(plan_file)) if plan_file else None
    policy = None if stored else _policy(g, flags)
    if not yes and not sys.stdin.isatty():
        raise UsageError("refusing to delete without confirmation: not on a terminal; "
                         "add --yes")

    def confirm(actions: tuple[Action, ...]) -> bool:
        return output.confirm(f"Delete {len(actions)} object(s), predicted to free "
                              f"{human_bytes(sum(a.bytes for a in actions))}?")

    def progress(actions: tuple[Action, ...]) -> Any:
        return output.apply_progress(enabled=not as_json, actions=actions)

    result = carry_out(_session(g), plan_file=stored, policy=policy,
                       confirm=None if yes else confirm, wait=not no_wait, progress=progress)
    if as_json:
        output.emit_json(result.to_json())
    else:
        output.show_apply(result)
    if result.failed:
        raise PartialFailure(f"{len(result.failed)} deletion(s) failed; the rest were done")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="The journal as JSON.")
@click.option("-n", "--limit", type=click.IntRange(min=0), default=None,
              help="Only the newest N deletions.")
@click.pass_obj
def history(g: Globals, as_json: bool, limit: int | None) -> None:
    """The deletion journal: what reclaim deleted, when, and why."""
    from reclaim.commands.history import history_command
    entries = history_command(_session(g), limit=limit)
    if as_json:
        output.emit_json({"schema": "reclaim.history/v1",
                          "deletions": [output.journal_json(e) for e in entries]})
    else:
        output.show_history(entries)


@cli.command()
@click.option("--data-root", metavar="DIR", default=None,
              help="The engine's data root (default /var/lib/docker).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (reclaim.fsck/v1).")
@click.option("--quarantine", "do_quarantine", is_flag=True,
              help="Move proven orphans to <data-root>/../reclaim-quarantine/<batch>/.")
@click.option("--restore", "restore_id", metavar="ID", help="Put a quarantined batch back.")
@click.option("--purge", "do_purge", is_flag=True, help="Delete quarantined batches.")
@click.option("--older-than", metavar="DUR", help="With --purge: only batches older than DUR.")
@click.option("--engine-stopped", is_flag=True,
              help="The engine is stopped (checked): one look suffices, no age threshold.")
@click.pass_obj
def fsck(g: Globals, data_root: str | None, as_json: bool, do_quarantine: bool,
         restore_id: str | None, do_purge: bool, older_than: str | None,
         engine_stopped: bool) -> None:
    """Leaked storage under the data root: proof, quarantine, restore, purge.

    Quarantine, restore and purge are recorded in the ledger (`fsck.db` in the state dir)."""
    from reclaim.commands.fsck import fsck_command, ledger_failure
    from reclaim.units import parse_duration

    age = parse_duration(older_than, setting="--older-than") if older_than else None
    with output.progress(enabled=not as_json and restore_id is None and not do_purge
                         ) as progress:
        def sized(done: int) -> None:
            progress("sizing directories", done, None)

        result = fsck_command(state_dir=_session(g).state_directory, data_root=data_root,
                              quarantine=do_quarantine, restore=restore_id, purge=do_purge,
                              older_than=age, engine_stopped=engine_stopped, sized=sized)
    if as_json:
        output.emit_json(result.to_json())
    else:
        output.show_fsck(result)
    failure = ledger_failure(result)
    if failure is not None:
        raise failure


def main(argv: list[str] | None = None) -> int:
    """The error boundary: every expected failure is one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="reclaim", standalone_mode=False)
        output.flush()
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        output.error(exc.format_message())
        return EXIT_USAGE
    except click.exceptions.Abort:
        output.error("interrupted")
        return EXIT_INTERRUPTED
    except ReclaimError as exc:
        if isinstance(exc, OutputFailed):
            output.discard_stdout()
        if not isinstance(exc, ClosedPipe):  # the reader left: nothing to tell anyone
            output.error(exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        output.error("interrupted")
        return EXIT_INTERRUPTED
    except sqlite3.DatabaseError as exc:
        # Any query can meet a damaged page or a read-only file, not only the opening one.
        failure = state_store.failure(exc)
        if failure is None:
            return _crashed()
        output.error(failure.message, failure.hint)
        return failure.exit_code
    except Exception:
        return _crashed()
    return EXIT_OK


def _crashed() -> int:
    log = _write_crash_log()
    output.error(f"unexpected error; the traceback is in {log}")
    return EXIT_UNEXPECTED


def _write_crash_log() -> str:
    import tempfile  # here, with traceback: only a crash needs them
    import traceback

    fd, path = tempfile.mkstemp(prefix="reclaim-crash-", suffix=".log")
    with os.fdopen(fd, "w") as log:
        log.write(f"reclaim {__version__} {' '.join(sys.argv)}\n")
        traceback.print_exc(file=log)
    return path


if __name__ == "__main__":
    sys.exit(main())
