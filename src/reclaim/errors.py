"""reclaim's errors. Each carries its own one-line message and exit code; the CLI's single
error boundary maps them to the process exit status."""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_ENGINE = 3
EXIT_UNEXPECTED = 70
EXIT_IOERR = 74  # sysexits' EX_IOERR: the output could not be written
EXIT_INTERRUPTED = 130
# What a shell reports for a process that SIGPIPE ended (128 + 13): the reader of the output
# went away, which is the reader's choice (`reclaim df | head -1`), not a failure of reclaim.
EXIT_CLOSED_PIPE = 141


class ReclaimError(Exception):
    """An expected failure: shown as one line, never as a traceback."""

    exit_code = EXIT_UNEXPECTED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(ReclaimError):
    """Bad flags, config or input file."""

    exit_code = EXIT_USAGE


class PolicyError(UsageError):
    """A policy that cannot be applied to this engine (e.g. a quota in % of a filesystem whose
    size is not known here)."""


class EngineUnreachable(ReclaimError):
    exit_code = EXIT_ENGINE


class EngineUnsupported(ReclaimError):
    exit_code = EXIT_ENGINE


class EngineError(ReclaimError):
    """The engine answered with an error we did not expect."""

    exit_code = EXIT_ENGINE


class NotFound(ReclaimError):
    """The object is already gone."""

    exit_code = EXIT_PARTIAL


class InUse(ReclaimError):
    """The engine refused a removal because something still needs the object (HTTP 409)."""

    exit_code = EXIT_PARTIAL


class PartialFailure(ReclaimError):
    """Some items failed; the rest were done."""

    exit_code = EXIT_PARTIAL


class OutputFailed(ReclaimError):
    """Standard output could not be written (closed, or a full disk behind it)."""

    exit_code = EXIT_IOERR


class ClosedPipe(OutputFailed):
    """The reader of standard output went away; reclaim ends quietly."""

    exit_code = EXIT_CLOSED_PIPE
