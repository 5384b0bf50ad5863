"""Sealing one message to a recipient's devices, from a key lookup's answer."""

from __future__ import annotations

from cmaas.envelope import Content, PrivateKey, seal
from cmaas.lifecycle import Priority
from cmaas.wire import KeyLookup, Submission

__all__ = ["seal_submission"]


def seal_submission(
    keys: KeyLookup,
    to: str,
    content: Content,
    *,
    message_id: str,
    app_jid: str,
    app_key: PrivateKey,
    priority: Priority,
    created_ms: int,
    expires_ms: int,
    auto_delete_s: int | None = None,
) -> Submission:
    """The submission for ``to`` (as the app names them), sealed to every device in
    ``keys`` and signed with ``app_key``.

    Raises: EnvelopeError: The content or a header field is out of bounds.
    """
    envelope = seal(
        content,
        message_id=message_id,
        app_jid=app_jid,
        recipient_jid=keys.jid,
        bundles=keys.devices,
        app_key=app_key,
        created_ms=created_ms,
        expires_ms=expires_ms,
        priority=priority,
        auto_delete_s=auto_delete_s,
    )
    return Submission(message_id, to, envelope.to_bytes().decode(), priority)
