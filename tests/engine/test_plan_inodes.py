"""`reclaim plan` with inode watermarks on real engines: the CLI asks the adapter for the
layers' inode counts and the plan evicts by them. Plans only: the seeded engines are shared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reclaim.accounting import Accounting
from reclaim.runtimes.docker import DockerRuntime
from tests.conftest import Seeded

pytestmark = pytest.mark.engine


def plan_json(seeded: Seeded, state: Path, *flags: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "reclaim", "--engine", seeded.engine.url, "--state-dir",
         str(state), "plan", "--json", "--min-age", "0s", *flags],
        capture_output=True, text=True, timeout=600, check=False, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def test_above_high_inodes_every_allowed_image_goes_with_the_inodes_it_frees(
    seeded: Seeded, tmp_path: Path
) -> None:
    # One inode is always exceeded, and down to none cannot be met: every image the rules
    # allow is chosen, each with the inodes it frees, and the plan says the target is missed.
    doc = plan_json(seeded, tmp_path, "--high-inodes", "1", "--low-inodes", "0")
    used = {seeded.truth.image_ids[c.image] for c in seeded.truth.truth.containers}
    evicted = [a for a in doc["actions"] if a["kind"] == "image"]
    assert evicted and all(a["reason"]["rule"] == "inode-watermark" for a in evicted)
    assert not used & {a["id"] for a in evicted}
    assert not [k for k in doc["kept"] if k["reason"]["rule"] == "not-needed"]
    assert any(w.startswith("inode-watermark:") and "still over" in w for w in doc["warnings"])
    # A local engine's layers are all counted: no layer frees an unknown number.
    assert not any("no inode count" in w for w in doc["warnings"])

    runtime = DockerRuntime(seeded.engine.url)
    try:
        inventory = runtime.inventory()
        counts = runtime.layer_inodes(list(inventory.layers))
    finally:
        runtime.close()
    freed = [int(a["reason"]["detail"].rsplit("frees ", 1)[1].split()[0].replace(",", ""))
             for a in evicted]
    accounting = Accounting(inventory, counts)
    assert sum(freed) == accounting.freed_inodes_by([a["id"] for a in evicted]) > 0
    assert sum(a["bytes"] for a in evicted) == accounting.freed_by([a["id"] for a in evicted])


def test_under_high_inodes_nothing_is_evicted(seeded: Seeded, tmp_path: Path) -> None:
    st = os.statvfs(seeded.truth.engine.data_root)
    free_above = st.f_files - st.f_ffree + 1_000_000
    doc = plan_json(seeded, tmp_path, "--high-inodes", str(free_above),
                    "--low-inodes", "0")
    assert [a for a in doc["actions"] if a["kind"] == "image"] == []
    assert any("inodes used, under high_inodes" in k["reason"]["detail"]
               for k in doc["kept"] if k["reason"]["rule"] == "not-needed")
    assert doc["policy"]["images"]["high_inodes"] == free_above
