"""reclaim's errors. Each carries its own one-line message and exit code; the CLI's single
error boundary maps them to the process exit status."""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_ENGINE = 3
EXIT_INTERRUPTED = 130
EXIT_UNEXPECTED = 70


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
