"""Live mounts from every mount namespace on the host.

A layer can be held by a mount that only another namespace sees (cAdvisor, a container that
bind-mounts the data root, moby #37077), so /proc/self/mountinfo is not enough: every process's
mountinfo is read, once per mount namespace (deduplicated by the inode of /proc/<pid>/ns/mnt).

aufs mounts name their branches (the layer dirs they stack) either in their options
(`br:/a=rw:/b=ro+wh`, when the aufs module shows them) or only in sysfs
(`/sys/fs/aufs/si_<si>/br<N>`, the `si=` option naming the directory); both are read.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, replace

from reclaim.fsck.errors import Unreadable

# A process that exits between the listing and the read is not a failure.
_GONE = (errno.ENOENT, errno.ESRCH, errno.EINVAL)


@dataclass(frozen=True)
class Mount:
    mount_point: str
    root: str  # the path inside the source filesystem that is mounted
    fstype: str
    source: str
    options: dict[str, str]  # super options: lowerdir, upperdir, workdir, ...
    # aufs: the branch dirs it stacks, from `br:` or sysfs; empty when neither could be read
    branches: tuple[str, ...] = ()

    def paths(self) -> list[str]:
        """Every path this mount names: where it is, what of its filesystem it shows, for
        overlay the layers it stacks (relative `l/<short>` entries are kept as written), for
        aufs its branches."""
        out = [self.mount_point, self.root, *self.branches]
        for key in ("upperdir", "workdir"):
            if key in self.options:
                out.append(self.options[key])
        if "lowerdir" in self.options:
            # lowerdir is ':'-separated; "::" stands for the data-only layers of newer kernels.
            out.extend(p for p in self.options["lowerdir"].split(":") if p)
        return out


def unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out: list[str] = []
    i = 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _branch_paths(spec: str) -> tuple[str, ...]:
    """`/a=rw:/b=ro+wh` -> ("/a", "/b"): each branch loses its `=permission` suffix."""
    out: list[str] = []
    for item in spec.split(":"):
        path = item.rsplit("=", 1)[0] if "=" in item else item
        if path:
            out.append(unescape(path))
    return tuple(out)


def _aufs_branches(raw_options: str) -> tuple[str, ...]:
    # The option list is split on ',' only: a branch spec holds '=' and ':' of its own.
    for opt in raw_options.split(","):
        for prefix in ("br:", "br=", "dirs="):
            if opt.startswith(prefix):
                return _branch_paths(opt[len(prefix):])
    return ()


def parse_mountinfo(text: str) -> list[Mount]:
    mounts: list[Mount] = []
    for line in text.splitlines():
        before, sep, after = line.partition(" - ")
        fields = before.split()
        tail = after.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        options: dict[str, str] = {}
        raw = tail[2] if len(tail) >= 3 else ""
        for opt in raw.split(",") if raw else []:
            key, _, value = opt.partition("=")
            options[key] = unescape(value)
        mounts.append(
            Mount(
                mount_point=unescape(fields[4]),
                root=unescape(fields[3]),
                fstype=tail[0],
                source=unescape(tail[1]),
                options=options,
                branches=_aufs_branches(raw) if tail[0] == "aufs" else (),
            )
        )
    return mounts


def sysfs_branches(si: str, sys_aufs: str = "/sys/fs/aufs") -> tuple[str, ...]:
    """The branches of the aufs mount `si=<si>` from sysfs (br0, br1, ... each `path=perm`);
    empty when they cannot be read (the caller then treats the mount as unresolved)."""
    base = os.path.join(sys_aufs, f"si_{si}")
    try:
        names = os.listdir(base)
    except OSError:
        return ()
    numbered = sorted((int(n[2:]), n) for n in names if n.startswith("br") and n[2:].isdigit())
    out: list[str] = []
    for _, name in numbered:
        try:
            with open(os.path.join(base, name), encoding="utf-8",
                      errors="surrogateescape") as f:
                text = f.read().strip()
        except OSError:
            return ()
        out.extend(_branch_paths(text))
    return tuple(out)


def with_aufs_branches(mounts: list[Mount], sys_aufs: str = "/sys/fs/aufs") -> list[Mount]:
    """aufs mounts that hide their branches in /proc get them from sysfs, where readable."""
    out: list[Mount] = []
    for m in mounts:
        if m.fstype == "aufs" and not m.branches and m.options.get("si"):
            m = replace(m, branches=sysfs_branches(m.options["si"], sys_aufs))
        out.append(m)
    return out


def all_namespaces(proc: str = "/proc") -> list[Mount]:
    """The mounts of every mount namespace. A namespace whose mountinfo cannot be read for any
    reason but the process having exited raises Unreadable: a mount we cannot see could be
    holding a layer, so nothing could be proven."""
    seen: set[tuple[int, int]] = set()
    mounts: list[Mount] = []
    pids = [p for p in os.listdir(proc) if p.isdigit()]
    for pid in ["self", *pids]:
        try:
            st = os.stat(f"{proc}/{pid}/ns/mnt")
            key: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError as exc:
            if exc.errno in _GONE:
                continue
            # Some hosts deny the namespace link even to root (an init in another user
            # namespace); its mountinfo can still be read, just without deduplication.
            key = None
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        try:
            with open(f"{proc}/{pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as exc:
            if exc.errno in _GONE:
                continue
            raise Unreadable(f"cannot read the mounts of process {pid}: {exc.strerror}") from exc
        mounts.extend(parse_mountinfo(text))
    return with_aufs_branches(mounts)
