"""What a policy says, validated when it is built.

A policy is data: sections for images, containers, volumes and build cache, each setting
optional. The TOML file and the command-line flags give the same settings (flags override the
file), and every bad value is refused with the setting's name and what was wrong.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from reclaim.errors import UsageError
from reclaim.units import Size, no_unit, parse_duration, parse_percent, parse_size

DAY = 86400.0
# Nothing used in the last day is ever deleted by default.
DEFAULT_MIN_AGE = DAY


@dataclass(frozen=True)
class InodeCount:
    """A number of inodes, or a percentage of the inodes of the filesystem that holds the
    engine's data."""

    count: int | None = None
    percent: float | None = None

    def resolve(self, filesystem_inodes: int) -> int:
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return int(filesystem_inodes * self.percent / 100)


@dataclass(frozen=True)
class ImagePolicy:
    min_age: float = DEFAULT_MIN_AGE  # seconds since last use; nothing younger is deleted
    max_age: float | None = None  # delete when unused longer than this, without pressure
    quota: Size | None = None  # keep the image store's unique bytes at or under this
    high: Size | None = None  # filesystem usage that starts eviction...
    low: Size | None = None  # ...down to this
    high_inodes: InodeCount | None = None  # filesystem inodes in use that start eviction...
    low_inodes: InodeCount | None = None  # ...down to this
    keep: tuple[str, ...] = ()  # globs on repo:tag, or image id prefixes
    keep_labels: tuple[str, ...] = ()  # "key" or "key=value"
    keep_latest: int = 0  # per repository, the N most recently used tags
    dangling: str = "like-others"  # or "after-min-age": delete untagged once old enough

    def keeps_by_pattern(self, tags: tuple[str, ...], image_id: str) -> str | None:
        """The first `keep` pattern that one of the tags matches (a glob) or the id starts
        with (a hex prefix of 4 or more digits)."""
        if not self.keep:
            return None
        compiled = self._keep_compiled
        bare_id = image_id.split(":", 1)[-1]
        # One combined expression rules out most images with a single call per tag.
        if not bare_id.startswith(compiled.prefixes) and not any(
            compiled.any_glob(t) for t in tags
        ):
            return None
        for pattern, glob, prefix in compiled.each:
            if any(glob(t) for t in tags) or (prefix and bare_id.startswith(prefix)):
                return pattern
        return None

    @cached_property
    def _keep_compiled(self) -> _KeepPatterns:
        return _KeepPatterns.of(self.keep)


@dataclass(frozen=True)
class _KeepPatterns:
    each: tuple[tuple[str, Any, str], ...]  # (pattern, its glob's fullmatch, id prefix or "")
    any_glob: Any  # fullmatch of all the globs at once
    prefixes: tuple[str, ...]

    @classmethod
    def of(cls, patterns: tuple[str, ...]) -> _KeepPatterns:
        each = []
        for pattern in patterns:
            prefix = pattern.split(":", 1)[-1] if pattern.startswith("sha256:") else pattern
            is_prefix = len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix)
            each.append((pattern, re.compile(fnmatch.translate(pattern)).fullmatch,
                         prefix if is_prefix else ""))
        combined = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
        return cls(tuple(each), combined.fullmatch, tuple(e[2] for e in each if e[2]))


@dataclass(frozen=True)
class ContainerPolicy:
    exited_after: float | None = None  # remove exited/dead containers finished this long ago
    created_after: float | None = None  # remove never-started containers created this long ago
    keep_labels: tuple[str, ...] = ()
    # Per image, keep the N most recently finished stopped containers (their logs and files
    # are what someone looks at after a failure).
    keep_last: int = 0

    @property
    def enabled(self) -> bool:
        return self.exited_after is not None or self.created_after is not None


@dataclass(frozen=True)
class VolumePolicy:
    dangling_after: float | None = None  # remove volumes dangling this long
    all: bool = False  # named volumes too, not only anonymous ones
    include: tuple[str, ...] = ()  # volumes with driver options, named explicitly
    keep_labels: tuple[str, ...] = ()
    # A container's anonymous volumes go with it (as `docker rm -v`), not dangling_after
    # later; the other volume rules (keep_labels, driver options) still keep them.
    with_containers: bool = False

    @property
    def enabled(self) -> bool:
        return self.dangling_after is not None


@dataclass(frozen=True)
class BuildCachePolicy:
    keep_storage: Size | None = None
    older_than: float | None = None

    @property
    def enabled(self) -> bool:
        return self.keep_storage is not None or self.older_than is not None


@dataclass(frozen=True)
class Policy:
    images: ImagePolicy = field(default_factory=ImagePolicy)
    containers: ContainerPolicy = field(default_factory=ContainerPolicy)
    volumes: VolumePolicy = field(default_factory=VolumePolicy)
    build_cache: BuildCachePolicy = field(default_factory=BuildCachePolicy)

    def describe(self) -> dict[str, Any]:
        """The policy as the plan file records it."""
        def section(obj: object) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for f in fields(obj):  # type: ignore[arg-type]
                value = getattr(obj, f.name)
                if isinstance(value, Size):
                    value = f"{value.percent}%" if value.percent is not None else value.bytes
                elif isinstance(value, InodeCount):
                    value = f"{value.percent}%" if value.percent is not None else value.count
                elif isinstance(value, tuple):
                    value = list(value)
                out[f.name] = value
            return out

        return {
            "images": section(self.images),
            "containers": section(self.containers),
            "volumes": section(self.volumes),
            "build_cache": section(self.build_cache),
        }


def labels_match(selectors: tuple[str, ...], labels: Mapping[str, str]) -> str | None:
    """The first selector ("key" or "key=value") the labels satisfy."""
    for selector in selectors:
        key, eq, value = selector.partition("=")
        if key in labels and (not eq or labels[key] == value):
            return selector
    return None


# -- building a policy from the config file and flags -------------------------------------------

_DURATIONS = {"min_age", "max_age", "exited_after", "created_after", "dangling_after",
              "older_than"}
_SIZES = {"quota", "high", "low", "keep_storage"}
_INODES = {"high_inodes", "low_inodes"}
_LISTS = {"keep", "keep_labels", "include"}
_SECTIONS: dict[str, type] = {
    "images": ImagePolicy, "containers": ContainerPolicy, "volumes": VolumePolicy,
    "build_cache": BuildCachePolicy,
}


def build_policy(settings: Mapping[str, Mapping[str, Any]]) -> Policy:
    """A validated policy from `{section: {setting: value}}` (TOML values or flag strings)."""
    unknown = set(settings) - set(_SECTIONS)
    if unknown:
        raise UsageError(f"unknown config section [{sorted(unknown)[0]}]; "
                         f"known: {', '.join(_SECTIONS)}")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        given = dict(settings.get(name, {}))
        known = {f.name for f in fields(cls)}
        for key in given:
            if key not in known:
                raise UsageError(
                    f"{name}.{key}: unknown setting; known: {', '.join(sorted(known))}"
                )
        sections[name] = cls(**{k: _convert(f"{name}.{k}", k, v) for k, v in given.items()})
    policy = Policy(**sections)
    _check(policy)
    return policy


def _convert(setting: str, key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in _DURATIONS:
        if not isinstance(value, str):
            raise UsageError(f'{setting}: {value!r} is not a duration; use e.g. "90m" or "14d"')
        return parse_duration(value, setting=setting)
    if key in _SIZES:
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            # A TOML number has no unit: bytes, gigabytes or percent?
            if value == 0:
                return Size(bytes=0)
            raise no_unit(setting, repr(value), repr(value))
        if not isinstance(value, str):
            raise UsageError(f'{setting}: {value!r} is not a size; use e.g. "50G" or "20%"')
        return parse_size(value, setting=setting)
    if key in _INODES:
        return _inode_count(setting, value)
    if key in _LISTS:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise UsageError(f"{setting}: expected a list of strings")
        return tuple(items)
    if key in ("keep_latest", "keep_last"):
        return _count(setting, value)
    if key in ("all", "with_containers"):
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise UsageError(f"{setting}: {value!r} is not true or false")
        return value
    if key == "dangling":
        if value not in ("like-others", "after-min-age"):
            raise UsageError(f'{setting}: {value!r} must be "like-others" or "after-min-age"')
        return value
    raise UsageError(f"{setting}: unknown setting")


def _count(setting: str, value: Any) -> int:
    """A whole number, 0 or more: `3` in the file or "3" from a flag; never 2.7 cut to 2."""
    text = value.strip() if isinstance(value, str) else None
    if text is not None and text.isascii() and text.isdigit():
        return int(text)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise UsageError(f"{setting}: {value!r} is not a count (a whole number, 0 or more)")


def _inode_count(setting: str, value: Any) -> InodeCount:
    """A count of inodes (an integer, `2000000`) or a percentage of the filesystem's (`90%`).
    A count needs no unit (inodes are counted, not measured), but it is a whole number."""
    hint = 'use e.g. 2000000 or "90%"'
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise UsageError(f"{setting}: {value!r} is not an inode count; {hint}")
        return InodeCount(count=value)
    if not isinstance(value, str):
        raise UsageError(f"{setting}: {value!r} is not an inode count; {hint}")
    percent = parse_percent(value, setting=setting)
    if percent is not None:
        return InodeCount(percent=percent)
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise UsageError(f'{setting}: "{value}" is not an inode count; {hint}')
    return InodeCount(count=int(text))


# A container created (or stopped) moments ago may be about to start (or be inspected):
# reclaim never removes one younger than this, whatever the settings say.
MIN_CONTAINER_AGE = 60.0


def _check(policy: Policy) -> None:
    for setting in ("exited_after", "created_after"):
        value = getattr(policy.containers, setting)
        if value is not None and value < MIN_CONTAINER_AGE:
            raise UsageError(f"containers.{setting}: at least 1m; a container that young may "
                             "be about to start")
    images = policy.images
    if images.max_age is not None and images.max_age < images.min_age:
        raise UsageError("images.max_age: shorter than images.min_age; nothing could satisfy both")
    _check_watermarks("images.high", images.high, "images.low", images.low, "watermarks")
    _check_watermarks("images.high_inodes", images.high_inodes, "images.low_inodes",
                      images.low_inodes, "inode watermarks")


def _check_watermarks(high_name: str, high: Size | InodeCount | None, low_name: str,
                      low: Size | InodeCount | None, what: str) -> None:
    """Both or neither; both of one kind (an amount, or a percentage: 10G against 90% is a
    comparison of two different things, and whichever way it goes one mark does nothing); low
    strictly below high (eviction starts above high and stops at low: equal marks free next
    to nothing and start again at the next byte)."""
    if (high is None) != (low is None):
        raise UsageError(f"{high_name} and {low_name}: set both {what} or neither")
    if high is None or low is None:
        return
    if (high.percent is None) != (low.percent is None):
        raise UsageError(f"{high_name} and {low_name}: one is a percentage and the other is "
                         "not; give both as a percentage or neither")
    high_value = high.percent if high.percent is not None else _amount(high)
    low_value = low.percent if low.percent is not None else _amount(low)
    if not low_value < high_value:
        raise UsageError(f"{low_name}: must be below {high_name}")


def _amount(mark: Size | InodeCount) -> int:
    amount = mark.bytes if isinstance(mark, Size) else mark.count
    assert amount is not None
    return amount
