"""The only module that writes to the terminal: tables, JSON, progress, errors."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TextIO, TypeVar

from reclaim.df import DfReport
from reclaim.errors import ClosedPipe, OutputFailed, UsageError
from reclaim.lastuse import Usage
from reclaim.runtimes.base import Progress as ProgressFn
from reclaim.runtimes.base import no_progress
from reclaim.timeutil import format_time, human_ago
from reclaim.units import human_bytes

if TYPE_CHECKING:
    # Only named in signatures: `reclaim df` need not import the planner and apply to start.
    from rich.console import Console

    from reclaim.apply import ApplyResult, Outcome
    from reclaim.fsck.run import FsckResult
    from reclaim.policy.plan import Action, Plan
    from reclaim.state.journal import Entry

# rich is imported only for what a person reads: the JSON and error paths of a cron job or a
# script do not pay its start-up.


# Widths outside these are not a terminal's (COLUMNS=0 would print every table as nothing).
_MIN_WIDTH, _MAX_WIDTH = 20, 10_000
# Piped output keeps whole rows (a pipe has no width of its own; 80 columns would wrap).
_PIPE_WIDTH = 160


def _stdout() -> Console:
    stream = _writable_stdout()
    # Whatever the locale's encoding cannot show (an ASCII-only locale, `…` in a name)
    # becomes a replacement character rather than a crash halfway through a table.
    if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
        stream.reconfigure(errors="replace")
    return _console(_width(stream))


def _writable_stdout() -> TextIO:
    if sys.stdout is None:  # started with its standard output closed
        raise OutputFailed("write error: standard output is closed")
    return sys.stdout


def _width(stream: TextIO) -> int:
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isascii() and columns.isdigit() and _MIN_WIDTH <= int(columns) <= _MAX_WIDTH:
        return int(columns)
    if stream.isatty():
        try:
            width = os.get_terminal_size(stream.fileno()).columns
        except (OSError, ValueError):
            width = 0
        return width if _MIN_WIDTH <= width <= _MAX_WIDTH else 80
    return _PIPE_WIDTH


@functools.cache
def _console(width: int) -> Console:
    from rich.console import Console

    class _Stdout(Console):
        def on_broken_pipe(self) -> None:
            # Rich's own answer exits 1 ("partial" here); the closed pipe is told apart.
            raise ClosedPipe("standard output is a closed pipe")

    return _Stdout(highlight=False, soft_wrap=False, width=width)


P = ParamSpec("P")
R = TypeVar("R")


def _writes(fn: Callable[P, R]) -> Callable[P, R]:
    """What fails while writing (a closed pipe, a full disk behind a redirection) is an
    output error with its own exit code, not a crash."""
    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError as exc:
            raise ClosedPipe("standard output is a closed pipe") from exc
        except OSError as exc:
            raise OutputFailed(f"write error: {exc.strerror or exc}") from exc

    return guarded


@_writes
def flush() -> None:
    """What is still buffered, written while the error boundary can still say it failed."""
    if sys.stdout is not None:
        sys.stdout.flush()


def discard_stdout() -> None:
    """After a failed write: point standard output at /dev/null, so that the interpreter's
    last flush of what is still buffered does not fail again at exit (and print "Exception
    ignored"), as the Python documentation on SIGPIPE recommends."""
    try:
        fd = sys.stdout.fileno() if sys.stdout is not None else -1
    except (OSError, ValueError):
        fd = -1
    if fd < 0:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


@functools.cache
def _stderr() -> Console:
    from rich.console import Console

    # Errors stay one line whatever the width: they are read by people and by scripts.
    return Console(stderr=True, highlight=False, soft_wrap=True)


@_writes
def emit_json(document: dict[str, Any]) -> None:
    stream = _writable_stdout()
    # Indented for a person at a terminal; compact otherwise, which the C encoder writes
    # several times faster (indentation falls back to the pure-Python one).
    indent = 2 if stream.isatty() else None
    separators = None if indent else (",", ":")
    stream.write(json.dumps(document, indent=indent, separators=separators) + "\n")
    stream.flush()


def error(message: str, hint: str | None = None) -> None:
    # Standard error gone too: the exit code is all that is left to say it.
    with contextlib.suppress(OSError, AttributeError):
        _error(message, hint)


def _error(message: str, hint: str | None) -> None:
    if sys.stderr.isatty():
        _stderr().print(f"[bold red]reclaim:[/] {message}", markup=True, highlight=False)
        if hint:
            _stderr().print(f"  hint: {hint}", markup=False)
        return
    sys.stderr.write(f"reclaim: {message}\n" + (f"  hint: {hint}\n" if hint else ""))
    sys.stderr.flush()


def warning(message: str) -> None:
    if sys.stderr.isatty():
        _stderr().print(f"[yellow]warning:[/] {message}", markup=True)
    else:
        sys.stderr.write(f"warning: {message}\n")


def log_line(fields: Mapping[str, object]) -> None:
    """One structured line on standard error (`reclaim watch`): `key=value` pairs after the
    time, values with spaces quoted, so that journald and grep read it alike."""
    parts = [f"time={datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"]
    for key, value in fields.items():
        if value is None:
            continue
        text = value.isoformat() if isinstance(value, datetime) else str(value)
        if not text or any(c in text for c in ' "=\t\n'):
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    sys.stderr.write(" ".join(parts) + "\n")
    sys.stderr.flush()


@contextmanager
def progress(enabled: bool) -> Iterator[ProgressFn]:
    """A progress bar on standard error while a large inventory loads, only on a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield no_progress
        return
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=_stderr(),
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(what: str, done: int, total: int | None) -> None:
        if what not in tasks:
            tasks[what] = bar.add_task(what, total=total)
        bar.update(tasks[what], completed=done, total=total)

    with bar:
        yield update


def _short_id(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


@_writes
def show_df(report: DfReport, *, verbose: bool) -> None:
    from rich.table import Table

    engine = report.inventory.engine
    _stdout().print(
        f"Engine: {engine.runtime} {engine.version} at {engine.endpoint} "
        f"({engine.storage_driver}, image store {engine.image_store}, "
        f"data root {engine.data_root or 'unknown'})"
    )
    summary = Table(show_edge=False, box=None, pad_edge=False)
    for column in ("TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"):
        summary.add_column(column, justify="left" if column == "TYPE" else "right")
    for name, total in (
        ("Images", report.image_total),
        ("Containers", report.container_total),
        ("Local volumes", report.volume_total),
        ("Build cache", report.build_cache_total),
    ):
        summary.add_row(
            name,
            str(total.count),
            "-" if total.active is None else str(total.active),
            human_bytes(total.bytes),
            human_bytes(total.reclaimable_bytes),
        )
    _stdout().print(summary)
    counted = report.image_total.bytes or 0
    if report.engine_size_sum > counted:
        _stdout().print(
            f"Image sizes as the engine lists them add up to {human_bytes(report.engine_size_sum)}"
            f"; with each shared layer counted once they take {human_bytes(counted)}."
        )
    if report.container_total.bytes is None:
        _stdout().print("Container read-write bytes: not asked for (use --sizes; slow).")
    if verbose:
        _show_images(report)
        _show_containers(report)
        _show_volumes(report)


def _show_images(report: DfReport) -> None:
    from rich.table import Table

    table = Table(title="Images", title_justify="left", show_edge=False, box=None)
    for column, justify in (
        ("REPOSITORY:TAG", "left"),
        ("IMAGE ID", "left"),
        ("SIZE", "right"),
        ("EXCLUSIVE", "right"),
        ("SHARED", "right"),
        ("CONTAINERS", "right"),
        ("LAST USED", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    rows = sorted(report.images, key=lambda r: (-r.exclusive, r.image.tags, r.image.id))
    for row in rows:
        used = _last_used_text(row.usage, report.now)
        tags = row.image.tags
        table.add_row(
            (tags[0] + (f" (+{len(tags) - 1} more)" if len(tags) > 1 else "")) if tags
            else "<none>",
            _short_id(row.image.id),
            human_bytes(row.size),
            human_bytes(row.exclusive),
            human_bytes(row.shared),
            str(len(row.containers)),
            used,
        )
    _stdout().print()
    _stdout().print(table)


def _last_used_text(usage: Usage | None, now: datetime) -> str:
    """"3 days ago (container web-1)", or for an image never used here, since when it is."""
    if usage is None:
        return "unknown"
    last = usage.last_use
    if last is not None:
        detail = f" {last.detail}" if last.detail else ""
        return f"{human_ago(last.when, now)} ({last.source}{detail})"
    basis = usage.age_basis
    what = "tagged" if basis.source == "tag-time" else "first seen"
    return f"never ({what} {human_ago(basis.when, now)})"


def _show_containers(report: DfReport) -> None:
    from rich.table import Table

    containers = report.inventory.containers
    if not containers:
        return
    names = {i.id: (i.tags[0] if i.tags else _short_id(i.id)) for i in report.inventory.images}
    table = Table(title="Containers", title_justify="left", show_edge=False, box=None)
    for column in ("NAME", "CONTAINER ID", "IMAGE", "STATE", "FINISHED", "RW SIZE"):
        table.add_column(column, justify="right" if column == "RW SIZE" else "left")
    for c in sorted(containers, key=lambda c: (c.state.value, c.name)):
        table.add_row(
            c.name,
            c.id[:12],
            names.get(c.image_id, _short_id(c.image_id)),
            c.state.value,
            human_ago(c.finished, report.now) if c.finished else "-",
            human_bytes(c.rw_bytes),
        )
    _stdout().print()
    _stdout().print(table)


def _show_volumes(report: DfReport) -> None:
    from rich.table import Table

    volumes = report.inventory.volumes
    if not volumes:
        return
    table = Table(title="Volumes", title_justify="left", show_edge=False, box=None)
    for column in ("VOLUME NAME", "KIND", "USED BY", "SIZE"):
        table.add_column(column, justify="right" if column == "SIZE" else "left")
    for v in sorted(volumes, key=lambda v: (not v.dangling, v.name)):
        name = v.name if len(v.name) < 40 else v.name[:12] + "…"
        table.add_row(
            name,
            "anonymous" if v.anonymous else "named",
            "dangling" if v.dangling else f"{len(v.used_by)} container(s)",
            human_bytes(v.bytes),
        )
    _stdout().print()
    _stdout().print(table)


@_writes
def show_fsck(result: FsckResult) -> None:
    """The fsck report: one row per finding with its bytes and evidence, then what was done."""
    from rich.table import Table

    out = _stdout()
    scan = result.scan
    if scan is not None:
        state = "running (assumed)" if scan.engine_running else "stopped (checked)"
        out.print(f"Data root: {scan.data_root} ({scan.driver}); engine {state}; "
                  f"{scan.looks} look(s)")
        for blocker in scan.blockers:
            out.print(f"Not acting: {blocker}")
        if not scan.findings:
            out.print("No leaked storage found.")
        else:
            table = Table(show_edge=False, box=None, pad_edge=False)
            for column in ("CLASS", "PATH", "SIZE", "ACTION", "EVIDENCE"):
                table.add_column(column, justify="right" if column == "SIZE" else "left",
                                 no_wrap=column != "EVIDENCE")
            for f in scan.findings:
                path = f.path if len(f.path) < 60 else f.path[:44] + "…" + f.path[-12:]
                table.add_row(f.cls, path, human_bytes(f.bytes), f.action, "; ".join(f.evidence))
            out.print(table)
            out.print(f"Reclaimable: {human_bytes(scan.reclaimable_bytes)} "
                      "(orphan layers and volumes proven unreferenced)")
    for batch in result.batches:
        verb = {"quarantine": "Quarantined", "restore": "Restored", "purge": "Purged"}.get(
            result.mode, result.mode)
        out.print(f"{verb} batch {batch.id}: {len(batch.entries)} entries, "
                  f"{human_bytes(batch.bytes)} ({batch.path})")
    if result.mode == "purge" and not result.batches:
        out.print("No quarantined batch to purge.")
    if result.held:
        out.print("In quarantine:")
        for batch in result.held:
            recorded = ("" if result.recorded.get(batch.id) is not False
                        else " (not in the ledger; its manifest.json is enough)")
            out.print(f"  batch {batch.id}: {len(batch.entries)} entries, "
                      f"{human_bytes(batch.bytes)}, created {batch.created_at}{recorded}")
            out.print(f"    restore: {result.restore_command(batch.id)}")
        out.print("  delete them for good: reclaim fsck --data-root "
                  f"{result.data_root} --purge [--older-than DUR]")
    if result.ledger is not None and result.ledger.error is not None and result.mode == "report":
        warning(f"the ledger {result.ledger.path} could not be read ({result.ledger.error}); "
                "the batches above are listed from their manifests")


# -- plan, apply, history ----------------------------------------------------------------------


@_writes
def show_plan(made: Plan, *, verbose: bool, written_to: str | None = None) -> None:
    from rich.table import Table

    out = _stdout()
    out.print(f"Plan for {made.engine.runtime} {made.engine.version} at {made.engine.endpoint}"
              f", {format_time(made.created_at)}")
    if made.actions:
        table = Table(show_edge=False, box=None)
        for column in ("#", "KIND", "WHAT", "FREES", "RULE", "WHY"):
            table.add_column(column, justify="right" if column in ("#", "FREES") else "left",
                             no_wrap=column != "WHY")
        for n, action in enumerate(made.actions, 1):
            table.add_row(str(n), action.kind, _action_name(action), human_bytes(action.bytes),
                          action.reason.rule, action.reason.detail)
        out.print(table)
    else:
        out.print("Nothing to delete.")
    out.print(f"Predicted to free: {human_bytes(made.predicted_bytes)} "
              f"({made.predicted_bytes} bytes, shared layers counted once)")
    counts: dict[tuple[str, str], int] = {}
    for k in made.kept:
        counts[(k.kind, k.reason.rule)] = counts.get((k.kind, k.reason.rule), 0) + 1
    if counts:
        summary = ", ".join(f"{n} {kind}(s) {rule}" for (kind, rule), n in sorted(counts.items()))
        out.print(f"Kept: {summary}")
    for warning_text in made.warnings:
        warning(warning_text)
    if verbose and made.kept:
        table = Table(title="Kept", title_justify="left", show_edge=False, box=None)
        for column in ("KIND", "WHAT", "RULE", "WHY"):
            table.add_column(column)
        for k in made.kept:
            table.add_row(k.kind, _short_id(k.id) if k.id.startswith("sha256:") else k.id[:40],
                          k.reason.rule, k.reason.detail)
        out.print()
        out.print(table)
    if written_to:
        out.print(f"Plan written to {written_to}; apply it with: reclaim apply {written_to}")


def _action_name(action: Action) -> str:
    if action.kind == "image":
        name = action.refs[0] if action.refs else _short_id(action.id)
        return name + (f" (+{len(action.refs) - 1} more)" if len(action.refs) > 1 else "")
    if action.kind == "container":
        return action.refs[0] if action.refs else action.id[:12]
    return action.id if len(action.id) < 40 else action.id[:12] + "…"


def confirm(question: str) -> bool:
    """Asked on stderr, answered on stdin. The end of input is a no, like any answer but
    yes (SIGINT still interrupts)."""
    sys.stderr.write(f"{question} [y/N]: ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


@contextmanager
def apply_progress(*, enabled: bool, actions: tuple[Action, ...]
                   ) -> Iterator[Callable[[Action, Outcome], None]]:
    """A progress bar in bytes while deletions go, only on a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield lambda action, outcome: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    bar = Progress(TextColumn("deleting"), BarColumn(), DownloadColumn(binary_units=True),
                   TextColumn("{task.fields[last]}"), console=_stderr(), transient=True)
    task = bar.add_task("apply", total=sum(a.bytes for a in actions) or 1, last="")

    def update(action: Action, outcome: Outcome) -> None:
        bar.update(task, advance=action.bytes, last=f"{outcome.status} {_action_name(action)}")

    with bar:
        yield update


@_writes
def show_apply(result: ApplyResult) -> None:
    out = _stdout()
    for action in result.deleted:
        out.print(f"deleted {action.kind} {_action_name(action)}  "
                  f"({human_bytes(action.bytes)} predicted)")
    for action, why in result.skipped:
        out.print(f"skipped {action.kind} {_action_name(action)}: {why}")
    for action, error_text in result.failed:
        out.print(f"FAILED  {action.kind} {_action_name(action)}: {error_text}")
    out.print(f"{len(result.deleted)} deleted, {len(result.skipped)} skipped, "
              f"{len(result.failed)} failed. Predicted {human_bytes(result.predicted_bytes)}; "
              f"freed {human_bytes(result.freed_bytes)} by the model (inventories before and "
              "after).")
    if result.measured_freed_bytes is None:
        out.print("Measured on the filesystem: not known here (the engine's data root is not "
                  "on this host).")
    else:
        out.print(f"Measured on the filesystem that holds the data root: "
                  f"{_signed_bytes(result.measured_freed_bytes)} freed (statvfs; anything else "
                  "written to or deleted from it meanwhile is included).")


def _signed_bytes(n: int) -> str:
    return human_bytes(n) if n >= 0 else f"-{human_bytes(-n)}"


def journal_json(entry: Entry) -> dict[str, Any]:
    return {
        "at": format_time(entry.at), "kind": entry.kind, "id": entry.object_id,
        "refs": list(entry.refs), "rule": entry.rule, "detail": entry.detail,
        "predicted_bytes": entry.predicted_bytes, "plan_created": format_time(entry.plan_created),
    }


@_writes
def show_history(entries: list[Entry]) -> None:
    from rich.table import Table

    if not entries:
        _stdout().print("Nothing deleted yet.")
        return
    table = Table(show_edge=False, box=None)
    for column in ("WHEN", "KIND", "WHAT", "BYTES", "RULE", "WHY"):
        table.add_column(column, no_wrap=column != "WHY")
    for e in entries:
        what = e.refs[0] if e.refs else (_short_id(e.object_id)
                                         if e.object_id.startswith("sha256:") else e.object_id)
        table.add_row(format_time(e.at) or "", e.kind, what, human_bytes(e.predicted_bytes),
                      e.rule, e.detail)
    _stdout().print(table)


def write_file(path: Path, text: str) -> None:
    """A file the user asked for (`plan -o`), written aside and renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from exc
