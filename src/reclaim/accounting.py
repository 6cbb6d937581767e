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
from collections.abc import Iterable
from dataclasses import dataclass

from reclaim.model import Inventory


@dataclass(frozen=True)
class ImageBytes:
    size: int  # every piece of the image once
    exclusive: int  # pieces no other image and no container needs
    shared: int  # size - exclusive


class Accounting:
    """The piece graph of one inventory. Built once in O(references); queries are cheap.

    Pieces are numbered, and an image's pieces are a tuple of numbers: at 20,000 images and
    200,000 layers this keeps the graph small and quick to build.
    """

    def __init__(self, inventory: Inventory) -> None:
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
                    sizes.append(layer.disk_bytes if layer else 0)
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

    def freed_by(self, image_ids: Iterable[str]) -> int:
        """What deleting exactly these images frees: pieces whose every referrer is in the set
        and that no container pins. Ids not in the inventory free nothing."""
        inside: Counter[int] = Counter()
        for image_id in set(image_ids):
            inside.update(self._pieces_of.get(image_id, ()))
        referrers, pinned, sizes = self._referrers, self._pinned, self._sizes
        return sum(
            sizes[p] for p, n in inside.items() if n == referrers[p] and not pinned[p]
        )

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


class FreeingSet:
    """Images chosen for deletion one at a time, each with the bytes it frees given the ones
    chosen before it (its marginal bytes): what the plan's actions carry, and what eviction
    under a quota or watermark ranks by."""

    def __init__(self, accounting: Accounting) -> None:
        self._acc = accounting
        self._inside: dict[int, int] = {}
        self.chosen: list[str] = []
        self.freed = 0

    def marginal(self, image_id: str) -> int:
        """What adding this image would free now, without adding it."""
        acc = self._acc
        if image_id in acc.used_images:
            return 0
        return sum(
            acc._sizes[p]
            for p in acc._pieces_of.get(image_id, ())
            if not acc._pinned[p] and self._inside.get(p, 0) + 1 == acc._referrers[p]
        )

    def add(self, image_id: str) -> int:
        acc = self._acc
        freed = 0
        for p in acc._pieces_of.get(image_id, ()):
            n = self._inside.get(p, 0) + 1
            self._inside[p] = n
            if n == acc._referrers[p] and not acc._pinned[p]:
                freed += acc._sizes[p]
        self.chosen.append(image_id)
        self.freed += freed
        return freed

    def droppable(self, image_id: str) -> int:
        """The bytes this set would stop freeing if the image were taken out of it."""
        acc = self._acc
        return sum(
            acc._sizes[p]
            for p in acc._pieces_of.get(image_id, ())
            if not acc._pinned[p] and self._inside.get(p, 0) == acc._referrers[p]
        )

    def remove(self, image_id: str) -> int:
        """Take a chosen image out again; returns the bytes no longer freed."""
        acc = self._acc
        lost = 0
        for p in acc._pieces_of.get(image_id, ()):
            n = self._inside.get(p, 0)
            if n == acc._referrers[p] and not acc._pinned[p]:
                lost += acc._sizes[p]
            self._inside[p] = n - 1
        self.chosen.remove(image_id)
        self.freed -= lost
        return lost
