"""Authenticating app requests: client id and secret, the request's HMAC, its freshness,
a nonce never seen before, the peer's address and the app's standing.

A request's nonce is claimed, durably, before the request does anything; or, for a
request that submits messages, in the transaction that stores them
(:meth:`RequestAuthenticator.verify_pending`): one durable write fewer for each OTP.
A replay is refused all the same (the database keeps a nonce once); a request whose
messages could not be stored claimed nothing, and its retry with the same nonce is
accepted."""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cmaas.delivery.errors import AppSuspended, ForbiddenAddress, Unauthenticated
from cmaas.keystore import (
    App,
    AppNotFound,
    AuthenticatedApp,
    AuthenticationFailed,
    Keystore,
    MessageStore,
    RequestNonce,
)
from cmaas.wire.signing import request_signature_input, request_signature_matches

__all__ = [
    "SIGNATURE_WINDOW_S",
    "RequestAuthenticator",
    "SignedRequest",
    "claim_nonce",
    "nonce_used",
]

SIGNATURE_WINDOW_S = 300
_NONCE = re.compile(r"[A-Za-z0-9_.:~-]{8,128}")
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:~-]{1,128}")
_SECRET = re.compile(r"[\x21-\x7e]{1,256}")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What authentication reads from one request.

    Attributes:
        path: The path with its query string, exactly as sent.
        peer: The client's address (after trusted proxies), or ``None`` over XMPP.
    """

    method: str
    path: str
    body: bytes | str = field(repr=False)
    """The body, or its SHA-256 in lowercase hex when it was streamed elsewhere."""
    client_id: str
    client_secret: str = field(repr=False)
    timestamp: str
    nonce: str
    signature: str = field(repr=False)
    peer: IpAddress | None


class RequestAuthenticator:
    """Checks requests in the order that reveals least: the credentials, the signature,
    the timestamp, the address, the app's standing, and last the nonce (so that an
    unauthenticated caller cannot use up nonces)."""

    def __init__(
        self,
        keystore: Keystore,
        *,
        window_s: int = SIGNATURE_WINDOW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keystore = keystore
        self._window = window_s
        self._clock = clock

    async def authenticate(self, request: SignedRequest) -> AuthenticatedApp:
        """Raises:
        Unauthenticated: Missing or malformed headers, unknown client id or wrong
            secret, bad signature, a timestamp outside the window, a replayed nonce.
        ForbiddenAddress: The peer is outside the app's allow-list.
        AppSuspended: The app is suspended.
        """
        authenticated = await self._credentials(request.client_id, request.client_secret)
        await self._check_signed(authenticated.app, [authenticated.hmac_key], request)
        return authenticated

    async def precheck(
        self, client_id: str, client_secret: str, peer: IpAddress
    ) -> AuthenticatedApp:
        """What can be checked from the headers, before a body is read: the
        credentials, the address and the app's standing. :meth:`verify` must still
        follow, with the body (or its digest), before anything is kept.

        Raises: Unauthenticated, ForbiddenAddress, AppSuspended.
        """
        authenticated = await self._credentials(client_id, client_secret)
        _check_standing(authenticated.app, peer)
        return authenticated

    async def verify(self, authenticated: AuthenticatedApp, request: SignedRequest) -> None:
        """The rest of :meth:`authenticate` after :meth:`precheck`: the signature, the
        timestamp, the address and standing again, and the nonce.

        Raises: as :meth:`authenticate`.
        """
        await self._check_signed(authenticated.app, [authenticated.hmac_key], request)

    async def verify_pending(
        self, authenticated: AuthenticatedApp, request: SignedRequest
    ) -> RequestNonce:
        """:meth:`verify` but for the nonce's claim, for a request that stores
        messages: the nonce is refused here if it was claimed already, and returned
        unclaimed. The caller must claim it, in the transaction that stores the
        messages (``SubmissionService.submit``), or with :meth:`claim` if the request
        ends before storing any.

        Raises: as :meth:`authenticate`.
        """
        nonce = await self._signed_nonce(authenticated.app, [authenticated.hmac_key], request)
        await self._unseen(nonce)
        return nonce

    async def claim(self, nonce: RequestNonce) -> None:
        """Claim a nonce that :meth:`verify_pending` returned.

        Raises: Unauthenticated: It was claimed meanwhile (a replay, concurrent).
        """
        await claim_nonce(self._keystore.messages, nonce)

    async def _credentials(self, client_id: str, client_secret: str) -> AuthenticatedApp:
        # A header that is not printable ASCII cannot be a credential the gateway issued;
        # refused here, before it could reach the secret's encoding (it once caused a 500).
        if not _CLIENT_ID.fullmatch(client_id) or not _SECRET.fullmatch(client_secret):
            raise Unauthenticated("X-CMAAS-Client-Id and X-CMAAS-Client-Secret are required")
        try:
            return await self._keystore.authenticate(client_id, client_secret)
        except AuthenticationFailed as error:
            raise Unauthenticated(str(error)) from error

    async def authenticate_bound(self, app_id: str, request: SignedRequest) -> App:
        """Check a request from a JID bound to ``app_id`` (ad-hoc): the server vouches
        for the sender, and the HMAC proves the app's key; no secret travels.

        Raises: as :meth:`authenticate`, less the address check.
        """
        app, keys = await self._bound(app_id)
        await self._check_signed(app, keys, request)
        return app

    async def authenticate_bound_pending(
        self, app_id: str, request: SignedRequest
    ) -> tuple[App, RequestNonce]:
        """:meth:`authenticate_bound` but for the nonce's claim, as
        :meth:`verify_pending`.

        Raises: as :meth:`authenticate_bound`.
        """
        app, keys = await self._bound(app_id)
        nonce = await self._signed_nonce(app, keys, request)
        await self._unseen(nonce)
        return app, nonce

    async def _bound(self, app_id: str) -> tuple[App, list[bytes]]:
        """The app and its live HMAC keys.

        Raises: Unauthenticated: No such app, or no live credentials.
        """
        try:
            app = await self._keystore.get_app(app_id)
            keys = await self._keystore.hmac_keys(app_id)
        except AppNotFound as error:
            raise Unauthenticated(str(error)) from error
        return app, keys

    async def _unseen(self, nonce: RequestNonce) -> None:
        # A read, not a claim: a replay is refused before it can cost the app tokens;
        # the claim in the storing transaction still refuses a concurrent one.
        if await self._keystore.messages.nonce_seen(nonce):
            raise nonce_used()

    async def _check_signed(self, app: App, keys: list[bytes], request: SignedRequest) -> None:
        await claim_nonce(self._keystore.messages, await self._signed_nonce(app, keys, request))

    async def _signed_nonce(
        self, app: App, keys: list[bytes], request: SignedRequest
    ) -> RequestNonce:
        """Everything but the nonce's claim; returns the nonce to claim."""
        timestamp, nonce = request.timestamp, request.nonce
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
            raise Unauthenticated("X-CMAAS-Timestamp must be unix seconds")
        if not _NONCE.fullmatch(nonce):
            raise Unauthenticated("X-CMAAS-Nonce must be 8 to 128 of A-Z a-z 0-9 _ . : ~ -")
        signed = request_signature_input(
            request.method, request.path, timestamp, nonce, request.body
        )
        # Every live key is tried, so the time taken does not say which one matched.
        matches = [request_signature_matches(key, request.signature, signed) for key in keys]
        if not any(matches):
            raise Unauthenticated("the request signature does not verify")
        now = int(self._clock())
        if abs(now - int(timestamp)) > self._window:
            raise Unauthenticated(
                f"X-CMAAS-Timestamp is more than {self._window} s from the gateway's clock"
            )
        _check_standing(app, request.peer)
        # A nonce is remembered past the window's far edge, so it can never come back.
        return RequestNonce(app.client_id, nonce, int(timestamp) + self._window + 1, now)


def nonce_used() -> Unauthenticated:
    """The refusal of a request whose nonce was claimed before."""
    return Unauthenticated("X-CMAAS-Nonce was used before")


async def claim_nonce(store: MessageStore, nonce: RequestNonce) -> None:
    """Claim ``nonce`` in a transaction of its own.

    Raises: Unauthenticated: It was claimed before.
    """
    if not await store.claim_nonce(nonce):
        raise nonce_used()


def _check_standing(app: App, peer: IpAddress | None) -> None:
    """Raises: ForbiddenAddress (``None`` is a request over XMPP), AppSuspended."""
    if peer is not None and not _allowed(app, peer):
        if not app.networks:
            raise ForbiddenAddress(
                "this app has no allowed networks: it may use the XMPP commands only"
            )
        raise ForbiddenAddress(f"requests from {peer} are not allowed for this app")
    if app.suspended:
        raise AppSuspended(f"app {app.app_id!r} is suspended")


def _allowed(app: App, peer: IpAddress) -> bool:
    """The peer must be in the app's allow-list; an app without one is XMPP-only."""
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    return any(peer in network for network in app.networks)
