"""Padding plaintexts so that their lengths reveal little.

A plaintext of ``n`` bytes becomes ``padded_length(n)`` bytes: the plaintext, one
``0x80`` byte, then zeros (ISO/IEC 7816-4). The length is Padmé (Nikitin et al.,
PETS 2019) of ``max(n + 1, 256)``: every short message (an OTP, a notice) is 256
bytes, and a longer one leaks at most O(log log n) bits of its length, for at most
6.25 % overhead up to the 64 KiB limit.
"""

from __future__ import annotations

from cmaas.envelope.errors import MalformedEncoding, OversizeInput

__all__ = ["MAX_PLAINTEXT", "MIN_PADDED", "pad", "padded_length", "unpad"]

MIN_PADDED = 256
MAX_PLAINTEXT = 65_536 - 1


def padded_length(length: int) -> int:
    """Padmé of ``max(length + 1, 256)``.

    With ``L = max(length + 1, 256)``, ``E = floor(log2 L)``, ``S = floor(log2 E) + 1``
    and ``z = E - S``, the result is ``L`` rounded up to a multiple of ``2**z``.
    """
    target = max(length + 1, MIN_PADDED)
    exponent = target.bit_length() - 1
    low_bits = exponent - exponent.bit_length()
    mask = (1 << low_bits) - 1
    return (target + mask) & ~mask


def pad(plaintext: bytes) -> bytes:
    """Raises: OversizeInput: More than :data:`MAX_PLAINTEXT` bytes."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise OversizeInput(f"the plaintext is over {MAX_PLAINTEXT} bytes; send a file")
    filler = padded_length(len(plaintext)) - len(plaintext) - 1
    return plaintext + b"\x80" + bytes(filler)


def unpad(padded: bytes) -> bytes:
    """Raises: MalformedEncoding: The padding is not exactly what :func:`pad` makes."""
    content = padded.rstrip(b"\x00")
    if not content.endswith(b"\x80"):
        raise MalformedEncoding("the plaintext padding is malformed")
    plaintext = content[:-1]
    if padded_length(len(plaintext)) != len(padded):
        raise MalformedEncoding("the plaintext is padded to the wrong length")
    return plaintext
