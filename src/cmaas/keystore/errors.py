"""Errors raised by the keystore."""

from cmaas.errors import CmaasError

__all__ = [
    "AdhocSessionLimit",
    "AppAlreadyExists",
    "AppNotFound",
    "AuthenticationFailed",
    "BlobMissing",
    "ClientIdTaken",
    "DatabaseInUse",
    "DeviceNotFound",
    "DeviceRevoked",
    "IdentityKeyMismatch",
    "JidAlreadyBound",
    "KeystoreError",
    "MasterKeyMismatch",
    "MessageConflict",
    "MessageNotFound",
    "NonceUsed",
    "PlanNotFound",
    "PrekeyIdConflict",
    "PrekeyPoolFull",
    "QuotaExhausted",
    "SchemaTooNew",
    "SignedPrekeyRollback",
    "TooManyDevices",
    "TooManySigningKeys",
]


class KeystoreError(CmaasError):
    """Root of every keystore error."""


class BlobMissing(KeystoreError):
    """A blob's bytes are gone although its record was found: it expired meanwhile."""


class AppAlreadyExists(KeystoreError):
    """An app with this id is already registered."""


class AppNotFound(KeystoreError):
    """No app has this id."""


class PlanNotFound(KeystoreError):
    """No rate plan has this name."""


class JidAlreadyBound(KeystoreError):
    """The JID is already bound to another app; a JID speaks for one app only."""


class ClientIdTaken(KeystoreError):
    """A freshly drawn client id collided with an existing one (retry with another)."""


class AuthenticationFailed(KeystoreError):
    """Unknown client id, wrong secret, or credentials past their end of validity.

    Deliberately one class: telling callers which part was wrong would help an attacker.
    """


class MasterKeyMismatch(KeystoreError):
    """A stored HMAC key was wrapped under a master key that is not configured.

    Set ``CMAAS_PREVIOUS_MASTER_KEY`` to the old key and run
    ``cmaas admin master-key-rotate``.
    """


class DatabaseInUse(KeystoreError):
    """Another gateway process holds the SQLite database (instances share PostgreSQL)."""


class SchemaTooNew(KeystoreError):
    """The database was migrated by a newer CMaaS than this one."""


class DeviceNotFound(KeystoreError):
    """The JID has no device with this id, active or revoked."""


class DeviceRevoked(KeystoreError):
    """The device id was revoked for this JID.

    A revoked id stays taken for good: senders may still hold sessions with the old
    keys, so the device must publish under a fresh id.
    """


class IdentityKeyMismatch(KeystoreError):
    """The device id is published already, under a different identity key.

    An identity key never changes under one device id; a reinstalled device takes a
    new id, and the old one is revoked.
    """


class TooManyDevices(KeystoreError):
    """A new device would take the JID past its limit of active devices.

    Revoke a device the user no longer has, then publish again.
    """


class PrekeyPoolFull(KeystoreError):
    """The one-time prekeys given would take the device's pool past its limit.

    The message says how many are stored, how many were given and the limit.
    """


class PrekeyIdConflict(KeystoreError):
    """A one-time prekey id clashes with another prekey of the device.

    It is already in the device's pool, given twice in one publication, or equal to
    the signed prekey's id. Ids must be unambiguous: a sender names by id the prekeys
    it used.
    """


class SignedPrekeyRollback(KeystoreError):
    """The signed prekey's id is lower than the stored one's, or equal with another key.

    Signed prekey ids only grow: an older bundle published again (by a replay, or by a
    device restored from a backup) must not put a retired signed prekey back in use.
    A restored device rotates its signed prekey to a new, higher id and publishes.
    """


class MessageConflict(KeystoreError):
    """A message id the app used before, with a different request."""


class MessageNotFound(KeystoreError):
    """The app has no message with this id."""


class NonceUsed(KeystoreError):
    """A request's nonce was claimed before, and that claim has not expired."""


class QuotaExhausted(KeystoreError):
    """The app's plan allows no more messages today (UTC)."""


class TooManySigningKeys(KeystoreError):
    """The app has as many active signing keys as it may have."""


class AdhocSessionLimit(KeystoreError):
    """Opening an ad-hoc session would pass a bound on open sessions.

    Attributes:
        per_account: Whether the requester's account is at its bound (else the
            command's access class is at its own).
        open_sessions: How many sessions are open in the bound that was reached.
    """

    def __init__(self, *, per_account: bool, open_sessions: int) -> None:
        scope = "the account" if per_account else "the access class"
        super().__init__(f"{scope} has {open_sessions} open command sessions")
        self.per_account = per_account
        self.open_sessions = open_sessions
