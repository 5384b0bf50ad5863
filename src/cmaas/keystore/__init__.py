"""Storage of app accounts, rate plans, the directory, device keys and messages.

The gateway talks to storage only through :class:`Keystore`; :class:`SqliteKeystore`
is the embedded default.
"""

from cmaas.keystore.credentials import MasterKeyring, issue_credentials
from cmaas.keystore.devices import SqliteDeviceStore
from cmaas.keystore.errors import (
    AppAlreadyExists,
    AppNotFound,
    AuthenticationFailed,
    ClientIdTaken,
    DeviceNotFound,
    DeviceRevoked,
    IdentityKeyMismatch,
    JidAlreadyBound,
    KeystoreError,
    MasterKeyMismatch,
    PlanNotFound,
    PrekeyIdConflict,
    PrekeyPoolFull,
    SchemaTooNew,
    TooManyDevices,
)
from cmaas.keystore.interface import DeviceStore, Keystore
from cmaas.keystore.models import (
    App,
    AppChanges,
    AppCounters,
    AuthenticatedApp,
    CredentialInfo,
    DeviceKeys,
    DevicePublication,
    DeviceRecord,
    DirectoryEntry,
    IssuedCredentials,
    KeyTake,
    NewApp,
    Plan,
    Priority,
    StoredPrekey,
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
    "DeviceKeys",
    "DeviceNotFound",
    "DevicePublication",
    "DeviceRecord",
    "DeviceRevoked",
    "DeviceStore",
    "DirectoryEntry",
    "IdentityKeyMismatch",
    "IssuedCredentials",
    "JidAlreadyBound",
    "KeyTake",
    "Keystore",
    "KeystoreError",
    "MasterKeyMismatch",
    "MasterKeyring",
    "NewApp",
    "Plan",
    "PlanNotFound",
    "PrekeyIdConflict",
    "PrekeyPoolFull",
    "Priority",
    "SchemaTooNew",
    "SqliteDeviceStore",
    "SqliteKeystore",
    "StoredPrekey",
    "TooManyDevices",
    "issue_credentials",
]
