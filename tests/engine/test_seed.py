"""Seeding a real engine: what the API and the data root show must be what the truth says.

Each engine kind gets one private engine for the module; the last test deletes an image, so
it runs after the read-only ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from reclaim.model import ContainerState
from sandbox import engines
from sandbox.archive import chain_ids
from sandbox.content import (
    ANONYMOUS_VOLUME_LABEL,
    Fixture,
    FixtureSpec,
    build_fixture,
)
from sandbox.seed import SeededTruth, seed

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("dockerd", path=engines.SYSTEM_PATH) is None,
        reason="needs root and Debian's docker.io",
    ),
]

KINDS = ("docker20", "docker26-containerd")
CONTENT = "containerd/daemon/io.containerd.content.v1.content/blobs/sha256"
SNAPSHOTS = "containerd/daemon/io.containerd.snapshotter.v1.overlayfs/snapshots"


@dataclass(frozen=True)
class Seeded:
    engine: engines.SandboxEngine
    client: Any
    fixture: Fixture
    truth: SeededTruth


@pytest.fixture(scope="module", params=KINDS)
def seeded(request: pytest.FixtureRequest) -> Iterator[Seeded]:
    # Short and under /tmp: the engine's unix sockets live below it.
    base = Path(tempfile.mkdtemp(prefix="cgs-", dir="/tmp"))
    engine = engines.start(request.param, base)
    try:
        client = docker.APIClient(base_url=engine.url, version="auto", timeout=120)
        fixture = build_fixture(FixtureSpec.small())
        truth = seed(client, fixture, base / "work")
        yield Seeded(engine, client, fixture, truth)
    finally:
        engines.stop(engine, remove=True)
        shutil.rmtree(base, ignore_errors=True)


def test_engine_reports_the_expected_image_store(seeded: Seeded) -> None:
    expected = "containerd" if seeded.engine.kind.endswith("containerd") else "overlay2"
    assert seeded.truth.engine.image_store == expected
    assert seeded.truth.store == expected


def test_images_have_the_truth_tags_and_chains(seeded: Seeded) -> None:
    client, truth = seeded.client, seeded.truth
    listed = {i["Id"]: i for i in client.images()}
    dangling = {i["Id"] for i in client.images(filters={"dangling": True})}
    assert len(listed) == len(truth.truth.images)
    assert dangling == {truth.image_ids[i.key] for i in truth.truth.images if i.dangling}
    for img in truth.truth.images:
        engine_id = truth.image_ids[img.key]
        inspected = client.inspect_image(engine_id)
        assert chain_ids(inspected["RootFS"]["Layers"]) == list(img.chain)
        if truth.store == "overlay2":
            assert engine_id == img.config_digest
        else:
            # The containerd store names an image by its manifest, never its config.
            assert engine_id != img.config_digest
        # Dangling images are listed as "<none>:<none>" by older engines, untagged by newer.
        tags = [t for t in listed[engine_id]["RepoTags"] or [] if t != "<none>:<none>"]
        assert sorted(tags) == sorted(img.tags)


def test_containers_are_in_their_states(seeded: Seeded) -> None:
    client, truth = seeded.client, seeded.truth
    found = {c["Id"]: c for c in client.containers(all=True)}
    assert set(found) == set(truth.container_ids.values())
    for c in truth.truth.containers:
        info = client.inspect_container(truth.container_ids[c.name])
        assert info["Name"] == "/" + c.name
        assert ContainerState.parse(info["State"]["Status"]) is c.state
        assert info["Image"] == truth.image_ids[c.image]
        assert info["HostConfig"]["NetworkMode"] == "none"
        if c.state is ContainerState.EXITED:
            assert info["State"]["ExitCode"] == 0
        mounted = {m["Name"] for m in info["Mounts"] if m["Type"] == "volume"}
        assert mounted == {name for name, _ in c.mounts}
    assert any(truth.truth.image(c.image).dangling for c in truth.truth.containers)


def test_volumes_and_their_data(seeded: Seeded) -> None:
    client, truth = seeded.client, seeded.truth
    volumes = {v["Name"]: v for v in client.volumes()["Volumes"] or []}
    assert set(volumes) == {v.name for v in truth.truth.volumes}
    dangling = client.volumes(filters={"dangling": True})["Volumes"] or []
    assert {v["Name"] for v in dangling} == {v.name for v in truth.truth.volumes if v.dangling}
    new_engine = docker.utils.version_gte(truth.engine.api_version, "1.42")
    for v in truth.truth.volumes:
        labels = volumes[v.name]["Labels"] or {}
        assert (ANONYMOUS_VOLUME_LABEL in labels) == (v.anonymous and new_engine)
        root = Path(volumes[v.name]["Mountpoint"])
        on_disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        assert on_disk == v.data_bytes > 0


def _layerdb_sizes(data_root: Path) -> dict[str, int]:
    layerdb = data_root / "image/overlay2/layerdb/sha256"
    return {"sha256:" + d.name: int((d / "size").read_text()) for d in layerdb.iterdir()}


def _blob_sizes(data_root: Path) -> dict[str, int]:
    return {"sha256:" + p.name: p.stat().st_size for p in (data_root / CONTENT).iterdir()}


def _snapshot_usage(data_root: Path) -> Counter[int]:
    """Each snapshot's usage measured as the containerd snapshotter does: st_blocks * 512 of
    everything below its fs/, each inode once."""
    usage: Counter[int] = Counter()
    for snap in (data_root / SNAPSHOTS).iterdir():
        seen: set[int] = set()
        total = 0
        for dirpath, dirnames, filenames in os.walk(snap / "fs"):
            for name in [".", *dirnames, *filenames]:
                st = os.lstat(os.path.join(dirpath, name))
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_blocks * 512
        usage[total] += 1
    return usage


def test_layer_sizes_on_disk_are_the_truth(seeded: Seeded) -> None:
    truth, root = seeded.truth.truth, seeded.engine.data_root
    if seeded.truth.store == "overlay2":
        sizes = _layerdb_sizes(root)
        assert set(sizes) == set(truth.layers)
        for chain, layer in truth.layers.items():
            assert sizes[chain] == layer.content_bytes, chain
    else:
        blobs = _blob_sizes(root)
        for diff_id, size in truth.blob_sizes().items():
            assert blobs[diff_id] == size, diff_id
        # Snapshots are keyed in bolt metadata; their usage figures, as a multiset, must
        # contain one entry per layer of the truth (container snapshots come on top).
        expected = Counter(layer.allocated_bytes for layer in truth.layers.values())
        assert not expected - _snapshot_usage(root)


def test_deleting_an_unused_image_frees_its_exclusive_bytes(seeded: Seeded) -> None:
    client, truth, root = seeded.client, seeded.truth, seeded.engine.data_root
    pinned = {c.image for c in truth.truth.containers}
    victim = next(
        i for i in truth.truth.images if i.key not in pinned and truth.exclusive_bytes(i.key)
    )
    if truth.store == "overlay2":
        before = sum(_layerdb_sizes(root).values())
    else:
        before_blobs = _blob_sizes(root)
        before_usage = _snapshot_usage(root)
    for tag in victim.tags:
        client.remove_image(tag)
    assert truth.image_ids[victim.key] not in {i["Id"] for i in client.images(all=True)}

    if truth.store == "overlay2":
        assert before - sum(_layerdb_sizes(root).values()) == truth.exclusive_bytes(victim.key)
        return
    # containerd removes content and snapshots in its garbage collection, just after.
    layer_blobs = truth.truth.blob_sizes()
    deadline = time.monotonic() + 20
    while True:
        gone_blobs = set(before_blobs) - set(_blob_sizes(root))
        freed_usage = before_usage - _snapshot_usage(root)
        freed = sum(size * n for size, n in freed_usage.items())
        freed += sum(layer_blobs[d] for d in gone_blobs if d in layer_blobs)
        if freed >= truth.exclusive_bytes(victim.key) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert freed == truth.exclusive_bytes(victim.key)
    # Besides the layer blobs, only the image's own config and manifest go.
    assert victim.config_digest in gone_blobs
    assert len(gone_blobs - set(layer_blobs)) == 2
