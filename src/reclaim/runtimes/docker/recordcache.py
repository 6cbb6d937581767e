"""What `df` read from the engine's records on disk, kept between runs.

Most of those records never change once written, so reading them again on every run is the
bulk of `df`'s work on a big host:

- an image config is stored under the digest of its own bytes, and a layer's `size` under its
  chain id (the digest of its content and its parents'): an entry keyed by those ids is true for
  as long as the id exists;
- a container record (`config.v2.json`) is rewritten on every state change, always by writing
  a new file and renaming it over the old one: an entry is kept with the file's inode, change
  time and size, and used only while all three are unchanged.

The cache holds nothing but copies of those records. It is written with `marshal`, which
loads a big host's cache several times faster than JSON does (bench/README.md, "Notes behind
the code"). marshal's format belongs to the interpreter that wrote it, so the file starts with
a header naming the cache version, the marshal version and the Python version, and any other
header is a miss. Like the ledger beside it, the file is the state directory's own (mode 0600,
written by rename), never input from elsewhere. Container records are used by `df`
only (plan and apply list containers through the engine); image and layer facts by every
command. Unreadable, of another version or for another data root: it is ignored and rewritten,
never trusted. Entries not seen in a run that consulted their kind are dropped, so it never
outgrows the host.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
from typing import Any

# The layout of the entries (disk.py: ImageConfig, the layer pair, CONTAINER_RECORD); a cache of
# any other version is a miss.
VERSION = 3
HEADER = f"reclaim-records {VERSION} {marshal.version} {sys.hexversion:x}\n".encode()


class RecordCache:
    def __init__(self, path: str | None, data_root: str) -> None:
        self.path = path
        self.data_root = data_root
        self.images: dict[str, Any] = {}
        self.layers: dict[str, Any] = {}
        self.containers: dict[str, Any] = {}
        self._seen_images: set[str] = set()
        self._seen_layers: set[str] = set()
        self._seen_containers: set[str] = set()
        self._dirty = False
        self._load()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
            if not raw.startswith(HEADER):
                return
            doc = marshal.loads(memoryview(raw)[len(HEADER):])
            if doc.get("data_root") != self.data_root:
                return
            images, layers, containers = doc["images"], doc["layers"], doc["containers"]
            if not all(isinstance(x, dict) for x in (images, layers, containers)):
                return
        except (OSError, ValueError, EOFError, TypeError, KeyError, AttributeError):
            return
        self.images, self.layers, self.containers = images, layers, containers

    # Each getter marks the entry as still in use; each setter also marks the cache dirty.

    def image(self, key: str) -> Any:
        self._seen_images.add(key)
        return self.images.get(key)

    def put_image(self, key: str, value: Any) -> None:
        self._seen_images.add(key)
        self.images[key] = value
        self._dirty = True

    def layer(self, key: str) -> Any:
        self._seen_layers.add(key)
        return self.layers.get(key)

    def put_layer(self, key: str, value: Any) -> None:
        self._seen_layers.add(key)
        self.layers[key] = value
        self._dirty = True

    def container(self, key: str, stamp: tuple[int, ...]) -> Any:
        self._seen_containers.add(key)
        entry = self.containers.get(key)
        if isinstance(entry, list) and len(entry) == 2:
            kept_stamp, record = entry  # as put_container keeps them
            if kept_stamp == stamp:
                return record
        return None

    def put_container(self, key: str, stamp: tuple[int, ...], value: Any) -> None:
        self._seen_containers.add(key)
        self.containers[key] = [stamp, value]
        self._dirty = True

    def save(self) -> None:
        """Writes the cache when anything was added or dropped; a failure to write only costs
        the next run its speed, so it is not an error."""
        for entries, seen in ((self.images, self._seen_images),
                              (self.layers, self._seen_layers),
                              (self.containers, self._seen_containers)):
            if not seen:
                continue  # not consulted in this run (plan reads no container records)
            gone = entries.keys() - seen
            for key in gone:
                del entries[key]
            self._dirty = self._dirty or bool(gone)
        if self.path is None or not self._dirty:
            return
        doc = {"data_root": self.data_root, "images": self.images, "layers": self.layers,
               "containers": self.containers}
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            import tempfile  # here: most runs have nothing new to write

            fd, tmp = tempfile.mkstemp(prefix=".records-", dir=directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(HEADER)
                    f.write(marshal.dumps(doc))
                os.replace(tmp, self.path)
                if self.path.endswith(".records"):
                    # `<name>.records.json` is this cache in JSON, which this file supersedes:
                    # removed, so that nothing reads it stale.
                    with contextlib.suppress(OSError):
                        os.unlink(self.path + ".json")
            except BaseException:
                os.unlink(tmp)
                raise
        except (OSError, ValueError):  # ValueError: a value marshal cannot write
            return
        self._dirty = False
