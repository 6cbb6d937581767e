"""A policy that cannot be applied to this engine is reclaim's own error: a `PolicyError`, a
usage error with exit code 2 and one line, from the planner itself."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reclaim.cli import main
from reclaim.commands.session import Session
from reclaim.errors import EXIT_USAGE, PolicyError, UsageError
from reclaim.lastuse import usage_from_inventory
from reclaim.policy.plan import FilesystemUsage, plan
from reclaim.policy.rules import ImagePolicy, Policy
from reclaim.runtimes.fake import FakeRuntime
from reclaim.units import Size

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def engine() -> FakeRuntime:
    """The fake's engine has no data root, as a remote engine's cannot be read here."""
    fake = FakeRuntime()
    for n in range(3):
        digest = "sha256:" + hashlib.sha256(f"policy-{n}".encode()).hexdigest()
        fake.add_image(digest, tags=[f"app:{n}"], layers=[(digest, 1000)])
    return fake


def test_a_quota_in_percent_without_the_filesystem_raises_a_policy_error() -> None:
    inventory = engine().inventory()
    policy = Policy(images=ImagePolicy(quota=Size(percent=20)))
    with pytest.raises(PolicyError) as info:
        plan(inventory, usage_from_inventory(inventory, NOW), policy, NOW)
    assert isinstance(info.value, UsageError)
    assert info.value.exit_code == EXIT_USAGE
    assert info.value.message == "a quota in % needs the filesystem's size"
    # With the filesystem known, the same policy plans.
    fs = FilesystemUsage(total_bytes=10_000, used_bytes=5_000)
    assert plan(inventory, usage_from_inventory(inventory, NOW), policy, NOW, filesystem=fs)


def test_the_command_says_it_in_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = engine()
    monkeypatch.setattr(Session, "open_runtime", lambda self, **kw: fake)
    assert main(["--state-dir", str(tmp_path), "plan", "--quota", "20%"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["reclaim: a quota in % needs the filesystem's size"]
    # Nothing was lost: the ledger the refused plan opened is there and usable.
    assert main(["--state-dir", str(tmp_path), "plan", "--quota", "2K"]) == 0
    assert len(fake.images) == 3
