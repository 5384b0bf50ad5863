"""An app's legacy OMEMO devices (``eu.siacs.conversations.axolotl``) on the wire.

The gateway serves them as the app JID's PEP nodes, so that people's own clients can
build sessions with the app's client service. Keys are base64 (RFC 4648, padded), as
the legacy namespace carries them in XML; every key is public.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import StrEnum

from cmaas.wire.errors import WireError
from cmaas.wire.fields import ObjectReader

__all__ = [
    "MAX_OMEMO_ID",
    "MAX_OMEMO_PREKEYS",
    "OmemoBundle",
    "OmemoDevices",
    "OmemoPrekey",
    "OmemoUnreadable",
    "RecipientBundle",
    "RecipientOmemo",
    "UnreadableReason",
]

MAX_OMEMO_ID = 2**31 - 1
"""Device and prekey ids are 1 to 2**31 - 1: libsignal's ids are positive 31-bit."""
MAX_OMEMO_PREKEYS = 1000
"""The contract's ceiling on prekeys in one bundle; the gateway's own limit is lower
(``CMAAS_OMEMO_MAX_PREKEYS``)."""
_PUBLIC_KEY_SIZE = 33  # a Curve25519 key with libsignal's type byte
_KEY_TYPE = 0x05
_SIGNATURE_SIZE = 64  # XEdDSA
_BUNDLE_FIELDS = frozenset(
    {
        "device_id",
        "identity_key",
        "signed_prekey_id",
        "signed_prekey",
        "signed_prekey_signature",
        "prekeys",
    }
)


def _identifier(value: int, what: str) -> int:
    if not 1 <= value <= MAX_OMEMO_ID:
        raise WireError(f"{what} must be between 1 and {MAX_OMEMO_ID}")
    return value


def _decode(text: str, what: str, size: int) -> bytes:
    # Twice the size is plenty for padded base64; longer text is refused unread.
    if len(text) > 2 * size + 4:
        raise WireError(f"{what} is too long for {size} bytes of base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise WireError(f"{what} is not base64") from error
    if len(raw) != size:
        raise WireError(f"{what} must be {size} bytes, not {len(raw)}")
    return raw


def _public_key(text: str, what: str) -> bytes:
    raw = _decode(text, what, _PUBLIC_KEY_SIZE)
    if raw[0] != _KEY_TYPE:
        raise WireError(f"{what} must be a Curve25519 key with type byte 0x05")
    return raw


def _encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class OmemoPrekey:
    """One of a bundle's one-time prekeys."""

    prekey_id: int
    public_key: bytes


@dataclass(frozen=True, slots=True)
class OmemoBundle:
    """One OMEMO device of an app and its bundle.

    ``PUT /v1/omemo/devices/{device_id}`` takes it (``device_id`` may be left out of
    the body); ``GET /v1/omemo/devices`` lists them.
    """

    device_id: int
    identity_key: bytes
    signed_prekey_id: int
    signed_prekey: bytes
    signed_prekey_signature: bytes
    prekeys: tuple[OmemoPrekey, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "device_id": self.device_id,
            "identity_key": _encode(self.identity_key),
            "signed_prekey_id": self.signed_prekey_id,
            "signed_prekey": _encode(self.signed_prekey),
            "signed_prekey_signature": _encode(self.signed_prekey_signature),
            "prekeys": [
                {"id": prekey.prekey_id, "key": _encode(prekey.public_key)}
                for prekey in self.prekeys
            ],
        }

    @classmethod
    def from_json(cls, value: object, *, device_id: int | None = None) -> OmemoBundle:
        """``device_id``, when given (from the path), is the bundle's; the body's must
        then be absent or equal.

        Raises: WireError: A field missing, unknown, out of range, or not a key of
            the right size; no prekey, more than :data:`MAX_OMEMO_PREKEYS`, or one id
            twice.
        """
        reader = ObjectReader(value, "bundle")
        unknown = reader.unknown(_BUNDLE_FIELDS)
        if unknown:
            raise WireError(f"bundle has unknown fields: {', '.join(unknown[:5])}")
        if device_id is None or reader.has("device_id"):
            given = reader.integer("device_id")
            if device_id is not None and given != device_id:
                raise WireError(f"bundle.device_id {given} is not the path's {device_id}")
            device_id = given
        items = reader.array("prekeys")
        if not 1 <= len(items) <= MAX_OMEMO_PREKEYS:
            raise WireError(f"bundle.prekeys must hold 1 to {MAX_OMEMO_PREKEYS} prekeys")
        prekeys = tuple(_prekey(item, index) for index, item in enumerate(items))
        if len({prekey.prekey_id for prekey in prekeys}) != len(prekeys):
            raise WireError("bundle.prekeys gives a prekey id twice")
        return cls(
            device_id=_identifier(device_id, "bundle.device_id"),
            identity_key=_public_key(reader.text("identity_key"), "bundle.identity_key"),
            signed_prekey_id=_identifier(
                reader.integer("signed_prekey_id"), "bundle.signed_prekey_id"
            ),
            signed_prekey=_public_key(reader.text("signed_prekey"), "bundle.signed_prekey"),
            signed_prekey_signature=_decode(
                reader.text("signed_prekey_signature"),
                "bundle.signed_prekey_signature",
                _SIGNATURE_SIZE,
            ),
            prekeys=prekeys,
        )


def _prekey(value: object, index: int) -> OmemoPrekey:
    what = f"bundle.prekeys[{index}]"
    reader = ObjectReader(value, what)
    if reader.unknown(frozenset({"id", "key"})):
        raise WireError(f"{what} must be {{'id': ID, 'key': BASE64}}")
    return OmemoPrekey(
        _identifier(reader.integer("id"), f"{what}.id"),
        _public_key(reader.text("key"), f"{what}.key"),
    )


@dataclass(frozen=True, slots=True)
class OmemoDevices:
    """``GET /v1/omemo/devices``: the app's published OMEMO devices, oldest first."""

    devices: tuple[OmemoBundle, ...]

    def to_json(self) -> dict[str, object]:
        return {"devices": [bundle.to_json() for bundle in self.devices]}

    @classmethod
    def from_json(cls, value: object) -> OmemoDevices:
        """Raises: WireError."""
        reader = ObjectReader(value, "omemo")
        return cls(tuple(OmemoBundle.from_json(item) for item in reader.array("devices")))


MAX_OMEMO_ITEM_CHARS = 256 * 1024
"""The contract's ceiling on one relayed item's XML text."""


class UnreadableReason(StrEnum):
    """Why a recipient's OMEMO device list could not be read."""

    FORBIDDEN = "forbidden"
    """The recipient's server refused the app JID (a PEP node open to contacts only)."""
    ITEM_NOT_FOUND = "item-not-found"
    """The recipient has published no device list (or hides it as if it had none)."""
    TIMEOUT = "timeout"
    """No answer in time."""
    MALFORMED = "malformed"
    """The answer is not a legacy OMEMO device list."""
    UNAVAILABLE = "unavailable"
    """The gateway is not connected to its IM server."""
    ERROR = "error"
    """Another error answer; ``detail`` names its condition."""


@dataclass(frozen=True, slots=True)
class OmemoUnreadable:
    """Why no OMEMO device of a recipient could be read, for people (``detail``)."""

    reason: UnreadableReason
    detail: str

    def to_json(self) -> dict[str, object]:
        return {"reason": self.reason.value, "detail": self.detail}

    @classmethod
    def from_json(cls, value: object) -> OmemoUnreadable:
        """Raises: WireError: Not an object, or an unknown reason."""
        reader = ObjectReader(value, "keys.omemo.unreadable")
        try:
            reason = UnreadableReason(reader.text("reason"))
        except ValueError as error:
            raise WireError(f"keys.omemo.unreadable.reason is unknown: {error}") from error
        return cls(reason, reader.optional_text("detail") or "")


@dataclass(frozen=True, slots=True)
class RecipientBundle:
    """One of a recipient's legacy OMEMO bundles, as the XML text of its ``<bundle/>``."""

    device_id: int
    xml: str


def _item_xml(reader: ObjectReader, key: str, what: str) -> str:
    text = reader.text(key)
    if len(text) > MAX_OMEMO_ITEM_CHARS:
        raise WireError(f"{what} is longer than {MAX_OMEMO_ITEM_CHARS} characters")
    return text


@dataclass(frozen=True, slots=True)
class RecipientOmemo:
    """A recipient's legacy OMEMO devices as its PEP serves them: the XML text of its
    ``<list/>`` and of each readable listed device's ``<bundle/>``, relayed unchecked
    for the sender to validate; or, when no list could be read, why."""

    device_list: str | None = None
    bundles: tuple[RecipientBundle, ...] = ()
    unreadable: OmemoUnreadable | None = None

    def to_json(self) -> dict[str, object]:
        answer: dict[str, object] = {
            "device_list": self.device_list,
            "bundles": [
                {"device_id": bundle.device_id, "xml": bundle.xml} for bundle in self.bundles
            ],
        }
        if self.unreadable is not None:
            answer["unreadable"] = self.unreadable.to_json()
        return answer

    @classmethod
    def from_json(cls, value: object) -> RecipientOmemo:
        """Raises: WireError: A field of the wrong type, a device id out of range or
        twice, or an item too long."""
        reader = ObjectReader(value, "keys.omemo")
        device_list = (
            _item_xml(reader, "device_list", "keys.omemo.device_list")
            if reader.has("device_list")
            else None
        )
        bundles = []
        for index, item in enumerate(reader.array("bundles") if reader.has("bundles") else []):
            what = f"keys.omemo.bundles[{index}]"
            bundle = ObjectReader(item, what)
            bundles.append(
                RecipientBundle(
                    _identifier(bundle.integer("device_id"), f"{what}.device_id"),
                    _item_xml(bundle, "xml", f"{what}.xml"),
                )
            )
        if len({bundle.device_id for bundle in bundles}) != len(bundles):
            raise WireError("keys.omemo.bundles gives a device twice")
        unreadable = (
            OmemoUnreadable.from_json(reader.raw("unreadable"))
            if reader.has("unreadable")
            else None
        )
        return cls(device_list, tuple(bundles), unreadable)
