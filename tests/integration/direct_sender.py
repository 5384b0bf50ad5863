"""A sender for tests that must go around the HTTP API and the outbox: it looks up the
recipient's keys in an in-process gateway's directory, seals with the envelope library,
and writes the message straight through that gateway's component link.

It writes what the API would refuse (a key the app never registered, as an impostor's)
or never dispatch (an already expired message), and it resends one exact envelope under
the same id, as after a lost receipt: the device's own checks are what those tests are
about.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cmaas.assembly import Gateway
from cmaas.clock import now_ms
from cmaas.envelope import Content, PrivateKey, generate_private_key, seal
from cmaas.lifecycle import Priority

__all__ = ["DirectSender"]


class DirectSender:
    """Sends as app ``app_id`` with its own signing key (a fresh one by default)."""

    def __init__(self, gateway: Gateway, app_id: str, app_key: PrivateKey | None = None) -> None:
        self.gateway = gateway
        self.app_id = app_id
        self.app_jid = f"{app_id}@{gateway.xmpp.domain}"
        self.app_key = app_key or generate_private_key()
        self.last_envelope = ""
        self._sent = 0

    async def send(
        self,
        recipient: str,
        content: Content,
        *,
        lifetime_ms: int = 600_000,
        auto_delete_s: int | None = None,
        tamper: Callable[[str], str] | None = None,
    ) -> str:
        """Seal ``content`` for every active device of ``recipient`` and send it.

        A negative ``lifetime_ms`` makes an already expired message (for tests);
        ``tamper`` changes the sealed envelope's text before it is sent, as a party
        on the way could.

        Returns: the message id.
        Raises: WrongRecipient: The recipient has no active device.
        """
        self._sent += 1
        message_id = f"msg-{self._sent}-{os.urandom(4).hex()}"
        now = now_ms()
        envelope = seal(
            content,
            message_id=message_id,
            app_jid=self.app_jid,
            recipient_jid=recipient,
            bundles=await self.gateway.directory.lookup(recipient),
            app_key=self.app_key,
            created_ms=now - max(0, -lifetime_ms) - 1_000,
            expires_ms=now + lifetime_ms,
            priority=Priority.HIGH,
            auto_delete_s=auto_delete_s,
        )
        self.last_envelope = envelope.to_bytes().decode()
        if tamper is not None:
            self.last_envelope = tamper(self.last_envelope)
        self.resend(recipient, message_id)
        return message_id

    def resend(self, recipient: str, message_id: str) -> None:
        """Write the last envelope again under the same id, as after a lost receipt."""
        if not self.gateway.xmpp.send_sealed(
            self.app_id, recipient, message_id, self.last_envelope
        ):
            raise ConnectionError("the gateway's component link is down")
