"""Findings: what under a data root nothing references, with the evidence, in classes.

Only `orphan-layer` and `orphan-volume` are ever actionable, and only when nothing blocks
(see `Scan.blockers`). Everything that cannot be decided is reported, never guessed:

  orphan-layer      overlay2/<id> (aufs/diff/<id> with its layers file and mnt dir) that no
                    metadata, BuildKit database, lower file, ancestor list or mount names
  orphan-volume     volumes/<name> in neither the volume store nor any container's mount points;
                    vfs/dir/<id> (pre-1.7) that no volume record, container or mount names
  stale-metadata    a layerdb chain or layerdb/mounts entry that nothing live needs (it keeps
                    layers alive; removing it needs the daemon stopped: reported only)
  in-flight         layerdb/tmp/write-set-*, a dir with no `link`, anything newer than the age
                    threshold or changed between two looks
  pending-removal   *-removing: Docker's own delete in progress
  unknown           anything the rules do not cover

Layouts: overlay2 and aufs (aufs.py), each with pre-1.7 volumes (legacyvolumes.py); the engine
version must be one whose layout is verified (version.py), else nothing is acted on.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

from reclaim.fsck import aufs as aufsmod
from reclaim.fsck import graph as graphmod
from reclaim.fsck import legacyvolumes as legacymod
from reclaim.fsck import mounts as mountsmod
from reclaim.fsck import version as versionmod
from reclaim.fsck.errors import FsckRefused, Unreadable
from reclaim.fsck.finding import ACTIONABLE, Finding, not_a_directory, still_in_flight
from reclaim.fsck.graph import Graph, is_real_dir, list_dir, read_small
from reclaim.ondisk.sizing import size_paths

__all__ = ["ACTIONABLE", "CLASSES", "Finding", "Scan", "scan"]

SCHEMA = "reclaim.fsck/v1"
CLASSES = ("orphan-layer", "orphan-volume", "stale-metadata", "in-flight", "pending-removal",
           "unknown")
DEFAULT_MIN_AGE = 3600.0  # seconds; an unreferenced dir younger than this may be mid-create
DEFAULT_LOOK_GAP = 5.0  # seconds between the two looks when the engine runs
_USERNS = re.compile(r"^\d+\.\d+$")
_VOLUME_FILES = frozenset({"metadata.db", "backingFsBlockDev"})
SUPPORTED_DRIVERS = (graphmod.DRIVER, aufsmod.DRIVER)
OTHER_DRIVERS = ("btrfs", "devicemapper", "fuse-overlayfs", "vfs", "zfs", "overlay")


@dataclass
class Scan:
    data_root: str
    driver: str
    findings: list[Finding]
    engine_running: bool
    blockers: list[str] = field(default_factory=list)
    looks: int = 1
    engine_versions: list[versionmod.EngineVersion] = field(default_factory=list)

    @property
    def reclaimable_bytes(self) -> int:
        return sum(f.bytes for f in self.findings if f.action in ("quarantine", "quarantined"))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "data_root": self.data_root,
            "driver": self.driver,
            "engine_running": self.engine_running,
            "engine_versions": [{"version": str(v), "text": v.text, "source": v.source}
                                for v in self.engine_versions],
            "blockers": list(self.blockers),
            "findings": [f.to_json() for f in self.findings],
            "reclaimable_bytes": self.reclaimable_bytes,
        }


# --- the data root and its engine -------------------------------------------------------------


def canonical_root(data_root: str) -> str:
    """The data root with symlinks resolved once, here (a symlinked /var/lib/docker is common);
    nothing below it is ever followed."""
    root = os.path.realpath(data_root)
    if not is_real_dir(root):
        raise FsckRefused(f"{data_root} is not a directory")
    return root


def check_layout(root: str, storage_driver: str | None = None) -> str:
    """The storage driver, or a refusal saying which layout this is and why it is not handled.
    `storage_driver` is the one the engine is configured to use, if any: it picks among several
    image/<driver> dirs (a host that changed drivers keeps the old ones)."""
    if "/.local/share/docker" in root or "/run/user/" in root:
        raise FsckRefused(f"{root} looks like a rootless Docker data root; not supported yet")
    if os.path.basename(root) and _USERNS.match(os.path.basename(root)):
        raise FsckRefused(f"{root} is a userns-remap data root (<root>/<uid>.<gid>); "
                          "not supported yet")
    for name in list_dir(root, "data root", missing_ok=False):
        path = os.path.join(root, name)
        if _USERNS.match(name) and is_real_dir(path) and (
            os.path.lexists(os.path.join(path, "image")) or os.path.lexists(
                os.path.join(path, "containers"))
        ):
            raise FsckRefused(f"{root} holds a userns-remap data root ({name}/); fsck cannot tell "
                              "which one the engine uses; not supported yet")
    image_drivers = list_dir(os.path.join(root, "image"), "image dir")
    snapshots = os.path.join(root, "containerd", "daemon",
                             "io.containerd.snapshotter.v1.overlayfs", "snapshots")
    if len(image_drivers) > 1:
        # A host that changed drivers keeps the old image/<driver> beside the new one; which
        # one the engine uses now is in its configuration, not in the data root (dockerd itself
        # refuses to start on such a root unless a driver is configured).
        if storage_driver is None or storage_driver not in image_drivers:
            raise FsckRefused(f"{root}/image holds metadata of several storage drivers "
                              f"({', '.join(image_drivers)}) and the engine's configuration "
                              "names none of them (storage-driver): fsck cannot tell which one "
                              "it uses")
        image_drivers = [storage_driver]
    supported = [d for d in image_drivers if d in SUPPORTED_DRIVERS]
    if not supported:
        if os.path.lexists(os.path.join(root, "containerd", "daemon")):
            raise FsckRefused(f"{root} uses the containerd image store (containerd/daemon, no "
                              "image/overlay2); not supported yet")
        others = [d for d in image_drivers if d in OTHER_DRIVERS] or image_drivers
        if others:
            raise FsckRefused(f"storage driver {', '.join(others)} in {root}: only overlay2 and "
                              "aufs are supported for now")
        raise FsckRefused(f"{root} does not look like a Docker data root (no image/overlay2 "
                          "or image/aufs)")
    driver = supported[0]
    if list_dir(snapshots, "containerd snapshots"):
        # Docker's managed containerd keeps its own root here; with the graph driver store its
        # snapshotter stays empty. Snapshots mean images in the containerd store as well.
        raise FsckRefused(f"{root} also holds containerd image store snapshots "
                          "(containerd/daemon); not supported yet")
    layers = os.path.join(root, driver)
    subdirs = [layers] + ([os.path.join(layers, d) for d in ("diff", "layers", "mnt")]
                          if driver == aufsmod.DRIVER else [])
    for path in subdirs:
        if os.path.lexists(path) and not is_real_dir(path):
            raise FsckRefused(f"{path} is not a real directory; refusing to follow it")
    return driver


DAEMON_JSON = "/etc/docker/daemon.json"


def _flag(args: list[str], names: tuple[str, ...]) -> str | None:
    """The value of the first of `names` on a command line (`--x v` or `--x=v`)."""
    for i, arg in enumerate(args):
        if arg in names and i + 1 < len(args):
            return args[i + 1]
        for name in names:
            if arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def _daemon_json(args: list[str]) -> dict[str, Any]:
    config = _flag(args, ("--config-file",)) or DAEMON_JSON
    try:
        with open(config) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _daemon_data_root(args: list[str]) -> str:
    value = _flag(args, ("--data-root", "-g", "--graph"))
    if value:
        return value
    doc = _daemon_json(args)
    value = doc.get("data-root") or doc.get("graph")
    return str(value) if value else "/var/lib/docker"


def _cmdline(pid: int | str, proc: str) -> list[str] | None:
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None


def engine_pids(root: str, proc: str = "/proc") -> list[int]:
    """dockerd processes whose data root is `root` (from their command line and config)."""
    found: list[int] = []
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        args = _cmdline(pid, proc)
        if not args or not os.path.basename(args[0]).startswith("dockerd"):
            continue
        if os.path.realpath(_daemon_data_root(args)) == root:
            found.append(int(pid))
    return found


def configured_driver(pids: list[int], proc: str = "/proc") -> str | None:
    """The storage driver the engine is told to use (`-s`/`--storage-driver`, else
    `storage-driver` in its config file); for a stopped engine, the config file it would read
    by default. None when it is not set, or when two running engines say different things."""
    if not pids:
        value = _daemon_json([]).get("storage-driver")
        return str(value) if value else None
    found: set[str | None] = set()
    for pid in pids:
        args = _cmdline(pid, proc) or []
        value = _flag(args, ("-s", "--storage-driver")) or _daemon_json(args).get(
            "storage-driver")
        found.add(str(value) if value else None)
    return found.pop() if len(found) == 1 else None


# --- looking ----------------------------------------------------------------------------------


def _signature(path: str) -> tuple[int, ...]:
    """What changes when a layer dir is written to at its top: the dir, diff/ and link."""
    out: list[int] = []
    for p in (path, os.path.join(path, "diff"), os.path.join(path, "link")):
        try:
            st = os.lstat(p)
            out += [st.st_mtime_ns, st.st_ctime_ns, st.st_nlink, st.st_size]
        except OSError:
            out += [-1, -1, -1, -1]
    return tuple(out)


def _newest(path: str) -> float:
    newest = 0.0
    for p in (path, os.path.join(path, "diff"), os.path.join(path, "link")):
        try:
            st = os.lstat(p)
            newest = max(newest, st.st_mtime, st.st_ctime)
        except OSError:
            pass
    return newest


@dataclass
class _Look:
    graph: Graph
    findings: list[Finding]
    signatures: dict[str, tuple[int, ...]]
    blockers: list[str]


def _look(root: str, driver: str, *, engine_running: bool, min_age: float, now: float,
          read_mounts: Callable[[], list[mountsmod.Mount]]) -> _Look:
    mounts = read_mounts()
    findings: list[Finding] = []
    signatures: dict[str, tuple[int, ...]] = {}
    blockers: list[str] = []
    aufs_layers: dict[str, tuple[str, ...]] = {}
    if driver == aufsmod.DRIVER:
        g, aufs_layers = aufsmod.build(root, mounts)
    else:
        g = graphmod.build(root, mounts)

    write_sets = [os.path.join(g.image_dir, "layerdb", "tmp", w) for w in g.write_sets]
    newest_write_set = max((_newest(w) for w in write_sets), default=0.0)
    for w in write_sets:
        findings.append(Finding(os.path.relpath(w, root), "in-flight",
                                ["a layer registration (pull, load, build) in progress or "
                                 "interrupted"]))
    if write_sets and engine_running:
        blockers.append("layer registration in progress (layerdb/tmp/write-set-*)")
    for point in g.unresolved_mounts:
        blockers.append(f"an aufs mount at {point} does not say which layers it holds")

    if driver == aufsmod.DRIVER:
        layer_findings, layer_signatures = aufsmod.classify(
            g, aufs_layers, engine_running=engine_running, min_age=min_age, now=now,
            newest_write_set=newest_write_set)
    else:
        layer_findings, layer_signatures = _overlay2_layers(
            g, engine_running=engine_running, min_age=min_age, now=now,
            newest_write_set=newest_write_set)
    findings.extend(layer_findings)
    signatures.update(layer_signatures)

    findings.extend(_stale_metadata(g))
    records, vfs_refs = legacymod.read(g)
    vol_findings, vol_blockers = _volumes(g, skip=legacymod.legacy_names(records))
    findings.extend(vol_findings)
    blockers.extend(vol_blockers)
    legacy_findings, legacy_signatures = legacymod.classify(
        g, records, vfs_refs, engine_running=engine_running, min_age=min_age, now=now)
    findings.extend(legacy_findings)
    signatures.update(legacy_signatures)
    for path, why in g.odd_metadata:
        findings.append(Finding(path, "unknown", [why]))
    if engine_running:
        busy = _build_running(os.path.join(root, "buildkit", "executor"), g.mount_points,
                              now=now, min_age=min_age)
        if busy:
            blockers.append(f"a BuildKit build is running ({busy})")
    return _Look(g, findings, signatures, blockers)


def _overlay2_layers(g: Graph, *, engine_running: bool, min_age: float, now: float,
                     newest_write_set: float
                     ) -> tuple[list[Finding], dict[str, tuple[int, ...]]]:
    root = g.root
    findings: list[Finding] = []
    signatures: dict[str, tuple[int, ...]] = {}
    layers = g.layers_dir
    names = [n for n in list_dir(layers, "layer dirs") if n != "l"]
    # No reference at all to any dir here: the metadata is empty, unreadable in a way we did
    # not catch, or belongs to another layout. Calling every dir an orphan would fail open.
    if names and not any(n in g.layer_refs for n in names):
        raise FsckRefused(f"{len(names)} layer dirs in {layers} and not one reference to any of "
                          "them: an empty reference set proves nothing")

    for name in names:
        path = os.path.join(layers, name)
        rel = os.path.relpath(path, root)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue  # removed since the listing (Docker deleting a layer): nothing to judge
        if not stat.S_ISDIR(st.st_mode):
            findings.append(not_a_directory(rel, st.st_mode))
            continue
        if name in g.layer_refs:
            continue
        if name.endswith("-removing"):
            findings.append(Finding(rel, "pending-removal", ["Docker's own removal in progress"]))
            continue
        signatures[rel] = _signature(path)
        link_text = read_small(os.path.join(path, "link"), rel, missing_ok=True)
        link = (link_text or "").strip()
        evidence = ["no layer, container, image, BuildKit record or lower file names it",
                    "not mounted in any mount namespace"]
        if link_text is None:
            findings.append(Finding(rel, "in-flight", [*evidence, "no link file: a create "
                                    "interrupted or in progress, not proof alone"]))
            continue
        why = still_in_flight(_newest(path), now=now, engine_running=engine_running,
                              newest_write_set=newest_write_set, min_age=min_age)
        if why:
            findings.append(Finding(rel, "in-flight", [*evidence, why]))
            continue
        safe_link = bool(link) and link not in (".", "..") and "/" not in link \
            and g.links.get(link) == name
        if not safe_link:
            evidence.append("empty or unusable link file: l/ is left alone")
        findings.append(Finding(rel, "orphan-layer", evidence, action="quarantine",
                                link=link if safe_link else None))
    return findings, signatures


def _build_running(executor: str, mount_points: set[str], *, now: float,
                   min_age: float) -> str | None:
    """Why buildkit/executor says a RUN step may be under way, or None. Its files (resolv.conf,
    hosts.*, runc-log.json) stay after every build, and a build killed mid-RUN leaves its <id>/
    dir behind: neither means a build runs. A RUN under way has its rootfs mounted below an
    <id>/ dir, which is created just before: a mount there, or an <id>/ dir younger than the
    age threshold, does."""
    mounted = sorted(mp for mp in mount_points if mp.startswith(executor + "/"))
    if mounted:
        return f"{mounted[0]} is mounted"
    for name in list_dir(executor, "BuildKit executor"):
        path = os.path.join(executor, name)
        if is_real_dir(path) and now - _newest(path) < min_age:
            return f"buildkit/executor/{name} changed {int(now - _newest(path))}s ago"
    return None


def _stale_metadata(g: Graph) -> list[Finding]:
    out: list[Finding] = []
    base = os.path.relpath(os.path.join(g.image_dir, "layerdb"), g.root)
    for cid, mount in sorted(g.mounts.items()):
        if cid not in g.containers:
            kept = [g.layer_rel(mount.mount_id)] + (
                [g.layer_rel(mount.init_id)] if mount.init_id else [])
            out.append(Finding(f"{base}/mounts/{cid}", "stale-metadata", [
                f"no containers/{cid[:12]}: the container is gone",
                f"keeps {', '.join(kept)} alive"]))
    for chain, entry in sorted(g.chains.items()):
        if chain not in g.live_chains:
            out.append(Finding(f"{base}/sha256/{entry.name}", "stale-metadata", [
                "no complete image, live container or BuildKit record uses this chain",
                f"keeps {g.layer_rel(entry.cache_id)} alive"]))
    for image in sorted(g.images.values(), key=lambda i: i.image):
        if not image.complete:
            rel = os.path.relpath(os.path.join(g.image_dir, "imagedb", "content", "sha256",
                                               image.image), g.root)
            out.append(Finding(rel, "stale-metadata", [
                f"rootfs chain incomplete: layerdb/sha256/{image.missing[0][:12]} is missing"
                + (" (the image is tagged)" if image.image in g.tagged else "")]))
    layerdb = os.path.join(g.image_dir, "layerdb", "sha256")
    for name in list_dir(layerdb, "layer store"):
        if name.endswith("-removing"):
            out.append(Finding(os.path.relpath(os.path.join(layerdb, name), g.root),
                               "pending-removal", ["Docker's own removal in progress"]))
    return out


def _volumes(g: Graph, skip: Collection[str] = ()) -> tuple[list[Finding], list[str]]:
    findings: list[Finding] = []
    blockers: list[str] = []
    base = os.path.join(g.root, "volumes")
    names = [n for n in list_dir(base, "volumes") if n not in _VOLUME_FILES and n not in skip]
    if not names:
        return findings, blockers
    try:
        volumes_dev = os.lstat(base).st_dev
    except OSError as exc:
        raise Unreadable(f"cannot look at {base}: {exc.strerror}") from exc
    for name in names:
        path = os.path.join(base, name)
        rel = os.path.relpath(path, g.root)
        if not is_real_dir(path):
            findings.append(Finding(rel, "unknown", ["not a directory; never followed"]))
            continue
        data = os.path.join(path, "_data")
        try:
            data_dev = os.lstat(data).st_dev
        except FileNotFoundError:
            data_dev = volumes_dev
        if data_dev != volumes_dev or data in g.mount_points:
            findings.append(Finding(rel, "unknown", [
                "_data is a mount point (NFS, CIFS, tmpfs?): not sized, never touched"]))
            blockers.append(f"volumes/{name}/_data is a mount point")
            continue
        if g.volume_store is not None and name in g.volume_store:
            continue
        if name in g.volume_refs:
            continue
        if name in g.mounted_volumes:
            continue
        if g.volume_store is None:
            findings.append(Finding(rel, "unknown", [
                "there is no volumes/metadata.db to check it against"]))
            continue
        findings.append(Finding(rel, "orphan-volume", [
            "not in the volume store (volumes/metadata.db)",
            "no container's mount points name it", "not mounted in any mount namespace"],
            action="quarantine"))
    return findings, blockers


# --- the scan -------------------------------------------------------------------------------


def scan(
    data_root: str,
    *,
    engine_running: bool | None = None,
    two_looks: bool = False,
    min_age: float = DEFAULT_MIN_AGE,
    look_gap: float = DEFAULT_LOOK_GAP,
    size: bool = True,
    read_mounts: Callable[[], list[mountsmod.Mount]] | None = None,
    progress: Callable[[int], None] | None = None,
    engine_versions: Callable[[list[int]], list[versionmod.EngineVersion]] | None = None,
) -> Scan:
    """Look at the data root (twice, `look_gap` seconds apart, when `two_looks` and the engine
    runs) and classify. Raises FsckRefused when nothing can be proven at all, the engine's
    version included; an engine version whose layout is not verified leaves a report only.
    `engine_versions` maps the dockerd pids on this root to their versions (version.detect)."""
    root = canonical_root(data_root)
    pids = engine_pids(root)
    driver = check_layout(root, configured_driver(pids))
    if read_mounts is None:
        read_mounts = mountsmod.all_namespaces
    versions = (engine_versions or versionmod.detect)(pids)
    version_blockers = versionmod.blockers(versions, driver)
    running = bool(pids) if engine_running is None else engine_running
    first = _look(root, driver, engine_running=running, min_age=min_age, now=time.time(),
                  read_mounts=read_mounts)
    findings = first.findings
    blockers = version_blockers + list(first.blockers)
    looks = 1
    if two_looks and running:
        time.sleep(look_gap)
        second = _look(root, driver, engine_running=running, min_age=min_age, now=time.time(),
                       read_mounts=read_mounts)
        looks = 2
        findings = _agree(first, second)
        blockers = sorted(set(blockers) | set(second.blockers))
    if size:
        findings = _sized(root, findings, progress)
    if blockers:
        findings = [replace(f, action="none") if f.actionable else f for f in findings]
    findings.extend(_other_drivers(root, driver))
    order = {c: i for i, c in enumerate(CLASSES)}
    findings.sort(key=lambda f: (order[f.cls], f.path))
    return Scan(root, driver, findings, running, blockers, looks, versions)


def _other_drivers(root: str, driver: str) -> list[Finding]:
    """What an earlier storage driver left (the engine is configured for another): reported,
    neither sized nor examined."""
    out: list[Finding] = []
    for other in list_dir(os.path.join(root, "image"), "image dir"):
        if other == driver:
            continue
        why = (f"storage driver {other}: the engine is configured for {driver}; left from "
               "before a change of driver, not examined")
        out.append(Finding(f"image/{other}", "unknown", [why]))
        if os.path.lexists(os.path.join(root, other)):
            out.append(Finding(other, "unknown", [why]))
    return out


def _agree(first: _Look, second: _Look) -> list[Finding]:
    """Only what both looks call orphaned, unchanged in between, stays actionable."""
    before = {f.path: f for f in first.findings}
    out: list[Finding] = []
    for f in second.findings:
        if not f.actionable:
            out.append(f)
            continue
        earlier = before.get(f.path)
        # Every layer dir (and pre-1.7 volume dir) has a signature; a modern volume has none and
        # needs only to stay an orphan.
        same = earlier is not None and earlier.cls == f.cls and (
            (f.path not in first.signatures and f.path not in second.signatures)
            or first.signatures.get(f.path) == second.signatures.get(f.path))
        if same:
            out.append(replace(f, evidence=[*f.evidence, "orphaned and unchanged in two looks"]))
        else:
            out.append(replace(f, cls="in-flight", action="none",
                               evidence=[*f.evidence, "changed between two looks"]))
    return out


def _sized(root: str, findings: list[Finding], progress: Callable[[int], None] | None
           ) -> list[Finding]:
    sized_classes = {"orphan-layer", "orphan-volume", "in-flight", "pending-removal",
                     "stale-metadata"}
    todo = [i for i, f in enumerate(findings) if f.cls in sized_classes]
    sizes = size_paths([os.path.join(root, findings[i].path) for i in todo], progress=progress)
    out = list(findings)
    for i, s in zip(todo, sizes, strict=True):
        out[i] = replace(out[i], bytes=s.allocated, apparent_bytes=s.apparent)
    return out
