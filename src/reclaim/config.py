"""Where the configuration comes from: the TOML file (`--config`, else `RECLAIM_CONFIG`, else
`/etc/reclaim/config.toml` when it exists), with flags overriding it setting by setting."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reclaim.errors import UsageError
from reclaim.policy.rules import Policy, build_policy

CONFIG_ENV = "RECLAIM_CONFIG"
SYSTEM_CONFIG = Path("/etc/reclaim/config.toml")


def config_path(flag: str | None) -> Path | None:
    if flag:
        return Path(flag)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


# Far more than any policy needs; a larger "config" is the wrong file (or /dev/zero).
MAX_CONFIG_BYTES = 1024 * 1024


def load_file(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            # Bounded: a device or a huge file is refused without reading it all.
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError as exc:
        raise UsageError(f"config file {path} does not exist") from exc
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB; "
                         "is it the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"config file {path} is not UTF-8 (byte 0x{data[exc.start]:02x} at "
                         f"offset {exc.start}); TOML files are UTF-8") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise UsageError(f"config file {path} is not valid TOML: nested too deeply") from exc
    for section, values in doc.items():
        if not isinstance(values, dict):
            raise UsageError(f"config file {path}: {section} must be a [section]")
    return doc


def policy_from(file_settings: Mapping[str, Mapping[str, Any]],
                flag_settings: Mapping[str, Mapping[str, Any]]) -> Policy:
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in file_settings.items()}
    for section, values in flag_settings.items():
        for key, value in values.items():
            if value is not None and value != ():
                merged.setdefault(section, {})[key] = value
    return build_policy(merged)
