"""Every way opening, sealing or parsing can fail, one class each.

Callers show nothing of a message that raised; the class says why, the message says
where. All derive from :class:`EnvelopeError`.
"""

from cmaas.errors import CmaasError

__all__ = [
    "AppKeyChanged",
    "AppKeyError",
    "BadSignature",
    "EnvelopeError",
    "Expired",
    "ForeignApp",
    "InvalidPoint",
    "MalformedEncoding",
    "OversizeInput",
    "TamperedEnvelope",
    "TamperedHeader",
    "TamperedKeyEntry",
    "TamperedPayload",
    "UnknownKeyId",
    "UnpinnedAppKey",
    "WrongDevice",
    "WrongRecipient",
]


class EnvelopeError(CmaasError):
    """Root of every envelope error."""


class MalformedEncoding(EnvelopeError):
    """Bytes or JSON that do not follow the envelope format: bad JSON, a missing or
    unknown field, a wrong type, non-canonical base64url, bad padding."""


class InvalidPoint(MalformedEncoding):
    """A public key is not an uncompressed point on P-256."""


class OversizeInput(MalformedEncoding):
    """An input exceeds a documented limit; it was refused before being parsed further."""


class TamperedEnvelope(EnvelopeError):
    """Integrity failed: something was changed after the app sealed it, or it was forged."""


class BadSignature(TamperedEnvelope):
    """A signature does not verify: the app's over the envelope (so the header, payload
    or key entries changed after signing), or an identity key's over a prekey."""


class TamperedHeader(TamperedEnvelope):
    """The signed header disagrees with how it arrived (sender, stanza id) or with itself."""


class TamperedKeyEntry(TamperedEnvelope):
    """This device's key entry does not open with the prekey it names."""


class TamperedPayload(TamperedEnvelope):
    """The payload does not decrypt under the content key and header."""


class AppKeyError(EnvelopeError):
    """The app's signing key is not the one trusted for its JID."""


class UnpinnedAppKey(AppKeyError):
    """No key is pinned for this app JID and the caller requires a pinned one."""


class AppKeyChanged(AppKeyError):
    """The app JID signs with a key other than the one pinned on first use.

    Either the app rotated its key or someone impersonates it; the user must decide.
    """


class ForeignApp(EnvelopeError):
    """The sending app is not on the gateway the device trusts: anyone can open an XMPP
    account and call it "Your Bank", but only the gateway can send as its apps."""


class WrongRecipient(EnvelopeError):
    """The envelope is addressed to another account."""


class WrongDevice(WrongRecipient):
    """The envelope is for this account but carries no key entry for this device
    (sealed before the device was published, or after it was revoked)."""


class UnknownKeyId(EnvelopeError):
    """The key entry names a prekey this device does not hold: never issued, or a
    one-time prekey already used (a replay)."""


class Expired(EnvelopeError):
    """The envelope's expiry time has passed."""
