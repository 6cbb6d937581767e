"""Golden plans: one generated inventory and ledger, a table of policies, and the exact plan
each gives. A change in any decision, reason or byte shows up as a diff here.

Regenerate after an intended change with: pytest tests/unit/test_plan_golden.py --regen-golden
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reclaim.lastuse import LastUse, Usage
from reclaim.planfile import plan_to_json
from reclaim.policy.plan import FilesystemUsage, plan
from reclaim.policy.rules import build_policy
from sandbox.content import FixtureSpec, build_fixture
from tests.fakes import fake_from_truth, fixture_layer_inodes

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

POLICIES: dict[str, dict[str, dict[str, Any]]] = {
    "defaults": {},
    "max-age-14d": {"images": {"max_age": "14d"}},
    "quota-100M": {"images": {"quota": "100M"}},
    "quota-100M-keep": {"images": {"quota": "100M", "keep": ["fx/web:*"],
                                   "keep_latest": 1}},
    "dangling": {"images": {"dangling": "after-min-age", "min_age": "3d"}},
    "everything": {"images": {"quota": "0", "min_age": "0s"},
                   "containers": {"exited_after": "1d", "created_after": "7d"},
                   "volumes": {"dangling_after": "1d", "all": True}},
    # The filesystem below: 9,400 of 10,000 inodes in use; down to 9,250 asks for 150, which
    # the least recently used images meet.
    "inodes": {"images": {"high_inodes": 9300, "low_inodes": 9250}},
    # Down to 90%: more than every allowed image holds, so all of them go, with a warning.
    "inodes-percent": {"images": {"high_inodes": "92%", "low_inodes": "90%"}},
    # Bytes and inodes at once: 1 MiB above the byte high-water mark, asking for about 2 MiB,
    # and 50 inodes.
    "inodes-and-bytes": {"images": {"high": "9G", "low": "8.999G", "high_inodes": 9380,
                                    "low_inodes": 9350}},
    # The runtime could count only some layers: the others free 0 inodes, and it says so.
    "inodes-unknown": {"images": {"high_inodes": 9300, "low_inodes": 9250}},
}
# The filesystem that holds the data root, for the policies that need one.
FILESYSTEM = FilesystemUsage(total_bytes=10 * 1024**3, used_bytes=9 * 1024**3 + 1024**2,
                             total_inodes=10_000, used_inodes=9_400)


@functools.cache
def world() -> tuple[Any, dict[str, Usage], dict[str, datetime], dict[str, int]]:
    fixture = build_fixture(FixtureSpec())
    truth = fixture.truth
    layer_inodes = fixture_layer_inodes(fixture)
    fake, image_ids, _ = fake_from_truth(truth, created=NOW - timedelta(days=20),
                                         layer_inodes=layer_inodes)
    usage: dict[str, Usage] = {}
    for n, (key, image_id) in enumerate(sorted(image_ids.items())):
        # A spread of histories: never used, used long ago, used recently.
        first = NOW - timedelta(days=30 + n % 7)
        last = None if n % 3 == 0 else LastUse(NOW - timedelta(days=n % 25, hours=n),
                                               "event", f"job-{n}")
        usage[image_id] = Usage(image_id, first, last, None, tuple(truth.image(key).tags))
    volume_since = {v.name: NOW - timedelta(days=2 + n) for n, v in enumerate(truth.volumes)}
    inventory = fake.inventory()
    # As the command line does for the containers a plan removes (only theirs are read).
    measured = fake.container_bytes([c.id for c in inventory.containers])
    inventory = inventory._replace(containers=tuple(
        c._replace(disk_bytes=measured.get(c.id)) for c in inventory.containers))
    return inventory, usage, volume_since, layer_inodes


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_golden_plan(name: str, request: pytest.FixtureRequest) -> None:
    inventory, usage, volume_since, layer_inodes = world()
    policy = build_policy(POLICIES[name])
    inodes = policy.images.high_inodes is not None
    if name == "inodes-unknown":
        layer_inodes = {c: n for k, (c, n) in enumerate(sorted(layer_inodes.items()))
                        if k % 3}
    made = plan(inventory, usage, policy, NOW, volume_since=volume_since,
                filesystem=FILESYSTEM if inodes else None,
                layer_inodes=layer_inodes if inodes else None)
    document = plan_to_json(made)
    path = GOLDEN / f"plan-{name}.json"
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    if request.config.getoption("--regen-golden"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with --regen-golden"
    assert json.loads(path.read_text()) == document
