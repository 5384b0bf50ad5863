"""docs/openapi.json describes the HTTP API as implemented: the same routes, every error
code under its status, and the limits the code enforces."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, cast

import pytest

from cmaas import wire
from cmaas.api import routes as routes_module
from cmaas.api.addresses import ClientAddresses
from cmaas.api.health import health_routes
from cmaas.api.routes import api_routes
from cmaas.delivery.auth import SIGNATURE_WINDOW_S, RequestAuthenticator
from cmaas.delivery.errors import Refusal
from cmaas.delivery.metrics import CONTENT_TYPE, GatewayMetrics
from cmaas.delivery.service import MAX_WAIT_S, Messaging
from cmaas.delivery.submission import AdmissionLimits
from cmaas.envelope.sealed import MAX_ENVELOPE_BYTES
from cmaas.lifecycle import MessageStatus, Priority
from cmaas.settings import Settings
from cmaas.wire.omemo import MAX_OMEMO_ID, MAX_OMEMO_PREKEYS
from cmaas.xmpp.link import XmppLink
from tests.omemo_elements import encrypted_xml

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
# error_middleware turns aiohttp's own refusals into codes from their reasons; 404 gives
# "not_found", as NotFound does, and 405 the one code no Refusal has.
ROUTER_CODES = {"method_not_allowed": 405}
# The refusals that are raised with retry_after, so that the answer has Retry-After.
RETRY_AFTER_CODES = frozenset({"rate_limited", "quota_exceeded", "backpressure"})
UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/metrics", "/v1/blobs/{blob_id}"})

JsonObject = dict[str, Any]


class _Untouchable:
    """A stand-in for the route builders' collaborators: any use at build time fails."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> NoReturn:
        raise AssertionError(f"{self._name}.{attribute} was used while building the routes")

    def __call__(self, *args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(f"{self._name} was called while building the routes")


@pytest.fixture(scope="module")
def doc() -> JsonObject:
    with DOC_PATH.open(encoding="utf-8") as file:
        return cast(JsonObject, json.load(file))


def _pointer(doc: JsonObject, ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and key in node, f"{ref} does not resolve"
        node = node[key]
    return node


def _deref(doc: JsonObject, node: Any) -> Any:
    """Follow ``$ref`` at the top of ``node`` (not inside it)."""
    while isinstance(node, dict) and "$ref" in node:
        node = _pointer(doc, cast(str, node["$ref"]))
    return node


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _operations(doc: JsonObject) -> Iterator[tuple[str, str, JsonObject]]:
    for path, item in cast(JsonObject, doc["paths"]).items():
        for method, operation in cast(JsonObject, item).items():
            if method in HTTP_METHODS:
                yield method.upper(), path, cast(JsonObject, operation)


def _openapi_path(aiohttp_path: str) -> str:
    """``/a/{name}`` stays as it is; ``/a/{name:regex}`` becomes ``/a/{name}``."""
    return re.sub(r"\{([^{}:]+)(?::[^{}]*)?\}", r"{\1}", aiohttp_path)


def _implemented_routes() -> set[tuple[str, str]]:
    depth = cast(Callable[[], Mapping[Priority, int]], _Untouchable("depth"))
    route_defs = [
        *api_routes(
            cast(Messaging, _Untouchable("messaging")),
            cast(RequestAuthenticator, _Untouchable("authenticator")),
            cast(ClientAddresses, _Untouchable("addresses")),
            cast(GatewayMetrics, _Untouchable("metrics")),
        ),
        *health_routes(cast(XmppLink, _Untouchable("link")), depth),
    ]
    return {(route.method.upper(), _openapi_path(route.path)) for route in route_defs}


def _error_codes() -> dict[str, int]:
    """Every Refusal subclass's code, with its status (one status per code)."""
    codes: dict[str, int] = {}
    pending: list[type[Refusal]] = list(Refusal.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        assert codes.setdefault(cls.code, cls.status) == cls.status, (
            f"{cls.__name__}: code {cls.code!r} already has status {codes[cls.code]}"
        )
    return codes


def _named_codes(doc: JsonObject, response: Any) -> set[str]:
    """The codes an error response names: the ``enum`` of an ``error`` property in its
    JSON schema, without following schema references (the shared ``Error`` schema lists
    every code; a response narrows it to its own)."""
    response = _deref(doc, response)
    content = cast(JsonObject, response.get("content", {}))
    schema = cast(JsonObject, content.get("application/json", {})).get("schema", {})
    named: set[str] = set()
    for node in _walk(schema):
        if isinstance(node, dict) and isinstance(node.get("properties"), dict):
            error = node["properties"].get("error")
            if isinstance(error, dict) and isinstance(error.get("enum"), list):
                named.update(cast(list[str], error["enum"]))
    return named


def _error_responses(doc: JsonObject) -> Iterator[tuple[str, str, int, Any]]:
    for method, path, operation in _operations(doc):
        for status, response in cast(JsonObject, operation["responses"]).items():
            if status.isdigit() and int(status) >= 400 and path not in UNAUTHENTICATED_PATHS:
                yield f"{method} {path}", status, int(status), _deref(doc, response)


def test_the_document_is_pretty_printed_openapi_3_1(doc: JsonObject) -> None:
    assert doc["openapi"].startswith("3.1.")
    text = DOC_PATH.read_text(encoding="utf-8")
    assert text == json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def test_every_reference_resolves(doc: JsonObject) -> None:
    for node in _walk(doc):
        if isinstance(node, dict) and isinstance(node.get("$ref"), str):
            _pointer(doc, node["$ref"])


def test_route_stand_ins_are_not_used_at_build_time() -> None:
    with pytest.raises(AssertionError, match="was used"):
        cast(Any, _Untouchable("probe")).anything  # noqa: B018 (the access is the test)
    assert _implemented_routes()  # would have raised had a builder touched a stand-in


def test_paths_and_methods_match_the_routes(doc: JsonObject) -> None:
    documented = {(method, path) for method, path, _ in _operations(doc)}
    implemented = _implemented_routes()
    assert documented == implemented, (
        f"undocumented: {sorted(implemented - documented)}; "
        f"not implemented: {sorted(documented - implemented)}"
    )


def test_error_schema_lists_exactly_the_codes(doc: JsonObject) -> None:
    schema = _deref(doc, doc["components"]["schemas"]["Error"])
    assert set(schema["required"]) == {"error", "detail"}
    code = _deref(doc, schema["properties"]["error"])
    assert set(code["enum"]) == set(_error_codes()) | set(ROUTER_CODES)


def test_every_code_is_answered_under_its_status(doc: JsonObject) -> None:
    answered: set[tuple[str, int]] = set()
    for _, _, status, response in _error_responses(doc):
        answered.update((code, status) for code in _named_codes(doc, response))
    for code, status in _error_codes().items():
        assert (code, status) in answered, f"no {status} response names {code!r}"


def test_error_responses_name_only_codes_of_their_status(doc: JsonObject) -> None:
    statuses = {**_error_codes(), **ROUTER_CODES}
    for where, key, status, response in _error_responses(doc):
        named = _named_codes(doc, response)
        assert named, f"{where} {key} names no error code"
        for code in named:
            assert statuses.get(code) == status, f"{where} {key} names {code!r}"
        if named & RETRY_AFTER_CODES:
            assert "Retry-After" in response.get("headers", {}), f"{where} {key}: Retry-After"


def test_security(doc: JsonObject) -> None:
    headers = set(re.findall(r'"(X-CMAAS-[A-Za-z-]+)"', inspect.getsource(routes_module)))
    assert len(headers) == 5
    schemes = cast(JsonObject, doc["components"]["securitySchemes"])
    assert {scheme["name"] for scheme in schemes.values()} == headers
    assert all(s["type"] == "apiKey" and s["in"] == "header" for s in schemes.values())
    # One requirement naming all five schemes: they are required together.
    assert doc["security"] == [{name: [] for name in schemes}]
    assert f"within {SIGNATURE_WINDOW_S} s" in json.dumps(schemes)
    for method, path, operation in _operations(doc):
        public = path in UNAUTHENTICATED_PATHS
        assert ("security" in operation and operation["security"] == []) == public, (
            f"{method} {path}"
        )


def test_limits_match_the_code(doc: JsonObject) -> None:
    schemas = cast(JsonObject, doc["components"]["schemas"])
    messages = schemas["BatchSubmission"]["properties"]["messages"]
    assert (messages["minItems"], messages["maxItems"]) == (1, AdmissionLimits().max_batch)
    envelope = schemas["MessageSubmission"]["properties"]["envelope"]
    assert envelope["maxLength"] == MAX_ENVELOPE_BYTES
    assert str(MAX_ENVELOPE_BYTES) in envelope["description"]
    (events,) = doc["paths"]["/v1/events"].values()
    wait = next(p for p in events["parameters"] if p["name"] == "wait")
    assert wait["schema"]["maximum"] == int(MAX_WAIT_S)
    max_body = next(f.default for f in dataclasses.fields(Settings) if f.name == "http_max_body")
    assert f"default 8 MiB = {max_body}" in doc["info"]["description"]
    bundle = schemas["OmemoBundle"]["properties"]
    assert bundle["prekeys"]["maxItems"] == MAX_OMEMO_PREKEYS
    assert bundle["signed_prekey_id"]["maximum"] == MAX_OMEMO_ID
    omemo_defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    described = json.dumps(doc["paths"]["/v1/omemo/devices/{device_id}"])
    assert (
        f"CMAAS_OMEMO_MAX_DEVICES` devices (default {omemo_defaults['omemo_max_devices']})"
        in described
    )
    assert (
        f"CMAAS_OMEMO_MAX_PREKEYS` prekeys (default {omemo_defaults['omemo_max_prekeys']})"
        in described
    )
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == [CONTENT_TYPE]


def test_webhook_is_described(doc: JsonObject) -> None:
    operation = doc["webhooks"]["statusEvents"]["post"]
    (signature,) = [p for p in operation["parameters"] if p["name"] == "X-CMAAS-Signature"]
    assert signature["in"] == "header" and signature["required"]
    body = _deref(doc, operation["requestBody"]["content"]["application/json"]["schema"])
    assert set(body["required"]) == {"app_id", "events"}


# The wire contract's classes write exactly what the document describes


def _omemo_bundle(device_id: int) -> wire.OmemoBundle:
    key = b"\x05" + bytes(range(32))
    prekeys = (wire.OmemoPrekey(1, key), wire.OmemoPrekey(2, key))
    return wire.OmemoBundle(device_id, key, 3, key, bytes(64), prekeys)


def _recipient_omemo() -> wire.RecipientOmemo:
    return wire.RecipientOmemo(
        "<list xmlns='eu.siacs.conversations.axolotl'><device id='5'/></list>",
        (wire.RecipientBundle(5, "<bundle xmlns='eu.siacs.conversations.axolotl'/>"),),
        wire.OmemoUnreadable(wire.UnreadableReason.TIMEOUT, "read before, no answer now"),
    )


def _omemo_inbound(seq: int) -> wire.OmemoInbound:
    return wire.OmemoInbound(seq, "bob@b.example", encrypted_xml(), 1_800_000_000_000)


def _wire_examples() -> dict[str, tuple[Callable[[], object], Callable[[object], object]]]:
    """Per schema: a full value of its wire class, and how to read it back."""
    event = wire.StatusEvent(7, "m1", MessageStatus.DELIVERED, 1_800_000_000_000, "42", "")
    return {
        "MessageSubmission": (
            lambda: wire.Submission(
                "m1", "+919876543210", "{}", Priority.HIGH, 1_800_000_000, encrypted_xml()
            ),
            wire.Submission.from_json,
        ),
        "MessageAccepted": (
            lambda: wire.Accepted("m1", MessageStatus.ACCEPTED, "", "a@b.example", 1, True),
            wire.submission_result,
        ),
        "MessageRefused": (
            lambda: wire.Refused(429, "rate_limited", "slow down", "m1", 3),
            wire.submission_result,
        ),
        "StatusEvent": (lambda: event, wire.StatusEvent.from_json),
        "EventsPage": (lambda: wire.EventsPage((event,), 7), wire.EventsPage.from_json),
        "MessageView": (
            lambda: wire.MessageView(
                "m1",
                MessageStatus.DELIVERED,
                "",
                "+919876543210",
                "a@b.example",
                Priority.NORMAL,
                1,
                2,
                3,
                wire.MessageView.progress([event]),
                (event,),
            ),
            wire.MessageView.from_json,
        ),
        "AppDescription": (
            lambda: wire.AppInfo("bank", "bank@gw.example", "Bank", "default", None, ("b@x.y",)),
            wire.AppInfo.from_json,
        ),
        "SigningKeyRegistration": (
            lambda: wire.SigningKeyRequest("A" * 87),
            wire.SigningKeyRequest.from_json,
        ),
        "OmemoBundle": (lambda: _omemo_bundle(9), wire.OmemoBundle.from_json),
        "OmemoDevices": (
            lambda: wire.OmemoDevices((_omemo_bundle(1), _omemo_bundle(2))),
            wire.OmemoDevices.from_json,
        ),
        "KeysResponse": (
            lambda: wire.KeyLookup("a@b.example", (), _recipient_omemo()),
            wire.KeyLookup.from_json,
        ),
        "RecipientOmemo": (_recipient_omemo, wire.RecipientOmemo.from_json),
        "OmemoUnreadable": (
            lambda: wire.OmemoUnreadable(wire.UnreadableReason.FORBIDDEN, "accept the app"),
            wire.OmemoUnreadable.from_json,
        ),
        "OmemoInbound": (lambda: _omemo_inbound(3), wire.OmemoInbound.from_json),
        "OmemoInboundPage": (
            lambda: wire.OmemoInboundPage((_omemo_inbound(3), _omemo_inbound(4)), 4),
            wire.OmemoInboundPage.from_json,
        ),
        "KeyTransportRequest": (
            lambda: wire.KeyTransportRequest("bob@b.example", encrypted_xml(payload=False)),
            wire.KeyTransportRequest.from_json,
        ),
        "BlobCreated": (
            lambda: wire.BlobReceipt("b1", "https://gw.example/v1/blobs/b1", 10, 4),
            wire.BlobReceipt.from_json,
        ),
    }


@pytest.mark.parametrize("schema", sorted(_wire_examples()))
def test_wire_classes_write_the_documented_fields_and_read_them_back(
    doc: JsonObject, schema: str
) -> None:
    build, read = _wire_examples()[schema]
    value = build()
    written = value.to_json()  # type: ignore[attr-defined]
    described = doc["components"]["schemas"][schema]
    assert set(written) <= set(described["properties"]), schema
    assert set(described.get("required", ())) <= set(written), schema
    assert read(json.loads(json.dumps(written))) == value
