"""Settings that would mean something else than they say are refused, naming the setting: a
size without a unit, a count that is not whole, watermarks that cannot work, numbers of any
length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reclaim.cli import main
from reclaim.config import CONFIG_ENV, load_file, policy_from
from reclaim.errors import UsageError
from reclaim.policy.rules import InodeCount, build_policy
from reclaim.units import Size, parse_duration, parse_size

SIZE_SETTINGS = [("images", "quota"), ("images", "high"), ("images", "low"),
                 ("build_cache", "keep_storage")]


def refused(settings: dict[str, dict[str, Any]]) -> str:
    with pytest.raises(UsageError) as info:
        build_policy(settings)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("section", "key"), SIZE_SETTINGS)
@pytest.mark.parametrize("value", [5, 5.5, "5", " 5 ", "5.5"])
def test_a_size_without_a_unit_is_refused(section: str, key: str, value: object) -> None:
    # `quota = 5` taken as 5 bytes would delete every unused image.
    settings: dict[str, dict[str, Any]] = {section: {key: value}}
    if key in ("high", "low"):  # the other watermark, well formed
        settings[section]["low" if key == "high" else "high"] = "50%"
    message = refused(settings)
    assert message.startswith(f"{section}.{key}: ")
    assert "has no unit" in message
    assert '"5G"' in message or '"5.5G"' in message


def test_the_message_says_what_to_write() -> None:
    assert refused({"images": {"quota": 5}}) == (
        'images.quota: 5 has no unit; write "5G" or "5%" ("5B" for bytes)')
    assert refused({"images": {"quota": "5"}}).startswith(
        'images.quota: "5" has no unit; write "5G" or "5%"')


@pytest.mark.parametrize(("value", "expected"), [
    ("5B", 5), ("5b", 5), ("1048576B", 1048576), ("0", 0), (0, 0), ("0G", 0), ("2K", 2048),
    ("1.5M", 1536 * 1024), ("3KiB", 3072),
])
def test_sizes_with_a_unit_and_zero_are_taken(value: object, expected: int) -> None:
    assert build_policy({"images": {"quota": value}}).images.quota == Size(bytes=expected)


def test_a_fraction_of_a_byte_is_refused() -> None:
    assert "whole number of bytes" in refused({"images": {"quota": "0.5B"}})


@pytest.mark.parametrize("text", ["1" * 400, "1" * 400 + "G", "9" * 20 + "T", "1" * 400 + "%",
                                  "1" * 400 + ".5%"])
def test_numbers_of_any_length_are_an_error_not_a_crash(text: str) -> None:
    with pytest.raises(UsageError, match=r"^images\.quota: "):
        parse_size(text, setting="images.quota")


def test_a_duration_of_any_length_is_an_error_not_a_crash() -> None:
    with pytest.raises(UsageError, match=r"^images\.max_age: .* longer than"):
        parse_duration("1" * 400 + "d", setting="images.max_age")


def test_the_largest_size_is_taken() -> None:
    assert parse_size(f"{2**63 - 1}B", setting="images.quota").bytes == 2**63 - 1
    with pytest.raises(UsageError, match="more than any filesystem"):
        parse_size(f"{2**63}B", setting="images.quota")


@pytest.mark.parametrize("key", ["keep_latest"])
@pytest.mark.parametrize("value", [2.7, 2.0, "2.7", True, -1, "-1", "two", "", "٣"])
def test_a_count_that_is_not_whole_is_refused(key: str, value: object) -> None:
    message = refused({"images": {key: value}})
    assert message.startswith(f"images.{key}: ")
    assert "is not a count" in message


@pytest.mark.parametrize("value", [2.7, "2.7", False])
def test_keep_last_is_a_whole_count_too(value: object) -> None:
    assert "containers.keep_last: " in refused({"containers": {"keep_last": value}})


@pytest.mark.parametrize(("value", "expected"), [(3, 3), ("3", 3), (" 3 ", 3), (0, 0)])
def test_whole_counts_are_taken(value: object, expected: int) -> None:
    assert build_policy({"images": {"keep_latest": value}}).images.keep_latest == expected


@pytest.mark.parametrize("value", [2.5, 2.0, "2.5", "2M", "2000000B", "1e6"])
def test_an_inode_count_is_a_whole_number_without_a_unit(value: object) -> None:
    message = refused({"images": {"high_inodes": value, "low_inodes": 1}})
    assert message.startswith("images.high_inodes: ")


def test_an_inode_count_needs_no_unit() -> None:
    # Inodes are counted, not measured: a bare integer is a count, of any size.
    images = build_policy({"images": {"high_inodes": "1" * 30,
                                      "low_inodes": 2_000_000}}).images
    assert images.high_inodes == InodeCount(count=int("1" * 30))
    assert images.low_inodes == InodeCount(count=2_000_000)


@pytest.mark.parametrize(("high", "low", "message"), [
    ("10G", "10G", "images.low: must be below images.high"),
    ("90%", "90%", "images.low: must be below images.high"),
    ("10G", "20G", "images.low: must be below images.high"),
    ("10G", "90%", "images.high and images.low: one is a percentage"),
    ("90%", "1G", "images.high and images.low: one is a percentage"),
    ("90%", 0, "images.high and images.low: one is a percentage"),
])
def test_watermarks_that_cannot_work_are_refused(high: object, low: object,
                                                 message: str) -> None:
    assert message in refused({"images": {"high": high, "low": low}})


@pytest.mark.parametrize(("high", "low", "message"), [
    (1000, 1000, "images.low_inodes: must be below images.high_inodes"),
    ("90%", "90%", "images.low_inodes: must be below images.high_inodes"),
    (1000, "50%", "images.high_inodes and images.low_inodes: one is a percentage"),
    ("50%", 1000, "images.high_inodes and images.low_inodes: one is a percentage"),
])
def test_inode_watermarks_that_cannot_work_are_refused(high: object, low: object,
                                                       message: str) -> None:
    assert message in refused({"images": {"high_inodes": high, "low_inodes": low}})


def test_watermarks_of_one_kind_low_below_high_are_taken() -> None:
    images = build_policy({"images": {"high": "10G", "low": "9G", "high_inodes": "90%",
                                      "low_inodes": "89.5%"}}).images
    assert images.high == Size(bytes=10 * 1024**3) and images.low == Size(bytes=9 * 1024**3)
    assert build_policy({"images": {"high": "10G", "low": "0"}}).images.low == Size(bytes=0)


def test_the_file_is_checked_as_the_flags_are(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[images]\nquota = 5\n")
    with pytest.raises(UsageError, match=r'^images\.quota: 5 has no unit; write "5G"'):
        policy_from(load_file(config), {})
    config.write_text('[images]\nkeep_latest = 2.7\n')
    with pytest.raises(UsageError, match=r"^images\.keep_latest: 2\.7 is not a count"):
        policy_from(load_file(config), {})
    config.write_text('[images]\nhigh = "85%"\nlow = "70%"\n')
    # A flag for one watermark, of the other kind than the file's.
    with pytest.raises(UsageError, match="one is a percentage"):
        policy_from(load_file(config), {"images": {"high": "10G"}})


# -- on the command line ------------------------------------------------------------------


@pytest.fixture
def no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty config file, so that no config of the host's is read."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    return empty


@pytest.mark.parametrize(("args", "message"), [
    (["--quota", "5"], 'images.quota: "5" has no unit'),
    (["--quota", "1" * 400], "images.quota: "),
    (["--quota", "1" * 400 + "G"], "images.quota: "),
    (["--high", "1" * 400, "--low", "1G"], "images.high: "),
    (["--high", "1" * 400 + "%", "--low", "1%"], "images.high: "),
    (["--high", "90%", "--low", "90%"], "images.low: must be below images.high"),
    (["--high", "10G", "--low", "90%"], "one is a percentage"),
    (["--keep-latest", "2.7"], "images.keep_latest: "),
    (["--build-cache-keep-storage", "10"], "build_cache.keep_storage: "),
    (["--max-age", "1" * 400 + "d"], "images.max_age: "),
])
@pytest.mark.parametrize("command", ["plan", "apply"])
def test_bad_values_on_the_command_line_exit_2_with_one_line(
    command: str, args: list[str], message: str, no_config: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The policy is checked before any engine is asked anything.
    argv = ["--config", str(no_config), "--engine", "unix:///nonexistent.sock", command, *args]
    assert main([*argv, "--yes"] if command == "apply" else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert message in err[0]
