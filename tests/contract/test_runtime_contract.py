"""One behaviour suite for every runtime: the in-memory fake and the Docker adapter on each
engine configuration. Whatever the policy and apply code rely on is pinned here, so the fake
cannot drift from the engines it stands in for."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import docker
import pytest

from reclaim.errors import InUse, NotFound
from reclaim.model import Container, ContainerState
from reclaim.runtimes.base import (
    ContainerSizing,
    LayerInodeCounting,
    Runtime,
    TagRestoring,
    UseWatching,
)
from reclaim.runtimes.docker import DockerRuntime
from sandbox.content import FixtureSpec, GroundTruth, build_fixture
from tests.conftest import KINDS
from tests.fakes import fake_from_truth, fixture_layer_inodes

KiB = 1024


@dataclass
class Backend:
    name: str
    runtime: Runtime
    truth: GroundTruth
    store: str
    image_ids: Mapping[str, str]  # truth key -> the runtime's image id
    container_ids: Mapping[str, str]  # truth name -> the runtime's container id
    # Scratch objects for the removal tests, so the seeded state stays as the truth says.
    make_image: Callable[[tuple[str, ...]], str]
    make_container: Callable[[str], str]


def _fake_backend() -> Backend:
    fixture = build_fixture(FixtureSpec.small())
    truth = fixture.truth
    fake, image_ids, container_ids = fake_from_truth(
        truth, layer_inodes=fixture_layer_inodes(fixture))

    def make_image(tags: tuple[str, ...]) -> str:
        image_id = "sha256:" + hashlib.sha256(repr(tags).encode()).hexdigest()
        # Each scratch image has a layer of its own, with its file and its root directory.
        layer = "sha256:" + hashlib.sha256(repr(tags).encode()).hexdigest()
        fake.add_image(image_id, tags=tags, layers=[(layer, 10)], inodes=[2])
        return image_id

    def make_container(image_ref: str) -> str:
        image = fake._resolve(image_ref)
        cid = hashlib.sha256(f"scratch-{image.id}".encode()).hexdigest()
        fake.add_container(Container(id=cid, name="scratch", image_id=image.id,
                                     state=ContainerState.CREATED, created=None))
        return cid

    return Backend("fake", fake, truth, "overlay2", image_ids, container_ids,
                   make_image, make_container)


def _scratch_tar(name: str) -> bytes:
    """A one-file layer; its content names the image, so no two scratch images share it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = f"contract {name}\n".encode()
        info = tarfile.TarInfo("scratch.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _docker_backend(request: pytest.FixtureRequest, kind: str) -> Backend:
    seeded = request.getfixturevalue("engine_pool").get(kind)
    client = docker.APIClient(base_url=seeded.engine.url, version="auto", timeout=120)
    request.addfinalizer(client.close)

    def make_image(tags: tuple[str, ...]) -> str:
        repo, tag = tags[0].rsplit(":", 1)
        client.import_image_from_data(_scratch_tar(tags[0]), repository=repo, tag=tag)
        for extra in tags[1:]:
            r, t = extra.rsplit(":", 1)
            client.tag(tags[0], r, t)
        return str(client.inspect_image(tags[0])["Id"])

    def make_container(image_ref: str) -> str:
        created = client.create_container(
            image_ref, command=["/scratch.txt"], network_disabled=True,
            host_config=client.create_host_config(network_mode="none"),
        )
        return str(created["Id"])

    runtime = DockerRuntime(seeded.engine.url)
    request.addfinalizer(runtime.close)
    return Backend(kind, runtime, seeded.truth.truth, seeded.truth.store,
                   seeded.truth.image_ids, seeded.truth.container_ids,
                   make_image, make_container)


@pytest.fixture(params=["fake", *KINDS])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "fake":
        yield _fake_backend()
    else:
        request.applymarker(pytest.mark.engine)
        yield _docker_backend(request, str(request.param))


def test_lists_every_image_with_its_tags(backend: Backend) -> None:
    inventory = backend.runtime.inventory()
    by_id = {i.id: i for i in inventory.images}
    for key, image_id in backend.image_ids.items():
        assert sorted(by_id[image_id].tags) == sorted(backend.truth.image(key).tags)
    assert sum(1 for i in inventory.images if i.dangling) >= sum(
        1 for i in backend.truth.images if i.dangling)


def test_layer_chains_and_sizes_are_the_engines(backend: Backend) -> None:
    inventory = backend.runtime.inventory()
    by_id = {i.id: i for i in inventory.images}
    for key, image_id in backend.image_ids.items():
        truth = backend.truth.image(key)
        assert by_id[image_id].chain == truth.chain
        for chain_id in truth.chain:
            layer = backend.truth.layers[chain_id]
            expected = (layer.allocated_bytes if backend.store == "containerd"
                        else layer.content_bytes)
            assert abs(inventory.layers[chain_id].size - expected) <= 64 * KiB, chain_id


# Around a layer's own files, what an engine keeps for it on disk (Docker's layerdb entry and
# layer directory, the snapshot directory of containerd's snapshotter): a handful of inodes.
LAYER_BOOKKEEPING_INODES = 16


def test_layer_inodes_count_the_unpacked_files(backend: Backend) -> None:
    """What the inode watermarks rely on. Every layer of the seeded fixture is counted (the
    sandbox engines keep a data root the adapter can read), at least one inode per entry of
    the layer plus its root directory and at most a handful more for the engine's own files.
    Chain ids the engine does not hold are left out (unknown), never reported as 0."""
    counted = build_fixture(FixtureSpec.small())
    expected = {c: n for c, n in fixture_layer_inodes(counted).items()
                if c in backend.truth.layers}
    missing = "sha256:" + "0" * 64
    runtime = backend.runtime
    assert isinstance(runtime, LayerInodeCounting)
    got = runtime.layer_inodes([*expected, missing])
    assert missing not in got
    assert set(got) == set(expected)
    for chain_id, entries in expected.items():
        assert entries <= got[chain_id] <= entries + LAYER_BOOKKEEPING_INODES, chain_id


def test_a_layer_gone_with_its_image_is_no_longer_counted(backend: Backend) -> None:
    runtime = backend.runtime
    assert isinstance(runtime, LayerInodeCounting)
    image_id = backend.make_image(("contract/inodes:1",))
    chain = {i.id: i for i in runtime.inventory().images}[image_id].chain
    own = [c for c in chain if not any(c in i.chain for i in runtime.inventory().images
                                       if i.id != image_id)]
    assert own and set(runtime.layer_inodes(own)) == set(own)
    runtime.remove_image("contract/inodes:1")
    assert runtime.layer_inodes(own) == {}


def test_containers_of_every_state_with_their_images(backend: Backend) -> None:
    inventory = backend.runtime.inventory()
    by_id = {c.id: c for c in inventory.containers}
    for c in backend.truth.containers:
        got = by_id[backend.container_ids[c.name]]
        assert got.state == c.state
        assert got.image_id == backend.image_ids[c.image]


def test_container_bytes_are_measured_apart_and_unknown_left_out(backend: Backend) -> None:
    """What a plan's container actions carry. The inventory itself has no such figure (df
    must not pay for it); asked for, every stopped container of the seeded fixture is
    measured, at least its directory and its layers' directories, and an id the engine does
    not hold is left out (unknown), never reported as 0."""
    inventory = backend.runtime.inventory()
    assert all(c.disk_bytes is None for c in inventory.containers)
    stopped = [backend.container_ids[c.name] for c in backend.truth.containers
               if c.state.stopped]
    assert stopped
    missing = "0" * 64
    runtime = backend.runtime
    assert isinstance(runtime, ContainerSizing)
    got = runtime.container_bytes([*stopped, missing])
    assert set(got) == set(stopped)
    for container_id in stopped:
        assert got[container_id] >= 5 * 4096, container_id


def test_volumes_know_their_users(backend: Backend) -> None:
    inventory = backend.runtime.inventory()
    by_name = {v.name: v for v in inventory.volumes}
    for v in backend.truth.volumes:
        assert by_name[v.name].dangling == v.dangling, v.name
        assert by_name[v.name].anonymous == v.anonymous, v.name
        assert sorted(by_name[v.name].used_by) == sorted(
            backend.container_ids[n] for n in v.used_by)


def test_removal_follows_the_engines_rules(backend: Backend) -> None:
    rt = backend.runtime
    image_id = backend.make_image(("contract/scratch:1", "contract/scratch:2"))
    # An id with several tags is refused without force.
    with pytest.raises(InUse):
        rt.remove_image(image_id)
    # Removing one of several tags only untags, even though that needs no force.
    rt.remove_image("contract/scratch:1")
    left = {i.id: i for i in rt.inventory().images}[image_id]
    assert left.tags == ("contract/scratch:2",)
    # The last tag of an image a container (never started) uses is refused.
    container_id = backend.make_container("contract/scratch:2")
    with pytest.raises(InUse):
        rt.remove_image("contract/scratch:2")
    rt.remove_container(container_id)
    rt.remove_image("contract/scratch:2")
    assert image_id not in {i.id for i in rt.inventory().images}
    with pytest.raises(NotFound):
        rt.remove_image("contract/never-there:1")
    with pytest.raises(NotFound):
        rt.remove_container("f" * 64)


def test_running_containers_and_used_volumes_are_refused(backend: Backend) -> None:
    running = next(c for c in backend.truth.containers if c.state is ContainerState.RUNNING)
    with pytest.raises(InUse):
        backend.runtime.remove_container(backend.container_ids[running.name])
    used = next(v for v in backend.truth.volumes if not v.dangling)
    with pytest.raises(InUse):
        backend.runtime.remove_volume(used.name)
    inventory = backend.runtime.inventory()
    assert backend.container_ids[running.name] in {c.id for c in inventory.containers}
    assert used.name in {v.name for v in inventory.volumes}


def test_tags_removed_before_a_refusal_are_put_back(backend: Backend) -> None:
    """Apply's put-back: a tag removed, then a container made from the image, so that the
    engine refuses its last tag; the tag removed before is given back."""
    from reclaim.apply import _put_back

    rt = backend.runtime
    assert isinstance(rt, TagRestoring)
    image_id = backend.make_image(("contract/back:1", "contract/back:2"))
    assert rt.remove_image_ref("contract/back:1") is False  # only the tag went
    container_id = backend.make_container("contract/back:2")
    with pytest.raises(InUse):
        rt.remove_image_ref("contract/back:2")
    said = _put_back(rt, image_id, ["contract/back:1"])
    assert said == "; its removed tags contract/back:1 were put back"
    assert sorted(rt.image_refs(image_id) or ()) == ["contract/back:1", "contract/back:2"]
    # A name that meanwhile names another image is not taken from it.
    other = backend.make_image(("contract/other:1",))
    rt.remove_image_ref("contract/back:1")
    rt.tag_image(other, "contract/back:1")
    assert "could not put back contract/back:1" in _put_back(rt, image_id, ["contract/back:1"])
    assert "contract/back:1" in (rt.image_refs(other) or ())
    rt.remove_container(container_id)
    assert rt.remove_image_ref("contract/back:2") is True  # the image itself went
    for ref in ("contract/back:1", "contract/other:1"):
        rt.remove_image(ref)


def test_the_use_watch_sees_what_comes_after_it(backend: Backend) -> None:
    import time
    from datetime import UTC, datetime

    rt = backend.runtime
    assert isinstance(rt, UseWatching)
    image_id = backend.make_image(("contract/watched:1",))
    quiet_id = backend.make_image(("contract/quiet:1",))
    watch = rt.watch_uses(datetime.now(UTC))
    assert watch is not None and watch.live
    try:
        container_id = backend.make_container("contract/watched:1")
        deadline = time.monotonic() + 20  # a real engine's event arrives a moment later
        why = watch.why_not(image_id, ("contract/watched:1",))
        while why is None and time.monotonic() < deadline:
            time.sleep(0.05)
            why = watch.why_not(image_id, ("contract/watched:1",))
        assert why is not None and "created from it" in why
        assert watch.why_not(quiet_id, ("contract/quiet:1",)) is None
    finally:
        watch.close()
    rt.remove_container(container_id)
    rt.remove_image("contract/watched:1")
    rt.remove_image("contract/quiet:1")
