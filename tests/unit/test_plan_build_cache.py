"""The build-cache action's predicted bytes: the engine's reclaimable bytes, no more than what
brings the cache down to keep_storage, and 0 (said so) where the engine lists no cache."""

from __future__ import annotations

from datetime import UTC, datetime

from reclaim.config import policy_from
from reclaim.model import BuildCache
from reclaim.policy.plan import FilesystemUsage, plan
from reclaim.runtimes.fake import FakeRuntime

NOW = datetime(2026, 3, 1, tzinfo=UTC)
MiB = 1024 * 1024


def _action(cache: BuildCache, settings: dict[str, object],
            filesystem: FilesystemUsage | None = None) -> tuple[int, str]:
    fake = FakeRuntime()
    fake.build_cache = cache
    made = plan(fake.inventory(), {}, policy_from({"build_cache": settings}, {}), NOW,
                filesystem=filesystem)
    [action] = [a for a in made.actions if a.kind == "build-cache"]
    assert made.predicted_bytes == action.bytes
    return action.bytes, action.reason.detail


def test_keep_storage_caps_the_prediction() -> None:
    cache = BuildCache(count=9, bytes=30 * MiB, reclaimable_bytes=25 * MiB)
    assert _action(cache, {"keep_storage": "10M"})[0] == 20 * MiB
    assert _action(cache, {"keep_storage": "1M"})[0] == 25 * MiB  # only what is reclaimable
    assert _action(cache, {"keep_storage": "40M"})[0] == 0
    fs = FilesystemUsage(total_bytes=1000 * MiB, used_bytes=500 * MiB)
    assert _action(cache, {"keep_storage": "2%"}, fs)[0] == 10 * MiB


def test_an_age_alone_predicts_at_most_the_reclaimable_bytes() -> None:
    cache = BuildCache(count=9, bytes=30 * MiB, reclaimable_bytes=25 * MiB)
    predicted, detail = _action(cache, {"older_than": "7d"})
    assert predicted == 25 * MiB and "at most" in detail


def test_a_cache_the_engine_does_not_list_is_not_predicted() -> None:
    predicted, detail = _action(BuildCache(None, None, None), {"keep_storage": "1M"})
    assert predicted == 0 and "--sizes" in detail
