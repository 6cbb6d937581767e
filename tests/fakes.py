"""The in-memory engine loaded with a generated fixture, as a real engine would hold it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime

from reclaim.model import Container, Mount, Volume
from reclaim.runtimes.fake import FakeRuntime
from sandbox.content import Fixture, GroundTruth


def fixture_layer_inodes(fixture: Fixture) -> dict[str, int]:
    """Inodes each layer of the fixture holds unpacked, by chain id: one per entry of its tar
    (parent directories are explicit entries, there are no hard links) and one for the
    layer's root directory."""
    return {chain_id: len(fixture.layer_specs[layer.diff_id].entries) + 1
            for chain_id, layer in fixture.truth.layers.items()}


# What removing a container that wrote nothing frees on overlay2, about: its directory
# (config, hostname, an empty log), its layer records and its empty read-write and init layers.
EMPTY_CONTAINER_BYTES = 73_600


def fake_from_truth(
    truth: GroundTruth, *, created: datetime | None = None,
    layer_inodes: Mapping[str, int] | None = None,
) -> tuple[FakeRuntime, dict[str, str], dict[str, str]]:
    """The fake, and the ids it gave images (by truth key) and containers (by name).
    `layer_inodes` (by chain id, e.g. `fixture_layer_inodes`) is what the fake's
    `layer_inodes` reports; layers not in it cannot be counted."""
    fake = FakeRuntime()
    image_ids: dict[str, str] = {}
    counts = layer_inodes or {}
    for image in truth.images:
        layers = [(truth.layers[c].diff_id, truth.layers[c].content_bytes) for c in image.chain]
        fake.add_image(image.config_digest, tags=image.tags, layers=layers,
                       inodes=[counts.get(c) for c in image.chain],
                       labels=dict(image.labels), metadata_bytes=image.config_bytes)
        image_ids[image.key] = image.config_digest
    container_ids: dict[str, str] = {}
    for c in truth.containers:
        cid = hashlib.sha256(c.name.encode()).hexdigest()
        fake.add_container(Container(
            id=cid, name=c.name, image_id=image_ids[c.image], state=c.state, created=created,
            finished=created, mounts=tuple(Mount("volume", v, "", dest) for v, dest in c.mounts),
            labels=dict(c.labels), disk_bytes=EMPTY_CONTAINER_BYTES,
        ))
        container_ids[c.name] = cid
    for v in truth.volumes:
        fake.add_volume(Volume(name=v.name, driver="local", labels=dict(v.labels),
                               anonymous=v.anonymous, mountpoint="", bytes=v.data_bytes,
                               used_by=()))
    return fake, image_ids, container_ids
