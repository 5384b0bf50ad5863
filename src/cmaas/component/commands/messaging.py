"""Messaging commands for JIDs bound to an app (bots): key lookup, submission and status,
on the same engine as the HTTP API.

The server-stamped sender identifies the app, so no client secret travels; a
submission still carries the request HMAC of the HTTP API, computed exactly as for
``POST /v1/messages`` over the ``request`` field's text.

Each result shows its values as fields for people, and the whole answer as the HTTP
API would give it in the field ``json``, which programs read with :mod:`cmaas.wire`.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import ClassVar

from slixmpp.plugins.xep_0004 import Form

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
from cmaas.delivery.errors import AppSuspended, InvalidRequest, Refusal
from cmaas.delivery.omemo import parse_device_id
from cmaas.delivery.service import Messaging
from cmaas.delivery.submission import submission_result
from cmaas.envelope.sealed import MAX_ENVELOPE_BYTES
from cmaas.keystore import App, Keystore, RequestNonce
from cmaas.wire import KeyLookup, SigningKeyRequest, WireError
from cmaas.wire.adhoc import ANSWER_FIELD
from cmaas.wire.json import parse_json_body
from cmaas.wire.omemo_message import MAX_OMEMO_MESSAGE_CHARS

__all__ = [
    "AppDescribe",
    "KeysLookup",
    "MessageSend",
    "MessageStatusLookup",
    "OmemoDeviceList",
    "OmemoDevicePublish",
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


class _FormCommand(_AppCommand):
    """A command of one form, answered once the form is submitted."""

    form: ClassVar[FormSpec]

    async def start(self, context: CommandContext) -> Step:
        return FormStep(self.form, self.submit)

    @abstractmethod
    async def submit(self, context: CommandContext, form: Submission) -> Completed:
        """The answer; a refusal is an answer too."""


def _form_value(value: object) -> FieldValue:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, list):
        return [item if isinstance(item, str) else _compact(item) for item in value]
    if isinstance(value, dict):
        return _compact(value)
    return "" if value is None else str(value)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def wire_result(title: str, answer: dict[str, object]) -> Form:
    """A result form of ``answer``: a field per key for people, and ``json`` for programs."""
    rows: list[tuple[str, str, FieldValue]] = [
        (key, key.replace("_", " ").capitalize(), _form_value(value))
        for key, value in answer.items()
    ]
    rows.append((ANSWER_FIELD, "As JSON", _compact(answer)))
    return render_result(title, rows)


def _refused(error: Refusal | WireError) -> Completed:
    refusal = InvalidRequest(str(error)) if isinstance(error, WireError) else error
    return Completed(
        notes=[("error", f"{refusal.code}: {refusal.detail}")],
        payload=wire_result("Refused", submission_result(refusal).to_json()),
    )


class KeysLookup(_FormCommand):
    node = "urn:cmaas:cmd:keys-lookup"
    name = "Look up a recipient's device keys"
    form = FormSpec(
        "Look up device keys",
        "Each active device's bundle, with one one-time prekey taken from its pool, and"
        " the recipient's OMEMO device list and bundles.",
        (
            FieldSpec(
                "to", "Recipient", required=True, desc="A JID, an email or a +E.164 mobile number"
            ),
        ),
    )

    async def submit(self, context: CommandContext, form: Submission) -> Completed:
        try:
            app = await self.bound_app(context)
            keys = await self.messaging.lookup(app, form.text("to").strip())
        except Refusal as error:
            return _refused(error)
        return Completed(
            notes=[("info", _keys_note(keys))],
            payload=wire_result("Device keys", keys.to_json()),
        )


def _keys_note(keys: KeyLookup) -> str:
    note = f"{len(keys.devices)} device(s) of {keys.jid}"
    if keys.omemo is None:
        return note
    if keys.omemo.unreadable is not None:
        return f"{note}; OMEMO unreadable: {keys.omemo.unreadable.detail}"
    return f"{note}; {len(keys.omemo.bundles)} OMEMO device(s)"


_SIGNATURE_FIELDS = (
    FieldSpec("timestamp", "Timestamp (unix seconds)", required=True),
    FieldSpec("nonce", "Nonce", required=True),
    FieldSpec("signature", "Signature (base64 HMAC-SHA256)", required=True),
)


class _SignedCommand(_FormCommand):
    """A command that carries an HTTP request's JSON body, signed exactly as that request
    (:attr:`method` to :meth:`request_path`) would be; the server-stamped sender names
    the app."""

    method: ClassVar[str] = "POST"
    path: ClassVar[str]

    def request_path(self, form: Submission) -> str:
        """The HTTP path the signature covers.

        Raises: InvalidRequest.
        """
        return self.path

    stores_messages: ClassVar[bool] = False
    """Whether :meth:`perform` stores messages: it then claims the request's nonce in
    the transaction that stores them."""

    async def submit(self, context: CommandContext, form: Submission) -> Completed:
        body = form.text("request").encode()
        try:
            app = await self.bound_app(context)
            signed = SignedRequest(
                method=self.method,
                path=self.request_path(form),
                body=body,
                client_id=app.client_id,
                client_secret="",
                timestamp=form.text("timestamp").strip(),
                nonce=form.text("nonce").strip(),
                signature=form.text("signature").strip(),
                peer=None,
            )
            nonce: RequestNonce | None = None
            if self.stores_messages:
                app, nonce = await self.authenticator.authenticate_bound_pending(app.app_id, signed)
            else:
                await self.authenticator.authenticate_bound(app.app_id, signed)
            try:
                request = parse_json_body(body)
            except WireError:
                if nonce is not None:  # nothing to store: the nonce is claimed alone
                    await self.authenticator.claim(nonce)
                raise
            return await self.perform(app, request, form, nonce)
        except (Refusal, WireError) as error:
            return _refused(error)

    @abstractmethod
    async def perform(
        self, app: App, request: object, form: Submission, nonce: RequestNonce | None
    ) -> Completed:
        """``nonce``: the request's, still to be claimed, where :attr:`stores_messages`
        (else ``None``: claimed already).

        Raises: Refusal, WireError.
        """


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
                desc="message_id, to, priority, expires_at, envelope and omemo",
                max_length=MAX_ENVELOPE_BYTES + MAX_OMEMO_MESSAGE_CHARS + 4096,
            ),
            *_SIGNATURE_FIELDS,
        ),
    )

    stores_messages = True

    async def perform(
        self, app: App, request: object, form: Submission, nonce: RequestNonce | None
    ) -> Completed:
        (outcome,) = await self.messaging.submit(app, [request], nonce=nonce)
        if isinstance(outcome, Refusal):
            return _refused(outcome)
        return Completed(
            notes=[("info", f"Message {outcome.message_id}: {outcome.status.value}")],
            payload=wire_result("Accepted", submission_result(outcome).to_json()),
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

    async def perform(
        self, app: App, request: object, form: Submission, nonce: RequestNonce | None
    ) -> Completed:
        key = SigningKeyRequest.from_json(request)
        digest, added = await self.messaging.register_signing_key(app, key)
        return Completed(
            notes=[("info", "Registered" if added else "Already registered")],
            payload=wire_result("Signing key", {"fingerprint": digest}),
        )


class OmemoDevicePublish(_SignedCommand):
    node = "urn:cmaas:cmd:omemo-device-publish"
    name = "Publish an OMEMO device of my app"
    method = "PUT"
    path = "/v1/omemo/devices/"
    form = FormSpec(
        "Publish an OMEMO device",
        "The bundle as the JSON body of PUT /v1/omemo/devices/{device_id}, signed as that"
        " request would be. The app JID's PEP then lists the device and serves its bundle.",
        (
            FieldSpec("device_id", "Device id", required=True, desc="1 to 2147483647"),
            FieldSpec("request", "Bundle (JSON)", required=True, max_length=64 * 1024),
            *_SIGNATURE_FIELDS,
        ),
    )

    def request_path(self, form: Submission) -> str:
        return f"{self.path}{parse_device_id(form.text('device_id').strip())}"

    async def perform(
        self, app: App, request: object, form: Submission, nonce: RequestNonce | None
    ) -> Completed:
        device_id = parse_device_id(form.text("device_id").strip())
        added = await self.messaging.omemo.publish(app, device_id, request)
        return Completed(
            notes=[("info", f"Device {device_id} {'published' if added else 'updated'}")],
            payload=wire_result("OMEMO device", {"device_id": device_id, "new": added}),
        )


class OmemoKeyTransportSend(_SignedCommand):
    node = "urn:cmaas:cmd:omemo-key-transport"
    name = "Send an OMEMO key transport"
    path = "/v1/omemo/key-transports"
    form = FormSpec(
        "Send an OMEMO key transport",
        "The JSON body of POST /v1/omemo/key-transports (to, xml), signed as that request"
        " would be: an <encrypted/> element without a payload, sent at once from the app's"
        " JID.",
        (
            FieldSpec(
                "request",
                "Key transport (JSON)",
                required=True,
                max_length=MAX_OMEMO_MESSAGE_CHARS + 4096,
            ),
            *_SIGNATURE_FIELDS,
        ),
    )

    async def perform(
        self, app: App, request: object, form: Submission, nonce: RequestNonce | None
    ) -> Completed:
        await self.messaging.omemo.send_key_transport(app, request)
        return Completed(
            notes=[("info", "Sent")], payload=wire_result("OMEMO key transport", {"sent": True})
        )


class OmemoInboundRead(_FormCommand):
    node = "urn:cmaas:cmd:omemo-inbound"
    name = "Read what people's clients sent to my app over OMEMO"
    form = FormSpec(
        "OMEMO inbound",
        "The <encrypted/> elements people's clients sent to the app's JID (replies and key"
        " transports), unopened, after a cursor: what GET /v1/omemo/inbound answers.",
        (FieldSpec("after", "After", required=True, desc="The last seq read, or 0"),),
    )

    async def submit(self, context: CommandContext, form: Submission) -> Completed:
        text = form.text("after").strip()
        try:
            app = await self.bound_app(context)
            if not (text.isascii() and text.isdigit()) or len(text) > 18:
                raise InvalidRequest("after must be a whole number")
            page = await self.messaging.omemo.inbound(app, int(text), 0)
        except Refusal as error:
            return _refused(error)
        return Completed(
            notes=[("info", f"{len(page.items)} item(s)")],
            payload=wire_result("OMEMO inbound", page.to_json()),
        )


class _FormlessCommand(_AppCommand):
    """A command without a form: its answer about the bound app, at once."""

    title: ClassVar[str]

    async def start(self, context: CommandContext) -> Step:
        try:
            app = await self.bound_app(context)
        except Refusal as error:
            return _refused(error)
        return Completed(payload=wire_result(self.title, await self.answer(app)))

    @abstractmethod
    async def answer(self, app: App) -> dict[str, object]: ...


class OmemoDeviceList(_FormlessCommand):
    node = "urn:cmaas:cmd:omemo-device-list"
    name = "List my app's OMEMO devices"
    title = "OMEMO devices"

    async def answer(self, app: App) -> dict[str, object]:
        return (await self.messaging.omemo.devices(app)).to_json()


class AppDescribe(_FormlessCommand):
    node = "urn:cmaas:cmd:app-describe"
    name = "Describe my app"
    title = "App"

    async def answer(self, app: App) -> dict[str, object]:
        return self.messaging.describe(app).to_json()


class MessageStatusLookup(_FormCommand):
    node = "urn:cmaas:cmd:message-status"
    name = "Show a message's status"
    form = FormSpec(
        "Message status",
        "The status of one of your app's messages, with its history per device.",
        (FieldSpec("message_id", "Message id", required=True),),
    )

    async def submit(self, context: CommandContext, form: Submission) -> Completed:
        try:
            app = await self.bound_app(context)
            view = await self.messaging.status(app, form.text("message_id").strip())
        except Refusal as error:
            return _refused(error)
        return Completed(
            notes=[("info", f"{view.message_id}: {view.status.value}")],
            payload=wire_result("Message status", view.to_json()),
        )


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
            OmemoDevicePublish,
            OmemoDeviceList,
            OmemoKeyTransportSend,
            OmemoInboundRead,
        )
    ]
