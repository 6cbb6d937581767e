"""What the help and the package metadata say agrees with what reclaim does."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from reclaim.cli import main
from reclaim.policy.rules import MIN_CONTAINER_AGE

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_the_container_age_flags_say_their_floor(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert MIN_CONTAINER_AGE == 60  # "1m" below
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # as wrapped for any width
    for flag in ("--containers-exited-after", "--containers-created-after"):
        described = text.split(flag, 1)[1].split("--", 1)[0]
        assert "at least 1m" in described, flag
        assert "about to start" in described, flag


def test_the_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    # The string form needs setuptools 77 or later.
    assert "setuptools>=77" in project["build-system"]["requires"]
