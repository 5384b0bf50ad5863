"""Encrypted file blobs (CMB1): round trips of every size class, and every way a blob can
be damaged is refused with its class."""

from __future__ import annotations

import io
import os

import pytest

from cmaas.envelope import MalformedEncoding
from cmaas.envelope.blob import (
    BLOB_HEADER_SIZE,
    TamperedBlob,
    decrypt_blob,
    encrypt_blob,
    encrypted_blob_size,
)

KEY = bytes(range(32))
CHUNK = 1024


def sealed(plaintext: bytes) -> tuple[bytes, int, str]:
    target = io.BytesIO()
    size, digest = encrypt_blob(io.BytesIO(plaintext), target, KEY, chunk_size=CHUNK)
    return target.getvalue(), size, digest


def opened(blob: bytes, size: int, digest: str, key: bytes = KEY) -> bytes:
    target = io.BytesIO()
    decrypt_blob(io.BytesIO(blob), target, key, expected_size=size, expected_sha256=digest)
    return target.getvalue()


@pytest.mark.parametrize("length", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5000])
def test_round_trip(length: int) -> None:
    plaintext = os.urandom(length)
    blob, size, digest = sealed(plaintext)
    assert len(blob) == encrypted_blob_size(length, CHUNK)
    assert opened(blob, size, digest) == plaintext


def test_ten_mebibytes_in_default_chunks() -> None:
    plaintext = os.urandom(10 * 1024 * 1024)
    target = io.BytesIO()
    size, digest = encrypt_blob(io.BytesIO(plaintext), target, KEY)
    assert len(target.getvalue()) == encrypted_blob_size(size)
    out = io.BytesIO()
    decrypt_blob(
        io.BytesIO(target.getvalue()), out, KEY, expected_size=size, expected_sha256=digest
    )
    assert out.getvalue() == plaintext


def test_every_kind_of_damage_is_refused() -> None:
    plaintext = os.urandom(3 * CHUNK + 100)
    blob, size, digest = sealed(plaintext)
    record = CHUNK + 16
    first = BLOB_HEADER_SIZE
    damaged = {
        "flipped bit": blob[: first + 5] + bytes([blob[first + 5] ^ 1]) + blob[first + 6 :],
        "truncated at a record boundary": blob[: first + 2 * record],
        "truncated mid-record": blob[: first + record + 7],
        "a record dropped": blob[: first + record] + blob[first + 2 * record :],
        "records swapped": blob[:first]
        + blob[first + record : first + 2 * record]
        + blob[first : first + record]
        + blob[first + 2 * record :],
        "extended": blob + blob[-record:],
        "header changed": blob[:4] + bytes(8) + blob[12:],
    }
    for bad in damaged.values():
        with pytest.raises(TamperedBlob):
            opened(bad, size, digest)
    with pytest.raises(TamperedBlob):
        opened(blob, size, digest, key=bytes(32))
    with pytest.raises(TamperedBlob):
        opened(blob, size, "0" * 64)
    with pytest.raises(TamperedBlob):
        opened(blob, size + 1, digest)
    with pytest.raises(MalformedEncoding):
        opened(b"NOPE" + blob[4:], size, digest)
    with pytest.raises(MalformedEncoding):
        opened(blob[:12] + (7).to_bytes(4, "big") + blob[16:], size, digest)
