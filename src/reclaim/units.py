"""Sizes and durations as people write them (`50G`, `20%`, `90m`, `14d`) and as tables show them."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import NamedTuple

from reclaim.errors import UsageError

_SIZE_UNITS = {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
# The number, then a unit: a prefix with or without B or iB (K, KB, KiB), or B alone.
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:I?B)?|(B))?$", re.IGNORECASE)
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
# What a file size, a filesystem and SQLite hold (a signed 64-bit integer).
MAX_BYTES = 2**63 - 1
# Longer than any image, container or cache is kept; what a date can still be computed from.
MAX_DURATION = 1000 * 366 * 86400


class Size(NamedTuple):
    """A size in bytes, or a percentage of the filesystem that holds the engine's data."""

    bytes: int | None = None
    percent: float | None = None

    def resolve(self, filesystem_bytes: int) -> int:
        if self.bytes is not None:
            return self.bytes
        assert self.percent is not None
        return int(filesystem_bytes * self.percent / 100)


def no_unit(setting: str, shown: str, number: str, *, allow_percent: bool = True) -> UsageError:
    """A size written as a bare number: bytes, or the gigabytes or percent the writer meant?
    Taken as bytes, `quota = 5` would delete every unused image, so it is refused."""
    example = (f'"{number}G" or "{number}%"' if allow_percent and Decimal(number) <= 100
               else f'"{number}G"')
    return UsageError(f"{setting}: {shown} has no unit; write {example} "
                      f'("{number}B" for bytes)')


def parse_percent(text: str, *, setting: str) -> float | None:
    """`20%` or `12.5%` as a number from 0 to 100; None when the text does not end in %."""
    value = text.strip()
    if not value.endswith("%"):
        return None
    match = _PERCENT.match(value)
    if not match or Decimal(match.group(1)) > 100:
        raise UsageError(f'{setting}: "{text}" is not a percentage between 0% and 100%')
    return float(match.group(1))


def parse_size(text: str, *, setting: str, allow_percent: bool = True) -> Size:
    """`50G`, `512MiB`, `1.5T`, `1048576B`, or `20%`; powers of 1024. A number needs its unit,
    0 aside (nothing is nothing in every unit)."""
    if allow_percent:
        percent = parse_percent(text, setting=setting)
        if percent is not None:
            return Size(percent=percent)
    value = text.strip()
    match = _SIZE.match(value)
    if not match:
        example = "50G or 20%" if allow_percent else "50G"
        raise UsageError(f'{setting}: "{text}" is not a size; use e.g. {example}')
    number, prefix, plain_bytes = match.groups()
    amount = Decimal(number)
    if prefix is None and plain_bytes is None:
        if amount == 0:
            return Size(bytes=0)
        raise no_unit(setting, f'"{text}"', number, allow_percent=allow_percent)
    if prefix is None and amount != amount.to_integral_value():
        raise UsageError(f'{setting}: "{text}" is not a whole number of bytes')
    # Decimal, not float: every digit counts, and a number of any length stays a number.
    total = amount * _SIZE_UNITS[(prefix or plain_bytes).upper()]
    if total > MAX_BYTES:
        raise UsageError(f'{setting}: "{text}" is more than any filesystem holds (8 EiB)')
    return Size(bytes=int(total))


def parse_duration(text: str, *, setting: str) -> float:
    """`90m`, `14d`, `2w` as seconds."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f'{setting}: "{text}" is not a duration; use e.g. 90m, 36h or 14d')
    number, unit = match.groups()
    seconds = Decimal(number) * _DURATION_UNITS[unit]
    if seconds > MAX_DURATION:
        raise UsageError(f'{setting}: "{text}" is longer than 1000 years')
    return float(seconds)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
