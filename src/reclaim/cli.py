"""The command line: parsing at the edge, one error boundary that picks the exit code.

Commands build a result object; `output` is the only module that shows it.
"""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from reclaim import __version__, output
from reclaim.df import build_report
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
from reclaim.model import EngineInfo, Inventory
from reclaim.recorder import Recorder
from reclaim.runtimes.base import no_progress
from reclaim.runtimes.docker import DockerRuntime
from reclaim.state import store as state_store
from reclaim.state.usage import Ledger
from reclaim.units import human_bytes

if TYPE_CHECKING:
    from reclaim.apply import ApplyResult, UseWatch
    from reclaim.policy.plan import Action, FilesystemUsage, Plan
    from reclaim.policy.rules import Policy

# Only what every command needs is imported above: `df`, run often on big hosts, must not pay
# for the planner, apply, watch and the journal. Each command imports its own.
RUNTIMES = ("docker", "podman", "containerd")


class Globals(NamedTuple):
    engine: str | None
    runtime: str
    state_dir: str | None
    config: str | None
    reset_state: bool = False
    timeout: float | None = None


def _open_ledger(g: Globals, engine: EngineInfo) -> Ledger:
    """The engine's usage ledger. With --reset-state the old file is moved aside first (never
    deleted), for a database that cannot be read any more."""
    directory = Path(g.state_dir) if g.state_dir else state_store.default_state_dir()
    path = state_store.ledger_path(directory, engine.runtime, engine.state_name)
    if g.reset_state:
        aside = state_store.reset(path)
        if aside is not None:
            output.warning(f"the old state database was moved aside to {aside}")
    elif not path.exists():
        legacy = state_store.legacy_ledger_path(directory, engine.runtime,
                                                engine.engine_id or engine.endpoint)
        if state_store.adopt_legacy(legacy, path, engine.identity):
            output.warning(f"the state database {legacy} (named by the engine id alone) was "
                           f"copied to {path}, which this engine keeps from now")
    store = state_store.Store(path)
    try:
        store.bind_engine(engine.identity)
    except BaseException:
        store.close()
        raise
    return Ledger(store)


def _open_runtime(g: Globals, *, listings_from_disk: bool = False) -> DockerRuntime:
    if g.runtime != "docker":
        raise UsageError(f"--runtime {g.runtime}: not supported yet; use --runtime docker")
    state_dir = Path(g.state_dir) if g.state_dir else state_store.default_state_dir()
    return DockerRuntime(g.engine, timeout=g.timeout, listings_from_disk=listings_from_disk,
                         record_cache_dir=str(state_dir))


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
    # A run that builds some hundred thousand objects and exits: the cyclic collector would
    # walk them again and again (about 4% of the run) to find cycles it does not make.
    gc.disable()
    runtime = _open_runtime(g, listings_from_disk=True)
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
    from reclaim.watch import Watcher
    runtime = _open_runtime(g)
    try:
        ledger = _open_ledger(g, runtime.info())
        try:
            Watcher(runtime, ledger, verbose=verbose, log=output.log_line).run()
        finally:
            ledger.store.close()
    finally:
        runtime.close()


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


def _filesystem(engine: EngineInfo) -> FilesystemUsage | None:
    from reclaim.policy.plan import FilesystemUsage
    if not engine.data_root:
        return None
    try:
        st = os.statvfs(engine.data_root)
    except OSError:
        return None  # a remote engine: % sizes and watermarks cannot be resolved here
    return FilesystemUsage(
        total_bytes=st.f_blocks * st.f_frsize,
        used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize,
        total_inodes=st.f_files,
        used_inodes=st.f_files - st.f_ffree,
    )


def _measure_containers(runtime: DockerRuntime, inventory: Inventory,
                        container_ids: list[str]) -> Inventory:
    """The inventory with `disk_bytes` filled in for these containers, where measured."""
    if not container_ids:
        return inventory
    measured = runtime.container_bytes(container_ids)
    return inventory._replace(containers=tuple(
        c._replace(disk_bytes=measured[c.id]) if c.id in measured else c
        for c in inventory.containers))


def _make_plan(g: Globals, runtime: DockerRuntime, policy: Policy,
               progress: Any) -> tuple[Plan, Ledger, Inventory]:
    from reclaim.policy.plan import (
        freeable_layers,
        plan,
        removed_containers,
        wants_layer_inodes,
    )
    inventory = runtime.inventory(progress=progress)
    filesystem = _filesystem(inventory.engine)
    now = datetime.now(UTC)
    # What removing a container frees is read from its storage on disk: only for the
    # containers this plan removes.
    removing = removed_containers(inventory, policy, now)
    inventory = _measure_containers(runtime, inventory, removing)
    # Counting a layer's inodes reads its records on disk: only when an inode watermark is
    # crossed, and only the layers a deletion could free.
    layer_inodes = (runtime.layer_inodes(freeable_layers(inventory, removing))
                    if wants_layer_inodes(policy, filesystem) else None)
    ledger = _open_ledger(g, inventory.engine)
    Recorder(ledger).catch_up(inventory, now)
    try:
        made = plan(inventory, ledger.images(), policy, now, filesystem=filesystem,
                    volume_since=ledger.volume_dangling_since(), layer_inodes=layer_inodes)
    except ValueError as exc:
        ledger.store.close()
        raise UsageError(str(exc)) from exc
    return made, ledger, inventory


@cli.command("plan")
@_policy_options
@click.option("-v", "--verbose", is_flag=True, help="List every kept object with its reason.")
@click.option("--json", "as_json", is_flag=True, help="The plan as reclaim.plan/v1 JSON.")
@click.option("-o", "--output", "out", metavar="PLAN.json", help="Also write the plan here.")
@click.pass_obj
def plan_command(g: Globals, /, verbose: bool, as_json: bool, out: str | None,
                 **flags: Any) -> None:
    """The dry run: what would go, why, and how many bytes it frees."""
    from reclaim.planfile import plan_to_json
    policy = _policy(g, flags)
    runtime = _open_runtime(g)
    try:
        with output.progress(enabled=not as_json) as progress:
            made, ledger, _ = _make_plan(g, runtime, policy, progress)
        ledger.store.close()
    finally:
        runtime.close()
    document = plan_to_json(made)
    if out:
        _write_atomically(Path(out), json.dumps(document, indent=2) + "\n")
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
    from reclaim.lock import apply_lock
    from reclaim.planfile import read_plan
    given_policy = any(v not in (None, (), False) for v in flags.values())
    if plan_file and given_policy:
        raise UsageError("give either a plan file or policy flags, not both")
    stored = read_plan(Path(plan_file)) if plan_file else None
    policy = None if stored else _policy(g, flags)
    if not yes and not sys.stdin.isatty():
        raise UsageError("refusing to delete without confirmation: not on a terminal; "
                         "add --yes")
    state_dir = Path(g.state_dir) if g.state_dir else state_store.default_state_dir()
    runtime = _open_runtime(g)
    try:
        engine = runtime.info()
        if stored is not None and (stored.engine_id, stored.data_root) != \
                (engine.engine_id, engine.data_root):
            raise UsageError(f"plan file {plan_file} was made for another engine "
                             f"({stored.endpoint}, id {stored.engine_id}, data root "
                             f"{stored.data_root}); this one is id {engine.engine_id}, data "
                             f"root {engine.data_root}; not applied here")
        with apply_lock(state_dir, wait=not no_wait, on_wait=output.warning):
            # Watching the engine from before the inventory the actions are checked against:
            # whatever happens after that inventory, the watch sees. From now exactly, no
            # slack: the engine is on this host's clock, its times are in nanoseconds, and
            # anything earlier is in the inventory already (a name given a second ago would
            # only make apply skip an image for nothing).
            watch = runtime.watch_uses(datetime.now(UTC))
            try:
                if stored is not None:
                    actions, created = stored.actions, stored.created_at
                    ledger = _open_ledger(g, engine)
                    # A plan made earlier is re-validated against the engine as it is now.
                    before = _measure_containers(runtime, runtime.inventory(), [
                        a.id for a in actions if a.kind == "container"])
                    Recorder(ledger).catch_up(before, datetime.now(UTC))
                else:
                    assert policy is not None
                    # Planned a moment ago from this very inventory: it is the "before".
                    made, ledger, before = _make_plan(g, runtime, policy, no_progress)
                    actions, created = made.actions, made.created_at
                try:
                    result = _apply(runtime, ledger, before, actions, created, yes=yes,
                                    as_json=as_json, watch=watch)
                finally:
                    ledger.store.close()
            finally:
                if watch is not None:
                    watch.close()
    finally:
        runtime.close()
    if as_json:
        output.emit_json(result.to_json())
    else:
        output.show_apply(result)
    if result.failed:
        raise PartialFailure(f"{len(result.failed)} deletion(s) failed; the rest were done")


def _apply(runtime: DockerRuntime, ledger: Ledger, before: Inventory,
           actions: tuple[Action, ...], created: datetime, *, yes: bool, as_json: bool,
           watch: UseWatch | None = None) -> ApplyResult:
    from reclaim.apply import (
        ApplyResult,
        apply_actions,
        free_bytes,
        measured_freed,
        settle_interrupted,
    )
    from reclaim.state.journal import Journal
    journal = Journal(ledger.store)
    # Under the lock, before anything new: what an apply killed mid-way left unsettled.
    found = settle_interrupted(journal, before)
    if found:
        output.warning(f"{found} deletion(s) of an interrupted apply were confirmed and added "
                       "to the journal")
    if not actions:
        return ApplyResult()
    if not yes and not output.confirm(
        f"Delete {len(actions)} object(s), predicted to free "
        f"{human_bytes(sum(a.bytes for a in actions))}?"
    ):
        raise UsageError("not confirmed; nothing was deleted")
    cache_freed = 0

    def prune_cache(keep_storage: int | None, older_than: float | None) -> int:
        nonlocal cache_freed
        cache_freed = runtime.prune_build_cache(keep_storage, older_than)
        return cache_freed

    usage = ledger.images()
    # The filesystem's own count, beside the model's: read just before the first deletion
    # and once the after-inventory is taken.
    free_before = free_bytes(before.engine)
    with output.apply_progress(enabled=not as_json, actions=actions) as progress:
        result = apply_actions(runtime, actions, before, usage, journal,
                               now=lambda: datetime.now(UTC), plan_created=created,
                               build_cache=prune_cache, progress=progress, watch=watch)
    after = runtime.inventory()
    free_after = free_bytes(after.engine)
    Recorder(ledger).catch_up(after, datetime.now(UTC))
    result.freed_bytes = measured_freed(before, after, cache_freed)
    if free_before is not None and free_after is not None:
        result.measured_freed_bytes = free_after - free_before
    if any(a.kind == "build-cache" for a in result.deleted):
        result.build_cache_freed_bytes = cache_freed
    return result


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="The journal as JSON.")
@click.option("-n", "--limit", type=click.IntRange(min=0), default=None,
              help="Only the newest N deletions.")
@click.pass_obj
def history(g: Globals, as_json: bool, limit: int | None) -> None:
    """The deletion journal: what reclaim deleted, when, and why."""
    from reclaim.state.journal import Journal
    runtime = _open_runtime(g)
    try:
        engine = runtime.info()
        ledger = _open_ledger(g, engine)
        try:
            journal = Journal(ledger.store)
            if journal.intents():
                _settle_if_idle(g, runtime, journal)
            # A limit past what SQLite counts to is every deletion; 0 is none (not "no limit").
            limit = None if limit is None else min(limit, 2**63 - 1)
            entries = journal.entries(limit) if limit != 0 else []
        finally:
            ledger.store.close()
    finally:
        runtime.close()
    if as_json:
        output.emit_json({"schema": "reclaim.history/v1",
                          "deletions": [output.journal_json(e) for e in entries]})
    else:
        output.show_history(entries)


def _settle_if_idle(g: Globals, runtime: DockerRuntime, journal: Any) -> None:
    """Settle an interrupted apply's intents, unless an apply runs now (its intents are in
    flight, not interrupted): only with the apply lock, never waiting for it."""
    from reclaim.apply import settle_interrupted
    from reclaim.lock import LockBusy, apply_lock
    state_dir = Path(g.state_dir) if g.state_dir else state_store.default_state_dir()
    try:
        with apply_lock(state_dir, wait=False):
            settle_interrupted(journal, runtime.inventory())
    except LockBusy:
        output.warning("an apply is running: its deletions in flight are not shown yet")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from exc


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
    from reclaim.fsck import run as fsck_run
    from reclaim.fsck.errors import LedgerNotWritten
    from reclaim.units import parse_duration

    if sum((do_quarantine, restore_id is not None, do_purge)) > 1:
        raise UsageError("--quarantine, --restore and --purge go one at a time")
    if older_than is not None and not do_purge:
        raise UsageError("--older-than goes with --purge")
    root = data_root or fsck_run.DEFAULT_DATA_ROOT
    state_dir = Path(g.state_dir) if g.state_dir else state_store.default_state_dir()
    if restore_id is not None:
        result = fsck_run.restore(root, restore_id, state_dir=state_dir)
    elif do_purge:
        age = parse_duration(older_than, setting="--older-than") if older_than else None
        result = fsck_run.purge(root, older_than=age, state_dir=state_dir)
    else:
        with output.progress(enabled=not as_json) as progress:
            def sized(done: int) -> None:
                progress("sizing directories", done, None)

            if do_quarantine:
                result = fsck_run.quarantine(root, engine_stopped=engine_stopped, progress=sized,
                                             state_dir=state_dir)
            else:
                result = fsck_run.report(root, engine_stopped=engine_stopped, progress=sized,
                                         state_dir=state_dir)
    if as_json:
        output.emit_json(result.to_json())
    else:
        output.show_fsck(result)
    note = result.ledger
    if result.mode != "report" and note is not None and note.error is not None:
        ids = ", ".join(b.id for b in result.batches)
        raise LedgerNotWritten(
            f"{result.mode} done, but the ledger {note.path} could not record batch {ids}: "
            f"{note.error}",
            hint=(f"its manifest.json still says what moved where; restore it with: "
                  f"{result.restore_command(result.batches[0].id)}"
                  if result.mode == "quarantine" and result.batches else None))


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
