"""Envelope v1 (``urn:cmaas:envelope:1``): sealing and opening confidential messages.

Pure code: no network, XMPP or database import. Every primitive comes from
``cryptography``: HPKE (RFC 9180) base mode with DHKEM(P-256, HKDF-SHA256),
HKDF-SHA256 and AES-256-GCM for the content key, AES-256-GCM for the payload, and
ECDSA P-256/SHA-256 for signatures. ``docs/protocol.md`` specifies the bytes.
"""

from cmaas.envelope.bundle import (
    MAX_PREKEYS_PER_BUNDLE,
    SUITE_P256,
    DeviceBundle,
    Prekey,
    prekey_signature_input,
    sign_prekey,
)
from cmaas.envelope.content import (
    Content,
    FileContent,
    Kind,
    OtpContent,
    TextContent,
    content_from_json,
    content_to_json,
)
from cmaas.envelope.encoding import b64url, canonical_json, from_b64url
from cmaas.envelope.errors import (
    AppKeyChanged,
    AppKeyError,
    BadSignature,
    EnvelopeError,
    Expired,
    ForeignApp,
    InvalidPoint,
    MalformedEncoding,
    OversizeInput,
    TamperedEnvelope,
    TamperedHeader,
    TamperedKeyEntry,
    TamperedPayload,
    UnknownKeyId,
    UnpinnedAppKey,
    WrongDevice,
    WrongRecipient,
)
from cmaas.envelope.header import (
    Header,
)
from cmaas.envelope.hpke_key import key_entry_info
from cmaas.envelope.keyring import DeviceKeyring
from cmaas.envelope.keys import (
    PrivateKey,
    PublicKey,
    fingerprint,
    generate_private_key,
    parse_private_scalar,
    parse_public_key,
    parse_signature,
    point_bytes,
    private_scalar,
    sign,
    verify,
)
from cmaas.envelope.opening import OpenedMessage, open_envelope
from cmaas.envelope.padding import pad, padded_length, unpad
from cmaas.envelope.seal import seal, sign_envelope
from cmaas.envelope.sealed import EnvelopeOutline, KeyEntry, SealedEnvelope

NAMESPACE = "urn:cmaas:envelope:1"

__all__ = [
    "MAX_PREKEYS_PER_BUNDLE",
    "NAMESPACE",
    "SUITE_P256",
    "AppKeyChanged",
    "AppKeyError",
    "BadSignature",
    "Content",
    "DeviceBundle",
    "DeviceKeyring",
    "EnvelopeError",
    "EnvelopeOutline",
    "Expired",
    "FileContent",
    "ForeignApp",
    "Header",
    "InvalidPoint",
    "KeyEntry",
    "Kind",
    "MalformedEncoding",
    "OpenedMessage",
    "OtpContent",
    "OversizeInput",
    "Prekey",
    "PrivateKey",
    "PublicKey",
    "SealedEnvelope",
    "TamperedEnvelope",
    "TamperedHeader",
    "TamperedKeyEntry",
    "TamperedPayload",
    "TextContent",
    "UnknownKeyId",
    "UnpinnedAppKey",
    "WrongDevice",
    "WrongRecipient",
    "b64url",
    "canonical_json",
    "content_from_json",
    "content_to_json",
    "fingerprint",
    "from_b64url",
    "generate_private_key",
    "key_entry_info",
    "open_envelope",
    "pad",
    "padded_length",
    "parse_private_scalar",
    "parse_public_key",
    "parse_signature",
    "point_bytes",
    "prekey_signature_input",
    "private_scalar",
    "seal",
    "sign",
    "sign_envelope",
    "sign_prekey",
    "unpad",
    "verify",
]
