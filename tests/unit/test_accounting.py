from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from reclaim.accounting import Accounting
from reclaim.model import Container, ContainerState
from reclaim.runtimes.fake import FakeRuntime

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def diff(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def image_id(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"image-{n}".encode()).hexdigest()


def container(n: int, image: str, state: ContainerState = ContainerState.EXITED) -> Container:
    return Container(id=f"{n:064x}", name=f"c{n}", image_id=image, state=state, created=NOW)


def family() -> FakeRuntime:
    """base(100) <- runtime(1000) <- app-a(10) / app-b(20); and solo(5000) alone."""
    fake = FakeRuntime()
    fake.add_image(image_id(1), tags=["a:1"],
                   layers=[(diff("base"), 100), (diff("rt"), 1000), (diff("app-a"), 10)])
    fake.add_image(image_id(2), tags=["b:1", "b:2"],
                   layers=[(diff("base"), 100), (diff("rt"), 1000), (diff("app-b"), 20)])
    fake.add_image(image_id(3), tags=["solo:1"], layers=[(diff("solo"), 5000)])
    return fake


def test_shared_layers_are_counted_once_in_the_total() -> None:
    acc = Accounting(family().inventory())
    assert acc.total_bytes() == 100 + 1000 + 10 + 20 + 5000


def test_exclusive_bytes_exclude_layers_another_image_needs() -> None:
    acc = Accounting(family().inventory())
    assert acc.image_bytes(image_id(1)).exclusive == 10
    assert acc.image_bytes(image_id(1)).shared == 1100
    assert acc.image_bytes(image_id(1)).size == 1110
    assert acc.image_bytes(image_id(3)).exclusive == 5000


def test_deleting_a_whole_family_frees_its_shared_layers() -> None:
    acc = Accounting(family().inventory())
    assert acc.freed_by([image_id(1)]) == 10
    assert acc.freed_by([image_id(1), image_id(2)]) == 1130


def test_a_container_pins_its_images_whole_chain_whatever_its_state() -> None:
    for state in ContainerState:
        fake = family()
        fake.add_container(container(1, image_id(1), state))
        acc = Accounting(fake.inventory())
        assert acc.image_bytes(image_id(1)).exclusive == 0
        # b's own layer is still free to go, but not the base and runtime a needs.
        assert acc.freed_by([image_id(1), image_id(2)]) == 20
        assert image_id(1) not in acc.unused_images()


def test_same_diff_on_two_parents_is_two_layers() -> None:
    fake = FakeRuntime()
    fake.add_image(image_id(1), tags=["x:1"], layers=[(diff("p1"), 7), (diff("same"), 50)])
    fake.add_image(image_id(2), tags=["y:1"], layers=[(diff("p2"), 9), (diff("same"), 50)])
    acc = Accounting(fake.inventory())
    assert acc.total_bytes() == 7 + 9 + 50 + 50
    assert acc.image_bytes(image_id(1)).exclusive == 57


def test_blobs_shared_by_digest_are_counted_once() -> None:
    fake = FakeRuntime()
    fake.add_image(image_id(1), layers=[(diff("p1"), 7), (diff("same"), 50)],
                   blobs=[(diff("p1"), 8), (diff("same"), 55)])
    fake.add_image(image_id(2), layers=[(diff("p2"), 9), (diff("same"), 50)],
                   blobs=[(diff("p2"), 10), (diff("same"), 55)])
    acc = Accounting(fake.inventory())
    assert acc.total_bytes() == 7 + 9 + 50 + 50 + 8 + 10 + 55
    assert acc.image_bytes(image_id(1)).exclusive == 7 + 50 + 8
    assert acc.freed_by([image_id(1), image_id(2)]) == acc.total_bytes()


# -- properties on random stores ------------------------------------------------------------

layer_names = st.sampled_from([f"l{i}" for i in range(12)])
images_strategy = st.lists(
    st.tuples(st.lists(layer_names, min_size=1, max_size=5),
              st.lists(st.integers(0, 10_000), min_size=5, max_size=5)),
    min_size=1, max_size=8,
)


def build(spec: list[tuple[list[str], list[int]]], used: set[int]) -> FakeRuntime:
    fake = FakeRuntime()
    sizes = {f"l{i}": (i + 1) * 37 for i in range(12)}
    for n, (names, _) in enumerate(spec):
        fake.add_image(image_id(n), layers=[(diff(x), sizes[x]) for x in names])
    for n in sorted(used):
        if n < len(spec):
            fake.add_container(container(n, image_id(n)))
    return fake


@settings(max_examples=200, deadline=None)
@given(images_strategy, st.sets(st.integers(0, 7)), st.sets(st.integers(0, 7)))
def test_freed_bytes_match_what_the_store_loses(
    spec: list[tuple[list[str], list[int]]], used: set[int], chosen: set[int]
) -> None:
    fake = build(spec, used)
    acc = Accounting(fake.inventory())
    before = Accounting(fake.inventory()).total_bytes()
    ids = [image_id(n) for n in chosen if n < len(spec) and n not in used]
    predicted = acc.freed_by(ids)
    for i in ids:
        fake.images.pop(i)
    fake._collect()
    after = Accounting(fake.inventory()).total_bytes()
    assert predicted == before - after


@settings(max_examples=200, deadline=None)
@given(images_strategy, st.sets(st.integers(0, 7)))
def test_used_images_never_count_as_reclaimable(
    spec: list[tuple[list[str], list[int]]], used: set[int]
) -> None:
    fake = build(spec, used)
    acc = Accounting(fake.inventory())
    for n in used:
        if n < len(spec):
            assert acc.image_bytes(image_id(n)).exclusive == 0
            assert image_id(n) not in acc.unused_images()
            # Nothing a used image needs is ever freed, whatever else goes with it.
            assert acc.freed_by(acc.unused_images()) + acc.image_bytes(image_id(n)).size \
                <= acc.total_bytes()
    all_unused = acc.unused_images()
    used_ids = [image_id(n) for n in used if n < len(spec)]
    pinned = acc.shared_pieces(used_ids)
    assert acc.freed_by(all_unused) == sum(
        acc.piece_size(p) for p in acc.shared_pieces(all_unused) if p not in pinned
    )
    assert acc.freed_by(all_unused) + acc.pinned_bytes() <= acc.total_bytes()


@settings(max_examples=200, deadline=None)
@given(images_strategy, st.sets(st.integers(0, 7)), st.sets(st.integers(0, 7)),
       st.lists(st.one_of(st.none(), st.integers(0, 500)), min_size=12, max_size=12))
def test_freed_inodes_match_the_layers_the_store_loses(
    spec: list[tuple[list[str], list[int]]], used: set[int], chosen: set[int],
    inodes: list[int | None],
) -> None:
    """Inodes are accounted like bytes: a layer's count is freed once, with the last image
    that needs it, never while a container pins it; an uncounted layer frees 0 and is named
    as uncounted."""
    fake = FakeRuntime()
    sizes = {f"l{i}": (i + 1) * 37 for i in range(12)}
    for n, (names, _) in enumerate(spec):
        fake.add_image(image_id(n), layers=[(diff(x), sizes[x]) for x in names],
                       inodes=[inodes[int(x[1:])] for x in names])
    for n in sorted(used):
        if n < len(spec):
            fake.add_container(container(n, image_id(n)))
    counts = fake.layer_inodes(list(fake.layers))
    acc = Accounting(fake.inventory(), counts)
    ids = [image_id(n) for n in chosen if n < len(spec) and n not in used]
    before = dict(fake.layers)
    predicted = acc.freed_inodes_by(ids)
    uncounted = acc.uncounted_layers(ids)
    # The FreeingSet agrees with the set function, image by image.
    freeing = acc.freeing()
    for i in ids:
        freeing.add(i)
    assert freeing.freed_inodes == predicted
    for i in ids:
        fake.images.pop(i)
    fake._collect()
    lost = [c for c in before if c not in fake.layers]
    assert predicted == sum(counts.get(c, 0) for c in lost)
    candidates = {c for i in ids for c in before_chain(spec, i)}
    pinned = {c for n in used if n < len(spec) for c in before_chain(spec, image_id(n))}
    assert uncounted == len({c for c in candidates - pinned if c not in counts})


def before_chain(spec: list[tuple[list[str], list[int]]], image: str) -> list[str]:
    """The chain ids the fake gives the image with this id in `spec`."""
    from reclaim.ondisk.digests import chain_ids

    n = next(k for k in range(len(spec)) if image_id(k) == image)
    return chain_ids([diff(x) for x in spec[n][0]])
