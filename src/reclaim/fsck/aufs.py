"""The aufs layout: its reference graph and its findings (STORAGE.md, "aufs / pre-1.7 volumes").

    image/aufs/{imagedb,layerdb,repositories.json}   as for overlay2; cache-id, mount-id and
                                                     init-id name aufs layer ids
    aufs/diff/<id>/      the layer's files
    aufs/layers/<id>     a text file: its ancestors' ids, one a line, nearest first (empty for a
                         base layer); the driver's own "this layer exists"
    aufs/mnt/<id>/       where the layer is mounted (with its ancestors as branches) while in use
    */<id>-removing      the driver's delete in progress; it deletes them at start-up

The driver creates mnt/<id> and diff/<id> first and writes layers/<id> last; it removes
layers/<id> first, then renames diff/<id> and mnt/<id> to `-removing`. So a diff dir without its
layers file is a create or a removal cut short, and a layers file without its diff dir is damage:
neither is ever proof of a leak.

An orphan is quarantined as three findings, diff/<id>, layers/<id> and mnt/<id>, each with the
action `quarantine`: the quarantine moves every actionable finding of a scan in one batch, so the
three go (and come back) together, and restore puts back exactly the paths that moved.
"""

from __future__ import annotations

import os
import stat

from reclaim.fsck.errors import FsckRefused, Unreadable
from reclaim.fsck.finding import Finding, not_a_directory, still_in_flight
from reclaim.fsck.graph import (
    Graph,
    finish,
    is_real_dir,
    keep_stacked,
    list_dir,
    plain,
    read_common,
    read_small,
)
from reclaim.fsck.mounts import Mount

DRIVER = "aufs"
_REMOVING = "-removing"


def _dirs(root: str) -> tuple[str, str, str]:
    base = os.path.join(root, DRIVER)
    return (os.path.join(base, "diff"), os.path.join(base, "layers"), os.path.join(base, "mnt"))


def read_layers(root: str) -> dict[str, tuple[str, ...]]:
    """aufs/layers/<id> -> its ancestors. Every file is read: an ancestor list that cannot be
    read, a symlink, or a line that is not a plain name refuses the run (it could be the only
    thing keeping a parent)."""
    _, layers_dir, _ = _dirs(root)
    out: dict[str, tuple[str, ...]] = {}
    for name in list_dir(layers_dir, "aufs layers"):
        path = os.path.join(layers_dir, name)
        what = f"aufs/layers/{name[:24]}"
        plain(name, "aufs layers entry")
        text = read_small(path, what) or ""
        ancestors = tuple(plain(line.strip(), f"{what} ancestor")
                          for line in text.splitlines() if line.strip())
        out[name] = ancestors
    return out


def apply_mounts(g: Graph, mounts: list[Mount]) -> None:
    """Keep every layer a mount names (as a branch, or by its mount point aufs/mnt/<id>, under
    any prefix). An aufs mount that names no layer at all (its branches hidden and sysfs not
    readable) could hold any of them: it is recorded as unresolved, which blocks acting."""
    for mount in mounts:
        named = False
        for path in mount.paths():
            parts = path.split("/")
            for i in range(len(parts) - 2):
                if parts[i] == DRIVER and parts[i + 1] in ("diff", "mnt") and parts[i + 2]:
                    name = parts[i + 2]
                    g.keep(name, f"mounted at {mount.mount_point}" if parts[i + 1] == "mnt"
                           else f"a branch of the aufs mount at {mount.mount_point}")
                    named = True
        if mount.fstype == DRIVER and not named and not mount.branches:
            g.unresolved_mounts.append(mount.mount_point)


def keep_ancestors(g: Graph, layers: dict[str, tuple[str, ...]]) -> None:
    """aufs: a layer's layers file names its ancestors."""
    keep_stacked(g, lambda name: layers.get(name, ()),
                 lambda name: f"ancestor of aufs/diff/{name[:12]}")


def build(root: str, mounts: list[Mount]) -> tuple[Graph, dict[str, tuple[str, ...]]]:
    """The graph of the aufs data root at `root` (a canonical path), and its layers files."""
    g = read_common(root, DRIVER, mounts)
    layers = read_layers(root)
    apply_mounts(g, mounts)
    keep_ancestors(g, layers)
    return finish(g), layers


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Unreadable(f"cannot look at {path}: {exc.strerror}") from exc


def signature(root: str, name: str) -> tuple[int, ...]:
    """What changes when the layer is written to or re-registered: its diff dir, layers file and
    mnt dir."""
    out: list[int] = []
    for base in _dirs(root):
        st = _lstat(os.path.join(base, name))
        out += [st.st_mtime_ns, st.st_ctime_ns, st.st_nlink, st.st_size] if st else [-1] * 4
    return tuple(out)


def newest(root: str, name: str) -> float:
    times = [0.0]
    for base in _dirs(root):
        st = _lstat(os.path.join(base, name))
        if st:
            times += [st.st_mtime, st.st_ctime]
    return max(times)


def classify(g: Graph, layers: dict[str, tuple[str, ...]], *, engine_running: bool,
             min_age: float, now: float, newest_write_set: float
             ) -> tuple[list[Finding], dict[str, tuple[int, ...]]]:
    """The findings under aufs/, and the signature of each actionable path (for the second
    look)."""
    root = g.root
    diff_dir, _, mnt_dir = _dirs(root)
    findings: list[Finding] = []
    signatures: dict[str, tuple[int, ...]] = {}
    diffs = list_dir(diff_dir, "aufs diff")
    mnts = list_dir(mnt_dir, "aufs mnt")
    candidates = [n for n in diffs if not n.endswith(_REMOVING)]
    # Not one reference to any layer here: the metadata is empty or belongs elsewhere; calling
    # every dir an orphan would fail open.
    if candidates and not any(n in g.layer_refs for n in candidates):
        raise FsckRefused(f"{len(candidates)} layer dirs in {diff_dir} and not one reference to "
                          "any of them: an empty reference set proves nothing")
    # Nothing is in flight once the engine is stopped: a half-made layer is then left over, but
    # still not proof, so it is reported as unknown rather than in-flight.
    half = "in-flight" if engine_running else "unknown"

    for name in diffs:
        rel = f"{DRIVER}/diff/{name}"
        st = _lstat(os.path.join(diff_dir, name))
        if st is None:
            continue  # removed since the listing: nothing left to judge
        if not stat.S_ISDIR(st.st_mode):
            findings.append(not_a_directory(rel, st.st_mode))
            continue
        if name.endswith(_REMOVING):
            findings.append(Finding(rel, "pending-removal", ["Docker's own removal in progress"]))
            continue
        if name in g.layer_refs:
            continue
        evidence = ["no layer, container, image, BuildKit record or ancestor list names it",
                    "not mounted in any mount namespace"]
        if name not in layers:
            findings.append(Finding(rel, half, [*evidence, "no aufs/layers file: a create or "
                                    "removal cut short or in progress, not proof alone"]))
            continue
        mnt = os.path.join(mnt_dir, name)
        mnt_st = _lstat(mnt)
        if mnt_st is not None and not stat.S_ISDIR(mnt_st.st_mode):
            findings.append(Finding(rel, "unknown", [
                *evidence, f"aufs/mnt/{name} is not a directory (never followed): the layer "
                "could not be moved whole"]))
            continue
        if mnt in g.mount_points:
            findings.append(Finding(rel, "unknown", [*evidence[:1], f"aufs/mnt/{name} is a "
                                    "mount point"]))
            continue
        why = still_in_flight(newest(root, name), now=now, engine_running=engine_running,
                              newest_write_set=newest_write_set, min_age=min_age)
        if why:
            findings.append(Finding(rel, "in-flight", [*evidence, why]))
            continue
        sig = signature(root, name)
        findings.append(Finding(rel, "orphan-layer", evidence, action="quarantine"))
        moved_with = f"moved with aufs/diff/{name[:12]}, the orphan it belongs to"
        findings.append(Finding(f"{DRIVER}/layers/{name}", "orphan-layer",
                                ["the ancestor list of an orphan layer", moved_with],
                                action="quarantine"))
        paths = [rel, f"{DRIVER}/layers/{name}"]
        if mnt_st is not None:
            findings.append(Finding(f"{DRIVER}/mnt/{name}", "orphan-layer",
                                    ["the unmounted mount dir of an orphan layer", moved_with],
                                    action="quarantine"))
            paths.append(f"{DRIVER}/mnt/{name}")
        for p in paths:
            signatures[p] = sig

    diff_names = set(diffs)
    for name in sorted(layers):
        if name not in diff_names:
            why = g.layer_refs.get(name)
            findings.append(Finding(f"{DRIVER}/layers/{name}", "unknown", [
                "an ancestor list with no aufs/diff dir: damage, not a leak"
                + (f" (and still named: {why})" if why else "")]))
    for name in mnts:
        rel = f"{DRIVER}/mnt/{name}"
        if name.endswith(_REMOVING):
            findings.append(Finding(rel, "pending-removal", ["Docker's own removal in progress"]))
        elif name not in diff_names and name not in layers:
            if not is_real_dir(os.path.join(mnt_dir, name)):
                findings.append(Finding(rel, "unknown", ["not a directory; never followed"]))
            else:
                findings.append(Finding(rel, "unknown", [
                    "a mount dir with no aufs/diff dir or ancestor list"]))
    return findings, signatures
