"""The reference graph of a Docker overlay2 data root (STORAGE.md, "Proving an overlay2 dir
orphaned"). `read_common` and `finish` are shared with the aufs layout (aufs.py), whose metadata
under image/aufs is the same.

Two questions are answered separately:
  * which `overlay2/<id>` directories anything at all still names (any metadata, live or stale,
    BuildKit's databases, a `lower` file of a kept layer, a mount in any namespace): a layer dir
    is an orphan only if the answer is "nothing";
  * which metadata is live (reachable from a container, a complete image or BuildKit): the rest
    is stale metadata, reported but never acted on (removing it needs the daemon stopped and
    children-first order; Docker itself never collects it).

Everything is read with plain opens of regular files (O_NOFOLLOW) and listings of real
directories: a symlink where a directory should be refuses the run instead of being followed out
of the data root, and so does a name in the metadata that is not a plain name.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from reclaim.fsck.errors import FsckRefused, Unreadable, UnsafeName
from reclaim.fsck.mounts import Mount
from reclaim.ondisk import bbolt
from reclaim.ondisk.digests import chain_ids, digest_hex, is_hex64

DRIVER = "overlay2"
# Ids as they appear inside BuildKit's databases: 64-hex digests and BuildKit's 25-char keys.
_BUILDKIT_TOKEN = re.compile(rb"(?<![0-9a-z])(?:[0-9a-f]{64}|[0-9a-z]{25})(?![0-9a-z])")
_REMOVING = "-removing"


def plain(name: str, what: str) -> str:
    """`name` if it is a single plain path component; refuses anything that could leave the
    directory it is joined to."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise UnsafeName(f"{what}: {name!r} is not a plain name; refusing to act on this data root")
    return name


def read_small(path: str, what: str, *, missing_ok: bool = False) -> str | None:
    """A small regular file's text, never through a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENOENT and missing_ok:
            return None
        if exc.errno == errno.ELOOP:
            raise UnsafeName(f"{what}: {path} is a symlink; refusing to follow it") from exc
        raise Unreadable(f"{what}: cannot read {path}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Unreadable(f"{what}: {path} is not a regular file")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="surrogateescape")
    except OSError as exc:
        raise Unreadable(f"{what}: cannot read {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise Unreadable(f"cannot look at {path}: {exc.strerror}") from exc


def list_dir(path: str, what: str, *, missing_ok: bool = True) -> list[str]:
    """The names in a real directory (a symlink in its place is refused, not followed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if missing_ok:
            return []
        raise Unreadable(f"{what}: {path} does not exist") from None
    except OSError as exc:
        raise Unreadable(f"{what}: cannot look at {path}: {exc.strerror}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeName(f"{what}: {path} is a symlink; refusing to follow it out of the data root")
    if not stat.S_ISDIR(st.st_mode):
        raise Unreadable(f"{what}: {path} is not a directory")
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        raise Unreadable(f"{what}: cannot list {path}: {exc.strerror}") from exc


@dataclass(frozen=True)
class ChainEntry:
    chain: str  # 64 hex, without "-removing"
    name: str  # the directory name under layerdb/sha256
    cache_id: str
    parent: str | None  # 64 hex
    removing: bool


@dataclass(frozen=True)
class MountEntry:
    container: str
    mount_id: str
    init_id: str | None
    parent: str | None  # 64 hex chain of the image top


@dataclass(frozen=True)
class ImageEntry:
    image: str  # 64 hex
    chains: tuple[str, ...]
    missing: tuple[str, ...]  # chains of its rootfs absent from layerdb

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass
class Graph:
    root: str
    driver: str
    # overlay2/<name> -> why it is kept (the first reason found)
    layer_refs: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # l/<short> -> overlay2 dir name
    containers: set[str] = field(default_factory=set)
    chains: dict[str, ChainEntry] = field(default_factory=dict)
    mounts: dict[str, MountEntry] = field(default_factory=dict)
    images: dict[str, ImageEntry] = field(default_factory=dict)
    tagged: set[str] = field(default_factory=set)
    live_chains: dict[str, str] = field(default_factory=dict)  # chain -> why it is live
    buildkit_tokens: set[str] = field(default_factory=set)
    volume_store: set[str] | None = None  # None: there is no volumes/metadata.db
    volume_refs: dict[str, str] = field(default_factory=dict)
    mounted_volumes: set[str] = field(default_factory=set)
    mounted_vfs: set[str] = field(default_factory=set)  # vfs/dir/<id> named by a mount
    mount_points: set[str] = field(default_factory=set)
    # mounts that may hold layers but do not say which (an aufs mount whose branches are hidden)
    unresolved_mounts: list[str] = field(default_factory=list)
    write_sets: list[str] = field(default_factory=list)
    odd_metadata: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    def keep(self, name: str, why: str) -> None:
        self.layer_refs.setdefault(name, why)

    @property
    def image_dir(self) -> str:
        return os.path.join(self.root, "image", self.driver)

    @property
    def layers_dir(self) -> str:
        """Where the layer dirs are: overlay2/<id>, aufs/diff/<id>."""
        if self.driver == "aufs":
            return os.path.join(self.root, "aufs", "diff")
        return os.path.join(self.root, self.driver)

    def layer_rel(self, name: str) -> str:
        """A layer dir's path relative to the data root."""
        return os.path.relpath(os.path.join(self.layers_dir, name), self.root)


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise Unreadable(f"{what}: not valid JSON ({exc})") from exc


def _hex_of(digest: str, what: str) -> str:
    hexpart = digest_hex(digest.strip())
    if hexpart is None:
        raise UnsafeName(f"{what}: {digest.strip()!r} is not a sha256 digest")
    return hexpart


def _read_layerdb(g: Graph) -> None:
    base = os.path.join(g.image_dir, "layerdb", "sha256")
    for name in list_dir(base, "layer store"):
        path = os.path.join(base, name)
        chain = name[: -len(_REMOVING)] if name.endswith(_REMOVING) else name
        if not is_hex64(chain) or not is_real_dir(path):
            g.odd_metadata.append((os.path.relpath(path, g.root), "not a layer store entry"))
            continue
        what = f"layer {name}"
        cache_id = read_small(os.path.join(path, "cache-id"), what) or ""
        parent_text = read_small(os.path.join(path, "parent"), what, missing_ok=True)
        parent = _hex_of(parent_text, what) if parent_text and parent_text.strip() else None
        entry = ChainEntry(chain, name, plain(cache_id.strip(), what + " cache-id"), parent,
                           name.endswith(_REMOVING))
        # A pending removal is Docker's own delete in progress: its dir is left to Docker.
        if entry.removing:
            g.keep(entry.cache_id, f"cache-id of layerdb/sha256/{name} (Docker's pending removal)")
        else:
            g.chains[chain] = entry
            g.keep(entry.cache_id, f"cache-id of layer sha256:{chain[:12]}")
    tmp = os.path.join(g.image_dir, "layerdb", "tmp")
    g.write_sets = [n for n in list_dir(tmp, "layer store tmp") if n.startswith("write-set-")]


def _read_mounts(g: Graph) -> None:
    base = os.path.join(g.image_dir, "layerdb", "mounts")
    for name in list_dir(base, "container layer store"):
        path = os.path.join(base, name)
        if not is_hex64(name) or not is_real_dir(path):
            g.odd_metadata.append((os.path.relpath(path, g.root), "not a container layer entry"))
            continue
        what = f"layerdb/mounts/{name[:12]}"
        mount_id = plain((read_small(os.path.join(path, "mount-id"), what) or "").strip(),
                         what + " mount-id")
        init_text = read_small(os.path.join(path, "init-id"), what, missing_ok=True)
        init_id = plain(init_text.strip(), what + " init-id") if init_text else None
        parent_text = read_small(os.path.join(path, "parent"), what, missing_ok=True)
        parent = _hex_of(parent_text, what) if parent_text and parent_text.strip() else None
        g.mounts[name] = MountEntry(name, mount_id, init_id, parent)
        g.keep(mount_id, f"read-write layer of container {name[:12]}")
        if init_id:
            g.keep(init_id, f"init layer of container {name[:12]}")


def _read_containers(g: Graph) -> None:
    base = os.path.join(g.root, "containers")
    for name in list_dir(base, "containers"):
        path = os.path.join(base, name)
        if not is_real_dir(path):
            g.odd_metadata.append((os.path.relpath(path, g.root), "not a container directory"))
            continue
        plain(name, "container")
        g.containers.add(name)
        what = f"container {name[:12]}"
        text = read_small(os.path.join(path, "config.v2.json"), what, missing_ok=True)
        if text is None:
            # pre-1.7 layout (config.json with Volumes{dest: hostPath}), else a container
            # being created right now: either way its volume references are unknown.
            text = read_small(os.path.join(path, "config.json"), what, missing_ok=True)
            if text is None:
                raise Unreadable(f"{what}: no config.v2.json; its volume references are unknown")
        config = _json(text, what)
        if not isinstance(config, dict):
            raise Unreadable(f"{what}: config is not a JSON object")
        refs: list[str] = []
        for point in (config.get("MountPoints") or {}).values():
            if isinstance(point, dict):
                refs.extend(str(point.get(k) or "") for k in ("Name", "Source"))
        refs.extend(_legacy_volumes(config, what))
        legacy = os.path.join(path, "config.json")
        if os.path.lexists(legacy) and os.path.lexists(os.path.join(path, "config.v2.json")):
            # A container carried over from before 1.10 may keep its old config.json beside
            # config.v2.json; volumes it names there still count (Docker reads them when
            # MountPoints is empty).
            old = _json(read_small(legacy, what) or "", f"{what} config.json")
            if not isinstance(old, dict):
                raise Unreadable(f"{what}: config.json is not a JSON object")
            refs.extend(_legacy_volumes(old, what))
        for value in refs:
            if not value:
                continue
            g.volume_refs.setdefault(value, f"mount point of container {name[:12]}")
            # A volume's Source is <root>/volumes/<name>/_data: the name is its parent dir.
            if value.rstrip("/").endswith("/_data"):
                parent = os.path.basename(os.path.dirname(value.rstrip("/")))
                g.volume_refs.setdefault(parent, f"mount point of container {name[:12]}")
            else:
                g.volume_refs.setdefault(os.path.basename(value.rstrip("/")),
                                         f"mount point of container {name[:12]}")


def _legacy_volumes(config: dict[str, Any], what: str) -> list[str]:
    """A pre-1.7 container config's host paths, `Volumes {destination: host path}` (with
    `VolumesRW {destination: bool}`). Anything of another shape refuses the run: a reference that
    cannot be read might be the one keeping a volume."""
    volumes = config.get("Volumes")
    rw = config.get("VolumesRW")
    if volumes is None:
        volumes = {}
    if not isinstance(volumes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in volumes.items()):
        raise Unreadable(f"{what}: Volumes is not a map of destination to host path")
    if rw is not None and (not isinstance(rw, dict) or not all(
            isinstance(v, bool) for v in rw.values())):
        raise Unreadable(f"{what}: VolumesRW is not a map of destination to true/false")
    return list(volumes.values())


def _read_images(g: Graph) -> None:
    content = os.path.join(g.image_dir, "imagedb", "content", "sha256")
    for name in list_dir(content, "image store"):
        path = os.path.join(content, name)
        if not is_hex64(name):
            g.odd_metadata.append((os.path.relpath(path, g.root), "not an image config"))
            continue
        what = f"image {name[:12]}"
        config = _json(read_small(path, what) or "", what)
        try:
            diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        except AttributeError as exc:
            raise Unreadable(f"{what}: config has no rootfs") from exc
        chains = tuple(_hex_of(c, what) for c in chain_ids([str(d) for d in diff_ids]))
        missing = tuple(c for c in chains if c not in g.chains)
        g.images[name] = ImageEntry(name, chains, missing)
    repos = read_small(os.path.join(g.image_dir, "repositories.json"), "repositories.json",
                       missing_ok=True)
    if repos is not None:
        doc = _json(repos, "repositories.json")
        for tags in (doc.get("Repositories") or {}).values() if isinstance(doc, dict) else []:
            for image_id in (tags or {}).values():
                hexpart = digest_hex(str(image_id))
                if hexpart:
                    g.tagged.add(hexpart)


def _read_bolt(path: str, what: str) -> bbolt.BoltFile:
    """A bolt file the engine keeps; unreadable or damaged means the references are unknown."""
    try:
        return bbolt.read(path)
    except bbolt.BoltError as exc:
        raise Unreadable(f"{what}: {exc}") from exc
    except OSError as exc:
        raise Unreadable(f"{what} {path}: {exc.strerror}") from exc


def _read_buildkit(g: Graph) -> None:
    """Conservative: any id either database mentions anywhere keeps that layer dir and chain."""
    base = os.path.join(g.root, "buildkit")
    for db in ("snapshots.db", "metadata_v2.db"):
        path = os.path.join(base, db)
        if not os.path.lexists(path):
            continue
        tree = _read_bolt(path, "BuildKit database")
        for _, key, value in tree.root.walk():
            for blob in (key, value):
                g.buildkit_tokens.update(t.decode() for t in _BUILDKIT_TOKEN.findall(blob))


def _read_volume_store(g: Graph) -> None:
    path = os.path.join(g.root, "volumes", "metadata.db")
    if not os.path.lexists(path):
        return
    tree = _read_bolt(path, "volume store")
    bucket = tree.root.buckets.get(b"volumes")
    names = set() if bucket is None else {k.decode("utf-8", "surrogateescape")
                                          for k in (*bucket.items, *bucket.buckets)}
    g.volume_store = names


def _read_links(g: Graph) -> None:
    """l/<short> -> dir, from the `link` files (the symlinks' own targets are not trusted)."""
    for name in list_dir(g.layers_dir, "layer dirs"):
        if name == "l":
            continue
        link = read_small(os.path.join(g.layers_dir, name, "link"), "link", missing_ok=True) \
            if is_real_dir(os.path.join(g.layers_dir, name)) else None
        if link and link.strip() and "/" not in link and link.strip() not in (".", ".."):
            g.links.setdefault(link.strip(), name)


def apply_common_mounts(g: Graph, mounts: list[Mount]) -> None:
    """What any mount names regardless of the driver: mount points, volumes, pre-1.7 volume
    data (vfs/dir/<id>), under any prefix."""
    for mount in mounts:
        g.mount_points.add(mount.mount_point)
        for path in mount.paths():
            parts = path.split("/")
            for i in range(len(parts) - 1):
                if parts[i] == "volumes" and parts[i + 1]:
                    g.mounted_volumes.add(parts[i + 1])
                if parts[i] == "vfs" and i + 2 < len(parts) and parts[i + 1] == "dir" \
                        and parts[i + 2]:
                    g.mounted_vfs.add(parts[i + 2])


def _apply_mounts(g: Graph, mounts: list[Mount]) -> None:
    """A layer dir named by any mount, in any namespace, under any prefix, is kept: the same
    data root can be seen at another path inside a container."""
    for mount in mounts:
        for path in mount.paths():
            parts = path.split("/")
            if len(parts) >= 2 and parts[0] == "l" and parts[1] in g.links:  # relative lowerdir
                g.keep(g.links[parts[1]], f"lower layer of the mount at {mount.mount_point}")
            for i in range(len(parts) - 1):
                if parts[i] == g.driver:
                    name = parts[i + 1]
                    if name == "l" and i + 2 < len(parts):
                        target = g.links.get(parts[i + 2])
                        if target:
                            g.keep(target, f"lower layer of the mount at {mount.mount_point}")
                    elif name:
                        g.keep(name, f"mounted at {mount.mount_point}")


def keep_stacked(g: Graph, parents_of: Callable[[str], Iterable[str]],
                 why: Callable[[str], str]) -> None:
    """A kept layer's parents (what it stacks on, as the layout records it) are kept too,
    whatever their own metadata says: a chain entry lost in the middle must not orphan a
    parent that a child still stacks on."""
    pending = list(g.layer_refs)
    done: set[str] = set()
    while pending:
        name = pending.pop()
        if name in done:
            continue
        done.add(name)
        for parent in parents_of(name):
            if parent not in g.layer_refs:
                g.keep(parent, why(name))
            pending.append(parent)


def _keep_lowers(g: Graph) -> None:
    """overlay2: a layer's `lower` file names the layers it stacks on, by their `l/` links."""
    def lowers(name: str) -> list[str]:
        path = os.path.join(g.layers_dir, name)
        if not is_real_dir(path):
            return []
        lower = read_small(os.path.join(path, "lower"), f"{g.driver}/{name}", missing_ok=True)
        targets = (g.links.get(item[2:]) for item in (lower or "").strip().split(":")
                   if item.startswith("l/"))
        return [t for t in targets if t]

    keep_stacked(g, lowers, lambda name: f"lower layer of {g.driver}/{name[:12]}")


def _live_chains(g: Graph) -> None:
    def follow(chain: str | None, why: str) -> None:
        while chain and chain not in g.live_chains:
            g.live_chains[chain] = why
            entry = g.chains.get(chain)
            chain = entry.parent if entry else None

    for image in g.images.values():
        if image.complete and image.chains:
            follow(image.chains[-1], f"image {image.image[:12]}")
    for mount in g.mounts.values():
        if mount.container in g.containers:
            follow(mount.parent, f"container {mount.container[:12]}")
    for chain in g.chains:
        if chain in g.buildkit_tokens:
            follow(chain, "named in BuildKit's databases")


def read_common(root: str, driver: str, mounts: list[Mount]) -> Graph:
    """What every graph-driver layout shares: image/<driver>/{layerdb,imagedb}, containers,
    BuildKit, the volume store, and what the mounts name outside the layer dirs."""
    g = Graph(root=root, driver=driver)
    if not is_real_dir(g.image_dir):
        raise FsckRefused(f"no image/{driver} in {root}")
    _read_layerdb(g)
    _read_mounts(g)
    _read_containers(g)
    _read_images(g)
    _read_buildkit(g)
    _read_volume_store(g)
    for token in g.buildkit_tokens:
        g.keep(token, "named in BuildKit's databases")
    apply_common_mounts(g, mounts)
    return g


def finish(g: Graph) -> Graph:
    """Once every layer dir that is kept is known: which metadata is live."""
    _live_chains(g)
    return g


def build(root: str, mounts: list[Mount]) -> Graph:
    """The graph of the overlay2 data root at `root` (a canonical path)."""
    g = read_common(root, DRIVER, mounts)
    _read_links(g)
    _apply_mounts(g, mounts)
    _keep_lowers(g)
    return finish(g)
