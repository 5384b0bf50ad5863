"""Storage of app accounts, rate plans, the directory, device keys and messages.

The gateway talks to storage only through :class:`Keystore`; :class:`SqliteKeystore`
is the embedded default.
"""

from cmaas.keystore.credentials import MasterKeyring, issue_credentials
from cmaas.keystore.errors import (
    AppAlreadyExists,
    AppNotFound,
    AuthenticationFailed,
    ClientIdTaken,
    JidAlreadyBound,
    KeystoreError,
    MasterKeyMismatch,
    PlanNotFound,
    SchemaTooNew,
)
from cmaas.keystore.interface import Keystore
from cmaas.keystore.models import (
    App,
    AppChanges,
    AppCounters,
    AuthenticatedApp,
    CredentialInfo,
    DirectoryEntry,
    IssuedCredentials,
    NewApp,
    Plan,
    Priority,
)
from cmaas.keystore.sqlite import SqliteKeystore

__all__ = [
    "App",
    "AppAlreadyExists",
    "AppChanges",
    "AppCounters",
    "AppNotFound",
    "AuthenticatedApp",
    "AuthenticationFailed",
    "ClientIdTaken",
    "CredentialInfo",
    "DirectoryEntry",
    "IssuedCredentials",
    "JidAlreadyBound",
    "Keystore",
    "KeystoreError",
    "MasterKeyMismatch",
    "MasterKeyring",
    "NewApp",
    "Plan",
    "PlanNotFound",
    "Priority",
    "SchemaTooNew",
    "SqliteKeystore",
    "issue_credentials",
]
