"""The command functions on the in-memory engine: they leave the interpreter as they found it,
and a runtime without a capability makes them do without it and say so, never fail."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reclaim.cli import main
from reclaim.commands.apply import apply_command
from reclaim.commands.plan import plan_command
from reclaim.commands.session import Session
from reclaim.model import BuildCache
from reclaim.policy.plan import FilesystemUsage
from reclaim.policy.rules import build_policy
from reclaim.runtimes import base
from reclaim.runtimes.base import Runtime
from reclaim.runtimes.fake import FakeRuntime

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def iid(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def engine() -> FakeRuntime:
    fake = FakeRuntime()
    for n in range(6):
        fake.add_image(iid(n), tags=[f"app{n}:1", f"app{n}:2"],
                       layers=[(iid(100 + n), 1000 + n)], inodes=[10])
    fake.build_cache = BuildCache(2, 5000, 4000)
    return fake


class Without:
    """A runtime lacking some capabilities: the fake, with those methods out of reach."""

    def __init__(self, fake: FakeRuntime, *methods: str) -> None:
        self._fake = fake
        self._hidden = set(methods)

    def __getattr__(self, name: str) -> Any:
        if name in self._hidden:
            raise AttributeError(name)
        return getattr(self._fake, name)


@dataclass(frozen=True)
class On(Session):
    runtime_object: Any = None

    def open_runtime(self, *, listings_from_disk: bool = False) -> Runtime:
        return self.runtime_object  # type: ignore[no-any-return]


@pytest.fixture
def notices() -> list[str]:
    return []


# -- what a command changes in the interpreter, it restores ---------------------------------

@pytest.fixture
def collector_state(request: pytest.FixtureRequest) -> Iterator[bool]:
    was = gc.isenabled()
    (gc.enable if request.param else gc.disable)()
    try:
        yield bool(request.param)
    finally:
        (gc.enable if was else gc.disable)()


@pytest.mark.parametrize("collector_state", [True, False], indirect=True)
@pytest.mark.parametrize("args", [["df"], ["df", "--json"], ["plan", "--max-age", "1d"],
                                  ["history"]])
def test_commands_leave_the_collector_as_they_found_it(
        collector_state: bool, args: list[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake = engine()
    monkeypatch.setattr(Session, "open_runtime", lambda self, **kw: fake)
    assert main(["--state-dir", str(tmp_path), *args]) == 0
    assert gc.isenabled() is collector_state
    # And when the command fails half-way.
    fake.down = True
    assert main(["--state-dir", str(tmp_path), *args]) == 3
    assert gc.isenabled() is collector_state


# -- capabilities ---------------------------------------------------------------------------

def test_every_capability_is_the_fakes(tmp_path: Path) -> None:
    fake = engine()
    for capability in (base.Runtime, base.LayerInodeCounting, base.ContainerSizing,
                       base.BuildCachePruning, base.TagRestoring, base.UseWatching):
        assert isinstance(fake, capability), capability.__name__


def test_plan_without_layer_inode_counts_says_so(tmp_path: Path, notices: list[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = Without(engine(), "layer_inodes")
    assert not isinstance(runtime, base.LayerInodeCounting)
    monkeypatch.setattr("reclaim.commands.plan.filesystem_usage", lambda e: FilesystemUsage(
        total_bytes=10**9, used_bytes=10**8, total_inodes=1000, used_inodes=990))
    session = On(state_dir=str(tmp_path), notify=notices.append, runtime_object=runtime)
    policy = build_policy({"images": {"min_age": "0s", "high_inodes": 900, "low_inodes": 800}})
    made = plan_command(session, policy, now=lambda: NOW + timedelta(days=1))
    assert any("cannot count layer inodes" in n for n in notices)
    # Every layer counts as unknown, as the plan says (what that means is the planner's).
    assert any("inode count for 6 layer(s)" in w for w in made.warnings), \
        made.warnings


def test_apply_without_a_use_watch_or_a_prune_does_without(
        tmp_path: Path, notices: list[str]) -> None:
    fake = engine()
    runtime = Without(fake, "watch_uses", "prune_build_cache")
    assert not isinstance(runtime, base.UseWatching)
    assert not isinstance(runtime, base.BuildCachePruning)
    session = On(state_dir=str(tmp_path), notify=notices.append, runtime_object=runtime)
    policy = build_policy({"images": {"min_age": "0s", "quota": "0"},
                           "build_cache": {"keep_storage": "1K"}})
    result = apply_command(session, policy=policy, now=lambda: NOW + timedelta(days=1))
    # Every image went, each tag re-checked by asking the engine (no watch to ask).
    assert fake.images == {}
    assert {a.kind for a in result.deleted} == {"image"}
    assert [(a.kind, why) for a, why in result.failed] == [
        ("build-cache", "this engine's adapter cannot prune a build cache")]
    assert fake.build_cache == BuildCache(2, 5000, 4000)
