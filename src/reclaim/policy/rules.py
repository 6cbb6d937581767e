"""What a policy says, validated when it is built, and the table of image rules.

A policy is data: sections for images, containers, volumes and build cache, each setting
optional. The TOML file and the command-line flags give the same settings (flags override the
file), and every bad value is refused with the setting's name and what was wrong.

The image rules are data too: `IMAGE_TABLE`, whose order is their precedence (see its section
below).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import cached_property
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeAlias

from reclaim.errors import PolicyError, UsageError
from reclaim.lastuse import LastUse
from reclaim.model import Image
from reclaim.units import Size, human_bytes, no_unit, parse_duration, parse_percent, parse_size

if TYPE_CHECKING:
    from reclaim.policy.plan import FilesystemUsage

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


# -- the image rules, in order of precedence ---------------------------------------------------
#
# One table decides every image: a row is a rule's name, its verdict, what it means, and the
# function that says whether it applies. The planner (policy/plan.py) runs its phases over the
# table in its order: each image gets the first rule of the classifying rows that applies; the
# images no row decided are evicted under the space rows' targets; what is left gets the
# first fallback row that applies. No other code knows the order.

Verdict = Literal["keep", "delete"]


class ImageFacts(NamedTuple):
    """What the image rules decide on, gathered once per plan (`plan.detect_images`)."""

    now: datetime
    images: Sequence[Image]  # every image, by id
    users: Mapping[str, list[str]]  # image id -> the containers that use it and stay (names)
    held: Mapping[str, list[str]]  # image id -> its only users, containers the plan removes
    bases: Mapping[str, LastUse]  # image id -> what its age is counted from
    ages: Mapping[str, float]  # image id -> seconds from its basis to `now`


class Space(NamedTuple):
    """What the space targets start from: the image store's bytes (every piece once), what the
    deletions already chosen free, and the engine's filesystem where it is known."""

    store_bytes: int
    freed: int
    freed_inodes: int
    filesystem: FilesystemUsage | None


class Need(NamedTuple):
    """What one space target asks to free beyond the deletions already chosen. `detail` states
    the target for the reasons ("" when it is not applied); `warning` says why it is not."""

    bytes: int = 0
    inodes: int = 0
    detail: str = ""
    warning: str = ""


@dataclass
class SpaceTarget:
    """What the space rows ask for together: bytes by the largest byte need (the earlier row
    on a tie), inodes by the largest inode need."""

    bytes_rule: str = ""  # the space row whose need the bytes are, when bytes are needed
    bytes_need: int = 0
    inodes_rule: str = ""
    inodes_need: int = 0
    details: list[str] = field(default_factory=list)  # every target in play, for reasons
    configured: bool = False  # some quota or watermark applies to this plan
    warnings: list[str] = field(default_factory=list)

    @property
    def detail(self) -> str:
        return "; ".join(self.details)

    @property
    def evicts(self) -> bool:
        return self.bytes_need > 0 or self.inodes_need > 0


# The detail of the rule's reason for this image, or None when the rule does not apply to it.
ImageTest: TypeAlias = Callable[[Image], str | None]


@dataclass(frozen=True)
class ClassifyRule:
    """Decides one image at a time, before anything is deleted. `bind` returns the test for
    this policy and inventory, or None when the policy does not use the rule (so that a rule
    nobody set costs nothing per image)."""

    name: str
    verdict: Verdict
    explains: str
    bind: Callable[[ImagePolicy, ImageFacts], ImageTest | None]


@dataclass(frozen=True)
class SpaceRule:
    """A space target: what it asks to free given what is already chosen, or None when the
    policy does not set it. The images it takes go least recently used first."""

    name: str
    verdict: Verdict
    explains: str
    need: Callable[[ImagePolicy, Space], Need | None]


@dataclass(frozen=True)
class FallbackRule:
    """Decides an image that no classifying row decided and no target took."""

    name: str
    verdict: Verdict
    explains: str
    bind: Callable[[ImagePolicy, ImageFacts, SpaceTarget], ImageTest | None]


def ago(seconds: float) -> str:
    """A duration as the reasons say it: 40s, 12.0m, 3.5h, 14.0d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _in_use(rules: ImagePolicy, facts: ImageFacts) -> ImageTest:
    users = facts.users.get

    def test(image: Image) -> str | None:
        names = users(image.id)
        if names is None:
            return None
        return f"used by {len(names)} container(s): {', '.join(sorted(names)[:3])}"
    return test


def _keep_pattern(rules: ImagePolicy, facts: ImageFacts) -> ImageTest | None:
    if not rules.keep:
        return None
    keeps = rules.keeps_by_pattern

    def test(image: Image) -> str | None:
        pattern = keeps(image.tags, image.id)
        return None if pattern is None else f"matches {pattern!r}"
    return test


def _keep_label(rules: ImagePolicy, facts: ImageFacts) -> ImageTest | None:
    selectors = rules.keep_labels
    if not selectors:
        return None

    def test(image: Image) -> str | None:
        label = labels_match(selectors, image.labels)
        return None if label is None else f"has label {label!r}"
    return test


def latest_tags(images: Iterable[Image], bases: Mapping[str, LastUse], n: int) -> set[str]:
    """Images holding one of the N most recently used tags of their repository."""
    if n <= 0:
        return set()
    by_repo: dict[str, list[tuple[datetime, str, str]]] = {}
    for image in images:
        if not image.tags:
            continue
        when = bases[image.id].when
        for tag in image.tags:
            # The repository is the tag up to its last colon, unless that colon is a
            # registry's port (`host:5000/app`): then the tag names no version.
            colon = tag.rfind(":")
            repo = tag[:colon] if colon > tag.rfind("/") else tag
            by_repo.setdefault(repo, []).append((when, tag, image.id))
    keep: set[str] = set()
    most_recent = itemgetter(0, 1)
    for entries in by_repo.values():
        entries.sort(key=most_recent, reverse=True)
        keep.update(image_id for _, _, image_id in entries[:n])
    return keep


def _keep_latest(rules: ImagePolicy, facts: ImageFacts) -> ImageTest | None:
    latest = latest_tags(facts.images, facts.bases, rules.keep_latest)
    if not latest:
        return None
    detail = f"among the {rules.keep_latest} most recently used tags of its repository"

    def test(image: Image) -> str | None:
        return detail if image.id in latest else None
    return test


def _min_age(rules: ImagePolicy, facts: ImageFacts) -> ImageTest:
    min_age, ages, bases = rules.min_age, facts.ages, facts.bases
    limit = ago(min_age)

    def test(image: Image) -> str | None:
        age = ages[image.id]
        if age >= min_age:
            return None
        return f"{bases[image.id].source} {ago(age)} ago, younger than min_age {limit}"
    return test


def _max_age(rules: ImagePolicy, facts: ImageFacts) -> ImageTest | None:
    max_age, ages, bases = rules.max_age, facts.ages, facts.bases
    if max_age is None:
        return None
    limit = ago(max_age)

    def test(image: Image) -> str | None:
        age = ages[image.id]
        if age <= max_age:
            return None
        return f"{bases[image.id].source} {ago(age)} ago, older than max_age {limit}"
    return test


def _dangling(rules: ImagePolicy, facts: ImageFacts) -> ImageTest | None:
    if rules.dangling != "after-min-age":
        return None

    def test(image: Image) -> str | None:
        return None if image.tags else "untagged, older than min_age"
    return test


def _quota(rules: ImagePolicy, space: Space) -> Need | None:
    quota, fs = rules.quota, space.filesystem
    if quota is None:
        return None
    if quota.percent is not None and fs is None:
        raise PolicyError("a quota in % needs the filesystem's size")
    limit = quota.resolve(fs.total_bytes if fs else 0)
    current = space.store_bytes - space.freed
    return Need(bytes=max(0, current - limit),
                detail=f"quota {human_bytes(limit)}, image store {human_bytes(current)}")


def _watermark(rules: ImagePolicy, space: Space) -> Need | None:
    fs = space.filesystem
    if rules.high is None or rules.low is None:
        return None
    if fs is None:
        return Need(warning="watermark: the engine's filesystem is not known here (a remote "
                            "engine?); the byte watermarks are not applied")
    high, low = rules.high.resolve(fs.total_bytes), rules.low.resolve(fs.total_bytes)
    used = fs.used_bytes - space.freed
    if used > high:
        return Need(bytes=used - low, detail=f"filesystem {human_bytes(used)} used, above high "
                    f"{human_bytes(high)}; down to low {human_bytes(low)}")
    return Need(detail=f"filesystem {human_bytes(used)} used, under high {human_bytes(high)}")


def _inode_watermark(rules: ImagePolicy, space: Space) -> Need | None:
    fs = space.filesystem
    if rules.high_inodes is None or rules.low_inodes is None:
        return None
    if fs is None:
        return Need(warning="inode-watermark: the engine's filesystem is not known here (a "
                            "remote engine?); the inode watermarks are not applied")
    if fs.total_inodes <= 0:
        return Need(warning="inode-watermark: the engine's filesystem reports no inode counts "
                            "(e.g. btrfs); the inode watermarks are not applied")
    high = rules.high_inodes.resolve(fs.total_inodes)
    low = rules.low_inodes.resolve(fs.total_inodes)
    used = fs.used_inodes - space.freed_inodes
    if used > high:
        return Need(inodes=used - low, detail=f"filesystem {used:,} inodes used, above "
                    f"high_inodes {high:,}; down to low_inodes {low:,}")
    return Need(detail=f"filesystem {used:,} inodes used, under high_inodes {high:,}")


def _not_needed(rules: ImagePolicy, facts: ImageFacts, target: SpaceTarget
                ) -> ImageTest | None:
    if not target.configured:
        return None
    detail = f"{target.detail}; met without it" if target.evicts else target.detail

    def test(image: Image) -> str:
        return detail
    return test


def _no_rule(rules: ImagePolicy, facts: ImageFacts, target: SpaceTarget) -> ImageTest:
    max_age, ages, bases = rules.max_age, facts.ages, facts.bases
    if max_age is None:
        def nothing_set(image: Image) -> str:
            return "no max_age, quota or watermark is set"
        return nothing_set
    limit = ago(max_age)

    def within(image: Image) -> str:
        return (f"{bases[image.id].source} {ago(ages[image.id])} ago, within max_age {limit}; "
                "no quota or watermark is set")
    return within


ImageRule: TypeAlias = ClassifyRule | SpaceRule | FallbackRule

IMAGE_TABLE: tuple[ImageRule, ...] = (
    ClassifyRule("in-use", "keep", "a container of any state uses it", _in_use),
    ClassifyRule("keep-pattern", "keep", "a tag or id matches images.keep", _keep_pattern),
    ClassifyRule("keep-label", "keep", "a label matches images.keep_labels", _keep_label),
    ClassifyRule("keep-latest", "keep", "among its repository's N most recently used tags",
                 _keep_latest),
    ClassifyRule("min-age", "keep", "used (or arrived) more recently than images.min_age",
                 _min_age),
    ClassifyRule("max-age", "delete", "unused longer than images.max_age", _max_age),
    ClassifyRule("dangling", "delete",
                 "untagged and older than min_age (images.dangling = after-min-age)", _dangling),
    SpaceRule("quota", "delete",
              "least recently used first, until the store fits images.quota", _quota),
    SpaceRule("watermark", "delete",
              "least recently used first, from above images.high down to low", _watermark),
    SpaceRule("inode-watermark", "delete",
              "least recently used first, from above high_inodes down to low_inodes",
              _inode_watermark),
    FallbackRule("not-needed", "keep", "eligible, but no quota or watermark asked for more",
                 _not_needed),
    FallbackRule("no-rule", "keep", "no max_age, quota or watermark is set", _no_rule),
)


def check_table(table: Sequence[ImageRule]) -> None:
    """The table's shape, which the planner's phases rest on: names are unique; the
    classifying rows come first, then the space rows, then the fallback rows (the phases run
    in that order, so precedence and position agree); a space row deletes, a fallback row
    keeps, and the last row is a fallback."""
    names = [r.name for r in table]
    if len(set(names)) != len(names):
        raise ValueError(f"image rules: a name appears twice in {names}")
    phases = [_PHASES.index(type(r)) for r in table]
    if phases != sorted(phases):
        raise ValueError("image rules: classifying rows, then space rows, then fallback rows")
    for r in table:
        if (isinstance(r, SpaceRule) and r.verdict != "delete") or (
                isinstance(r, FallbackRule) and r.verdict != "keep"):
            raise ValueError(f"image rules: {r.name} cannot {r.verdict}")
    if not table or not isinstance(table[-1], FallbackRule):
        raise ValueError("image rules: the last row is a fallback, which decides what is left")


_PHASES: tuple[type, ...] = (ClassifyRule, SpaceRule, FallbackRule)
check_table(IMAGE_TABLE)

# The image rules in order of precedence; the first that applies decides.
IMAGE_RULES: tuple[str, ...] = tuple(r.name for r in IMAGE_TABLE)
CLASSIFY_RULES: tuple[ClassifyRule, ...] = tuple(
    r for r in IMAGE_TABLE if isinstance(r, ClassifyRule))
SPACE_RULES: tuple[SpaceRule, ...] = tuple(r for r in IMAGE_TABLE if isinstance(r, SpaceRule))
FALLBACK_RULES: tuple[FallbackRule, ...] = tuple(
    r for r in IMAGE_TABLE if isinstance(r, FallbackRule))
