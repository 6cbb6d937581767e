"""A minimal runnable root filesystem for images the engine tests import themselves."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

BUSYBOX = Path("/usr/bin/busybox")


def busybox_rootfs_tar(marker: str | None = None,
                       applets: tuple[str, ...] = ("sh", "sleep", "true")) -> bytes:
    """The static busybox and a few applets; a marker file gives each image an id of its own."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "dev", "etc", "proc", "sys", "tmp"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(data)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in applets:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        if marker is not None:
            payload = marker.encode()
            info = tarfile.TarInfo("etc/marker")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()
