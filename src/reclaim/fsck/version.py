"""Which dockerd version owns a data root, and whether fsck knows its layout (DESIGN.md, safety
rule 5: an unknown engine version means "not proven").

Where the version comes from:
  * a dockerd running on the data root (`scan.engine_pids`): its own binary, `/proc/<pid>/exe
    --version`. The exe link reaches the inode that runs even after a package upgrade replaced
    the file, so the answer is the running engine's, not the installed one's;
  * no such process (the engine is stopped, or runs in a pid namespace fsck cannot see): the
    `dockerd` found on PATH, the binary that will next start on this root.
Docker writes no version into the data root itself, so there is nothing better to read there.

What happens with the answer:
  * nothing found, or output that does not parse: refused, one line saying why. A guess here
    would be exactly the unknown engine version the rule forbids;
  * a version outside the range verified for the driver: the read-only report is still given
    (reading changes nothing and shows the user what fsck sees), but a blocker makes every
    finding non-actionable, so `--quarantine` refuses and says why. Overriding that is left to a
    deliberate future flag that names the exact version; an environment variable that silently
    widens a safety rule would outlive the upgrade it was set for.

Verified ranges (inclusive lower bound, exclusive upper bound):
  * overlay2: 20.10 to before 27. The engine tests run Docker 20.10.24 and 26.1.5 on real data
    roots; between them the graph-driver store (image/overlay2/{imagedb,layerdb}, overlay2/<id>
    with link, lower and l/) did not change. 27 and later are not run here, and 29.x starts
    collecting orphan layers itself (moby #51714): its behaviour around leftover dirs is
    unverified, so it is not assumed.
  * aufs: 20.10 to before 24. The aufs layout read here (aufs/{diff,layers,mnt}, `-removing`
    renames, image/aufs/layerdb) is the moby aufs driver of 20.10 to 23.0; Docker 24 removed the
    driver, so a newer engine does not use an aufs tree at all. Older engines (1.10 to 19.03)
    share the layout but are not tested here, so they are not assumed either.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from reclaim.fsck.errors import FsckRefused

VERIFIED: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "overlay2": ((20, 10), (27, 0)),
    "aufs": ((20, 10), (24, 0)),
}
# "Docker version 20.10.24+dfsg1, build 5d6db84", "Docker version 26.1.5, build 411e817",
# "Docker version 17.03.2-ce, build f5ec1e2"
_VERSION = re.compile(r"^Docker version (\d+)\.(\d+)\.(\d+)(?:[-+~][0-9A-Za-z.+~-]*)?, build \S+")
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
_TIMEOUT = 20.0  # seconds; a dockerd that cannot print its version this fast is not trusted


@dataclass(frozen=True)
class EngineVersion:
    text: str  # the first line the binary printed
    number: tuple[int, int, int]
    source: str  # which binary answered, and why that one

    def __str__(self) -> str:
        return ".".join(map(str, self.number))


def parse(text: str, source: str) -> EngineVersion:
    line = (text.strip().splitlines() or [""])[0].strip()
    m = _VERSION.match(line)
    if not m:
        raise FsckRefused(f"engine version unknown: {source} printed {line[:80]!r}, not "
                          "'Docker version X.Y.Z, build ...'; not proving anything")
    return EngineVersion(line, (int(m[1]), int(m[2]), int(m[3])), source)


def _ask(binary: str, source: str) -> EngineVersion:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, timeout=_TIMEOUT,
                              stdin=subprocess.DEVNULL, env=_ENV, check=False)
    except subprocess.TimeoutExpired:
        raise FsckRefused(f"engine version unknown: {source} did not answer --version within "
                          f"{_TIMEOUT:.0f}s") from None
    except OSError as exc:
        raise FsckRefused(f"engine version unknown: cannot run {source}: {exc.strerror}") from None
    if done.returncode != 0:
        raise FsckRefused(f"engine version unknown: {source} --version exited with "
                          f"{done.returncode}")
    return parse(done.stdout.decode(errors="replace"), source)


def detect(pids: list[int], *, proc: str = "/proc", path: str | None = None
           ) -> list[EngineVersion]:
    """The version of every dockerd using the data root (`pids`), else of the dockerd on PATH
    (`path`, default the environment's). Refuses when there is no answer to be had."""
    if pids:
        return [_ask(f"{proc}/{pid}/exe", f"dockerd pid {pid} ({proc}/{pid}/exe)")
                for pid in pids]
    search = os.environ.get("PATH", "") if path is None else path
    binary = shutil.which("dockerd", path=search)
    if binary is None:
        raise FsckRefused("engine version unknown: no dockerd runs on this data root and none is "
                          "on PATH; fsck proves nothing without knowing the engine's layout")
    return [_ask(binary, f"{binary} (on PATH; no dockerd runs on this data root)")]


def blockers(versions: list[EngineVersion], driver: str) -> list[str]:
    """Why nothing may be acted on under these engine versions (empty when all are verified)."""
    span = VERIFIED.get(driver)
    if span is None:
        raise FsckRefused(f"no engine versions are verified for the {driver} layout")
    low, high = span
    out: list[str] = []
    for v in versions:
        if not low <= v.number[:2] < high:
            out.append(f"engine version {v} ({v.source}) is outside the versions whose {driver} "
                       f"layout fsck has verified ({low[0]}.{low[1]} to before "
                       f"{high[0]}.{high[1]}): report only")
    return out
