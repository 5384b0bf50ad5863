"""The keystore's pure parts: rows to models, and the checks and rules that need no
database. A row is an ``sqlite3.Row`` or a psycopg dict row, read by column name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from cmaas.keystore._db import Row
from cmaas.keystore.credentials import hash_client_secret, secret_matches
from cmaas.keystore.errors import (
    AuthenticationFailed,
    MessageConflict,
    PrekeyIdConflict,
    PrekeyPoolFull,
    QuotaExhausted,
    SignedPrekeyRollback,
    TooManyDevices,
    TooManySigningKeys,
)
from cmaas.keystore.models import (
    App,
    CredentialInfo,
    DevicePublication,
    DeviceRecord,
    MessageRecord,
    NewMessage,
    OutboxEntry,
    Plan,
    StatusEvent,
    StoredPrekey,
)
from cmaas.lifecycle import OMEMO_RESOURCES, MessageStatus, Priority
from cmaas.wire import OmemoBundle, OmemoPrekey

__all__ = [
    "DAY_MS",
    "MAX_SIGNING_KEYS",
    "TAKEN_KEPT_S",
    "app_from_rows",
    "check_blob_room",
    "check_device_room",
    "check_omemo_room",
    "check_pool_room",
    "check_publication",
    "check_signed_prekey",
    "check_signing_key_room",
    "conflict",
    "device_record",
    "duplicate_outcome",
    "event_from_row",
    "hmac_key_aad",
    "matching_credential",
    "message_record",
    "new_prekeys",
    "omemo_bundle",
    "outbox_entry",
    "plan_from_row",
    "priorities_text",
    "quota_outcome",
    "sealed_to_set",
    "sealed_to_text",
    "signed_prekey",
    "suites",
]


MAX_SIGNING_KEYS = 4
"""Active signing keys per app: enough to roll one over, few enough to audit."""

_MAX_ID = 2**31 - 1
# A handed-out key is remembered as long as an envelope sealed to it may live, so a late
# retry of a publish cannot bring it back.
TAKEN_KEPT_S = 30 * 24 * 3600
DAY_MS = 86_400_000

# A fixed salt/hash pair so that an unknown client id costs the same as a wrong secret.
_DUMMY_SALT = bytes(16)
_DUMMY_HASH = hash_client_secret(_DUMMY_SALT, "no such client")


# Apps and plans


def hmac_key_aad(app_id: str, credential_id: str) -> bytes:
    return f"cmaas/v1/hmac-key|{app_id}|{credential_id}".encode()


def priorities_text(priorities: Iterable[Priority]) -> str:
    return ",".join(p.value for p in Priority.ranked(priorities))


def plan_from_row(row: Row) -> Plan:
    return Plan(
        name=row["name"],
        sustained_per_second=row["sustained_per_second"],
        burst=row["burst"],
        daily_quota=row["daily_quota"],
        priorities=frozenset(Priority(p) for p in row["priorities"].split(",")),
    )


def app_from_rows(
    row: Row, networks: Iterable[Row], jids: Iterable[Row], credentials: Iterable[Row]
) -> App:
    """An app from its ``apps`` row and its networks', JIDs' and live credentials' rows."""
    return App(
        app_id=row["app_id"],
        client_id=row["client_id"],
        display_name=row["display_name"],
        plan=row["plan"],
        callback_url=row["callback_url"],
        suspended=bool(row["suspended"]),
        networks=tuple(ipaddress.ip_network(r["network"]) for r in networks),
        jids=tuple(r["jid"] for r in jids),
        credentials=tuple(
            CredentialInfo(r["credential_id"], r["created_at"], r["not_after"]) for r in credentials
        ),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def matching_credential(credentials: Iterable[Row], client_secret: str) -> Row:
    """The newest of a client's live credentials (newest first) whose secret matches.

    Every credential is checked, and an unknown client costs one check too, so the
    time taken tells neither whether the client exists nor which credential matched.

    Raises: AuthenticationFailed.
    """
    rows = list(credentials)
    if not rows:
        secret_matches(_DUMMY_SALT, _DUMMY_HASH, client_secret)
        raise AuthenticationFailed("unknown client id or wrong secret")
    matches = [
        row for row in rows if secret_matches(row["secret_salt"], row["secret_hash"], client_secret)
    ]
    if not matches:
        raise AuthenticationFailed("unknown client id or wrong secret")
    return matches[0]


def check_signing_key_room(active: int) -> None:
    """Raises: TooManySigningKeys: The app has ``active`` keys, as many as it may."""
    if active >= MAX_SIGNING_KEYS:
        raise TooManySigningKeys(
            f"an app may have {MAX_SIGNING_KEYS} signing keys; retire one first"
        )


def check_blob_room(held: int, count: int, size: int, quota: int, max_count: int | None) -> None:
    """Raises: QuotaExhausted: One more blob of ``size`` bytes passes the app's quota of
    bytes, or its number of blobs (``max_count``, when given)."""
    if max_count is not None and count >= max_count:
        raise QuotaExhausted(f"the app holds {count:,} blobs, its limit (CMAAS_BLOB_MAX_COUNT)")
    if held + size > quota:
        raise QuotaExhausted(
            f"the app holds {held:,} bytes of blobs; {size:,} more would pass"
            f" its quota of {quota:,}"
        )


# Messages


def message_record(row: Row, duplicate: bool = False) -> MessageRecord:
    return MessageRecord(
        seq=row["seq"],
        app_id=row["app_id"],
        message_id=row["message_id"],
        recipient=row["recipient"],
        recipient_jid=row["recipient_jid"],
        priority=Priority.from_rank(row["priority"]),
        status=MessageStatus(row["status"]),
        detail=row["detail"],
        expires_ms=row["expires_ms"],
        created_ms=row["created_ms"],
        updated_ms=row["updated_ms"],
        duplicate=duplicate,
    )


def outbox_entry(row: Row) -> OutboxEntry:
    return OutboxEntry(
        seq=row["seq"],
        app_id=row["app_id"],
        message_id=row["message_id"],
        recipient_jid=row["recipient_jid"],
        priority=Priority.from_rank(row["priority"]),
        expires_ms=row["expires_ms"],
    )


def event_from_row(row: Row) -> StatusEvent:
    return StatusEvent(
        event_id=row["event_id"],
        seq=row["seq"],
        app_id=row["app_id"],
        message_id=row["message_id"],
        status=MessageStatus(row["status"]),
        at_ms=row["at_ms"],
        device=row["device"],
        detail=row["detail"],
    )


def duplicate_outcome(stored: Row, message: NewMessage) -> MessageRecord | MessageConflict:
    """What a submission of an id the app used before gets: the stored record when the
    request is the same, else a conflict. ``stored`` has the message's columns."""
    if stored["request_sha256"] == message.request_sha256:
        return message_record(stored, duplicate=True)
    return conflict(message)


def conflict(message: NewMessage) -> MessageConflict:
    """The refusal of a message id used before (or earlier in the same request) with a
    different request."""
    return MessageConflict(
        f"message id {message.message_id!r} was used before with a different request"
    )


def quota_outcome(used: int, daily_quota: int | None) -> QuotaExhausted | None:
    """The refusal of one more message when ``used`` were accepted today, if any."""
    if daily_quota is not None and used >= daily_quota:
        return QuotaExhausted(f"the plan's daily quota of {daily_quota} is used up")
    return None


def sealed_to_text(message: NewMessage) -> str:
    """The devices that may report on a message: its envelope's device ids, and the
    :data:`~cmaas.lifecycle.OMEMO_RESOURCES` mark when it carries an OMEMO element."""
    devices = [str(device_id) for device_id in message.sealed_to]
    if message.omemo is not None:
        devices.append(OMEMO_RESOURCES)
    return ",".join(devices)


def sealed_to_set(text: str | None) -> frozenset[str] | None:
    """The stored ``sealed_to`` column read back; ``None`` accepts any device's report."""
    return None if text is None else frozenset(text.split(","))


# Devices


def check_publication(publication: DevicePublication) -> None:
    """Raises: ValueError: An id out of range, or a suite name empty or with a comma."""
    ids = [publication.device_id, publication.signed_prekey.key_id]
    ids += [prekey.key_id for prekey in publication.one_time_prekeys]
    if not all(1 <= i <= _MAX_ID for i in ids):
        raise ValueError(f"device and prekey ids must be between 1 and {_MAX_ID}")
    # Suites are stored comma-joined.
    if any(not suite or "," in suite for suite in publication.suites):
        raise ValueError("a suite name must be non-empty and contain no comma")


def new_prekeys(
    publication: DevicePublication, pool: Mapping[int, bytes], taken: set[int]
) -> list[StoredPrekey]:
    """The publication's one-time prekeys that are new to the store.

    A key already in the pool with the same public key, or already handed out, is
    skipped: that is a publish retried after its answer was lost.

    Raises: PrekeyIdConflict.
    """
    new_ids = [prekey.key_id for prekey in publication.one_time_prekeys]
    where = f"device {publication.device_id} of {publication.jid}"
    if len(set(new_ids)) != len(new_ids):
        raise PrekeyIdConflict(f"a one-time prekey id is given twice for {where}")
    clashing = sorted(
        prekey.key_id
        for prekey in publication.one_time_prekeys
        if prekey.key_id in pool and pool[prekey.key_id] != prekey.public_key
    )
    if clashing:
        raise PrekeyIdConflict(
            f"one-time prekey ids {clashing} are stored for {where} with other keys"
        )
    spk_id = publication.signed_prekey.key_id
    if spk_id in pool or spk_id in new_ids:
        raise PrekeyIdConflict(f"one-time prekey id {spk_id} is the signed prekey's id ({where})")
    return [
        prekey
        for prekey in publication.one_time_prekeys
        if prekey.key_id not in pool and prekey.key_id not in taken
    ]


def check_signed_prekey(publication: DevicePublication, stored: Row) -> None:
    """Signed prekey ids only grow, so the stored id is the highest ever accepted: a
    lower one, or the same one with another key, is an old bundle coming back.

    Raises: SignedPrekeyRollback.
    """
    offered = publication.signed_prekey
    where = f"device {publication.device_id} of {publication.jid}"
    if offered.key_id < stored["spk_id"]:
        raise SignedPrekeyRollback(
            f"signed prekey {offered.key_id} is older than {stored['spk_id']}, stored for {where}"
        )
    if offered.key_id == stored["spk_id"] and offered.public_key != stored["spk_public"]:
        raise SignedPrekeyRollback(
            f"signed prekey id {offered.key_id} is stored for {where} with another key"
        )


def check_pool_room(publication: DevicePublication, held: int, added: int, limit: int) -> None:
    """Raises: PrekeyPoolFull: ``held`` plus ``added`` one-time prekeys exceed ``limit``."""
    if held + added > limit:
        raise PrekeyPoolFull(
            f"device {publication.device_id} of {publication.jid} holds {held} one-time"
            f" prekeys; {added} more would exceed the limit of {limit}"
        )


def check_device_room(jid: str, active: int, max_devices: int) -> None:
    """Raises: TooManyDevices: One more device would exceed ``max_devices``."""
    if active + 1 > max_devices:
        raise TooManyDevices(f"{jid} has {active} active devices; the limit is {max_devices}")


def suites(text: str) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


def signed_prekey(row: Row) -> StoredPrekey:
    return StoredPrekey(row["spk_id"], row["spk_public"], row["spk_signature"])


def device_record(row: Row) -> DeviceRecord:
    return DeviceRecord(
        jid=row["jid"],
        device_id=row["device_id"],
        identity_key=row["identity_key"],
        suites=suites(row["suites"]),
        signed_prekey=signed_prekey(row),
        label=row["label"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        revoked_at=row["revoked_at"],
        prekeys_left=row["prekeys_left"],
    )


# Apps' OMEMO devices


def check_omemo_room(app_id: str, bundle: OmemoBundle, max_prekeys: int) -> None:
    """Raises: PrekeyPoolFull: The bundle holds more than ``max_prekeys`` prekeys."""
    if len(bundle.prekeys) > max_prekeys:
        raise PrekeyPoolFull(
            f"OMEMO device {bundle.device_id} of app {app_id}: {len(bundle.prekeys)} prekeys;"
            f" the limit is {max_prekeys}"
        )


def omemo_bundle(row: Row, prekeys: Iterable[Row]) -> OmemoBundle:
    return OmemoBundle(
        device_id=row["device_id"],
        identity_key=row["identity_key"],
        signed_prekey_id=row["spk_id"],
        signed_prekey=row["spk_public"],
        signed_prekey_signature=row["spk_signature"],
        prekeys=tuple(OmemoPrekey(p["prekey_id"], p["public_key"]) for p in prekeys),
    )
