"""Sizes and durations as people write them (`50G`, `20%`, `90m`, `14d`) and as tables show them."""

from __future__ import annotations

import re
from typing import NamedTuple

from reclaim.errors import UsageError

_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


class Size(NamedTuple):
    """A size in bytes, or a percentage of the filesystem that holds the engine's data."""

    bytes: int | None = None
    percent: float | None = None

    def resolve(self, filesystem_bytes: int) -> int:
        if self.bytes is not None:
            return self.bytes
        assert self.percent is not None
        return int(filesystem_bytes * self.percent / 100)


def parse_size(text: str, *, setting: str, allow_percent: bool = True) -> Size:
    """`50G`, `512MiB`, `1.5T`, `1048576`, or `20%`; powers of 1024."""
    value = text.strip()
    if allow_percent and value.endswith("%"):
        try:
            percent = float(value[:-1])
        except ValueError:
            percent = -1.0
        if not 0 <= percent <= 100:
            raise UsageError(f'{setting}: "{text}" is not a percentage between 0% and 100%')
        return Size(percent=percent)
    match = _SIZE.match(value)
    if not match:
        example = "50G or 20%" if allow_percent else "50G"
        raise UsageError(f'{setting}: "{text}" is not a size; use e.g. {example}')
    number, unit = match.groups()
    return Size(bytes=int(float(number) * _SIZE_UNITS[unit.upper()]))


def parse_duration(text: str, *, setting: str) -> float:
    """`90m`, `14d`, `2w` as seconds."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f'{setting}: "{text}" is not a duration; use e.g. 90m, 36h or 14d')
    number, unit = match.groups()
    return float(number) * _DURATION_UNITS[unit]


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
