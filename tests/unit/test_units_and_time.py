from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from reclaim import timeutil
from reclaim.errors import UsageError
from reclaim.timeutil import format_time, human_ago, parse_time
from reclaim.units import human_bytes, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("50G", 50 * 1024**3), ("512MiB", 512 * 1024**2), ("1.5T", int(1.5 * 1024**4)),
     ("1048576B", 1048576), ("10k", 10240), ("3KB", 3072)],
)
def test_sizes_are_powers_of_1024(text: str, expected: int) -> None:
    assert parse_size(text, setting="images.quota").bytes == expected


def test_percent_sizes_resolve_against_the_filesystem() -> None:
    size = parse_size("20%", setting="images.quota")
    assert size.percent == 20
    assert size.resolve(1000) == 200


@pytest.mark.parametrize("bad", ["50Q", "", "G", "-5G", "120%", "abc%"])
def test_bad_sizes_name_the_setting(bad: str) -> None:
    with pytest.raises(UsageError, match=r"images\.quota"):
        parse_size(bad, setting="images.quota")


@pytest.mark.parametrize(("text", "seconds"), [("90m", 5400), ("14d", 14 * 86400),
                                               ("2w", 14 * 86400), ("36h", 36 * 3600)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, setting="images.min_age") == seconds


@pytest.mark.parametrize("bad", ["1 second", "14", "d", "3y"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(UsageError, match=r"images\.min_age: .* is not a duration"):
        parse_duration(bad, setting="images.min_age")


def test_engine_timestamps() -> None:
    assert parse_time("2024-05-01T10:20:30.123456789Z") == datetime(
        2024, 5, 1, 10, 20, 30, 123456, tzinfo=UTC)
    assert parse_time("2024-05-01T12:20:30+02:00") == datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time(0) is None
    assert parse_time(1714558830) == datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)
    assert parse_time("yesterday") is None
    assert parse_time("2024-05-01 10:20:30.5Z") == datetime(2024, 5, 1, 10, 20, 30, 500000,
                                                             tzinfo=UTC)
    assert parse_time("2024-05-01T10:20:30") == datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)
    assert parse_time("0001-01-01T00:00:00.000000000+00:00") is None
    assert parse_time("2024-05-01T10:20:30Z trailing") is None
    assert parse_time("2024-05-01") is None
    assert format_time(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00Z"
    assert format_time(datetime(2024, 5, 1, 10, 20, 30, 999, tzinfo=UTC)) == "2024-05-01T10:20:30Z"
    assert format_time(None) is None


def test_formatting_is_utc_whatever_the_zone_and_however_often() -> None:
    east = timezone(timedelta(hours=2))
    local_noon = datetime(2024, 5, 1, 12, 0, 0, tzinfo=east)
    for _ in range(2):  # the second time from the memo
        assert format_time(local_noon) == "2024-05-01T10:00:00Z"
        assert format_time(datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)) == "2024-05-01T10:00:00Z"
        assert format_time(datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC)) == "0999-12-31T23:59:59Z"
    # The memo is bounded: far more distinct instants than it keeps are all formatted right.
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for n in range(200_000):
        when = start + timedelta(seconds=n)
        text = format_time(when)
        if n % 20_011 == 0:
            assert text == when.isoformat().replace("+00:00", "Z")
    assert len(timeutil._FORMATTED) <= timeutil._FORMATTED_MAX


def test_human_forms() -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    assert human_ago(now - timedelta(days=3, hours=2), now) == "3 days ago"
    assert human_ago(now - timedelta(minutes=1), now) == "1 minute ago"
    assert human_ago(None, now) == "never"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(12) == "12 B"
    assert human_bytes(None) == "-"
