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
from dataclasses import dataclass

from reclaim.model import Inventory


def layer_piece(chain_id: str) -> str:
    return "layer:" + chain_id


def blob_piece(digest: str) -> str:
    return "blob:" + digest


def metadata_piece(image_id: str) -> str:
    return "meta:" + image_id


@dataclass(frozen=True)
class ImageBytes:
    size: int  # every piece of the image once
    exclusive: int  # pieces no other image and no container needs
    shared: int  # size - exclusive


class Accounting:
    """The piece graph of one inventory. Built once in O(references); queries are cheap."""

    def __init__(self, inventory: Inventory) -> None:
        sizes: dict[str, int] = {}
        for layer in inventory.layers.values():
            sizes[layer_piece(layer.chain_id)] = layer.size
        for blob in inventory.blobs.values():
            sizes[blob_piece(blob.digest)] = blob.size

        pieces_of: dict[str, frozenset[str]] = {}
        for image in inventory.images:
            own = [layer_piece(c) for c in image.chain]
            own += [blob_piece(d) for d in image.blobs]
            meta = metadata_piece(image.id)
            sizes[meta] = image.metadata_bytes
            own.append(meta)
            pieces_of[image.id] = frozenset(own)

        referrers: Counter[str] = Counter()
        for own_pieces in pieces_of.values():
            referrers.update(own_pieces)

        used_images = {c.image_id for c in inventory.containers}
        pinned: set[str] = set()
        for image_id in used_images:
            pinned |= pieces_of.get(image_id, frozenset())

        self._sizes: Mapping[str, int] = sizes
        self._pieces_of: Mapping[str, frozenset[str]] = pieces_of
        self._referrers: Mapping[str, int] = referrers
        self._pinned: frozenset[str] = frozenset(pinned)
        self.used_images: frozenset[str] = frozenset(used_images)

    def piece_size(self, piece: str) -> int:
        return self._sizes.get(piece, 0)

    def pieces_of(self, image_id: str) -> frozenset[str]:
        return self._pieces_of.get(image_id, frozenset())

    def image_bytes(self, image_id: str) -> ImageBytes:
        pieces = self.pieces_of(image_id)
        size = sum(self.piece_size(p) for p in pieces)
        if image_id in self.used_images:
            exclusive = 0
        else:
            exclusive = sum(
                self.piece_size(p)
                for p in pieces
                if self._referrers[p] == 1 and p not in self._pinned
            )
        return ImageBytes(size=size, exclusive=exclusive, shared=size - exclusive)

    def freed_by(self, image_ids: Iterable[str]) -> int:
        """What deleting exactly these images frees: pieces whose every referrer is in the set
        and that no container pins. Ids not in the inventory free nothing."""
        inside: Counter[str] = Counter()
        for image_id in set(image_ids):
            inside.update(self.pieces_of(image_id))
        return sum(
            self.piece_size(p)
            for p, n in inside.items()
            if n == self._referrers[p] and p not in self._pinned
        )

    def total_bytes(self) -> int:
        """Every stored piece that some image refers to, counted once."""
        return sum(self.piece_size(p) for p in self._referrers)

    def unused_images(self) -> list[str]:
        return [i for i in self._pieces_of if i not in self.used_images]
