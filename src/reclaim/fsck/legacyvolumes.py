"""Volumes from before Docker 1.7 (STORAGE.md, "aufs / pre-1.7 volumes"), left on hosts that were
upgraded for years.

    vfs/dir/<id>/               the volume's data
    volumes/<id>/config.json    {"ID", "Path", "IsBindMount", "Writable"}: Path is vfs/dir/<id>,
                                or, for a bind mount, a host path
    containers/<id>/config.json {"Volumes": {destination: host path}, "VolumesRW": {...}}

Docker 1.7 and later migrate a container's old volumes when they load it: a volume under
vfs/dir gets `volumes/<id>/_data` as a symlink to it, and config.json is kept (for downgrades).
So vfs/dir/<id> is in use when a volume record's Path, a container's Volumes or a `_data`
symlink names it, or a mount shows it. An `orphan-volume` is a vfs/dir/<id> none of them names.

A bind-mount record's Path is the host's own data: it is never followed, sized or touched, only
reported. Every config.json must parse with the fields of the right types, or the run is refused:
the record that cannot be read may be the one keeping a volume.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass

from reclaim.fsck.errors import Unreadable
from reclaim.fsck.finding import Finding, not_a_directory
from reclaim.fsck.graph import Graph, is_real_dir, list_dir, plain, read_small

_VOLUME_FILES = frozenset({"metadata.db", "backingFsBlockDev"})


@dataclass(frozen=True)
class Record:
    name: str  # the directory under volumes/
    id: str
    path: str
    bind: bool
    writable: bool


def vfs_id(path: str) -> str | None:
    """The <id> of a path ending in vfs/dir/<id> (any prefix: the data root may have been seen at
    another path when it was written), else None."""
    parts = [p for p in path.rstrip("/").split("/") if p]
    if len(parts) >= 3 and parts[-3] == "vfs" and parts[-2] == "dir":
        return parts[-1]
    return None


def _record(root: str, name: str) -> Record | None:
    path = os.path.join(root, "volumes", name, "config.json")
    if not os.path.lexists(path):
        return None
    what = f"pre-1.7 volume record volumes/{name[:24]}/config.json"
    text = read_small(path, what) or ""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise Unreadable(f"{what}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise Unreadable(f"{what}: not a JSON object")
    vid, vpath = doc.get("ID"), doc.get("Path")
    bind, writable = doc.get("IsBindMount"), doc.get("Writable")
    if not isinstance(vid, str) or not isinstance(vpath, str) or not isinstance(bind, bool) \
            or not isinstance(writable, bool):
        raise Unreadable(f"{what}: needs ID and Path (strings), IsBindMount and Writable "
                         "(true/false)")
    return Record(name, vid, vpath, bind, writable)


def read(g: Graph) -> tuple[dict[str, Record], dict[str, str]]:
    """The pre-1.7 volume records (by their dir under volumes/), and vfs/dir/<id> -> why it is
    in use."""
    records: dict[str, Record] = {}
    refs: dict[str, str] = {}
    base = os.path.join(g.root, "volumes")
    for name in list_dir(base, "volumes"):
        if name in _VOLUME_FILES or not is_real_dir(os.path.join(base, name)):
            continue
        record = _record(g.root, name)
        if record is not None:
            records[name] = record
            # Any Path ending in vfs/dir/<id> keeps that dir, a bind mount's too: keeping more
            # than needed is the safe side.
            vid = vfs_id(record.path)
            if vid:
                refs.setdefault(vid, f"Path of volumes/{name[:12]}/config.json")
        data = os.path.join(base, name, "_data")
        try:
            st = os.lstat(data)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise Unreadable(f"cannot look at {data}: {exc.strerror}") from exc
        if stat.S_ISLNK(st.st_mode):
            # The link's text is read, never followed.
            vid = vfs_id(os.readlink(data))
            if vid:
                refs.setdefault(vid, f"volumes/{name[:12]}/_data links to it (migrated by 1.7)")
    for name, why in g.volume_refs.items():
        vid = vfs_id(name) or (name if "/" not in name else None)
        if vid:
            refs.setdefault(vid, why)
    for vid in g.mounted_vfs:
        refs.setdefault(vid, "mounted")
    return records, refs


def classify(g: Graph, records: dict[str, Record], refs: dict[str, str], *, engine_running: bool,
             min_age: float, now: float) -> tuple[list[Finding], dict[str, tuple[int, ...]]]:
    findings: list[Finding] = []
    signatures: dict[str, tuple[int, ...]] = {}
    for name, r in sorted(records.items()):
        rel = f"volumes/{name}"
        # A container names a vfs volume by its path (whose last part is the id), a bind mount
        # by the host path itself.
        used = g.volume_refs.get(name) or g.volume_refs.get(r.id) or g.volume_refs.get(r.path)
        if r.id != name:
            findings.append(Finding(rel, "unknown", [
                f"pre-1.7 volume record whose ID {r.id[:24]!r} is not its directory's name"]))
        elif r.bind:
            if not used:
                findings.append(Finding(rel, "unknown", [
                    f"pre-1.7 bind-mount record for the host path {r.path}: the host's data, "
                    "never followed or touched", "no container names it"]))
        elif vfs_id(r.path) is None:
            findings.append(Finding(rel, "unknown", [
                f"pre-1.7 volume record whose Path {r.path} is not under vfs/dir: never followed"]))
        elif not used:
            findings.append(Finding(rel, "stale-metadata", [
                "a pre-1.7 volume record no container names",
                f"keeps vfs/dir/{vfs_id(r.path)} alive"]))

    base = os.path.join(g.root, "vfs", "dir")
    # vfs/ itself is listed first so that a symlink there is refused, not walked through.
    names = list_dir(base, "pre-1.7 volumes") if list_dir(
        os.path.join(g.root, "vfs"), "vfs") else []
    if os.path.lexists(os.path.join(g.root, "image", "vfs")):
        # The vfs storage driver keeps its image layers in vfs/dir too: these are not volumes
        # (the scan reports that driver's tree as a whole).
        names = []
    # Not one of them named by anything: the records are gone or were never here; an empty
    # reference set proves nothing (the cleanup scripts that deleted every volume did exactly
    # this).
    none_named = bool(names) and not any(n in refs for n in names)
    for name in names:
        path = os.path.join(base, name)
        rel = f"vfs/dir/{name}"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue  # removed since the listing: nothing left to judge
        if not stat.S_ISDIR(st.st_mode):
            findings.append(not_a_directory(rel, st.st_mode))
            continue
        plain(name, "vfs/dir entry")
        if name in refs:
            continue
        evidence = ["no pre-1.7 volume record (volumes/*/config.json) or _data link names it",
                    "no container's Volumes or mount points name it",
                    "not mounted in any mount namespace"]
        if none_named:
            findings.append(Finding(rel, "unknown", [
                *evidence, f"none of the {len(names)} dirs in vfs/dir is named by anything: an "
                "empty reference set proves nothing"]))
            continue
        changed = max(st.st_mtime, st.st_ctime)
        if engine_running and now - changed < min_age:
            findings.append(Finding(rel, "in-flight", [
                *evidence, f"changed {int(now - changed)}s ago, under the {int(min_age)}s "
                "threshold while the engine runs"]))
            continue
        findings.append(Finding(rel, "orphan-volume", evidence, action="quarantine"))
        signatures[rel] = (st.st_mtime_ns, st.st_ctime_ns, st.st_nlink, st.st_size)
    return findings, signatures


def legacy_names(records: dict[str, Record]) -> set[str]:
    """Dirs under volumes/ that are pre-1.7 records: judged here, never as modern volumes."""
    return set(records)
