"""An app's own affairs on the wire: what it is, recipients' keys, signing keys, blobs."""

from __future__ import annotations

from dataclasses import dataclass

from cmaas.envelope import DeviceBundle, EnvelopeError
from cmaas.wire.errors import WireError
from cmaas.wire.fields import ObjectReader
from cmaas.wire.omemo import RecipientOmemo

__all__ = ["AppInfo", "BlobReceipt", "KeyLookup", "SigningKeyRequest"]


@dataclass(frozen=True, slots=True)
class AppInfo:
    """``GET /v1/app``: what an app's client needs to know of itself, above all the JID
    its messages are sealed as coming from."""

    app_id: str
    app_jid: str
    display_name: str
    plan: str
    callback_url: str | None
    bound_jids: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "app_id": self.app_id,
            "app_jid": self.app_jid,
            "display_name": self.display_name,
            "plan": self.plan,
            "callback_url": self.callback_url,
            "bound_jids": list(self.bound_jids),
        }

    @classmethod
    def from_json(cls, value: object) -> AppInfo:
        """Raises: WireError."""
        reader = ObjectReader(value, "app")
        jids = reader.array("bound_jids") if reader.has("bound_jids") else []
        if not all(isinstance(jid, str) for jid in jids):
            raise WireError("app.bound_jids must be a list of JIDs")
        return cls(
            app_id=reader.text("app_id"),
            app_jid=reader.text("app_jid"),
            display_name=reader.optional_text("display_name") or "",
            plan=reader.optional_text("plan") or "",
            callback_url=reader.optional_text("callback_url") or None,
            bound_jids=tuple(str(jid) for jid in jids),
        )


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """``GET /v1/keys``: the recipient's JID and one bundle per active device, each with
    at most one one-time prekey taken for this sender; and its legacy OMEMO devices
    (``omemo``), None from a gateway that does not relay them."""

    jid: str
    devices: tuple[DeviceBundle, ...]
    omemo: RecipientOmemo | None = None

    def to_json(self) -> dict[str, object]:
        answer: dict[str, object] = {
            "jid": self.jid,
            "devices": [bundle.to_json() for bundle in self.devices],
        }
        if self.omemo is not None:
            answer["omemo"] = self.omemo.to_json()
        return answer

    @classmethod
    def from_json(cls, value: object) -> KeyLookup:
        """Each bundle is checked as the protocol requires, including that it belongs
        to ``jid``.

        Raises: WireError: The answer or one of its bundles is malformed.
        """
        reader = ObjectReader(value, "keys")
        jid = reader.text("jid")
        try:
            devices = tuple(
                DeviceBundle.from_json(item, expected_jid=jid) for item in reader.array("devices")
            )
        except EnvelopeError as error:
            raise WireError(f"a device bundle of {jid}: {type(error).__name__}: {error}") from error
        omemo = RecipientOmemo.from_json(reader.raw("omemo")) if reader.has("omemo") else None
        return cls(jid, devices, omemo)


@dataclass(frozen=True, slots=True)
class SigningKeyRequest:
    """``POST /v1/signing-keys``: the public half of an app signing key, as base64url
    of the 65-byte uncompressed P-256 point."""

    public_key: str

    def to_json(self) -> dict[str, object]:
        return {"public_key": self.public_key}

    @classmethod
    def from_json(cls, value: object) -> SigningKeyRequest:
        """Raises: WireError."""
        if not isinstance(value, dict) or set(value) != {"public_key"}:
            raise WireError('the body must be {"public_key": BASE64URL_POINT}')
        return cls(ObjectReader(value, "body").text("public_key"))


@dataclass(frozen=True, slots=True)
class BlobReceipt:
    """``POST /v1/blobs``: where a stored encrypted blob can be fetched, until when."""

    blob_id: str
    url: str
    size: int
    expires_ms: int

    def to_json(self) -> dict[str, object]:
        return {
            "blob_id": self.blob_id,
            "url": self.url,
            "size": self.size,
            "expires_ms": self.expires_ms,
        }

    @classmethod
    def from_json(cls, value: object) -> BlobReceipt:
        """Raises: WireError."""
        reader = ObjectReader(value, "blob")
        return cls(
            reader.text("blob_id"),
            reader.text("url"),
            reader.integer("size"),
            reader.integer("expires_ms"),
        )
