"""The one check of a 64-hex id and of a sha256 digest, shared by the adapters and fsck."""

from __future__ import annotations

import hashlib

import pytest

from reclaim.ondisk.digests import chain_ids, digest_hex, is_hex64

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize("text, expected", [
    (HEX, True),
    (HEX + "\n", False),  # a name that ends in a newline is no id, whatever `$` would say
    ("\n" + HEX, False),
    (HEX.upper(), False),
    (HEX[:-1], False),
    (HEX + "0", False),
    ("sha256:" + HEX, False),
    (HEX[:-1] + "g", False),
    ("", False),
])
def test_is_hex64(text: str, expected: bool) -> None:
    assert is_hex64(text) is expected


@pytest.mark.parametrize("digest, expected", [
    ("sha256:" + HEX, HEX),
    ("sha512:" + HEX, None),
    ("sha256:" + HEX + "\n", None),
    ("sha256:../../etc", None),
    (HEX, None),
])
def test_digest_hex(digest: str, expected: str | None) -> None:
    assert digest_hex(digest) == expected


def test_chain_ids_follow_the_image_spec() -> None:
    a, b, c = ("sha256:" + ch * 64 for ch in "abc")
    second = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    third = "sha256:" + hashlib.sha256(f"{second} {c}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == [a, second, third]
    assert chain_ids([]) == []
