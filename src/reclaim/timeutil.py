"""Timestamps as engines write them, and as reclaim's JSON contract writes them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

# Engines write RFC 3339 with up to nanoseconds and use the zero time for "never".
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_time(value: str | int | float | None) -> datetime | None:
    """An engine timestamp (RFC 3339 string or Unix seconds) as aware UTC, or None for
    missing, zero ("0001-01-01T00:00:00Z", 0) and unparseable values."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if len(value) >= 20 and value[10] in "T " and value[13] == ":":
        # The common case, many thousand times per inventory: the C parser (it reads any
        # number of fractional digits, keeping microseconds).
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.year == 1:
                return None
            if parsed.tzinfo is None:
                return parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
    match = _RFC3339.match(value.strip())
    if not match:
        return None
    day, clock, fraction, zone = match.groups()
    if day.startswith("0001-"):
        return None
    micro = (fraction or "0")[:6].ljust(6, "0")
    if zone in (None, "Z"):
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    try:
        parsed = datetime.fromisoformat(f"{day}T{clock}.{micro}{zone}")
    except ValueError:
        return None
    return parsed.astimezone(UTC)


# `df --json` formats about four times per image and two per container, and many of those are
# the same instant (every image first seen in the same run, an image's use and its container's
# time): each is formatted once. Bounded, for the long-running watch.
_FORMATTED: dict[datetime, str] = {}
_FORMATTED_MAX = 65536


def format_time(value: datetime | None) -> str | None:
    """RFC 3339 UTC with a Z, to the second; None stays None."""
    if value is None:
        return None
    text = _FORMATTED.get(value)
    if text is None:
        utc = value if value.tzinfo is UTC else value.astimezone(UTC)
        # %-formatting the fields is about twice as fast as isoformat(timespec=...), and 2.5
        # times as fast as an f-string with format specs (one format() call per field).
        text = "%04d-%02d-%02dT%02d:%02d:%02dZ" % (  # noqa: UP031
            utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second)
        if len(_FORMATTED) >= _FORMATTED_MAX:
            _FORMATTED.clear()
        _FORMATTED[value] = text
    return text


def human_ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "never"
    seconds = int((now - value).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now" if seconds < 5 else f"{seconds} seconds ago"
