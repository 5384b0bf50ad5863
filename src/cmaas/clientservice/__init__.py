"""The gateway client service: the app's side of CMaaS (``docs/client.md``).

:class:`GatewayClient` seals at the source and submits; :class:`GatewayApi` is the signed
HTTP client underneath. Neither needs anything POSIX-only, so both run on Windows too
(the OMEMO device's lock is ``msvcrt``'s there).
"""

from cmaas.clientservice.api import ApiError, AppCredentials, GatewayApi
from cmaas.clientservice.client import (
    ClientConfig,
    GatewayClient,
    KeyChange,
    NewDevice,
    OmemoReply,
    Transport,
)
from cmaas.clientservice.errors import (
    ClientServiceError,
    ClientStateError,
    DeviceKeyChanged,
    GatewayUnavailable,
    NoDeviceToSeal,
)
from cmaas.clientservice.sync import SyncGatewayClient
from cmaas.clientservice.webhooks import BadWebhook, status_webhook, verified_events
from cmaas.clientservice.xmpp_transport import XmppTransport

__all__ = [
    "ApiError",
    "AppCredentials",
    "BadWebhook",
    "ClientConfig",
    "ClientServiceError",
    "ClientStateError",
    "DeviceKeyChanged",
    "GatewayApi",
    "GatewayClient",
    "GatewayUnavailable",
    "KeyChange",
    "NewDevice",
    "NoDeviceToSeal",
    "OmemoReply",
    "SyncGatewayClient",
    "Transport",
    "XmppTransport",
    "status_webhook",
    "verified_events",
]
