"""Inode watermarks: above images.high_inodes, evict least recently used first until the freed
inodes bring the filesystem down to images.low_inodes, by the same rules as the byte targets."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reclaim.accounting import Accounting
from reclaim.config import load_file, policy_from
from reclaim.errors import UsageError
from reclaim.lastuse import LastUse, Usage
from reclaim.model import Container, ContainerState
from reclaim.policy.plan import (
    FilesystemUsage,
    Plan,
    freeable_layers,
    plan,
    wants_layer_inodes,
)
from reclaim.policy.rules import DAY, ImagePolicy, InodeCount, Policy, build_policy
from reclaim.runtimes.fake import FakeRuntime
from reclaim.units import Size

NOW = datetime(2026, 6, 1, tzinfo=UTC)
EVICTING = ("quota", "watermark", "inode-watermark")


def iid(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"img{n}".encode()).hexdigest()


def layer(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def fs(used_inodes: int, *, total_inodes: int = 100_000, used_bytes: int = 0) -> FilesystemUsage:
    return FilesystemUsage(total_bytes=10**12, used_bytes=used_bytes,
                           total_inodes=total_inodes, used_inodes=used_inodes)


def inode_policy(high: int, low: int, **images: object) -> Policy:
    return Policy(images=ImagePolicy(high_inodes=InodeCount(count=high),
                                     low_inodes=InodeCount(count=low), **images))  # type: ignore[arg-type]


def used_days_ago(fake: FakeRuntime, days: dict[int, int]) -> dict[str, Usage]:
    return {iid(n): Usage(iid(n), NOW - timedelta(days=60), LastUse(NOW - timedelta(days=d),
                                                                    "event", ""))
            for n, d in days.items()}


def image_actions(p: Plan) -> list[str]:
    return [a.id for a in p.actions if a.kind == "image"]


def counts(fake: FakeRuntime) -> dict[str, int]:
    return fake.layer_inodes(list(fake.layers))


def small_world() -> tuple[FakeRuntime, dict[str, Usage]]:
    """Three images on one shared base (1,000 inodes): old (100 of its own), mid (5,000),
    new (300); used 30, 20 and 10 days ago."""
    fake = FakeRuntime()
    base = (layer("base"), 10)
    fake.add_image(iid(1), tags=["old:1"], layers=[base, (layer("old"), 1)], inodes=[1000, 100])
    fake.add_image(iid(2), tags=["mid:1"], layers=[base, (layer("mid"), 1)], inodes=[1000, 5000])
    fake.add_image(iid(3), tags=["new:1"], layers=[base, (layer("new"), 1)], inodes=[1000, 300])
    return fake, used_days_ago(fake, {1: 30, 2: 20, 3: 10})


def test_above_high_inodes_evicts_lru_until_low_and_no_further() -> None:
    fake, usage = small_world()
    # 60,000 in use, high 55,000, low 54,950: 5,050 inodes to free. Old frees 100, then mid
    # 5,000 (the base is still needed by new): 5,100, met. New is not needed.
    p = plan(fake.inventory(), usage, inode_policy(55_000, 54_950), NOW,
             filesystem=fs(60_000), layer_inodes=counts(fake))
    assert image_actions(p) == [iid(1), iid(2)]
    assert all(a.reason.rule == "inode-watermark" for a in p.actions)
    assert "60,000 inodes used, above high_inodes 55,000" in p.actions[0].reason.detail
    assert [a.reason.detail.rsplit("; ", 1)[-1] for a in p.actions] == [
        "frees 100 inodes", "frees 5,000 inodes"]
    assert {k.id: k.reason.rule for k in p.kept}[iid(3)] == "not-needed"
    assert not p.warnings


def test_a_shared_layer_is_freed_once_and_only_with_its_last_image() -> None:
    fake, usage = small_world()
    # 6,350 to free: every image goes, and the base's 1,000 inodes come with the last one.
    accounting = Accounting(fake.inventory(), counts(fake))
    freeing = accounting.freeing()
    freeing.add(iid(1))
    freeing.add(iid(2))
    assert freeing.freed_inodes == 5100
    freeing.add(iid(3))
    assert freeing.last_inodes == 300 + 1000
    assert accounting.freed_inodes_by([iid(1), iid(2), iid(3)]) == 6400
    p = plan(fake.inventory(), usage, inode_policy(55_000, 53_650), NOW,
             filesystem=fs(60_000), layer_inodes=counts(fake))
    assert image_actions(p) == [iid(1), iid(2), iid(3)]
    assert not p.warnings


def test_an_image_the_inode_target_did_not_need_is_kept() -> None:
    """LRU takes old (100) first, then mid (5,000) meets the target alone: old is put back."""
    fake, usage = small_world()
    p = plan(fake.inventory(), usage, inode_policy(55_000, 55_050), NOW,
             filesystem=fs(60_000), layer_inodes=counts(fake))
    assert image_actions(p) == [iid(2)]
    assert {k.id: k.reason.rule for k in p.kept}[iid(1)] == "not-needed"


def test_under_high_inodes_nothing_goes_and_counting_is_not_asked_for() -> None:
    fake, usage = small_world()
    policy = inode_policy(55_000, 50_000)
    assert not wants_layer_inodes(policy, fs(54_000))
    assert wants_layer_inodes(policy, fs(56_000))
    assert not wants_layer_inodes(policy, None)
    assert not wants_layer_inodes(Policy(), fs(99_000))
    p = plan(fake.inventory(), usage, policy, NOW, filesystem=fs(54_000))
    assert image_actions(p) == []
    assert {k.reason.rule for k in p.kept} == {"not-needed"}
    assert "54,000 inodes used, under high_inodes 55,000" in p.kept[0].reason.detail


def test_percent_watermarks_resolve_against_the_filesystems_inodes() -> None:
    fake, usage = small_world()
    policy = build_policy({"images": {"high_inodes": "50%", "low_inodes": "49.9%"}})
    # 60% of 100,000 in use; down to 49,900: 10,100 needed, only 6,400 can go.
    p = plan(fake.inventory(), usage, policy, NOW, filesystem=fs(60_000),
             layer_inodes=counts(fake))
    assert image_actions(p) == [iid(1), iid(2), iid(3)]
    assert p.warnings == ("inode-watermark: 3,700 inodes still over the target after every "
                          "image the rules allow; the rest are kept (in use, kept by pattern, "
                          "label or keep_latest, or younger than min_age)",)


def test_in_use_kept_and_young_images_are_never_evicted_for_inodes() -> None:
    fake, usage = small_world()
    fake.add_container(Container("c" * 64, "job", iid(2), ContainerState.EXITED, created=NOW))
    usage[iid(1)] = Usage(iid(1), NOW - timedelta(days=60), LastUse(NOW - timedelta(hours=1),
                                                                    "event", ""))
    p = plan(fake.inventory(), usage, inode_policy(55_000, 40_000), NOW,
             filesystem=fs(60_000), layer_inodes=counts(fake))
    # Only new may go; the base is pinned by the container, so it frees its own 300.
    assert image_actions(p) == [iid(3)]
    assert p.actions[0].reason.rule == "inode-watermark"
    kept = {k.id: k.reason.rule for k in p.kept}
    assert kept[iid(1)] == "min-age"
    assert kept[iid(2)] == "in-use"
    assert "inode-watermark: 19,700 inodes still over" in p.warnings[0]


def test_layers_without_a_count_free_no_inodes_and_the_plan_says_so() -> None:
    fake, usage = small_world()
    known = {c: n for c, n in counts(fake).items() if c != fake.images[iid(2)].chain[-1]}
    p = plan(fake.inventory(), usage, inode_policy(55_000, 54_950), NOW,
             filesystem=fs(60_000), layer_inodes=known)
    # Mid's 5,000 are unknown: 100 + 0 + 300 + 1,000 freed, all three go, still short.
    assert image_actions(p) == [iid(1), iid(2), iid(3)]
    assert any("no inode count for 1 layer(s)" in w for w in p.warnings)
    assert any("3,650 inodes still over" in w for w in p.warnings)
    # Not counted at all (the runtime could count nothing): every layer is unknown.
    p = plan(fake.inventory(), usage, inode_policy(55_000, 54_950), NOW, filesystem=fs(60_000))
    assert any("no inode count for 4 layer(s)" in w for w in p.warnings)


def test_a_filesystem_without_inode_counts_or_unknown_is_said_not_guessed() -> None:
    fake, usage = small_world()
    policy = inode_policy(55_000, 50_000)
    p = plan(fake.inventory(), usage, policy, NOW, filesystem=fs(0, total_inodes=0))
    assert image_actions(p) == []
    assert p.warnings and "reports no inode counts" in p.warnings[0]
    p = plan(fake.inventory(), usage, policy, NOW)
    assert image_actions(p) == []
    assert p.warnings and "filesystem is not known" in p.warnings[0]
    # The byte watermarks likewise, rather than silently doing nothing.
    p = plan(fake.inventory(), usage, Policy(images=ImagePolicy(
        high=Size(bytes=10), low=Size(bytes=5))), NOW)
    assert image_actions(p) == []
    assert p.warnings == ("watermark: the engine's filesystem is not known here (a remote "
                          "engine?); the byte watermarks are not applied",)


def test_byte_and_inode_watermarks_are_both_met() -> None:
    """Bytes ask for old alone; inodes ask for more: LRU goes on until both hold, and each
    deletion names the target that still needed it."""
    fake = FakeRuntime()
    fake.add_image(iid(1), tags=["a:1"], layers=[(layer("a"), 5000)], inodes=[10])
    fake.add_image(iid(2), tags=["b:1"], layers=[(layer("b"), 10)], inodes=[500])
    fake.add_image(iid(3), tags=["c:1"], layers=[(layer("c"), 10)], inodes=[500])
    fake.add_image(iid(4), tags=["d:1"], layers=[(layer("d"), 10)], inodes=[500])
    usage = used_days_ago(fake, {1: 40, 2: 30, 3: 20, 4: 10})
    policy = Policy(images=ImagePolicy(high=Size(bytes=90_000), low=Size(bytes=86_000),
                                       high_inodes=InodeCount(count=1900),
                                       low_inodes=InodeCount(count=1000)))
    p = plan(fake.inventory(), usage, policy, NOW,
             filesystem=fs(2000, used_bytes=90_500), layer_inodes=counts(fake))
    assert image_actions(p) == [iid(1), iid(2), iid(3)]
    assert [a.reason.rule for a in p.actions] == ["watermark", "inode-watermark",
                                                  "inode-watermark"]
    assert not p.warnings


def test_max_age_deletions_count_towards_the_inode_target() -> None:
    fake, usage = small_world()
    policy = inode_policy(55_000, 54_950, max_age=25 * DAY)
    # Old goes by max_age (100 inodes); 4,950 more are needed: mid's 5,000.
    p = plan(fake.inventory(), usage, policy, NOW, filesystem=fs(60_000),
             layer_inodes=counts(fake))
    assert [(a.id, a.reason.rule) for a in p.actions] == [(iid(1), "max-age"),
                                                         (iid(2), "inode-watermark")]


def test_only_layers_a_deletion_could_free_are_counted() -> None:
    fake, _ = small_world()
    fake.add_container(Container("c" * 64, "job", iid(2), ContainerState.RUNNING, created=NOW))
    chain = {n: fake.images[iid(n)].chain for n in (1, 2, 3)}
    assert sorted(freeable_layers(fake.inventory())) == sorted([chain[1][1], chain[3][1]])


# -- properties ------------------------------------------------------------------------------


@st.composite
def worlds(draw: st.DrawFn) -> tuple[FakeRuntime, dict[str, Usage], Policy, FilesystemUsage]:
    fake = FakeRuntime()
    n_images = draw(st.integers(1, 10))
    usage: dict[str, Usage] = {}
    inode_of = {x: draw(st.one_of(st.none(), st.integers(0, 400))) for x in range(8)}
    for n in range(n_images):
        layers = draw(st.lists(st.integers(0, 7), min_size=1, max_size=4))
        fake.add_image(iid(n), tags=[f"r{n}:1"],
                       layers=[(f"sha256:{x:064x}", (x + 1) * 100) for x in layers],
                       inodes=[inode_of[x] for x in layers])
        used = draw(st.integers(0, 40))
        usage[iid(n)] = Usage(iid(n), NOW - timedelta(days=60),
                              LastUse(NOW - timedelta(days=used), "event", ""))
    for k, n in enumerate(draw(st.lists(st.integers(0, n_images - 1), max_size=3))):
        fake.add_container(Container(f"{k:064x}", f"c{k}", iid(n),
                                     draw(st.sampled_from(list(ContainerState))), created=NOW))
    used_inodes = draw(st.integers(0, 5000))
    high = draw(st.integers(0, 5000))
    low = draw(st.integers(0, high))
    quota = draw(st.one_of(st.none(), st.integers(0, 4000)))
    policy = Policy(images=ImagePolicy(
        min_age=draw(st.sampled_from([0.0, 7 * DAY])),
        quota=None if quota is None else Size(bytes=quota),
        high_inodes=InodeCount(count=high), low_inodes=InodeCount(count=low)))
    return fake, usage, policy, fs(used_inodes, total_inodes=10_000)


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_inode_eviction_meets_the_targets_when_allowed_and_never_overshoots(
    world: tuple[FakeRuntime, dict[str, Usage], Policy, FilesystemUsage]
) -> None:
    fake, usage, policy, filesystem = world
    inventory = fake.inventory()
    layer_inodes = counts(fake)
    p = plan(inventory, usage, policy, NOW, filesystem=filesystem, layer_inodes=layer_inodes)
    accounting = Accounting(inventory, layer_inodes)
    rules = policy.images
    assert rules.high_inodes is not None and rules.low_inodes is not None
    high, low = rules.high_inodes.count or 0, rules.low_inodes.count or 0
    deleted = image_actions(p)
    used = {c.image_id for c in inventory.containers}
    assert not used & set(deleted)  # in-use images are never chosen
    for image_id in deleted:
        assert (NOW - usage[image_id].age_basis.when).total_seconds() >= rules.min_age

    def over(ids: list[str]) -> tuple[bool, bool]:
        """(bytes over the quota, inodes over the low watermark) after deleting `ids`."""
        quota_over = (rules.quota is not None and accounting.total_bytes()
                      - accounting.freed_by(ids) > (rules.quota.bytes or 0))
        inode_over = (filesystem.used_inodes > high and filesystem.used_inodes
                      - accounting.freed_inodes_by(ids) > low)
        return quota_over, inode_over

    quota_over, inode_over = over(deleted)
    if quota_over or inode_over:
        # Over a target only when every image the rules allow is gone, and the plan says so.
        assert not [k for k in p.kept if k.reason.rule == "not-needed"]
        if quota_over:
            assert any(w.startswith("quota:") for w in p.warnings)
        if inode_over:
            assert any(w.startswith("inode-watermark:") for w in p.warnings)
    # No overshoot: without any one evicted image, some target would not be met.
    evicted = [a.id for a in p.actions if a.reason.rule in EVICTING]
    for image_id in evicted:
        assert any(over([i for i in deleted if i != image_id]))
    # Above high_inodes, the freed inodes reported are what the accounting says.
    assert sum(1 for a in p.actions if a.reason.rule == "inode-watermark") == 0 or \
        filesystem.used_inodes > high


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("images", "message"), [
    ({"high_inodes": "90%"}, "images.high_inodes and images.low_inodes: set both"),
    ({"low_inodes": 1000}, "images.high_inodes and images.low_inodes: set both"),
    ({"high_inodes": "5Q", "low_inodes": 1}, 'images.high_inodes: "5Q" is not an inode count'),
    ({"high_inodes": "2M", "low_inodes": 1}, 'images.high_inodes: "2M" is not an inode count'),
    ({"high_inodes": -5, "low_inodes": 1}, "images.high_inodes: -5 is not an inode count"),
    ({"high_inodes": 2.5, "low_inodes": 1}, "images.high_inodes: 2.5 is not an inode count"),
    ({"high_inodes": True, "low_inodes": 1}, "images.high_inodes: True is not an inode count"),
    ({"high_inodes": "90%", "low_inodes": "120%"},
     'images.low_inodes: "120%" is not a percentage between 0% and 100%'),
    ({"high_inodes": 1000, "low_inodes": 2000},
     "images.low_inodes: must be below images.high_inodes"),
    ({"high_inodes": "80%", "low_inodes": "90%"},
     "images.low_inodes: must be below images.high_inodes"),
])
def test_bad_inode_watermarks_are_refused_naming_the_setting(
    images: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError) as info:
        build_policy({"images": images})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_inode_watermarks_from_the_file_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[images]\nhigh_inodes = "90%"\nlow_inodes = "80%"\n')
    policy = policy_from(load_file(config), {})
    assert policy.images.high_inodes == InodeCount(percent=90.0)
    assert policy.images.low_inodes == InodeCount(percent=80.0)
    config.write_text("[images]\nhigh_inodes = 900000\nlow_inodes = 800000\n")
    assert policy_from(load_file(config), {}).images.low_inodes == InodeCount(count=800_000)
    config.write_text('[images]\nhigh_inodes = "90%"\nlow_inodes = "80%"\n')
    # Flags override the file, setting by setting; flags arrive as strings.
    policy = policy_from(load_file(config), {"images": {"low_inodes": "85%"}})
    assert policy.images.low_inodes == InodeCount(percent=85.0)
    assert policy.describe()["images"]["high_inodes"] == "90.0%"
    assert build_policy({"images": {"high_inodes": "2000000", "low_inodes": 0}}).describe()[
        "images"]["high_inodes"] == 2_000_000
