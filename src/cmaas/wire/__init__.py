"""The wire contract between apps (and their client service) and the gateway.

Typed, frozen values with ``to_json``/``from_json``, and the request and webhook
signatures. Both sides use these and nothing else to speak to each other, so the client
service never imports the gateway's packages.
"""

from cmaas.wire.apps import AppInfo, BlobReceipt, KeyLookup, SigningKeyRequest
from cmaas.wire.errors import WireError
from cmaas.wire.json import parse_json_body
from cmaas.wire.messages import (
    Accepted,
    DeviceProgress,
    EventsPage,
    MessageView,
    Refused,
    StatusEvent,
    Submission,
    SubmissionResult,
    submission_result,
)
from cmaas.wire.omemo import (
    OmemoBundle,
    OmemoDevices,
    OmemoPrekey,
    OmemoUnreadable,
    RecipientBundle,
    RecipientOmemo,
    UnreadableReason,
)
from cmaas.wire.omemo_message import (
    EncryptedHeader,
    KeyTransportRequest,
    OmemoInbound,
    OmemoInboundPage,
)

__all__ = [
    "Accepted",
    "AppInfo",
    "BlobReceipt",
    "DeviceProgress",
    "EncryptedHeader",
    "EventsPage",
    "KeyLookup",
    "KeyTransportRequest",
    "MessageView",
    "OmemoBundle",
    "OmemoDevices",
    "OmemoInbound",
    "OmemoInboundPage",
    "OmemoPrekey",
    "OmemoUnreadable",
    "RecipientBundle",
    "RecipientOmemo",
    "Refused",
    "SigningKeyRequest",
    "StatusEvent",
    "Submission",
    "SubmissionResult",
    "UnreadableReason",
    "WireError",
    "parse_json_body",
    "submission_result",
]
