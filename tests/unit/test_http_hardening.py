"""What the adversarial review of the HTTP door found, each pinned: an envelope's
lifetime measured from the gateway's clock, blob counts, rates and sweeps, SQL
parameters kept out of DEBUG logs, webhooks kept off private addresses when the
operator says so, and the client daemon's Sandes endpoint against replays and
``file_url`` abuse."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp.abc import ResolveResult

from cmaas.admin import AdminService
from cmaas.admin.errors import InvalidInput
from cmaas.admin.requests import RegisterAppRequest, UpdateAppRequest
from cmaas.cli.logging_setup import configure_logging
from cmaas.clientservice.daemon import SeenMacs, _allowed_file_url, _Refused
from cmaas.delivery.blobs import BlobLimits, BlobService, StagedBlob
from cmaas.delivery.destinations import (
    PrivateDestination,
    PublicOnlyResolver,
    check_public_url,
    is_public,
)
from cmaas.delivery.errors import InvalidRequest, NotFound, QuotaExceeded, RateLimited
from cmaas.delivery.ratelimit import TokenBuckets
from cmaas.delivery.recipients import RecipientResolver
from cmaas.delivery.submission import SubmissionService
from cmaas.envelope import fingerprint, generate_private_key, point_bytes, seal
from cmaas.keystore import MessageRecord, NewApp, SqliteKeystore, issue_credentials
from cmaas.lifecycle import Priority

from .conftest import AnyKeystore, FakeClock
from .envelope_fixtures import TEXT, make_keyring, sender_bundle

DOMAIN = "gateway.cmaas.test"
DAY_MS = 86_400_000


async def _submit_with_created(
    keystore: SqliteKeystore, clock: FakeClock, created_ms: int, lifetime_ms: int
) -> object:
    if "shop" not in {app.app_id for app in await keystore.list_apps()}:
        await keystore.create_app(NewApp("shop", "Shop", "default"), issue_credentials("c1"))
    app = await keystore.get_app("shop")
    app_key = generate_private_key()
    public = app_key.public_key()
    await keystore.add_signing_key("shop", fingerprint(public), point_bytes(public))
    recipient = make_keyring("alice@cmaas.test")
    message_id = f"m-{created_ms}"
    envelope = seal(
        TEXT,
        message_id=message_id,
        app_jid=f"shop@{DOMAIN}",
        recipient_jid="alice@cmaas.test",
        bundles=[sender_bundle(recipient)],
        app_key=app_key,
        created_ms=created_ms,
        expires_ms=created_ms + lifetime_ms,
    )
    service = SubmissionService(
        keystore,
        RecipientResolver(keystore, frozenset({"cmaas.test"})),
        lambda entries: None,
        lambda: dict.fromkeys(Priority, 0),
        component_domain=DOMAIN,
        clock=clock,
    )
    item = {
        "message_id": message_id,
        "to": "alice@cmaas.test",
        "priority": "normal",
        "envelope": envelope.to_bytes().decode(),
    }
    (outcome,) = await service.submit(app, [item])
    return outcome


async def test_an_envelope_created_in_the_future_is_refused(
    keystore: SqliteKeystore, clock: FakeClock
) -> None:
    now_ms = int(clock.now * 1000)
    ten_years = 10 * 365 * DAY_MS
    outcome = await _submit_with_created(keystore, clock, now_ms + ten_years, 30 * DAY_MS)
    assert isinstance(outcome, InvalidRequest) and "created_ms" in outcome.detail, outcome
    # An hour ahead too; a few seconds of skew is fine, and so is a message sealed
    # a while ago (a retry), with its full lifetime.
    outcome = await _submit_with_created(keystore, clock, now_ms + 3_600_000, DAY_MS)
    assert isinstance(outcome, InvalidRequest), outcome
    assert isinstance(
        await _submit_with_created(keystore, clock, now_ms + 5000, DAY_MS), MessageRecord
    )
    past = await _submit_with_created(keystore, clock, now_ms - 3_600_000, 30 * DAY_MS)
    assert isinstance(past, MessageRecord), past


@pytest.fixture
def blob_keystore(any_keystore: AnyKeystore) -> AnyKeystore:
    """Blobs on both backends: files with SQLite, rows with PostgreSQL."""
    return any_keystore


@pytest.fixture
def blob_service(blob_keystore: AnyKeystore, clock: FakeClock) -> BlobService:
    # The buckets' clock stands still: a slow run must not refill a token mid-test.
    return BlobService(
        blob_keystore.blobs,
        BlobLimits(1024, 4096, max_count=3),
        blob_keystore.get_plan,
        buckets=TokenBuckets(clock),
    )


async def _staged(service: BlobService, data: bytes) -> StagedBlob:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    return await service.stage(chunks())


async def test_blobs_are_counted_even_when_empty(
    blob_keystore: AnyKeystore, blob_service: BlobService
) -> None:
    await blob_keystore.create_app(NewApp("shop", "Shop", "default"), issue_credentials("c1"))
    for _ in range(3):
        await blob_service.accept("shop", await _staged(blob_service, b""), 60)
    with pytest.raises(QuotaExceeded, match="blobs"):
        await blob_service.accept("shop", await _staged(blob_service, b""), 60)
    assert not [p for p in blob_keystore.blobs.staging.iterdir() if p.name.startswith(".")]


async def test_an_accepted_blob_is_found_and_streamed_back(
    blob_keystore: AnyKeystore, blob_service: BlobService
) -> None:
    await blob_keystore.create_app(NewApp("shop", "Shop", "default"), issue_credentials("c1"))
    staged = await _staged(blob_service, b"ciphertext" * 100)
    blob_id, _ = await blob_service.accept("shop", staged, 60)
    found = await blob_service.find(blob_id)
    assert found.size == 1000
    assert b"".join([chunk async for chunk in found.chunks]) == b"ciphertext" * 100
    with pytest.raises(NotFound):
        await blob_service.find(blob_id[::-1])


async def test_blob_uploads_are_charged_to_the_plan(
    blob_keystore: AnyKeystore, blob_service: BlobService
) -> None:
    await blob_keystore.create_app(NewApp("shop", "Shop", "default"), issue_credentials("c1"))
    app = await blob_keystore.get_app("shop")
    burst = (await blob_keystore.get_plan(app.plan)).burst
    for _ in range(burst):
        await blob_service.admit(app)
    with pytest.raises(RateLimited, match="uploads/s"):
        await blob_service.admit(app)


async def test_the_blob_sweep_deletes_everything_due_in_one_round(
    blob_keystore: AnyKeystore, blob_service: BlobService, clock: FakeClock
) -> None:
    await blob_keystore.create_app(NewApp("shop", "Shop", "default"), issue_credentials("c1"))
    long_ago = 1_000_000
    for index in range(2500):
        await blob_keystore.blobs.add(f"b{index:05d}", "shop", 0, long_ago, long_ago + 1, 10**9)
    assert await blob_service.sweep(batch=1000) == 2500
    assert await blob_service.sweep(batch=1000) == 0


async def test_a_debug_run_logs_no_sql_parameter(
    any_keystore: AnyKeystore, caplog: pytest.LogCaptureFixture
) -> None:
    keystore = any_keystore
    secret_number = "+919876543210"
    configure_logging("DEBUG")
    try:
        with caplog.at_level(logging.DEBUG):
            # at_level sets the root; the named loggers keep what configure_logging set.
            await keystore.resolve_address(secret_number)
            await keystore.blobs.size("capability-id-" + "x" * 29, 0)
            logging.getLogger("cmaas.probe").debug("debug is on")
    finally:
        logging.getLogger().setLevel(logging.WARNING)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "debug is on" in text  # DEBUG records do get through
    assert secret_number not in text and "capability-id-" not in text, text[:2000]


def test_public_addresses() -> None:
    for text in [
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "100.64.0.1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "fc00::1",
        "0.0.0.0",  # noqa: S104 (an address compared, never bound)
        "224.0.0.1",
    ]:
        assert not is_public(ipaddress.ip_address(text)), text
    for text in ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"]:
        assert is_public(ipaddress.ip_address(text)), text


async def test_a_private_callback_url_is_refused_when_denied(keystore: SqliteKeystore) -> None:
    for url in [
        "http://127.0.0.1:9/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest",
        "http://localhost/x",
        "http://[::ffff:10.0.0.1]/",
    ]:
        with pytest.raises(PrivateDestination):
            await check_public_url(url)
    await check_public_url("https://8.8.8.8/hook")
    await check_public_url("https://no-such-name.invalid/hook")  # checked again at each call
    denying = AdminService(keystore, deny_private=True)
    with pytest.raises(InvalidInput) as refused:
        await denying.register_app(
            RegisterAppRequest(
                app_id="shop", display_name="Shop", callback_url="http://127.0.0.1/x"
            )
        )
    assert "callback_url" in refused.value.problems
    # Without the setting (the default), the same URL is allowed: the admin's choice.
    issued = await AdminService(keystore).register_app(
        RegisterAppRequest(app_id="shop", display_name="Shop", callback_url="http://127.0.0.1/x")
    )
    assert issued.app.callback_url == "http://127.0.0.1/x"
    with pytest.raises(InvalidInput):
        await denying.update_app(UpdateAppRequest(app_id="shop", callback_url="http://10.0.0.1/"))


class _FixedResolver(PublicOnlyResolver):
    def __init__(self, answers: list[str]) -> None:
        self._answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self._answers
        ]


async def test_a_name_resolving_to_a_private_address_is_refused_at_call_time() -> None:
    mixed = PublicOnlyResolver(_FixedResolver(["10.0.0.5", "8.8.4.4"]))
    assert [r["host"] for r in await mixed.resolve("hook.example", 443)] == ["8.8.4.4"]
    private = PublicOnlyResolver(_FixedResolver(["169.254.169.254"]))
    with pytest.raises(OSError, match="no public address"):
        await private.resolve("rebound.example", 443)


def test_a_sandes_mac_is_accepted_once_within_its_window() -> None:
    clock = FakeClock(1000.0)
    seen = SeenMacs(capacity=3, clock=clock)
    assert seen.first_time(b"a", 10)
    assert not seen.first_time(b"a", 10)
    clock.now += 11
    assert seen.first_time(b"a", 10)  # after the window (a timestamp refuses it then)
    for mac in (b"b", b"c", b"d"):
        assert seen.first_time(mac, 100)
    assert not seen.first_time(b"d", 100)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8480/metrics",
        "http://127.0.0.1:9000/filesX/a",
        "http://127.0.0.1:9000/files/../metrics",
        "http://127.0.0.1:9000/files/%2e%2e/metrics",
        "http://127.0.0.1:90001/files/a",
        "http://127.0.0.1.evil.example:9000/files/a",
        "https://127.0.0.1:9000/files/a",
        "http://user:pw@127.0.0.1:9000/files/a",
    ],
)
def test_file_url_must_lie_under_an_allowed_prefix(url: str) -> None:
    with pytest.raises(_Refused):
        _allowed_file_url(url, ("http://127.0.0.1:9000/files",))


def test_file_url_is_refused_when_no_prefix_is_allowed() -> None:
    assert str(
        _allowed_file_url("http://127.0.0.1:9000/files/a.pdf", ("http://127.0.0.1:9000/files/",))
    ) == ("http://127.0.0.1:9000/files/a.pdf")
    with pytest.raises(_Refused, match="CMAAS_CLIENT_FILE_URLS"):
        _allowed_file_url("http://127.0.0.1:9000/files/a.pdf", ())
