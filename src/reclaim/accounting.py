"""Byte accounting that counts every stored piece once.

A *piece* is one thing on disk: an unpacked layer (by chain id), a content-store blob (by
digest), or an image's own metadata. Images refer to pieces; a container pins every piece of
its image, whatever the container's state. The bytes that deleting a set of images frees are
the bytes of the pieces whose every referring image is in the set and that no container pins.

The engine's per-image `Size` counts shared layers once per image; summing it overstates what
a deletion frees by 3x to infinity, so it is never used here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from reclaim.model import Inventory


class ImageBytes(NamedTuple):
    size: int  # every piece of the image once
    exclusive: int  # pieces no other image and no container needs
    shared: int  # size - exclusive


class Accounting:
    """The piece graph of one inventory. Built once in O(references); queries are cheap.

    Pieces are numbered, and an image's pieces are a tuple of numbers: the graph of a big
    store stays small and quick to build, and per-piece facts are list lookups. A caller that
    plans several times from one inventory can build it once and pass it on.

    `layer_inodes` (chain id -> inodes the layer holds on disk, as the runtime counts them)
    adds an inode figure to every layer; layers the runtime could not count hold 0 and are
    known as unknown. Blobs and image metadata are not counted (a few files per image).
    """

    def __init__(self, inventory: Inventory,
                 layer_inodes: Mapping[str, int] | None = None) -> None:
        sizes: list[int] = []
        layer_index: dict[str, int] = {}
        blob_index: dict[str, int] = {}
        layers, blobs = inventory.layers, inventory.blobs
        pieces_of: dict[str, tuple[int, ...]] = {}
        for image in inventory.images:
            own: list[int] = []
            for chain_id in dict.fromkeys(image.chain):
                number = layer_index.get(chain_id)
                if number is None:
                    number = layer_index[chain_id] = len(sizes)
                    layer = layers.get(chain_id)
                    sizes.append(layer.size + layer.metadata_bytes if layer else 0)
                own.append(number)
            for digest in dict.fromkeys(image.blobs):
                number = blob_index.get(digest)
                if number is None:
                    number = blob_index[digest] = len(sizes)
                    blob = blobs.get(digest)
                    sizes.append(blob.size if blob else 0)
                own.append(number)
            # The image's own metadata is a piece nobody else refers to.
            own.append(len(sizes))
            sizes.append(image.metadata_bytes)
            pieces_of[image.id] = tuple(own)

        referrers = [0] * len(sizes)
        for own_pieces in pieces_of.values():
            for p in own_pieces:
                referrers[p] += 1

        used_images = frozenset(c.image_id for c in inventory.containers)
        pinned = [False] * len(sizes)
        for image_id in used_images:
            for p in pieces_of.get(image_id, ()):
                pinned[p] = True

        self._sizes = sizes
        self._pieces_of = pieces_of
        self._referrers = referrers
        self._pinned = pinned
        self.used_images: frozenset[str] = used_images
        self._inodes: list[int] | None = None
        self._inodes_unknown: list[bool] = []
        if layer_inodes is not None:
            inodes = [0] * len(sizes)
            unknown = [False] * len(sizes)
            for chain_id, number in layer_index.items():
                count = layer_inodes.get(chain_id)
                if count is None:
                    unknown[number] = True
                else:
                    inodes[number] = count
            self._inodes, self._inodes_unknown = inodes, unknown
        self._splits: dict[str, _Split] = {}

    def _split(self, image_id: str) -> _Split:
        """The image's pieces, split once: the bytes and inodes of those only it refers to
        (freed whenever it goes), and those it shares with other images, freed with the last
        of them. Pinned pieces are left out: they are never freed."""
        split = self._splits.get(image_id)
        if split is None:
            sizes, referrers, pinned, inodes = (self._sizes, self._referrers, self._pinned,
                                                self._inodes)
            own_bytes = own_inodes = 0
            shared: list[int] = []
            for p in self._pieces_of.get(image_id, ()):
                if pinned[p]:
                    continue
                if referrers[p] == 1:
                    own_bytes += sizes[p]
                    if inodes is not None:
                        own_inodes += inodes[p]
                else:
                    shared.append(p)
            split = self._splits[image_id] = _Split(own_bytes, own_inodes, tuple(shared))
        return split

    def image_bytes(self, image_id: str) -> ImageBytes:
        pieces = self._pieces_of.get(image_id, ())
        sizes = self._sizes
        size = sum(sizes[p] for p in pieces)
        if image_id in self.used_images:
            exclusive = 0
        else:
            referrers, pinned = self._referrers, self._pinned
            exclusive = sum(sizes[p] for p in pieces if referrers[p] == 1 and not pinned[p])
        return ImageBytes(size=size, exclusive=exclusive, shared=size - exclusive)

    def _freed_pieces(self, image_ids: Iterable[str]) -> list[int]:
        inside: Counter[int] = Counter()
        for image_id in set(image_ids):
            inside.update(self._pieces_of.get(image_id, ()))
        referrers, pinned = self._referrers, self._pinned
        return [p for p, n in inside.items() if n == referrers[p] and not pinned[p]]

    def freed_by(self, image_ids: Iterable[str]) -> int:
        """What deleting exactly these images frees: pieces whose every referrer is in the set
        and that no container pins. Ids not in the inventory free nothing."""
        sizes = self._sizes
        return sum(sizes[p] for p in self._freed_pieces(image_ids))

    def freed_inodes_by(self, image_ids: Iterable[str]) -> int:
        """The inodes deleting exactly these images frees, as `freed_by` counts bytes (0
        without inode counts; layers of unknown count add 0)."""
        inodes = self._inodes
        if inodes is None:
            return 0
        return sum(inodes[p] for p in self._freed_pieces(image_ids))

    @property
    def counts_inodes(self) -> bool:
        return self._inodes is not None

    def uncounted_layers(self, image_ids: Iterable[str]) -> int:
        """How many layers of these images, that deleting them could free, have no inode
        count from the runtime (each counted once)."""
        unknown, pinned = self._inodes_unknown, self._pinned
        if not unknown:
            return 0
        return len({p for image_id in image_ids for p in self._pieces_of.get(image_id, ())
                    if unknown[p] and not pinned[p]})

    def total_bytes(self) -> int:
        """Every stored piece that some image refers to, counted once."""
        return sum(self._sizes)

    def unused_images(self) -> list[str]:
        return [i for i in self._pieces_of if i not in self.used_images]

    def shared_pieces(self, image_ids: Iterable[str]) -> set[int]:
        """The pieces of these images (opaque numbers), e.g. to test which pieces a set holds."""
        found: set[int] = set()
        for image_id in image_ids:
            found.update(self._pieces_of.get(image_id, ()))
        return found

    def piece_size(self, piece: int) -> int:
        return self._sizes[piece]

    def pinned_bytes(self) -> int:
        """Bytes that containers keep alive."""
        return sum(size for size, pin in zip(self._sizes, self._pinned, strict=True) if pin)

    def freeing(self) -> FreeingSet:
        return FreeingSet(self)


class _Split(NamedTuple):
    own_bytes: int
    own_inodes: int
    shared: tuple[int, ...]


class FreeingSet:
    """Images chosen for deletion one at a time, each with the bytes it frees given the ones
    chosen before it (its marginal bytes): what the plan's actions carry, and what eviction
    under a quota or watermark counts towards its target. With inode counts, the inodes freed
    are kept the same way (`freed_inodes`, and `last_inodes` for the last image added)."""

    def __init__(self, accounting: Accounting) -> None:
        self._acc = accounting
        # How many of each shared piece's referrers are in the set, by piece number. Pieces
        # only one image refers to need no count: they go with it.
        self._inside: dict[int, int] = {}
        # In the order added, with what each freed when it was added; removal is O(1).
        self._chosen: dict[str, tuple[int, int]] = {}
        self.freed = 0
        self.freed_inodes = 0
        self.last_inodes = 0

    def copy(self) -> FreeingSet:
        other = FreeingSet(self._acc)
        other._inside = self._inside.copy()
        other._chosen = self._chosen.copy()
        other.freed, other.freed_inodes, other.last_inodes = (
            self.freed, self.freed_inodes, self.last_inodes)
        return other

    @property
    def chosen(self) -> list[str]:
        return list(self._chosen)

    def freed_when_added(self, image_id: str) -> tuple[int, int]:
        """The bytes and inodes the image freed when it was added (its marginal figures then;
        still what it frees in order as long as no image added before it was taken out)."""
        return self._chosen[image_id]

    def _step(self, image_id: str, delta: int, apply: bool) -> tuple[int, int]:
        """The bytes and inodes whose freeing the image decides: with `delta` +1, the pieces
        it would be the last referrer of to come in; with 0 or -1, those it is the last of
        now (what taking it out loses). `apply` writes the new counts (adds or takes out).
        Only shared pieces need counting: this is the planner's innermost loop."""
        acc = self._acc
        if image_id in acc.used_images:
            return 0, 0  # a used image's pieces are all pinned
        split = acc._split(image_id)
        freed, inodes = split.own_bytes, split.own_inodes
        if split.shared:
            want = 1 if delta > 0 else 0
            inside, referrers, sizes, counts = (self._inside, acc._referrers, acc._sizes,
                                                acc._inodes)
            for p in split.shared:
                n = inside.get(p, 0)
                if apply:
                    inside[p] = n + delta
                if n + want == referrers[p]:
                    freed += sizes[p]
                    if counts is not None:
                        inodes += counts[p]
        return freed, inodes

    def add(self, image_id: str) -> int:
        freed, inodes = self._step(image_id, 1, True)
        self._chosen[image_id] = (freed, inodes)
        self.freed += freed
        self.freed_inodes += inodes
        self.last_inodes = inodes
        return freed

    def droppable(self, image_id: str) -> tuple[int, int]:
        """The bytes and inodes this set would stop freeing if the image were taken out."""
        return self._step(image_id, 0, False)

    def remove(self, image_id: str) -> int:
        """Take a chosen image out again; returns the bytes no longer freed."""
        lost, lost_inodes = self._step(image_id, -1, True)
        del self._chosen[image_id]
        self.freed -= lost
        self.freed_inodes -= lost_inodes
        return lost
