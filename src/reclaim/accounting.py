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
from itertools import chain as _chain
from operator import attrgetter

from reclaim.model import Image, Inventory


@dataclass(frozen=True)
class ImageBytes:
    size: int  # every piece of the image once
    exclusive: int  # pieces no other image and no container needs
    shared: int  # size - exclusive


_size = attrgetter("size")
_metadata_bytes = attrgetter("metadata_bytes")

# A piece as `shared_pieces` names it: ("layer", chain id), ("blob", digest) or
# ("image", image id) for the image's own metadata.
Piece = tuple[str, str]


class Accounting:
    """The piece graph of one inventory. Built once in O(references); queries are cheap.

    Layers are keyed by chain id and blobs by digest, straight from the images (a blob's
    digest can equal a base layer's chain id, so they are kept apart); an image's metadata is
    its own piece, which only the image refers to. Building it is one counting pass over the
    references, done in C, and sizes are read from the inventory only for the pieces a query
    touches: at 20,000 images and 200,000 layers the graph costs little, and a caller that
    plans several times from one inventory can build it once and pass it on.

    `layer_inodes` (chain id -> inodes the layer holds on disk, as the runtime counts them)
    adds an inode figure to layers; layers the runtime could not count hold 0 and are known as
    unknown. Blobs and image metadata are not counted (a few files per image).
    """

    def __init__(self, inventory: Inventory,
                 layer_inodes: Mapping[str, int] | None = None) -> None:
        images = inventory.images
        self._layers = inventory.layers
        self._blobs = inventory.blobs
        self._images: dict[str, Image] = {}
        for image in images:
            chain, blobs = image.chain, image.blobs
            # A chain id or digest listed twice in one image is one piece of it.
            if len(set(chain)) != len(chain) or len(set(blobs)) != len(blobs):
                image = Image(image.id, image.tags, image.digests, image.created,
                              tuple(dict.fromkeys(chain)), tuple(dict.fromkeys(blobs)),
                              image.labels, image.engine_size, image.metadata_bytes,
                              image.tagged_at)
            self._images[image.id] = image
        kept = self._images.values()
        self._layer_refs = Counter(_chain.from_iterable(i.chain for i in kept))
        self._blob_refs = Counter(_chain.from_iterable(i.blobs for i in kept if i.blobs))
        used_images = frozenset(c.image_id for c in inventory.containers)
        used = [self._images[i] for i in used_images if i in self._images]
        self._pinned_layers = frozenset(_chain.from_iterable(i.chain for i in used))
        self._pinned_blobs = frozenset(_chain.from_iterable(i.blobs for i in used))
        self.used_images: frozenset[str] = used_images
        self._layer_inodes = layer_inodes
        self._total: int | None = None
        self._splits: dict[str, _Split] = {}

    def _split(self, image: Image) -> _Split:
        """The image's pieces, split once: the bytes and inodes of those only it refers to
        (freed whenever it goes), and those it shares with other images, which are freed with
        the last of them. Pinned pieces are left out: they are never freed."""
        split = self._splits.get(image.id)
        if split is not None:
            return split
        refs, pinned, layers = self._layer_refs, self._pinned_layers, self._layers
        counts = self._layer_inodes
        own_bytes, own_inodes = image.metadata_bytes, 0
        shared: list[str] = []
        for c in image.chain:
            if c in pinned:
                continue
            if refs[c] == 1:
                layer = layers.get(c)
                if layer is not None:
                    own_bytes += layer.size + layer.metadata_bytes
                if counts is not None:
                    own_inodes += counts.get(c, 0)
            else:
                shared.append(c)
        shared_blobs: list[str] = []
        for d in image.blobs:
            if d in self._pinned_blobs:
                continue
            if self._blob_refs[d] == 1:
                own_bytes += self._blob_size(d)
            else:
                shared_blobs.append(d)
        split = self._splits[image.id] = _Split(own_bytes, own_inodes, tuple(shared),
                                                tuple(shared_blobs))
        return split

    # -- sizes of single pieces --------------------------------------------------------------

    def _layer_size(self, chain_id: str) -> int:
        layer = self._layers.get(chain_id)
        return layer.size + layer.metadata_bytes if layer is not None else 0

    def _blob_size(self, digest: str) -> int:
        blob = self._blobs.get(digest)
        return blob.size if blob is not None else 0

    def _pieces(self, image_id: str) -> list[Piece]:
        image = self._images.get(image_id)
        if image is None:
            return []
        return ([("layer", c) for c in image.chain] + [("blob", d) for d in image.blobs]
                + [("image", image_id)])

    def piece_size(self, piece: Piece) -> int:
        kind, key = piece
        if kind == "layer":
            return self._layer_size(key)
        if kind == "blob":
            return self._blob_size(key)
        image = self._images.get(key)
        return image.metadata_bytes if image is not None else 0

    def _refs(self, piece: Piece) -> int:
        kind, key = piece
        if kind == "layer":
            return self._layer_refs[key]
        if kind == "blob":
            return self._blob_refs[key]
        return 1

    def _pinned(self, piece: Piece) -> bool:
        kind, key = piece
        if kind == "layer":
            return key in self._pinned_layers
        if kind == "blob":
            return key in self._pinned_blobs
        return key in self.used_images

    # -- queries ---------------------------------------------------------------------------

    def image_bytes(self, image_id: str) -> ImageBytes:
        image = self._images.get(image_id)
        if image is None:
            return ImageBytes(0, 0, 0)
        layers, refs, pinned = self._layers, self._layer_refs, self._pinned_layers
        used = image_id in self.used_images
        size = exclusive = image.metadata_bytes
        for c in image.chain:
            layer = layers.get(c)
            if layer is not None:
                n = layer.size + layer.metadata_bytes
                size += n
                if refs[c] == 1 and c not in pinned:
                    exclusive += n
        for d in image.blobs:
            n = self._blob_size(d)
            size += n
            if self._blob_refs[d] == 1 and d not in self._pinned_blobs:
                exclusive += n
        if used:
            exclusive = 0
        return ImageBytes(size=size, exclusive=exclusive, shared=size - exclusive)

    def _freed_pieces(self, image_ids: Iterable[str]) -> list[Piece]:
        inside: Counter[Piece] = Counter()
        for image_id in set(image_ids):
            inside.update(self._pieces(image_id))
        return [p for p, n in inside.items() if n == self._refs(p) and not self._pinned(p)]

    def freed_by(self, image_ids: Iterable[str]) -> int:
        """What deleting exactly these images frees: pieces whose every referrer is in the set
        and that no container pins. Ids not in the inventory free nothing."""
        return sum(self.piece_size(p) for p in self._freed_pieces(image_ids))

    def freed_inodes_by(self, image_ids: Iterable[str]) -> int:
        """The inodes deleting exactly these images frees, as `freed_by` counts bytes (0
        without inode counts; layers of unknown count add 0)."""
        counts = self._layer_inodes
        if counts is None:
            return 0
        return sum(counts.get(key, 0) for kind, key in self._freed_pieces(image_ids)
                   if kind == "layer")

    @property
    def counts_inodes(self) -> bool:
        return self._layer_inodes is not None

    def uncounted_layers(self, image_ids: Iterable[str]) -> int:
        """How many layers of these images, that deleting them could free, have no inode
        count from the runtime (each counted once)."""
        counts = self._layer_inodes
        if counts is None:
            return 0
        pinned, images = self._pinned_layers, self._images
        return len({c for image_id in image_ids if (image := images.get(image_id)) is not None
                    for c in image.chain if c not in counts and c not in pinned})

    def total_bytes(self) -> int:
        """Every stored piece that some image refers to, counted once."""
        if self._total is None:
            layers = self._layers
            if self._layer_refs.keys() == layers.keys():
                # The usual case, every stored layer referred to: summed in C.
                layer_bytes = (sum(map(_size, layers.values()))
                               + sum(map(_metadata_bytes, layers.values())))
            else:
                layer_bytes = sum(map(self._layer_size, self._layer_refs))
            self._total = (layer_bytes + sum(map(self._blob_size, self._blob_refs))
                           + sum(map(_metadata_bytes, self._images.values())))
        return self._total

    def unused_images(self) -> list[str]:
        return [i for i in self._images if i not in self.used_images]

    def shared_pieces(self, image_ids: Iterable[str]) -> set[Piece]:
        """The pieces of these images, e.g. to test which pieces a set holds."""
        found: set[Piece] = set()
        for image_id in image_ids:
            found.update(self._pieces(image_id))
        return found

    def pinned_bytes(self) -> int:
        """Bytes that containers keep alive."""
        return (sum(map(self._layer_size, self._pinned_layers))
                + sum(map(self._blob_size, self._pinned_blobs))
                + sum(self._images[i].metadata_bytes for i in self.used_images
                      if i in self._images))

    def freeing(self) -> FreeingSet:
        return FreeingSet(self)


@dataclass(frozen=True)
class _Split:
    own_bytes: int
    own_inodes: int
    shared_layers: tuple[str, ...]
    shared_blobs: tuple[str, ...]


class FreeingSet:
    """Images chosen for deletion one at a time, each with the bytes it frees given the ones
    chosen before it (its marginal bytes): what the plan's actions carry, and what eviction
    under a quota or watermark ranks by. With inode counts, the inodes freed are kept the same
    way (`freed_inodes`, and `last_inodes` for the last image added)."""

    def __init__(self, accounting: Accounting) -> None:
        self._acc = accounting
        # How many of each piece's referrers are in the set.
        self._inside_layers: dict[str, int] = {}
        self._inside_blobs: dict[str, int] = {}
        # In the order added, with what each freed when it was added; removal is O(1).
        self._chosen: dict[str, tuple[int, int]] = {}
        self.freed = 0
        self.freed_inodes = 0
        self.last_inodes = 0

    def copy(self) -> FreeingSet:
        other = FreeingSet(self._acc)
        other._inside_layers = self._inside_layers.copy()
        other._inside_blobs = self._inside_blobs.copy()
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
        image = acc._images.get(image_id)
        if image is None or image_id in acc.used_images:
            return 0, 0  # a used image's pieces are all pinned
        split = acc._split(image)
        freed, inodes = split.own_bytes, split.own_inodes
        want = 1 if delta > 0 else 0
        if split.shared_layers:
            refs, inside, layers = acc._layer_refs, self._inside_layers, acc._layers
            counts = acc._layer_inodes
            for c in split.shared_layers:
                n = inside.get(c, 0)
                if apply:
                    inside[c] = n + delta
                if n + want == refs[c]:
                    layer = layers.get(c)
                    if layer is not None:
                        freed += layer.size + layer.metadata_bytes
                    if counts is not None:
                        inodes += counts.get(c, 0)
        if split.shared_blobs:
            brefs, binside = acc._blob_refs, self._inside_blobs
            for d in split.shared_blobs:
                n = binside.get(d, 0)
                if apply:
                    binside[d] = n + delta
                if n + want == brefs[d]:
                    freed += acc._blob_size(d)
        return freed, inodes

    def marginal(self, image_id: str) -> int:
        """What adding this image would free now, without adding it."""
        return self._step(image_id, 1, False)[0]

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
