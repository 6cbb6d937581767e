"""Acting on proven orphans: quarantine (rename on the same filesystem), restore, purge.

A batch is `<data-root>/../reclaim-quarantine/<id>/` holding the moved entries under their paths
relative to the data root, and a `manifest.json` saying what moved from where. The manifest is
written before the first rename (every entry "pending") and after each one, so a batch cut short
by a crash still says exactly what is where, and restore puts back what did move.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reclaim.fsck.errors import FsckRefused, PartialAction
from reclaim.fsck.graph import plain
from reclaim.fsck.scan import Scan
from reclaim.ondisk.sizing import size_paths

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "reclaim.quarantine/v1"
LOCK = ".lock"


def quarantine_root(data_root: str) -> str:
    return os.path.join(os.path.dirname(os.path.realpath(data_root)), "reclaim-quarantine")


@dataclass(frozen=True)
class Batch:
    id: str
    path: str
    created_at: str
    entries: list[dict[str, Any]]
    bytes: int
    data_root: str = ""  # the data root the entries were taken from (the manifest says)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "created_at": self.created_at,
                "data_root": self.data_root, "entries": self.entries, "bytes": self.bytes}


@contextlib.contextmanager
def _locked(qroot: str) -> Iterator[None]:
    """One quarantine, restore or purge at a time per data root (our own lock file: nothing
    the engine could notice)."""
    os.makedirs(qroot, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(qroot, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FsckRefused(f"another reclaim fsck is acting on {qroot}") from None
        yield
    finally:
        os.close(fd)


def _write_manifest(batch_dir: str, doc: dict[str, Any]) -> None:
    tmp = os.path.join(batch_dir, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(batch_dir, MANIFEST))


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """The mount points of this process's mount namespace: the one the renames happen in."""
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise FsckRefused(f"cannot read {mountinfo} to check that every move stays within one "
                          f"mount: {exc.strerror}") from exc
    return [_unescape(line.split()[4]) for line in lines if len(line.split()) > 4]


def _mount_of(path: str, points: list[str]) -> str:
    """The mount point `path` is under (the longest one that is a prefix of it)."""
    best = "/"
    for mp in points:
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
            best = mp
    return best


def _inside(root: str, rel: str) -> str:
    """root/rel, refusing a rel that is absolute or climbs out (`..`)."""
    parts = rel.split("/")
    for part in parts:
        plain(part, "manifest path")
    return os.path.join(root, *parts)


def quarantine(result: Scan) -> Batch:
    """Move every finding whose action is `quarantine` into a new batch. Refuses (touching
    nothing) while anything blocks or when the quarantine would be on another filesystem."""
    if result.blockers:
        raise FsckRefused("not quarantining: " + "; ".join(result.blockers))
    todo = [f for f in result.findings if f.actionable and f.action == "quarantine"]
    root = result.data_root
    qroot = quarantine_root(root)
    with _locked(qroot):
        root_dev = os.lstat(root).st_dev
        if os.lstat(qroot).st_dev != root_dev:
            raise FsckRefused(f"{qroot} is on another filesystem than {root}: a rename would be "
                              "a copy; refusing")
        # The same filesystem is not enough: a rename cannot cross mount points either (EXDEV),
        # and dockerd 20.10 bind-mounts its data root onto itself while it runs when the
        # host's mount propagation is private. Found out here, before anything moves.
        points = mount_points()
        qmount = _mount_of(qroot, points)
        moves: list[dict[str, Any]] = []
        for f in todo:
            src = _inside(root, f.path)
            if os.lstat(src).st_dev != root_dev:
                raise FsckRefused(f"{f.path} is on another filesystem than the data root")
            smount = _mount_of(os.path.dirname(src), points)
            if smount != qmount:
                raise FsckRefused(
                    f"{f.path} is under the mount at {smount} and {qroot} under {qmount}: a "
                    "rename cannot cross mounts; nothing was moved",
                    hint="a running dockerd may hold its data root as a mount of its own: stop "
                         "the engine and run again with --engine-stopped")
            moves.append({"from": f.path, "class": f.cls, "bytes": f.bytes, "kind": "dir",
                          "state": "pending"})
            if f.link is not None:
                link_rel = f"{os.path.dirname(f.path)}/l/{plain(f.link, 'link')}"
                link_path = _inside(root, link_rel)
                try:
                    target = os.readlink(link_path)
                except OSError:
                    target = None
                # Only the symlink that points at this very layer's diff/ goes with it.
                if target == f"../{os.path.basename(f.path)}/diff":
                    moves.append({"from": link_rel, "class": f.cls, "bytes": 0,
                                  "kind": "symlink", "target": target, "layer": f.path,
                                  "state": "pending"})
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        batch_dir = os.path.join(qroot, stamp)
        os.mkdir(batch_dir, 0o700)
        doc: dict[str, Any] = {"schema": MANIFEST_SCHEMA, "id": stamp,
                               "created_at": datetime.now(UTC).isoformat(timespec="seconds")
                               .replace("+00:00", "Z"),
                               "data_root": root, "driver": result.driver, "entries": moves}
        _write_manifest(batch_dir, doc)
        failed: list[str] = []
        failed_dirs: set[str] = set()
        for move in moves:
            src = _inside(root, move["from"])
            dst = _inside(batch_dir, move["from"])
            if move.get("layer") in failed_dirs:
                # A layer that stays keeps its l/ link: without it the layer would be broken
                # if it turned out to be needed after all.
                move["state"] = "skipped"
                move["error"] = "its layer did not move"
                _write_manifest(batch_dir, doc)
                continue
            os.makedirs(os.path.dirname(dst), mode=0o700, exist_ok=True)
            try:
                os.rename(src, dst)
            except OSError as exc:
                move["state"] = "failed"
                move["error"] = exc.strerror
                failed.append(f"{move['from']}: {exc.strerror}")
                failed_dirs.add(move["from"])
            else:
                move["state"] = "moved"
            _write_manifest(batch_dir, doc)
        batch = Batch(stamp, batch_dir, doc["created_at"], moves,
                      sum(m["bytes"] for m in moves if m["state"] == "moved"), root)
        if failed:
            raise PartialAction(f"batch {stamp}: {len(failed)} of {len(moves)} moves failed: "
                                + "; ".join(failed[:3]), hint=f"see {batch_dir}/{MANIFEST}",
                                done=[batch])
        return batch


def _load(qroot: str, batch_id: str) -> tuple[str, dict[str, Any]]:
    plain(batch_id, "batch id")
    batch_dir = os.path.join(qroot, batch_id)
    try:
        with open(os.path.join(batch_dir, MANIFEST)) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise FsckRefused(f"no quarantine batch {batch_id!r} in {qroot}") from None
    except (OSError, ValueError) as exc:
        raise FsckRefused(f"batch {batch_id}: unreadable manifest ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("schema") != MANIFEST_SCHEMA:
        raise FsckRefused(f"batch {batch_id}: not a reclaim quarantine manifest")
    return batch_dir, doc


def restore(data_root: str, batch_id: str) -> Batch:
    """Put a batch back exactly where it came from. Refuses, moving nothing, if any of the
    original paths is taken again."""
    root = os.path.realpath(data_root)
    qroot = quarantine_root(root)
    plain(batch_id, "batch id")
    if not os.path.isdir(qroot):
        # Checked before the lock, which would create the dir: a restore of nothing leaves
        # nothing behind.
        raise FsckRefused(f"no quarantine batch {batch_id!r}: there is no {qroot}")
    with _locked(qroot):
        batch_dir, doc = _load(qroot, batch_id)
        if os.path.realpath(str(doc.get("data_root"))) != root:
            raise FsckRefused(f"batch {batch_id} was taken from {doc.get('data_root')}, not {root}")
        entries = [e for e in doc["entries"] if e.get("state") == "moved"]
        for e in entries:
            if os.path.lexists(_inside(root, e["from"])):
                raise FsckRefused(f"cannot restore batch {batch_id}: {e['from']} exists again")
            if not os.path.lexists(_inside(batch_dir, e["from"])):
                raise FsckRefused(f"batch {batch_id} lost {e['from']}; nothing restored")
        # Layer dirs before their l/ symlinks, so a link never points at nothing.
        for e in sorted(entries, key=lambda e: e["kind"] == "symlink"):
            dst = _inside(root, e["from"])
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.rename(_inside(batch_dir, e["from"]), dst)
            e["state"] = "restored"
            _write_manifest(batch_dir, doc)
        _remove_batch(batch_dir)
        return Batch(batch_id, batch_dir, str(doc.get("created_at")), entries,
                     sum(int(e["bytes"]) for e in entries), root)


def _remove_batch(batch_dir: str) -> None:
    """The batch's now empty directories and its manifest; anything else left is kept."""
    for dirpath, _, filenames in os.walk(batch_dir, topdown=False):
        for name in filenames:
            if dirpath == batch_dir and name == MANIFEST:
                os.unlink(os.path.join(dirpath, name))
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def list_batches(data_root: str) -> list[Batch]:
    qroot = quarantine_root(data_root)
    out: list[Batch] = []
    try:
        names = sorted(os.listdir(qroot))
    except FileNotFoundError:
        return out
    for name in names:
        if name == LOCK or not stat.S_ISDIR(os.lstat(os.path.join(qroot, name)).st_mode):
            continue
        try:
            batch_dir, doc = _load(qroot, name)
        except FsckRefused:
            continue
        entries = list(doc.get("entries") or [])
        out.append(Batch(name, batch_dir, str(doc.get("created_at")), entries,
                         sum(int(e.get("bytes") or 0) for e in entries
                             if e.get("state") == "moved"),
                         os.path.realpath(str(doc.get("data_root")))))
    return out


def purge(data_root: str, *, older_than: float | None = None) -> list[Batch]:
    """Delete quarantined batches (older than `older_than` seconds, if given). Only directories
    carrying a reclaim manifest are deleted; the bytes are measured just before."""
    root = os.path.realpath(data_root)
    qroot = quarantine_root(root)
    now = time.time()
    purged: list[Batch] = []
    if not os.path.isdir(qroot):
        return purged  # nothing was ever quarantined here; the lock would create the dir
    with _locked(qroot):
        for batch in list_batches(root):
            # The quarantine dir is shared by the data roots of one parent directory: only
            # this root's batches are purged.
            if batch.data_root != root:
                continue
            created = _parse_time(batch.created_at)
            if older_than is not None and (created is None or now - created < older_than):
                continue
            measured = size_paths([batch.path])[0].allocated
            try:
                shutil.rmtree(batch.path)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue
                raise PartialAction(f"purging batch {batch.id}: {exc}", done=purged) from exc
            purged.append(Batch(batch.id, batch.path, batch.created_at, batch.entries, measured,
                                batch.data_root))
    return purged


def _parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None

