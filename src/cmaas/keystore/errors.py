"""Errors raised by the keystore."""

from cmaas.errors import CmaasError

__all__ = [
    "AppAlreadyExists",
    "AppNotFound",
    "AuthenticationFailed",
    "ClientIdTaken",
    "JidAlreadyBound",
    "KeystoreError",
    "MasterKeyMismatch",
    "PlanNotFound",
    "SchemaTooNew",
]


class KeystoreError(CmaasError):
    """Root of every keystore error."""


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


class SchemaTooNew(KeystoreError):
    """The database was migrated by a newer CMaaS than this one."""
