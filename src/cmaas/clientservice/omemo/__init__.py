"""Legacy OMEMO (``eu.siacs.conversations.axolotl``) as a second delivery suite: the app's
confidential message, sealed here in the client service, shows up decrypted in the client
a person already uses. python-omemo's pure core does the cryptography; this package gives
it storage (:mod:`.storage`), trust pinned on first use and a transport (:mod:`.transport`).
"""

from cmaas.clientservice.omemo.errors import (
    NoOmemoDevices,
    OmemoDecryptFailed,
    OmemoError,
    OmemoKeyChanged,
    OmemoMalformed,
    OmemoStateError,
    OmemoTransportError,
)
from cmaas.clientservice.omemo.sender import (
    Decrypted,
    Encrypted,
    NewDevice,
    OmemoSender,
    SkippedDevice,
)
from cmaas.clientservice.omemo.storage import SqliteStorage
from cmaas.clientservice.omemo.transport import (
    BundleItem,
    DeviceListItem,
    KeyTransport,
    OmemoDirectory,
)

__all__ = [
    "BundleItem",
    "Decrypted",
    "DeviceListItem",
    "Encrypted",
    "KeyTransport",
    "NewDevice",
    "NoOmemoDevices",
    "OmemoDecryptFailed",
    "OmemoDirectory",
    "OmemoError",
    "OmemoKeyChanged",
    "OmemoMalformed",
    "OmemoSender",
    "OmemoStateError",
    "OmemoTransportError",
    "SkippedDevice",
    "SqliteStorage",
]
