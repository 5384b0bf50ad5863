"""Encrypted file blobs (format ``CMB1``): AES-256-GCM in fixed-size chunks, so that a file
of any size is encrypted, uploaded, downloaded and checked without holding it whole.

Layout: a 16-byte header ``"CMB1" || nonce_prefix (8 random bytes) || chunk_size (u32,
big-endian)``, then records, each the AES-256-GCM ciphertext and tag of one chunk of
``chunk_size`` plaintext bytes (the last may be shorter, or empty for an empty file).
Record ``i`` uses nonce ``nonce_prefix || i`` (u32, big-endian) and associated data
``header || final`` where ``final`` is one byte, 1 for the last record and 0 otherwise.
Reordering fails the nonce, truncation at a record boundary fails the ``final`` byte, and
anything else fails the tag. The envelope's ``file`` content carries the 32-byte key and
the SHA-256 of the plaintext, which the reader checks at the end as well.

Pure code on ``cryptography``'s AES-GCM; the streams are file objects the caller opens.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cmaas.envelope.errors import MalformedEncoding, TamperedPayload

__all__ = [
    "BLOB_CHUNK_SIZE",
    "BLOB_HEADER_SIZE",
    "FILE_KEY_SIZE",
    "TamperedBlob",
    "decrypt_blob",
    "encrypt_blob",
    "encrypted_blob_size",
]

MAGIC = b"CMB1"
BLOB_CHUNK_SIZE = 64 * 1024
BLOB_HEADER_SIZE = 16
FILE_KEY_SIZE = 32
_TAG = 16
_MIN_CHUNK, _MAX_CHUNK = 1024, 1024 * 1024
_MAX_RECORDS = 2**32


class TamperedBlob(TamperedPayload):
    """A blob record does not authenticate, the blob was cut short or extended, or the
    plaintext's size or SHA-256 differs from what the envelope promised."""


def encrypted_blob_size(size: int, chunk_size: int = BLOB_CHUNK_SIZE) -> int:
    """How many bytes the blob of a ``size``-byte file takes."""
    records = max(1, -(-size // chunk_size))
    return BLOB_HEADER_SIZE + size + records * _TAG


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def encrypt_blob(
    source: BinaryIO,
    target: BinaryIO,
    file_key: bytes,
    *,
    chunk_size: int = BLOB_CHUNK_SIZE,
) -> tuple[int, str]:
    """Encrypt ``source`` into ``target`` chunk by chunk.

    Returns: the plaintext's size and SHA-256 (lowercase hex), for the envelope.
    Raises: ValueError: A key that is not 32 bytes, or a chunk size out of bounds.
    """
    if len(file_key) != FILE_KEY_SIZE or not _MIN_CHUNK <= chunk_size <= _MAX_CHUNK:
        raise ValueError("a blob needs a 32-byte key and a chunk size of 1 KiB to 1 MiB")
    aead = AESGCM(file_key)
    prefix = os.urandom(8)
    header = MAGIC + prefix + struct.pack(">I", chunk_size)
    target.write(header)
    digest = hashlib.sha256()
    size, index = 0, 0
    chunk = source.read(chunk_size)
    while True:
        following = source.read(chunk_size) if len(chunk) == chunk_size else b""
        final = not following
        digest.update(chunk)
        size += len(chunk)
        target.write(aead.encrypt(_nonce(prefix, index), chunk, header + bytes([final])))
        if final:
            return size, digest.hexdigest()
        index += 1
        if index >= _MAX_RECORDS:
            raise ValueError("the file is too large for one blob")
        chunk = following


def decrypt_blob(
    source: BinaryIO,
    target: BinaryIO,
    file_key: bytes,
    *,
    expected_size: int,
    expected_sha256: str,
) -> None:
    """Decrypt and check a blob from ``source`` into ``target``, chunk by chunk.

    ``target`` receives authenticated chunks as they come: on an error, discard it.

    Raises:
        MalformedEncoding: Not a CMB1 blob (wrong magic, chunk size out of bounds).
        TamperedBlob: A record fails, the blob is truncated or extended, or the size or
            SHA-256 differs from the envelope's.
    """
    header = source.read(BLOB_HEADER_SIZE)
    if len(header) != BLOB_HEADER_SIZE or header[:4] != MAGIC:
        raise MalformedEncoding("not a CMB1 blob")
    prefix = header[4:12]
    (chunk_size,) = struct.unpack(">I", header[12:])
    if not _MIN_CHUNK <= chunk_size <= _MAX_CHUNK:
        raise MalformedEncoding("the blob's chunk size is out of bounds")
    if len(file_key) != FILE_KEY_SIZE:
        raise MalformedEncoding("a file key is 32 bytes")
    aead = AESGCM(file_key)
    record_size = chunk_size + _TAG
    digest = hashlib.sha256()
    size, index = 0, 0
    record = source.read(record_size)
    while True:
        if len(record) < _TAG:
            raise TamperedBlob("the blob is truncated")
        following = source.read(record_size) if len(record) == record_size else b""
        final = not following
        try:
            chunk = aead.decrypt(_nonce(prefix, index), record, header + bytes([final]))
        except InvalidTag as error:
            raise TamperedBlob(f"blob record {index} does not authenticate") from error
        size += len(chunk)
        if size > expected_size:
            raise TamperedBlob("the blob holds more than the envelope's size")
        digest.update(chunk)
        target.write(chunk)
        if final:
            break
        index += 1
        record = following
    if size != expected_size or digest.hexdigest() != expected_sha256:
        raise TamperedBlob("the file's size or SHA-256 differs from the envelope's")
