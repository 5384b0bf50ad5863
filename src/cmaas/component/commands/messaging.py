"""Messaging commands for JIDs bound to an app (bots): key lookup, submission and status,
on the same engine as the HTTP API.

The server-stamped sender identifies the app, so no client secret travels; a
submission still carries the request HMAC of SPEC section 4, computed exactly as for
``POST /v1/messages`` over the ``message`` field's text.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import ClassVar, cast

from cmaas.component.adhoc.command import (
    Access,
    Command,
    CommandContext,
    Completed,
    FormStep,
    Step,
)
from cmaas.component.adhoc.forms import (
    FieldSpec,
    FieldValue,
    FormSpec,
    Submission,
    render_result,
)
from cmaas.delivery.auth import RequestAuthenticator, SignedRequest
from cmaas.delivery.errors import AppSuspended, DeliveryError, InvalidRequest
from cmaas.delivery.service import Messaging
from cmaas.delivery.submission import Outcome, outcome_json
from cmaas.envelope.sealed import MAX_ENVELOPE_BYTES
from cmaas.keystore import App, Keystore
from cmaas.wire.json import parse_json_body

__all__ = [
    "AppDescribe",
    "KeysLookup",
    "MessageSend",
    "MessageStatusLookup",
    "SigningKeyRegister",
    "messaging_commands",
]

SUBMIT_PATH = "/v1/messages"
"""The path the HMAC of ``message-send`` covers, as for the HTTP submission."""


class _AppCommand(Command):
    access = Access.APP

    def __init__(
        self, keystore: Keystore, messaging: Messaging, authenticator: RequestAuthenticator
    ) -> None:
        self.keystore = keystore
        self.messaging = messaging
        self.authenticator = authenticator

    async def bound_app(self, context: CommandContext) -> App:
        """The app the requester is bound to (access was checked by the engine).

        Raises:
            InvalidRequest: The binding was removed meanwhile.
            AppSuspended: The app is suspended.
        """
        app_id = await self.keystore.app_for_jid(context.requester_bare)
        if app_id is None:
            raise InvalidRequest(f"{context.requester_bare} is not bound to an app")
        app = await self.keystore.get_app(app_id)
        if app.suspended:
            raise AppSuspended(f"app {app_id!r} is suspended")
        return app


def _outcome_rows(outcome: Outcome) -> list[tuple[str, str, FieldValue]]:
    return [
        (key, key.replace("_", " ").capitalize(), str(value))
        for key, value in outcome_json(outcome).items()
    ]


def _refused(error: DeliveryError) -> Completed:
    return Completed(
        notes=[("error", f"{error.code}: {error.detail}")],
        payload=render_result("Refused", _outcome_rows(error)),
    )


class KeysLookup(_AppCommand):
    node = "urn:cmaas:cmd:keys-lookup"
    name = "Look up a recipient's device keys"
    form = FormSpec(
        "Look up device keys",
        "Each active device's bundle, with one one-time prekey taken from its pool.",
        (
            FieldSpec(
                "to", "Recipient", required=True, desc="A JID, an email or a +E.164 mobile number"
            ),
        ),
    )

    async def start(self, context: CommandContext) -> Step:
        async def submit(form: Submission) -> Step:
            try:
                app = await self.bound_app(context)
                jid, bundles = await self.messaging.lookup(app, form.text("to").strip())
            except DeliveryError as error:
                return _refused(error)
            bundle_texts = [bundle.to_bytes().decode() for bundle in bundles]
            return Completed(
                notes=[("info", f"{len(bundles)} device(s) of {jid}")],
                payload=render_result(
                    "Device keys",
                    [("jid", "Recipient JID", jid), ("bundles", "Device bundles", bundle_texts)],
                ),
            )

        return FormStep(self.form, submit)


_SIGNATURE_FIELDS = (
    FieldSpec("timestamp", "Timestamp (unix seconds)", required=True),
    FieldSpec("nonce", "Nonce", required=True),
    FieldSpec("signature", "Signature (base64 HMAC-SHA256)", required=True),
)


class _SignedCommand(_AppCommand):
    """A command that carries an HTTP request's JSON body, signed exactly as that request
    (``POST`` to :attr:`path`) would be; the server-stamped sender names the app."""

    path: ClassVar[str]
    form: ClassVar[FormSpec]

    async def start(self, context: CommandContext) -> Step:
        async def submit(form: Submission) -> Step:
            body = form.text("request").encode()
            try:
                app = await self.bound_app(context)
                await self.authenticator.authenticate_bound(
                    app.app_id,
                    SignedRequest(
                        method="POST",
                        path=self.path,
                        body=body,
                        client_id=app.client_id,
                        client_secret="",
                        timestamp=form.text("timestamp").strip(),
                        nonce=form.text("nonce").strip(),
                        signature=form.text("signature").strip(),
                        peer=None,
                    ),
                )
                return await self.perform(app, parse_json_body(body))
            except DeliveryError as error:
                return _refused(error)

        return FormStep(self.form, submit)

    @abstractmethod
    async def perform(self, app: App, request: object) -> Completed:
        """Raises: DeliveryError."""


class MessageSend(_SignedCommand):
    node = "urn:cmaas:cmd:message-send"
    name = "Submit a sealed message"
    path = SUBMIT_PATH
    form = FormSpec(
        "Submit a sealed message",
        "The message as the JSON body of POST /v1/messages, signed as that request would"
        " be (X-CMAAS-Timestamp, X-CMAAS-Nonce, X-CMAAS-Signature).",
        (
            FieldSpec(
                "request",
                "Message (JSON)",
                required=True,
                desc="message_id, to, priority, expires_at and envelope",
                max_length=MAX_ENVELOPE_BYTES + 4096,
            ),
            *_SIGNATURE_FIELDS,
        ),
    )

    async def perform(self, app: App, request: object) -> Completed:
        (outcome,) = await self.messaging.submit(app, [request])
        if isinstance(outcome, DeliveryError):
            return _refused(outcome)
        return Completed(
            notes=[("info", f"Message {outcome.message_id}: {outcome.status.value}")],
            payload=render_result("Accepted", _outcome_rows(outcome)),
        )


class SigningKeyRegister(_SignedCommand):
    node = "urn:cmaas:cmd:signing-key-register"
    name = "Register the app's envelope signing key"
    path = "/v1/signing-keys"
    form = FormSpec(
        "Register a signing key",
        'The JSON body of POST /v1/signing-keys ({"public_key": ...}), signed as that'
        " request would be.",
        (FieldSpec("request", "Request (JSON)", required=True), *_SIGNATURE_FIELDS),
    )

    async def perform(self, app: App, request: object) -> Completed:
        if not isinstance(request, dict) or set(request) != {"public_key"}:
            raise InvalidRequest('the request must be {"public_key": BASE64URL_POINT}')
        digest, added = await self.messaging.register_signing_key(app, request["public_key"])
        return Completed(
            notes=[("info", "Registered" if added else "Already registered")],
            payload=render_result("Signing key", [("fingerprint", "Fingerprint", digest)]),
        )


class AppDescribe(_AppCommand):
    node = "urn:cmaas:cmd:app-describe"
    name = "Describe my app"

    async def start(self, context: CommandContext) -> Step:
        try:
            app = await self.bound_app(context)
        except DeliveryError as error:
            return _refused(error)
        described = self.messaging.describe(app)
        return Completed(
            payload=render_result(
                "App",
                [
                    (key, key.replace("_", " ").capitalize(), _form_value(value))
                    for key, value in described.items()
                ],
            )
        )


def _form_value(value: object) -> FieldValue:
    if isinstance(value, list):
        return [str(item) for item in value]
    return "" if value is None else str(value)


class MessageStatusLookup(_AppCommand):
    node = "urn:cmaas:cmd:message-status"
    name = "Show a message's status"
    form = FormSpec(
        "Message status",
        "The status of one of your app's messages, with its history per device.",
        (FieldSpec("message_id", "Message id", required=True),),
    )

    async def start(self, context: CommandContext) -> Step:
        async def submit(form: Submission) -> Step:
            try:
                app = await self.bound_app(context)
                view = await self.messaging.status(app, form.text("message_id").strip())
            except DeliveryError as error:
                return _refused(error)
            events = cast(list[dict[str, object]], view["history"])
            history = [json.dumps(event, separators=(",", ":")) for event in events]
            return Completed(
                notes=[("info", f"{view['message_id']}: {view['status']}")],
                payload=render_result(
                    "Message status",
                    [
                        ("message_id", "Message id", str(view["message_id"])),
                        ("status", "Status", str(view["status"])),
                        ("detail", "Detail", str(view["detail"])),
                        ("recipient_jid", "Recipient", str(view["recipient_jid"] or "")),
                        ("devices", "Per device", json.dumps(view["devices"], sort_keys=True)),
                        ("history", "History", history),
                    ],
                ),
            )

        return FormStep(self.form, submit)


def messaging_commands(
    keystore: Keystore, messaging: Messaging, authenticator: RequestAuthenticator
) -> list[Command]:
    return [
        command(keystore, messaging, authenticator)
        for command in (
            AppDescribe,
            KeysLookup,
            MessageSend,
            MessageStatusLookup,
            SigningKeyRegister,
        )
    ]
