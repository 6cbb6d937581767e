"""Start and stop private Docker engines for the demo, the tests and the benchmarks.

Each engine lives entirely under a base directory chosen by the caller: its data root, exec root,
API socket, pid file, log and a `sandbox.json` state file. Teardown reads only that state file,
so an engine started by one process can be stopped by another (a crashed test session, the CLI).

Kinds:
  docker20             the host's Debian bookworm dockerd 20.10, overlay2
  docker26             Docker 26.1 unpacked from Debian trixie (see debian.py), overlay2
  docker26-containerd  the same Docker 26.1 with the containerd image store (overlayfs snapshotter)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sandbox import debian

log = logging.getLogger(__name__)

ENGINE_KINDS: tuple[str, ...] = ("docker20", "docker26", "docker26-containerd")

STATE_FILE = "sandbox.json"
LOG_FILE = "dockerd.log"
# Only the system directories: /usr/local/bin holds a Docker 28 client and could hold anything
# else that would shadow the binaries an engine is meant to run with.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# When this socket file exists (dockerd checks no more than that) dockerd uses that containerd
# instead of starting its own, and the engine's images and containers would no longer be ours.
SYSTEM_CONTAINERD_SOCKET = Path("/run/containerd/containerd.sock")
# Where containerd's v2 shims put their sockets whatever the containerd address is.
SHIM_SOCKET_DIR = "/run/containerd/s/"
HOST_PACKAGES: tuple[str, ...] = ("docker.io", "containerd", "runc", "busybox-static")
HOST_BINARIES: tuple[str, ...] = ("dockerd", "containerd", "runc", "busybox")
TRIXIE_PACKAGES: tuple[str, ...] = ("docker.io", "containerd")
# sun_path is 108 bytes; leave room for the longest socket an engine makes under its exec root.
MAX_SOCKET_PATH = 100
LONGEST_SOCKET_SUFFIX = "exec/containerd/containerd.sock.ttrpc"
STOP_TIMEOUT = 20.0


class SandboxError(RuntimeError):
    """A sandbox engine could not be started, reached or stopped cleanly."""


@dataclass(frozen=True)
class SandboxEngine:
    kind: str
    base_dir: Path
    socket: Path
    data_root: Path
    exec_root: Path
    pidfile: Path
    pid: int
    version: str

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log_file(self) -> Path:
        return self.base_dir / LOG_FILE

    @property
    def containerd_socket(self) -> Path:
        return self.exec_root / "containerd" / "containerd.sock"


@dataclass(frozen=True)
class _Layout:
    base: Path

    @property
    def socket(self) -> Path:
        return self.base / "d.sock"

    @property
    def data_root(self) -> Path:
        return self.base / "data"

    @property
    def exec_root(self) -> Path:
        return self.base / "exec"

    @property
    def pidfile(self) -> Path:
        return self.base / "dockerd.pid"

    @property
    def config(self) -> Path:
        return self.base / "daemon.json"

    @property
    def state(self) -> Path:
        return self.base / STATE_FILE

    @property
    def log(self) -> Path:
        return self.base / LOG_FILE


@dataclass(frozen=True)
class _Binaries:
    dockerd: Path
    path_env: str
    packages: dict[str, str]


# Popen objects of the engines this process started, so that they are reaped when stopped
# (an unreaped zombie still has a /proc entry and would look alive).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# --- host packages --------------------------------------------------------------------------


def _which(name: str) -> str | None:
    return shutil.which(name, path=SYSTEM_PATH)


def ensure_host_packages() -> None:
    """Install Debian's docker.io, containerd, runc and busybox-static if any binary is missing."""
    missing = [b for b in HOST_BINARIES if _which(b) is None]
    # A dynamically linked busybox (Debian's `busybox`) cannot run inside the images the
    # fixtures build: only the static one counts.
    if not _static_busybox():
        missing.append("busybox (static)")
    if not missing:
        return
    log.info("missing %s; installing %s", ", ".join(missing), " ".join(HOST_PACKAGES))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with _no_service_starts():
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *HOST_PACKAGES]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
                raise SandboxError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    still = [b for b in HOST_BINARIES if _which(b) is None]
    if not _static_busybox():
        still.append("busybox (static)")
    if still:
        raise SandboxError(f"still missing after apt-get install: {', '.join(still)}")


def _static_busybox() -> bool:
    from sandbox.content import find_busybox

    try:
        find_busybox()
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """On a systemd host the packages would start a system dockerd and containerd; the latter's
    socket would then be adopted by every sandbox engine. policy-rc.d tells the maintainer
    scripts not to start services (only added if the host has none of its own)."""
    path = Path("/usr/sbin/policy-rc.d")
    if path.exists():
        yield
        return
    path.write_text("#!/bin/sh\n# added by reclaim's sandbox while installing packages\nexit 101\n")
    path.chmod(0o755)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _dpkg_versions(packages: Iterable[str]) -> dict[str, str]:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\n", *packages],
        capture_output=True,
        text=True,
        check=False,
    )
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        name, _, version = line.partition(" ")
        if version:
            out[name] = version
    return out


def _binaries(kind: str) -> _Binaries:
    if kind == "docker20":
        host_dockerd = _which("dockerd")
        if host_dockerd is None:
            raise SandboxError("dockerd not found; call ensure_host_packages() first")
        return _Binaries(
            Path(host_dockerd), SYSTEM_PATH, _dpkg_versions(["docker.io", "containerd", "runc"])
        )
    # trixie's packages hold dockerd, docker-proxy, containerd and its shims but no runc (a
    # separate package whose binary needs trixie's glibc); bookworm's runc is used instead.
    tree = debian.fetch_unpacked(TRIXIE_PACKAGES, suite="trixie", drop_binaries=("runc",))
    dockerd = tree.root / "usr" / "sbin" / "dockerd"
    if not dockerd.is_file():
        raise SandboxError(f"no dockerd in the unpacked trixie packages at {tree.root}")
    path_env = ":".join([*(str(d) for d in tree.bin_dirs), SYSTEM_PATH])
    packages = dict(tree.versions)
    packages.update(_dpkg_versions(["runc"]))
    return _Binaries(dockerd, path_env, packages)


# --- talking to an engine -------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._unix_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def api_get(sock: Path, path: str, *, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET `path` from the engine API on a unix socket; plain http so that waiting for a
    starting engine costs nothing but a connect()."""
    conn = _UnixHTTPConnection(sock, timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def api_json(engine: SandboxEngine, path: str) -> Any:
    status, body = api_get(engine.socket, path)
    if status != 200:
        raise SandboxError(f"GET {path} on {engine.url}: HTTP {status}: {body[:200]!r}")
    return json.loads(body)


def _answers(sock: Path) -> bool:
    try:
        status, body = api_get(sock, "/_ping", timeout=2.0)
    except (OSError, http.client.HTTPException):
        return False
    return status == 200 and body.strip() == b"OK"


def log_tail(base_dir: Path, lines: int = 25, *, since: int = 0) -> str:
    """The last lines of the engine's log, from byte offset `since` (the start of this run)."""
    try:
        with (base_dir / LOG_FILE).open("rb") as fh:
            fh.seek(since)
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --- processes ------------------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses; everything after the last ")" is well formed.
    return raw[raw.rindex(")") + 2 :].split()


def _alive(pid: int) -> bool:
    _reap(pid)
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    # starttime is field 22 of stat; fields here start at field 3 (state).
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _refers_to(args: Sequence[str], prefixes: Sequence[str]) -> bool:
    for arg in args:
        for value in (arg, arg.partition("=")[2]):
            if any(value == p or value.startswith(p + "/") for p in prefixes):
                return True
    return False


def processes_under(paths: Iterable[Path]) -> list[int]:
    """Live processes whose command line names one of `paths` or anything below it: an engine's
    dockerd, its managed containerd and the containerd shims (they carry its socket address)."""
    prefixes = [str(p) for p in paths]
    me = os.getpid()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me:
            continue
        if _refers_to(_cmdline(pid), prefixes) and _alive(pid):
            found.append(pid)
    return sorted(found)


def engine_processes(engine: SandboxEngine) -> list[int]:
    return processes_under([engine.data_root, engine.exec_root])


def _is_our_dockerd(pid: int, data_root: Path) -> bool:
    args = _cmdline(pid)
    if not args or not Path(args[0]).name.startswith("dockerd"):
        return False
    return (
        any(
            a == str(data_root) and i > 0 and args[i - 1] == "--data-root"
            for i, a in enumerate(args)
        )
        or f"--data-root={data_root}" in args
    )


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Poll until the processes are gone; returns those still alive at the deadline."""
    left = list(pids)
    deadline = time.monotonic() + timeout
    while left:
        left = [p for p in left if _alive(p)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return left


def _terminate(pids: Sequence[int], timeout: float) -> list[int]:
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    left = _wait_gone(pids, timeout)
    for pid in left:
        _signal(pid, signal.SIGKILL)
    return _wait_gone(left, 5.0)


def _shim_sockets(pids: Iterable[int]) -> list[Path]:
    """The listening sockets the given processes hold in /run/containerd/s/ (a killed shim never
    removes its own)."""
    by_inode: dict[str, str] = {}
    try:
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 8 and parts[7].startswith(SHIM_SOCKET_DIR):
                by_inode[parts[6]] = parts[7]
    except OSError:
        return []
    found: list[Path] = []
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        path = by_inode.get(target[len("socket:[") : -1])
                        if path is not None:
                            found.append(Path(path))
    return found


def _kill_containers(exec_root: Path) -> None:
    """Kill what is left of the engine's containers when dockerd could not stop them (it was
    killed): their processes sit in their own pid namespaces, carry none of our paths in their
    command lines, and would outlive the shims."""
    runc = _which("runc")
    for state_file in sorted(exec_root.glob("runtime-*/*/*/state.json")):
        root, cid = state_file.parent.parent, state_file.parent.name
        pid, start = 0, None
        with contextlib.suppress(OSError, ValueError, TypeError):
            state = json.loads(state_file.read_text())
            pid = int(state.get("init_process_pid") or 0)
            start = state.get("init_process_start")
        if runc is not None:
            subprocess.run(
                [runc, "--root", str(root), "delete", "--force", cid],
                capture_output=True,
                timeout=30,
                check=False,
            )
        # Only if it is still the same process (pid reuse) and runc could not remove it.
        if pid > 0 and _alive(pid) and start is not None and _start_ticks(pid) == int(start):
            _signal(pid, signal.SIGKILL)
            _wait_gone([pid], 5.0)


# --- mounts ---------------------------------------------------------------------------------


def _unescape_mount_path(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1 : i + 4]) == 3 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(paths: Iterable[Path]) -> list[Path]:
    """Mount points in this mount namespace at or below any of `paths`, in mountinfo order."""
    prefixes = [str(p) for p in paths]
    found: list[Path] = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) < 5:
                continue
            mp = _unescape_mount_path(fields[4])
            if any(mp == p or mp.startswith(p + "/") for p in prefixes):
                found.append(Path(mp))
    return found


def _unmount_all(paths: Sequence[Path]) -> list[Path]:
    """Unmount everything at or below `paths`, deepest first; returns what is still mounted."""
    for _ in range(5):
        mounts = mounts_under(paths)
        if not mounts:
            return []
        # Deepest first; among mounts stacked on one path the latest (last listed) first.
        order = sorted(enumerate(mounts), key=lambda im: (len(im[1].parts), im[0]), reverse=True)
        for _, mp in order:
            proc = subprocess.run(["umount", str(mp)], capture_output=True, check=False)
            if proc.returncode != 0:
                subprocess.run(["umount", "-l", str(mp)], capture_output=True, check=False)
    return mounts_under(paths)


def _remove_tree(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except PermissionError:
        # Leak recipes set the immutable flag on engine metadata (chattr +i).
        subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True, check=False)
        shutil.rmtree(path)
    except FileNotFoundError:
        pass


# --- state ----------------------------------------------------------------------------------


def _read_state(base_dir: Path) -> dict[str, Any] | None:
    path = base_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SandboxError(f"unreadable sandbox state {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SandboxError(f"unreadable sandbox state {path}: not an object")
    return data


def load_state(base_dir: Path) -> SandboxEngine | None:
    """The engine last started in `base_dir` (running or not), or None if there never was one."""
    data = _read_state(base_dir.resolve())
    if data is None:
        return None
    try:
        return SandboxEngine(
            kind=str(data["kind"]),
            base_dir=Path(data["base_dir"]),
            socket=Path(data["socket"]),
            data_root=Path(data["data_root"]),
            exec_root=Path(data["exec_root"]),
            pidfile=Path(data["pidfile"]),
            pid=int(data["pid"]),
            version=str(data["version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SandboxError(f"bad sandbox state in {base_dir / STATE_FILE}: {exc}") from exc


def _write_state(layout: _Layout, data: dict[str, Any]) -> None:
    tmp = layout.state.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(layout.state)


def is_running(engine: SandboxEngine) -> bool:
    return _alive(engine.pid) and _is_our_dockerd(engine.pid, engine.data_root)


# --- start ----------------------------------------------------------------------------------


def _namespace(base: Path) -> str:
    # Unique per base dir, so that even an engine that ended up on a shared containerd could
    # not see another engine's images or containers.
    return "sbx-" + hashlib.sha256(str(base).encode()).hexdigest()[:12]


def _daemon_config(kind: str) -> dict[str, Any]:
    if kind == "docker26-containerd":
        return {"features": {"containerd-snapshotter": True}}
    # Named explicitly so that an unsuitable filesystem fails the start instead of silently
    # giving a vfs engine.
    return {"storage-driver": "overlay2"}


def _check_storage(engine: SandboxEngine) -> None:
    info = api_json(engine, "/info")
    driver = info.get("Driver")
    status = [" ".join(str(x) for x in pair) for pair in info.get("DriverStatus") or []]
    if engine.kind == "docker26-containerd":
        ok = driver == "overlayfs" and any("io.containerd.snapshotter.v1" in s for s in status)
    else:
        ok = driver == "overlay2"
    if not ok:
        raise SandboxError(f"{engine.kind} came up with storage {driver!r} {status}")


def start(kind: str, base_dir: Path, *, timeout: float = 90.0) -> SandboxEngine:
    """Start a private engine of `kind` under `base_dir` and wait until its API answers."""
    if kind not in ENGINE_KINDS:
        raise SandboxError(f"unknown engine kind {kind!r}; choose from {', '.join(ENGINE_KINDS)}")
    # Canonical, because mountinfo and /proc/*/cmdline are compared with these paths.
    layout = _Layout(base_dir.resolve())
    longest = layout.base / LONGEST_SOCKET_SUFFIX
    if len(str(longest)) > MAX_SOCKET_PATH:
        raise SandboxError(
            f"base dir {layout.base} is too long for unix sockets below it ({longest}); "
            "use a short directory such as /tmp/rs-XXXX"
        )
    if os.path.lexists(SYSTEM_CONTAINERD_SOCKET):
        raise SandboxError(
            f"{SYSTEM_CONTAINERD_SOCKET} exists, so dockerd would use that containerd instead of "
            "starting its own; stop the system containerd (or remove a stale socket) first"
        )
    previous = _read_state(layout.base)
    if previous is not None:
        engine = load_state(layout.base)
        if engine is not None and is_running(engine):
            raise SandboxError(f"an engine is already running in {layout.base} (pid {engine.pid})")
        if previous.get("kind") != kind and layout.data_root.exists():
            raise SandboxError(
                f"{layout.base} holds the data of a {previous.get('kind')} engine; "
                f"stop it with remove=True or use another dir for {kind}"
            )
    # Whatever a killed engine left behind (containerd, shims, mounts) would confuse the new one.
    _teardown_layout(layout, pid=None, remove=False)

    binaries = _binaries(kind)
    for d in (layout.base, layout.data_root, layout.exec_root):
        d.mkdir(parents=True, exist_ok=True)
    # Our own config file: dockerd would otherwise also read the host's /etc/docker/daemon.json.
    layout.config.write_text(json.dumps(_daemon_config(kind), indent=2) + "\n")
    ns = _namespace(layout.base)
    cmd = [
        str(binaries.dockerd),
        "--config-file", str(layout.config),
        "--data-root", str(layout.data_root),
        "--exec-root", str(layout.exec_root),
        "-H", f"unix://{layout.socket}",
        "--pidfile", str(layout.pidfile),
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
        "--containerd-namespace", ns,
        "--containerd-plugins-namespace", f"{ns}-plugins",
    ]  # fmt: skip
    env = {"PATH": binaries.path_env, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    began = time.monotonic()
    with layout.log.open("ab") as logfh:
        log_offset = logfh.tell()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        logfh.write(
            f"\n=== sandbox: starting {kind} at {stamp}: {' '.join(cmd)}\n".encode()
        )
        logfh.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=logfh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=layout.base,
            # Its own session: a Ctrl-C meant for the test run must not hit the engine half-way;
            # teardown is explicit.
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    engine = SandboxEngine(
        kind=kind,
        base_dir=layout.base,
        socket=layout.socket,
        data_root=layout.data_root,
        exec_root=layout.exec_root,
        pidfile=layout.pidfile,
        pid=proc.pid,
        version="",
    )
    state: dict[str, Any] = {
        "kind": kind,
        "pid": proc.pid,
        "base_dir": str(layout.base),
        "socket": str(layout.socket),
        "data_root": str(layout.data_root),
        "exec_root": str(layout.exec_root),
        "pidfile": str(layout.pidfile),
        "url": engine.url,
        "version": "",
        "dockerd": str(binaries.dockerd),
        "path": binaries.path_env,
        "packages": binaries.packages,
        "containerd_namespace": ns,
        "started_at": time.time(),
    }
    # Written before waiting, so that an engine that never answers can still be torn down from
    # elsewhere.
    _write_state(layout, state)
    try:
        _wait_answering(proc, layout, kind, timeout, log_offset)
        version = str(api_json(engine, "/version").get("Version", ""))
        engine = replace(engine, version=version)
        _check_storage(engine)
    except BaseException:
        _teardown_layout(layout, pid=proc.pid, remove=False)
        raise
    state["version"] = version
    state["start_seconds"] = round(time.monotonic() - began, 3)
    _write_state(layout, state)
    log.info("%s %s answering on %s (pid %d)", kind, version, engine.url, proc.pid)
    return engine


def _wait_answering(
    proc: subprocess.Popen[bytes], layout: _Layout, kind: str, timeout: float, log_offset: int
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        rc = proc.poll()
        if rc is not None:
            raise SandboxError(
                f"{kind} dockerd exited with status {rc} while starting; "
                f"last lines of {layout.log}:\n{log_tail(layout.base, since=log_offset)}"
            )
        if _answers(layout.socket):
            return
        if time.monotonic() >= deadline:
            raise SandboxError(
                f"{kind} dockerd did not answer on {layout.socket} within {timeout:.0f}s; "
                f"last lines of {layout.log}:\n{log_tail(layout.base, since=log_offset)}"
            )
        time.sleep(0.05)


# --- stop -----------------------------------------------------------------------------------


def _teardown(
    base: Path,
    *,
    data_root: Path,
    exec_root: Path,
    sock: Path,
    pidfile: Path,
    pid: int | None,
    remove: bool,
) -> None:
    """Stop dockerd (only the one started in this dir), then whatever of its containers,
    containerd and shims survived it, then unmount what is left under its roots."""
    roots = [data_root, exec_root]
    problems: list[str] = []
    # On SIGTERM dockerd stops its containers and its managed containerd itself.
    ours = pid is not None and _alive(pid) and _is_our_dockerd(pid, data_root)
    if ours and pid is not None and _terminate([pid], STOP_TIMEOUT):
        problems.append(f"dockerd {pid} survived SIGKILL")
    _kill_containers(exec_root)
    leftovers = processes_under(roots)
    if leftovers:
        sockets = _shim_sockets(leftovers)
        still = _terminate(leftovers, 5.0)
        if still:
            problems.append(f"processes {still} survived SIGKILL")
        for shim_sock in sockets:
            shim_sock.unlink(missing_ok=True)
    mounted = _unmount_all(roots)
    if mounted:
        problems.append(f"still mounted: {', '.join(map(str, mounted))}")
    with contextlib.suppress(OSError):
        if sock.is_socket():
            sock.unlink()
    _drop_stale_pidfile(pidfile, lambda p: _is_our_dockerd(p, data_root))
    _drop_stale_pidfile(
        exec_root / "containerd" / "containerd.pid",
        lambda p: _refers_to(_cmdline(p), [str(exec_root)]),
    )
    if remove and base.exists() and not problems:
        others = mounts_under([base])
        if others:
            problems.append(f"not removing {base}: mounts below it: {', '.join(map(str, others))}")
        else:
            _remove_tree(base)
    if problems:
        raise SandboxError(f"teardown of {base} incomplete: " + "; ".join(problems))


def _drop_stale_pidfile(pidfile: Path, ours: Callable[[int], bool]) -> None:
    """A pid file whose process is gone, or is not ours any more, or is a zombie.

    dockerd refuses to start while the pid in its own pid file exists, and adopts (then waits
    forever for) a managed containerd whose pid exists; a killed process stays a zombie until
    its parent reaps it, which pid 1 here does lazily."""
    try:
        pid = int(pidfile.read_text().strip() or "0")
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        pid = 0
    if pid <= 0 or not (_alive(pid) and ours(pid)):
        pidfile.unlink(missing_ok=True)


def _teardown_layout(layout: _Layout, *, pid: int | None, remove: bool) -> None:
    _teardown(
        layout.base,
        data_root=layout.data_root,
        exec_root=layout.exec_root,
        sock=layout.socket,
        pidfile=layout.pidfile,
        pid=pid,
        remove=remove,
    )


def stop(engine: SandboxEngine, *, remove: bool = False) -> None:
    """Stop the engine and everything it left running or mounted; with `remove`, delete its dir.
    Safe to call again, and on an engine that is already stopped or was killed."""
    _teardown(
        engine.base_dir,
        data_root=engine.data_root,
        exec_root=engine.exec_root,
        sock=engine.socket,
        pidfile=engine.pidfile,
        pid=engine.pid,
        remove=remove,
    )


def stop_dir(base_dir: Path, *, remove: bool = False) -> None:
    """stop() for the engine whose state is in `base_dir`, from any process. A dir without state
    is still cleaned of processes and mounts below its data and exec roots."""
    base = base_dir.resolve()
    if not base.exists():
        return
    engine = load_state(base)
    if engine is not None:
        stop(engine, remove=remove)
    else:
        _teardown_layout(_Layout(base), pid=None, remove=remove)


def kill9(engine: SandboxEngine) -> None:
    """SIGKILL dockerd alone, as a crash would: its containerd, shims, containers and mounts stay
    for the leak tests to look at, and for stop() to clean up."""
    if not (_alive(engine.pid) and _is_our_dockerd(engine.pid, engine.data_root)):
        raise SandboxError(f"dockerd {engine.pid} of {engine.base_dir} is not running")
    _signal(engine.pid, signal.SIGKILL)
    if _wait_gone([engine.pid], 10.0):
        raise SandboxError(f"dockerd {engine.pid} survived SIGKILL")


def restart(engine: SandboxEngine) -> SandboxEngine:
    """Stop the engine keeping its data, and start it again on the same dirs."""
    stop(engine, remove=False)
    return start(engine.kind, engine.base_dir)


# --- command line ---------------------------------------------------------------------------


def _status(base: Path) -> tuple[int, dict[str, Any]]:
    engine = load_state(base)
    if engine is None:
        return 1, {"base_dir": str(base.resolve()), "state": "absent"}
    running = is_running(engine)
    answering = running and _answers(engine.socket)
    report: dict[str, Any] = {
        "kind": engine.kind,
        "base_dir": str(engine.base_dir),
        "url": engine.url,
        "pid": engine.pid,
        "version": engine.version,
        "state": "running" if answering else ("not answering" if running else "stopped"),
        "processes": engine_processes(engine),
        "mounts": [str(m) for m in mounts_under([engine.data_root, engine.exec_root])],
    }
    return (0 if answering else 1), report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.engines", description="Private Docker engines."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start an engine and print its URL")
    p_start.add_argument("--kind", choices=ENGINE_KINDS, required=True)
    p_start.add_argument("--dir", type=Path, required=True)
    p_start.add_argument("--timeout", type=float, default=90.0)
    p_stop = sub.add_parser("stop", help="stop the engine in DIR and clean up after it")
    p_stop.add_argument("--dir", type=Path, required=True)
    p_stop.add_argument("--remove", action="store_true", help="also delete DIR")
    p_status = sub.add_parser("status", help="print the state of the engine in DIR as JSON")
    p_status.add_argument("--dir", type=Path, required=True)
    sub.add_parser("ensure-host-packages", help="apt-get install what the engines need")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    try:
        if args.command == "start":
            engine = start(args.kind, args.dir, timeout=args.timeout)
            # This process exits now; the engine carries on and is stopped with `stop`.
            _CHILDREN.pop(engine.pid, None)
            print(engine.url)
        elif args.command == "stop":
            stop_dir(args.dir, remove=args.remove)
        elif args.command == "status":
            code, report = _status(args.dir)
            print(json.dumps(report, indent=2))
            return code
        else:
            ensure_host_packages()
    except (SandboxError, debian.DebianFetchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
