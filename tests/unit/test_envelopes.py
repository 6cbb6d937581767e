"""The JSON contracts of `df`, `plan`, `apply` and `history`, pinned as golden documents that
the command functions give on the in-memory engine with a fixed clock (no root, no engine).
A change in any key, value or order shows up as a diff here.

Regenerate after an intended change with: pytest tests/unit/test_envelopes.py --regen-golden
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reclaim.commands.apply import apply_command
from reclaim.commands.df import df
from reclaim.commands.history import history_command
from reclaim.commands.plan import plan_command
from reclaim.commands.session import Session
from reclaim.output import journal_json
from reclaim.planfile import plan_to_json
from reclaim.policy.rules import build_policy
from reclaim.runtimes.base import Runtime
from reclaim.runtimes.fake import FakeRuntime
from sandbox.content import FixtureSpec, build_fixture
from tests.fakes import fake_from_truth

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
POLICY = {"images": {"quota": "0", "min_age": "0s"},
          "containers": {"exited_after": "1d", "created_after": "7d"},
          "volumes": {"dangling_after": "1d", "all": True}}


@dataclass(frozen=True)
class FakeSession(Session):
    """A session whose runtime is the given in-memory engine (closing it keeps its state)."""

    fake: FakeRuntime | None = None

    def open_runtime(self, *, listings_from_disk: bool = False) -> Runtime:
        assert self.fake is not None
        return self.fake


def _clock(start: datetime) -> Callable[[], datetime]:
    ticks = iter(start + timedelta(seconds=n) for n in range(10_000))
    return lambda: next(ticks)


def _compare(name: str, document: dict[str, Any], regen: bool) -> None:
    path = GOLDEN / f"envelope-{name}.json"
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    if regen:
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with --regen-golden"
    assert json.loads(path.read_text()) == document
    # The order of keys is part of the contract as printed.
    assert list(json.loads(path.read_text())) == list(document)


def test_the_json_envelopes(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    regen = bool(request.config.getoption("--regen-golden"))
    truth = build_fixture(FixtureSpec.small()).truth
    fake, _, _ = fake_from_truth(truth, created=NOW - timedelta(days=30))
    session = FakeSession(state_dir=str(tmp_path), fake=fake)
    # First seen by reclaim two weeks ago: old enough for the policy's ages.
    df(session, now=lambda: NOW - timedelta(days=14))
    policy = build_policy(json.loads(json.dumps(POLICY)))

    _compare("df", df(session, now=_clock(NOW)).to_json(), regen)
    made = plan_command(session, policy, now=_clock(NOW))
    plan_doc = plan_to_json(made)
    _compare("plan", plan_doc, regen)
    # One instant for the whole apply: its deletions run on several threads at once.
    result = apply_command(session, policy=policy, now=lambda: NOW)
    assert result.deleted and not result.failed
    assert [a.id for a in result.deleted] == [a["id"] for a in plan_doc["actions"]]
    _compare("apply", result.to_json(), regen)
    # Deletions of one instant, in the order the threads journalled them: sorted here.
    deletions = sorted((journal_json(e) for e in history_command(session)),
                       key=lambda d: (d["kind"], d["id"]))
    _compare("history", {"schema": "reclaim.history/v1", "deletions": deletions}, regen)
