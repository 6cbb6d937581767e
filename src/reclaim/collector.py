"""The cyclic garbage collector, paused for work that makes many objects and no cycles worth
collecting, and put back as it was: a command never leaves the interpreter changed."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
