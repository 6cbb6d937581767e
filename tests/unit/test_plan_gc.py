"""`plan()` switches the cyclic garbage collector off while it runs and puts it back exactly as
it found it: on or off, and whether the plan returns or raises."""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from reclaim.errors import PolicyError
from reclaim.lastuse import usage_from_inventory
from reclaim.policy.plan import plan
from reclaim.policy.rules import ImagePolicy, Policy
from reclaim.runtimes.fake import FakeRuntime
from reclaim.units import Size

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    """Whatever a test does to the collector, the next test finds it as it was."""
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def fake() -> FakeRuntime:
    engine = FakeRuntime()
    for n in range(3):
        digest = "sha256:" + hashlib.sha256(f"gc-{n}".encode()).hexdigest()
        engine.add_image(digest, tags=[f"app:{n}"], layers=[(digest, 100 * (n + 1))])
    return engine


@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled"])
@pytest.mark.parametrize("raises", [False, True], ids=["returns", "raises"])
def test_plan_leaves_the_collector_as_it_found_it(enabled: bool, raises: bool) -> None:
    inventory = fake().inventory()
    # A quota in % with no filesystem to take it of cannot be planned: plan() raises.
    quota = Size(percent=50) if raises else Size(bytes=0)
    policy = Policy(images=ImagePolicy(min_age=0, quota=quota))
    if enabled:
        gc.enable()
    else:
        gc.disable()
    if raises:
        with pytest.raises(PolicyError):
            plan(inventory, usage_from_inventory(inventory, NOW), policy, NOW)
    else:
        made = plan(inventory, usage_from_inventory(inventory, NOW), policy, NOW)
        assert len(made.actions) == 3
    assert gc.isenabled() is enabled
