"""The SQLite file: where it lives, how it is created, opened, migrated and written.

One file per engine, named by the engine's id and its data root (`docker-<ID>-<crc>.db`, see
`EngineInfo.identity`): the same daemon reached through two endpoints keeps one history, and two
daemons on one host (rootful and rootless, a test engine, or two dockerd that share one
key.json and so one id) never mix theirs. The file records the identity it belongs to and is
refused to any other engine. The directory is 0700 and the file 0600; a new file is built
aside and linked into place, so a reader never sees a half-made database.

Every write is one short `BEGIN IMMEDIATE` transaction. WAL with `synchronous=NORMAL` means a
kill -9 loses at most the transaction being written, and readers never block the writer.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reclaim.errors import EXIT_PARTIAL, ReclaimError, UsageError
from reclaim.state.migrations import MIGRATIONS, SCHEMA_VERSION

STATE_DIR_ENV = "RECLAIM_STATE_DIR"


class StateError(UsageError):
    """The state database cannot be used as it is (corrupt, unreadable, from a newer reclaim).
    Nothing was changed; the user decides (`--reset-state` moves it aside)."""


class StateBusy(ReclaimError):
    """Another reclaim held the database longer than we were willing to wait."""

    exit_code = EXIT_PARTIAL


class StateWriteFailed(ReclaimError):
    """A write failed (disk full, I/O error). The previous state is intact."""

    exit_code = EXIT_PARTIAL


def default_state_dir() -> Path:
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    if os.geteuid() == 0:
        return Path("/var/lib/reclaim")
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "reclaim"


def ledger_path(state_dir: Path, runtime: str, state_name: str) -> Path:
    """`state_name` is `EngineInfo.state_name`: the engine id and its data root."""
    return state_dir / f"{runtime}-{state_name}.db"


def legacy_ledger_path(state_dir: Path, runtime: str, engine_id: str) -> Path:
    """Where earlier versions kept an engine's ledger: named by the engine id alone."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", engine_id).strip("_") or "unknown"
    return state_dir / f"{runtime}-{safe}.db"


# The checkpoint row that names the engine (`EngineInfo.identity`) a ledger belongs to.
ENGINE_KEY = "engine.identity"
# In a ledger named by the engine id alone: the identity of the engine that adopted it.
ADOPTED_KEY = "adopted.by"


def adopt_legacy(legacy: Path, path: Path, identity: str) -> bool:
    """Copy a ledger named by the engine id alone to the name of the engine that opens it
    first, which then owns its history. The old file stays where it is (nothing is ever
    deleted) and says who adopted it, so that a second daemon that shares the id (and so the
    old file) starts a ledger of its own instead of taking the first one's history too.
    The copy is SQLite's online backup: consistent while another reclaim writes the file."""
    if path.exists() or not legacy.is_file():
        return False
    try:
        old = sqlite3.connect(f"file:{legacy}?mode=rw", uri=True, timeout=10.0,
                              isolation_level=None)
    except sqlite3.Error:
        return False
    try:
        # Adopted already (by this engine or another one): nothing more to take from it.
        row = old.execute("SELECT value FROM checkpoint WHERE key = ?", (ADOPTED_KEY,)).fetchone()
        if row is not None:
            return False
        version = int(old.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            return False  # a newer reclaim's file: not ours to read, let alone copy
        # Claimed first, in one transaction, so that of two engines sharing the old file
        # exactly one takes its history; copied after (a backup does not run inside a write
        # transaction of its source).
        old.execute("BEGIN IMMEDIATE")
        try:
            claimed = old.execute("SELECT 1 FROM checkpoint WHERE key = ?",
                                  (ADOPTED_KEY,)).fetchone() is None
            if claimed:
                old.execute("INSERT INTO checkpoint (key, value) VALUES (?, ?)",
                            (ADOPTED_KEY, identity))
            old.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                old.execute("ROLLBACK")
            raise
        if not claimed:
            return False
        import tempfile

        fd, tmp_name = tempfile.mkstemp(prefix=".adopt-", suffix=".db", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            os.chmod(tmp, 0o600)
            new = sqlite3.connect(tmp, isolation_level=None)
            try:
                old.backup(new)
                new.execute("DELETE FROM checkpoint WHERE key = ?", (ADOPTED_KEY,))
                new.execute("INSERT OR REPLACE INTO checkpoint (key, value) VALUES (?, ?)",
                            (ENGINE_KEY, identity))
            finally:
                new.close()
            os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except FileExistsError:
        return False  # another reclaim of this engine adopted it meanwhile
    except (sqlite3.Error, OSError):
        return False  # unreadable: the engine starts a ledger of its own, the old file stays
    finally:
        old.close()
    return True


class Store:
    """An open state database."""

    def __init__(self, path: Path, *, busy_timeout: float = 10.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        _ensure_dir(path.parent)
        if not path.exists():
            _create(path)
        self.conn = self._open()
        with contextlib.suppress(ValueError):
            _opened.remove(path)
        _opened.append(path)

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the state database {self.path}: {exc}",
                             hint=_RESET_HINT) from exc
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"the state database {self.path} was written by a newer reclaim "
                    f"(schema {version}, this one knows {SCHEMA_VERSION}); it was not touched",
                    hint="run the newer reclaim, or point --state-dir elsewhere",
                )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if version < SCHEMA_VERSION:
                self._migrate(conn, version)
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise StateBusy(f"the state database {self.path} is busy: {exc}") from exc
            raise StateError(f"cannot read the state database {self.path}: {exc}",
                             hint=_RESET_HINT) from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StateError(f"the state database {self.path} is damaged: {exc}",
                             hint=_RESET_HINT) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the lock: another process may have migrated meanwhile.
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            for number in range(current, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[number]):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; nothing of it stays if anything inside fails."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StateBusy(
                f"the state database {self.path} stayed locked for {self.busy_timeout:g} s "
                "(another reclaim is writing it)"
            ) from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback()
            if "full" in str(exc) or "I/O" in str(exc) or "disk" in str(exc):
                raise StateWriteFailed(
                    f"writing the state database {self.path} failed: {exc}; "
                    "the previous state is intact"
                ) from exc
            raise
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        # The failed statement may already have rolled the transaction back.
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")

    def bind_engine(self, identity: str) -> None:
        """Record which engine this ledger belongs to, or refuse it to any other engine."""
        row = self.conn.execute("SELECT value FROM checkpoint WHERE key = ?",
                                (ENGINE_KEY,)).fetchone()
        if row is None:
            with self.transaction() as db:
                db.execute("INSERT OR IGNORE INTO checkpoint (key, value) VALUES (?, ?)",
                           (ENGINE_KEY, identity))
        elif str(row[0]) != identity:
            raise StateError(
                f"the state database {self.path} belongs to engine {row[0]}, not {identity}; "
                "it was not touched",
                hint="point --state-dir elsewhere for this engine")

    def integrity_ok(self) -> bool:
        return bool(self.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    def close(self) -> None:
        self.conn.close()


def reset(path: Path) -> Path | None:
    """Move a database (and its WAL) aside instead of deleting it; returns where it went."""
    if not path.exists():
        return None
    aside = path.with_name(f"{path.name}.aside-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(aside.with_name(aside.name + suffix))
    path.rename(aside)
    return aside


_RESET_HINT = "nothing was changed; `--reset-state` moves it aside and starts a new one"

# The databases this process opened, the latest last: an error that surfaces at some query
# after the opening (a damaged page deep in the file, a file made read-only) is about the one
# in use, and the error boundary names it.
_opened: list[Path] = []


def failure(exc: sqlite3.Error) -> ReclaimError | None:
    """What a database error that got past the store means, as one line; None for an error
    that is not about the file (a bug: the traceback is what helps then)."""
    where = f"the state database {_opened[-1]}" if _opened else "a state database"
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # the primary result code
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StateError(f"{where} is damaged: {exc}", hint=_RESET_HINT)
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        return StateError(f"cannot write {where}: {exc}",
                          hint="reclaim writes to its state directory; make it writable "
                               "or point --state-dir elsewhere")
    if code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
        return StateWriteFailed(f"writing {where} failed: {exc}")
    return None


def _ensure_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create the state directory {directory}: {exc}") from exc


def _create(path: Path) -> None:
    """Build the database aside (0600), then link it into place: a concurrent creator wins
    or loses whole, and nobody opens a file with half a schema."""
    import tempfile  # here: only the first run creates the database

    fd, tmp_name = tempfile.mkstemp(prefix=".new-", suffix=".db", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o600)
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("BEGIN")
            for migration in MIGRATIONS:
                for statement in _statements(migration):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()
        # Created meanwhile by another reclaim: use theirs.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    except OSError as exc:
        raise StateError(f"cannot create the state database {path}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
