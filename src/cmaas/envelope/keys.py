"""P-256 keys and ECDSA signatures as the envelope encodes them.

Public keys travel as 65-byte uncompressed SEC1 points; compressed points are refused
so that every key has one encoding. Signatures are DER ECDSA-Sig-Value (RFC 3279),
accepted only in their one strict DER form. Private keys are 32-byte big-endian
scalars and stay on the machine that made them.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from cmaas.envelope.errors import BadSignature, InvalidPoint, MalformedEncoding

__all__ = [
    "CURVE_ORDER",
    "POINT_SIZE",
    "PRIVATE_SCALAR_SIZE",
    "PrivateKey",
    "PublicKey",
    "fingerprint",
    "generate_private_key",
    "parse_private_scalar",
    "parse_public_key",
    "parse_signature",
    "point_bytes",
    "private_scalar",
    "public_point",
    "sign",
    "verify",
]

POINT_SIZE = 65
PRIVATE_SCALAR_SIZE = 32
MAX_SIGNATURE_SIZE = 72
CURVE_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

PublicKey = ec.EllipticCurvePublicKey
PrivateKey = ec.EllipticCurvePrivateKey

_SIGNING = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
_VERIFYING = ec.ECDSA(hashes.SHA256())
# SHA-256 from ``cryptography`` rather than ``hashlib``, which loads the system's own
# OpenSSL beside the one ``cryptography`` carries: about 4 MB of every admission worker
# (``cmaas.delivery.envelope_worker``), which needs nothing else of ``hashlib``.
_SHA256 = hashes.SHA256()
# The last private key asked for its public point, and that point: a sender signs with
# one key for its whole life, and deriving the point costs as much as a seal's framing.
_last_public_point: tuple[PrivateKey, bytes] | None = None


def generate_private_key() -> PrivateKey:
    """A fresh P-256 private key from the operating system's random source."""
    return ec.generate_private_key(ec.SECP256R1())


def parse_public_key(data: bytes) -> PublicKey:
    """A P-256 public key from its 65-byte uncompressed point.

    Raises:
        InvalidPoint: Not 65 bytes, not ``0x04 || X || Y``, or not on the curve.
    """
    if len(data) != POINT_SIZE or data[0] != 0x04:
        raise InvalidPoint("a public key must be a 65-byte uncompressed P-256 point")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data)
    except ValueError as error:
        raise InvalidPoint("the point is not on P-256") from error


def point_bytes(key: PublicKey) -> bytes:
    """The 65-byte uncompressed point of ``key``."""
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def public_point(key: PrivateKey) -> bytes:
    """The 65-byte uncompressed point of ``key``'s public key (remembered for the last key)."""
    global _last_public_point
    last = _last_public_point
    if last is not None and last[0] is key:
        return last[1]
    point = point_bytes(key.public_key())
    _last_public_point = (key, point)
    return point


def fingerprint(key: PublicKey | bytes) -> str:
    """Lowercase hex SHA-256 of the uncompressed point: what users compare and pin."""
    data = key if isinstance(key, bytes) else point_bytes(key)
    digest = hashes.Hash(_SHA256)
    digest.update(data)
    return digest.finalize().hex()


def private_scalar(key: PrivateKey) -> bytes:
    """The 32-byte big-endian private scalar, for the device's own key file."""
    return key.private_numbers().private_value.to_bytes(PRIVATE_SCALAR_SIZE, "big")


def parse_private_scalar(data: bytes) -> PrivateKey:
    """A P-256 private key from its 32-byte scalar.

    Raises:
        MalformedEncoding: Not 32 bytes, zero, or not below the group order.
    """
    if len(data) != PRIVATE_SCALAR_SIZE:
        raise MalformedEncoding("a private key must be a 32-byte scalar")
    value = int.from_bytes(data, "big")
    if not 0 < value < CURVE_ORDER:
        raise MalformedEncoding("a private key must be between 1 and the group order")
    return ec.derive_private_key(value, ec.SECP256R1())


def sign(key: PrivateKey, message: bytes) -> bytes:
    """ECDSA P-256 over SHA-256(``message``), DER encoded.

    The per-signature nonce is derived as RFC 6979 says, so a weak random source
    cannot leak the key, and test vectors can pin signatures byte for byte.
    """
    return key.sign(message, _SIGNING)


def parse_signature(data: bytes) -> tuple[int, int]:
    """``(r, s)`` from a strict DER ECDSA signature.

    Raises:
        MalformedEncoding: Not strict DER (BER forms, trailing bytes, padding zeros,
            negative or oversized integers), or r or s outside ``[1, n - 1]``.
    """
    if not 8 <= len(data) <= MAX_SIGNATURE_SIZE:
        raise MalformedEncoding("a signature must be 8 to 72 bytes of DER")
    try:
        r, s = decode_dss_signature(data)
    except ValueError as error:
        raise MalformedEncoding("a signature must be DER ECDSA-Sig-Value") from error
    if not (0 < r < CURVE_ORDER and 0 < s < CURVE_ORDER):
        raise MalformedEncoding("signature values must lie between 1 and n - 1")
    # Re-encoding catches every non-canonical form the parser tolerated.
    if encode_dss_signature(r, s) != data:
        raise MalformedEncoding("a signature must be strict DER")
    return r, s


def verify(key: PublicKey, signature: bytes, message: bytes, *, what: str) -> None:
    """Check a DER ECDSA P-256/SHA-256 signature over ``message``.

    Raises:
        BadSignature: The signature is malformed or does not verify.
    """
    try:
        parse_signature(signature)
    except MalformedEncoding as error:
        raise BadSignature(f"{what}: {error}") from error
    try:
        key.verify(signature, message, _VERIFYING)
    except InvalidSignature as error:
        raise BadSignature(f"{what} does not verify") from error
