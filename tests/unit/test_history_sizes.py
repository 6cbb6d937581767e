from __future__ import annotations

from reclaim.runtimes.docker.adapter import _layer_sizes_from_history


def entry(size: int, created_by: str = "") -> dict[str, object]:
    return {"Size": size, "CreatedBy": created_by}


def test_one_entry_per_layer_maps_in_order() -> None:
    history = [entry(30), entry(20), entry(10)]  # newest first
    assert _layer_sizes_from_history(history, 3) == [10, 20, 30]


def test_metadata_instructions_are_not_layers() -> None:
    history = [
        entry(0, "/bin/sh -c #(nop)  CMD [\"sh\"]"),
        entry(0, "RUN touch /nothing # buildkit"),  # a real layer that happens to be empty
        entry(0, "ENV A=1"),
        entry(500, "COPY app /app"),
        entry(0, "/bin/sh -c #(nop)  LABEL x=y"),
        entry(7000, "ADD rootfs.tar /"),
    ]
    assert _layer_sizes_from_history(history, 3) == [7000, 500, 0]


def test_short_history_pads_with_zero() -> None:
    assert _layer_sizes_from_history([entry(5)], 2) == [5, 0]
