"""The contract every runtime adapter keeps (and the in-memory fake keeps too).

Adapters are the only code that talks to an engine. They return the runtime-neutral model of
`reclaim.model` and raise only `reclaim.errors` exceptions.

`Runtime` is what every adapter must do. What only some engines can do is a capability of
its own, a protocol that an adapter implements or not; commands ask with `isinstance` and,
without it, do without and say so (`Missing`), never fail on a missing method.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from datetime import datetime
from typing import Protocol, runtime_checkable

from reclaim.model import EngineInfo, Event, Inventory

# Called while a long inventory loads: (what, done, total or None).
Progress = Callable[[str, int, int | None], None]


def no_progress(what: str, done: int, total: int | None) -> None:
    """The progress callback that shows nothing."""


@runtime_checkable
class Runtime(Protocol):
    def info(self) -> EngineInfo:
        """What the engine is and where it keeps its data."""
        ...

    def inventory(self, *, sizes: bool = False, progress: Progress = no_progress) -> Inventory:
        """Everything the engine holds, listed in bulk.

        `sizes` asks the engine for the figures it computes slowly (container read-write bytes,
        build cache on engines that only give it with everything else).
        """
        ...

    def image_refs(self, image_id: str) -> tuple[str, ...] | None:
        """The image's tags right now, or None when it is gone (for re-checks)."""
        ...

    def image_users(self, image_id: str) -> tuple[str, ...]:
        """Ids of the containers of any state that use the image right now."""
        ...

    def remove_image(self, ref: str) -> None:
        """Remove one image reference (a tag, or an id once it has no tags). Never forced.

        Raises `InUse` when the engine refuses because something still needs it, `NotFound`
        when it is already gone.
        """
        ...

    def remove_container(self, container_id: str) -> None:
        """Remove one stopped container. Never forced; a running one raises `InUse`."""
        ...

    def volume_instance(self, name: str) -> str | None:
        """`Volume.instance` of the volume of that name right now, or None when there is none
        (for the re-check just before a volume is removed)."""
        ...

    def remove_volume(self, name: str) -> None:
        """Remove one volume. Never forced; one in use raises `InUse`."""
        ...

    def image_id(self, ref: str) -> str:
        """The id of the image `ref` (a tag, digest or id) names now; `NotFound` if none."""
        ...

    def events(self, since: datetime | None, until: datetime | None = None) -> Iterator[Event]:
        """Container and image events from `since` (what the engine still holds of the past;
        None: from now) until `until`, or for as long as the stream lasts.

        The iterator simply ends when the engine closes the stream or the connection breaks;
        the caller reconnects and reconciles. Failing to connect raises `EngineUnreachable`.
        """
        ...

    def close(self) -> None: ...


# -- capabilities ---------------------------------------------------------------------------

@runtime_checkable
class LayerInodeCounting(Protocol):
    """Counts the inodes of unpacked layers (for inode watermarks)."""

    def layer_inodes(self, chain_ids: Collection[str]) -> dict[str, int]:
        """Inodes each layer holds on disk, for the layers the runtime can count; missing =
        unknown. Counting walks the layers' files, so callers ask only when an inode watermark
        needs it, and only for the layers a deletion could free."""
        ...


@runtime_checkable
class ContainerSizing(Protocol):
    """Measures what removing a container frees on disk."""

    def container_bytes(self, container_ids: Collection[str]) -> dict[str, int]:
        """What removing each of these containers frees on disk (its read-write and init
        layers, its directory with logs and config), for the containers the runtime can
        measure; missing = unknown. Measuring walks the containers' files, so callers ask
        only for the containers a plan removes."""
        ...


@runtime_checkable
class BuildCachePruning(Protocol):
    """Runs the engine's build-cache prune."""

    def prune_build_cache(self, keep_storage: int | None, older_than: float | None) -> int:
        """The engine's build-cache prune; the bytes the engine says it freed."""
        ...


@runtime_checkable
class TagRestoring(Protocol):
    """Removal that says whether the image itself went, and tagging to put tags back (apply's
    put-back after a refused removal)."""

    def remove_image_ref(self, ref: str) -> bool:
        """Remove one reference as `remove_image` does; True when the image itself went."""
        ...

    def tag_image(self, image_id: str, ref: str) -> None:
        """Give the image the name `ref` (which must name no image now)."""
        ...


class UseWatch(Protocol):
    """A live view of what makes an image's tags unsafe to remove: the containers created
    from it and the names given since the watch began (see `reclaim.apply`)."""

    @property
    def live(self) -> bool:
        """False for good once the watch cannot vouch for what happens any more."""
        ...

    def why_not(self, image_id: str, refs: tuple[str, ...]) -> str | None:
        """Why the image's tags must stay (a container created from it, a tag given to it or
        moved off one of `refs`), or None."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class UseWatching(Protocol):
    """Watches the engine for new users of images while apply removes tags."""

    def watch_uses(self, since: datetime) -> UseWatch | None:
        """A watch from `since` on, or None when the engine cannot be watched now."""
        ...

