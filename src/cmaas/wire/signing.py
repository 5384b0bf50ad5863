"""Request and webhook signatures, for the gateway and its clients.

Both are HMAC-SHA256 under the app's HMAC key, from ``cryptography``; comparisons are
constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

__all__ = [
    "body_mac",
    "request_headers",
    "request_signature",
    "request_signature_input",
    "request_signature_matches",
    "webhook_signature",
    "webhook_signature_matches",
]


def _mac(key: bytes, data: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def body_mac(key: bytes, body: bytes) -> bytes:
    """HMAC-SHA256 of a raw body: the Sandes-shaped endpoint's ``hmac`` header, decoded."""
    return _mac(key, body)


def request_signature_input(
    method: str, path_with_query: str, timestamp: str, nonce: str, body: bytes | str
) -> bytes:
    """``METHOD \\n PATH_WITH_QUERY \\n TIMESTAMP \\n NONCE \\n hex(SHA-256(body))``.

    ``body`` is the body's bytes, or already its SHA-256 in lowercase hex (a streamed
    upload hashes as it goes).
    """
    digest = body if isinstance(body, str) else hashlib.sha256(body).hexdigest()
    return "\n".join((method.upper(), path_with_query, timestamp, nonce, digest)).encode()


def request_signature(
    key: bytes, method: str, path_with_query: str, timestamp: str, nonce: str, body: bytes | str
) -> str:
    """The ``X-CMAAS-Signature`` value: base64 of the HMAC over the signature input."""
    data = request_signature_input(method, path_with_query, timestamp, nonce, body)
    return base64.b64encode(_mac(key, data)).decode()


def request_headers(
    client_id: str,
    client_secret: str,
    hmac_key: bytes,
    method: str,
    path_with_query: str,
    body: bytes | str,
    *,
    timestamp: str,
    nonce: str,
) -> dict[str, str]:
    """The five ``X-CMAAS-*`` authentication headers of one request."""
    return {
        "X-CMAAS-Client-Id": client_id,
        "X-CMAAS-Client-Secret": client_secret,
        "X-CMAAS-Timestamp": timestamp,
        "X-CMAAS-Nonce": nonce,
        "X-CMAAS-Signature": request_signature(
            hmac_key, method, path_with_query, timestamp, nonce, body
        ),
    }


def request_signature_matches(key: bytes, signature: str, signature_input: bytes) -> bool:
    """Whether ``signature`` (base64) is the HMAC of ``signature_input``, in constant time."""
    try:
        presented = base64.b64decode(signature, validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(_mac(key, signature_input), presented)


def webhook_signature(key: bytes, timestamp: int, body: bytes) -> str:
    """``t={unix seconds},v1={hex HMAC-SHA256(key, t + "." + body)}``."""
    mac = _mac(key, str(timestamp).encode() + b"." + body)
    return f"t={timestamp},v1={mac.hex()}"


def webhook_signature_matches(key: bytes, header: str, body: bytes) -> int | None:
    """Check a webhook's ``X-CMAAS-Signature``; returns its timestamp, or ``None``.

    Apps should also refuse a timestamp far from their clock, against replays.
    """
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    stamp, presented = parts.get("t", ""), parts.get("v1", "")
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        return None
    expected = _mac(key, stamp.encode() + b"." + body).hex()
    return int(stamp) if hmac.compare_digest(expected, presented) else None
