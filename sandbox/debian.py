"""Fetch Debian packages from another suite and unpack them without installing them.

The sandbox uses this to run a newer dockerd (Docker 26.1 from trixie) beside the host's own
Docker 20.10, without touching the host's dpkg database or apt state: every apt directory that
matters (sources, lists, caches, status, preferences) is pointed at a private cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
FALLBACK_MIRROR = "http://deb.debian.org/debian"
DEFAULT_HOST_SUITE = "bookworm"
# Package lists younger than this are reused without asking the mirror again, so that a warm
# cache needs no network at all.
LISTS_MAX_AGE = 24 * 3600.0


class DebianFetchError(RuntimeError):
    """The packages could not be resolved, downloaded or unpacked."""


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnpackedPackages:
    """A `dpkg -x` tree of some packages, ready to have its bin dirs put first on PATH."""

    root: Path
    versions: Mapping[str, str] = field(default_factory=dict)

    @property
    def bin_dirs(self) -> tuple[Path, ...]:
        return (self.root / "usr" / "bin", self.root / "usr" / "sbin")


def cache_root() -> Path:
    env = os.environ.get("RECLAIM_SANDBOX_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "reclaim-sandbox"


# --- reading the host's apt sources ---------------------------------------------------------


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Parse the classic `deb [opts] URI suite comp...` format (`sources.list`, `*.list`)."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        # Options in brackets may contain spaces (`[ arch=amd64 signed-by=... ]`).
        line = re.sub(r"\[[^\]]*\]", " ", line)
        words = line.split()
        if len(words) < 3 or words[0] != "deb":
            continue
        out.append(AptSource(uri=words[1], suites=(words[2],), components=tuple(words[3:])))
    return out


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Parse the deb822 format (`*.sources`): stanzas separated by blank lines."""
    out: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key: str | None = None
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key is not None:
                fields[key] += " " + raw.strip()
                continue
            if ":" not in raw:
                continue
            k, v = raw.split(":", 1)
            key = k.strip().lower()
            fields[key] = v.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        components = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            out.append(AptSource(uri=uri, suites=suites, components=components))
    return out


def host_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    sources: list[AptSource] = []
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        sources += parse_one_line_sources(main_list.read_text(errors="replace"))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.name.endswith(".list"):
                sources += parse_one_line_sources(path.read_text(errors="replace"))
            elif path.name.endswith(".sources"):
                sources += parse_deb822_sources(path.read_text(errors="replace"))
    return sources


def host_codename(os_release: Path = Path("/etc/os-release")) -> str:
    try:
        for line in os_release.read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                value = line.split("=", 1)[1].strip().strip('"')
                if value:
                    return value
    except OSError:
        pass
    return DEFAULT_HOST_SUITE


def pick_mirror(sources: Iterable[AptSource], host_suite: str) -> str | None:
    for src in sources:
        if "security" in src.uri or any("security" in s for s in src.suites):
            continue
        if host_suite in src.suites:
            return src.uri.rstrip("/")
    return None


def host_mirror_uri(etc_apt: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the machine already uses, so the sandbox downloads from the same place
    (a snapshot mirror, a local proxy) instead of guessing one."""
    override = os.environ.get("RECLAIM_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/")
    uri = pick_mirror(host_sources(etc_apt), host_codename())
    if uri is None:
        log.warning("no %s mirror found in %s; using %s", host_codename(), etc_apt, FALLBACK_MIRROR)
        return FALLBACK_MIRROR
    return uri


# --- the private apt ------------------------------------------------------------------------


@dataclass(frozen=True)
class PrivateApt:
    """apt-get/apt-cache pointed at a private state so the host's apt is neither read nor
    changed (its lists, pkgcache.bin, dpkg status and pinning stay as they are)."""

    home: Path
    mirror: str
    suite: str
    component: str = "main"

    @property
    def sources_list(self) -> Path:
        return self.home / "sources.list"

    @property
    def archives(self) -> Path:
        return self.home / "archives"

    @property
    def lists(self) -> Path:
        return self.home / "lists"

    @property
    def stamp(self) -> Path:
        return self.home / "lists.stamp"

    def prepare(self) -> None:
        for d in (
            self.archives / "partial",
            self.lists / "partial",
            self.home / "parts",
            self.home / "prefs",
            self.home / "cache",
        ):
            d.mkdir(parents=True, exist_ok=True)
        (self.home / "status").touch()
        line = f"deb [signed-by={KEYRING}] {self.mirror} {self.suite} {self.component}\n"
        if not self.sources_list.exists() or self.sources_list.read_text() != line:
            self.sources_list.write_text(line)
            # Lists fetched from another mirror or suite must not be taken as fresh.
            self.stamp.unlink(missing_ok=True)

    def options(self) -> list[str]:
        h = self.home
        opts = {
            "Dir::Etc::SourceList": str(self.sources_list),
            "Dir::Etc::SourceParts": str(h / "parts"),
            "Dir::Etc::Preferences": str(h / "prefs" / "none"),
            "Dir::Etc::PreferencesParts": str(h / "prefs"),
            "Dir::State::Lists": str(self.lists),
            "Dir::State::status": str(h / "status"),
            "Dir::Cache": str(h / "cache"),
            "Dir::Cache::Archives": str(self.archives),
            "Acquire::Languages": "none",
            # The cache usually lives in root's 0700 home, which the _apt user cannot enter.
            "APT::Sandbox::User": "root",
        }
        out: list[str] = []
        for k, v in opts.items():
            out += ["-o", f"{k}={v}"]
        return out

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        cmd = [tool, *self.options(), *args]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise DebianFetchError(f"{tool} {' '.join(args)} failed ({proc.returncode}):\n{tail}")
        return proc.stdout

    def lists_fresh(self, max_age: float) -> bool:
        try:
            return time.time() - self.stamp.stat().st_mtime < max_age
        except FileNotFoundError:
            return False

    def update(self) -> None:
        # Without --error-on=any a mirror that cannot be reached still exits 0, leaving empty
        # lists that would then count as fresh.
        self.run("apt-get", "update", "--error-on=any")
        self.stamp.touch()

    def candidates(self, packages: Sequence[str]) -> dict[str, str]:
        out = self.run("apt-cache", "show", "--no-all-versions", *packages)
        found: dict[str, str] = {}
        name: str | None = None
        for line in out.splitlines():
            if line.startswith("Package:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("Version:") and name is not None:
                found.setdefault(name, line.split(":", 1)[1].strip())
        missing = [p for p in packages if p not in found]
        if missing:
            raise DebianFetchError(f"{missing}: not found in {self.suite} at {self.mirror}")
        return {p: found[p] for p in packages}

    def stamp_time(self) -> float:
        try:
            return self.stamp.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def download(self, package: str, version: str) -> Path:
        cached = find_deb(self.archives, package, version)
        if cached is not None:
            return cached
        # apt-get download writes into the current directory, not into Dir::Cache::Archives.
        self.run("apt-get", "download", f"{package}={version}", cwd=self.archives)
        found = find_deb(self.archives, package, version)
        if found is None:
            raise DebianFetchError(f"apt-get download {package}={version} left no .deb")
        return found


def find_deb(directory: Path, package: str, version: str) -> Path | None:
    # apt escapes the epoch colon as %3a in file names.
    plain = version.split(":", 1)[1] if ":" in version else version
    for cand in sorted(directory.glob(f"{package}_*.deb")):
        if cand.name.startswith(f"{package}_{plain}_") or cand.name.startswith(
            f"{package}_{version.replace(':', '%3a')}_"
        ):
            return cand
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise fetches: tests, the demo and the benchmarks may all start a docker26 at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tree_key(versions: Mapping[str, str]) -> str:
    key = "__".join(f"{p}_{v}" for p, v in sorted(versions.items()))
    return re.sub(r"[^A-Za-z0-9._+~-]", "_", key)


def _unpack(debs: Sequence[Path], dest: Path, drop_binaries: Sequence[str]) -> None:
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True, capture_output=True)
    for bindir in (dest / "usr" / "bin", dest / "usr" / "sbin", dest / "bin", dest / "sbin"):
        if not bindir.is_dir():
            continue
        for entry in bindir.iterdir():
            if entry.name in drop_binaries:
                entry.unlink()
            elif entry.is_symlink() and not entry.exists():
                # e.g. trixie's docker-init -> tini-static (in a package we do not fetch); a
                # dangling link first on PATH is skipped by Go's LookPath, but it confuses people.
                entry.unlink()


def fetch_unpacked(
    packages: Sequence[str],
    *,
    suite: str,
    cache_dir: Path | None = None,
    drop_binaries: Sequence[str] = (),
    max_age: float = LISTS_MAX_AGE,
) -> UnpackedPackages:
    """Download `packages` from `suite` on the host's mirror and unpack them into a cached tree.

    The tree is keyed by the package versions and reused while the package lists are fresh;
    if the mirror cannot be reached, the last tree that was built is reused with a warning.
    """
    base = (cache_dir or cache_root()) / suite
    apt = PrivateApt(home=base / "apt", mirror=host_mirror_uri(), suite=suite)
    trees = base / "trees"
    resolved_file = base / "resolved.json"
    with _locked(base / ".lock"):
        apt.prepare()
        trees.mkdir(parents=True, exist_ok=True)
        previous = _previous_tree(resolved_file, trees, packages)
        if (
            previous is not None
            and apt.lists_fresh(max_age)
            and previous.lists_stamp == apt.stamp_time()
        ):
            # Same lists as when this tree was built: the candidates cannot have changed.
            return previous.unpacked
        try:
            if not apt.lists_fresh(max_age):
                log.info("apt-get update for %s from %s", suite, apt.mirror)
                apt.update()
            versions = apt.candidates(packages)
        except DebianFetchError as exc:
            if previous is None:
                raise
            log.warning(
                "cannot refresh %s packages (%s); reusing %s", suite, exc, previous.unpacked.root
            )
            return previous.unpacked

        tree = trees / _tree_key(versions)
        if not (tree / ".complete").exists():
            debs = [apt.download(p, v) for p, v in versions.items()]
            tmp = trees / f".tmp-{tree.name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            _unpack(debs, tmp, drop_binaries)
            (tmp / "versions.json").write_text(json.dumps(versions, indent=1, sort_keys=True))
            (tmp / ".complete").touch()
            shutil.rmtree(tree, ignore_errors=True)
            tmp.rename(tree)
        resolved_file.write_text(
            json.dumps({"packages": versions, "tree": tree.name, "lists_stamp": apt.stamp_time()})
        )
        return UnpackedPackages(root=tree, versions=versions)


@dataclass(frozen=True)
class _Resolved:
    unpacked: UnpackedPackages
    lists_stamp: float


def _previous_tree(resolved_file: Path, trees: Path, packages: Sequence[str]) -> _Resolved | None:
    try:
        data = json.loads(resolved_file.read_text())
        versions = {str(k): str(v) for k, v in data["packages"].items()}
        tree = trees / str(data["tree"])
        stamp = float(data.get("lists_stamp", 0.0))
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
    if sorted(versions) != sorted(packages) or not (tree / ".complete").exists():
        return None
    return _Resolved(UnpackedPackages(root=tree, versions=versions), stamp)
