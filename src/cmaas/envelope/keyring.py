"""A device's private keys: generated on the device, never sent anywhere.

The keyring makes bundles to publish, finds the private prekey a key entry names,
and forgets a one-time prekey once a message sealed to it has been opened, which is
what gives forward secrecy: a later theft of the device finds no key for it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from cmaas.envelope.bundle import MAX_DEVICE_ID, SUITE_P256, DeviceBundle, sign_prekey
from cmaas.envelope.encoding import Fields, b64url
from cmaas.envelope.errors import MalformedEncoding, UnknownKeyId
from cmaas.envelope.header import MAX_LIFETIME_MS
from cmaas.envelope.keys import (
    PrivateKey,
    fingerprint,
    generate_private_key,
    parse_private_scalar,
    point_bytes,
    private_scalar,
)
from cmaas.envelope.opening import OpenedMessage, open_envelope
from cmaas.envelope.sealed import SealedEnvelope

__all__ = ["DeviceKeyring", "OneTimePrekeySecret", "SignedPrekeySecret"]


# The operating system's CSPRNG (``secrets`` uses the same, but imports ``hashlib``: see
# ``cmaas.envelope.keys``).
_SYSTEM_RANDOM = random.SystemRandom()


@dataclass(slots=True)
class SignedPrekeySecret:
    key_id: int
    private: PrivateKey
    created_ms: int


@dataclass(slots=True)
class OneTimePrekeySecret:
    private: PrivateKey
    published: bool = False


@dataclass(slots=True)
class DeviceKeyring:
    """Private key material of one device. Mutable: opening consumes one-time prekeys."""

    jid: str
    device_id: int
    identity: PrivateKey
    signed_prekey: SignedPrekeySecret
    next_key_id: int
    one_time_prekeys: dict[int, OneTimePrekeySecret] = field(default_factory=dict)
    # Old signed prekeys still open messages sealed before a rotation, for as long as
    # such a message can live.
    retired_signed_prekeys: dict[int, tuple[PrivateKey, int]] = field(default_factory=dict)

    @classmethod
    def generate(cls, jid: str, *, now_ms: int, one_time_prekeys: int = 100) -> DeviceKeyring:
        """A new device: random 31-bit id, fresh identity key, SPK and OPK pool."""
        keyring = cls(
            jid=jid,
            device_id=_SYSTEM_RANDOM.randrange(MAX_DEVICE_ID) + 1,
            identity=generate_private_key(),
            signed_prekey=SignedPrekeySecret(1, generate_private_key(), now_ms),
            next_key_id=2,
        )
        keyring.add_one_time_prekeys(one_time_prekeys)
        return keyring

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.identity.public_key())

    def _allocate_key_id(self) -> int:
        key_id = self.next_key_id
        if key_id > MAX_DEVICE_ID:
            raise MalformedEncoding("this device has used up its key ids; make a new device")
        self.next_key_id += 1
        return key_id

    def add_one_time_prekeys(self, count: int) -> None:
        for _ in range(count):
            self.one_time_prekeys[self._allocate_key_id()] = OneTimePrekeySecret(
                generate_private_key()
            )

    def rotate_signed_prekey(self, now_ms: int) -> None:
        """Start a new signed prekey; keep the old one while messages to it may live."""
        old = self.signed_prekey
        self.retired_signed_prekeys[old.key_id] = (old.private, now_ms)
        self.signed_prekey = SignedPrekeySecret(
            self._allocate_key_id(), generate_private_key(), now_ms
        )
        self.retired_signed_prekeys = {
            key_id: (private, retired_ms)
            for key_id, (private, retired_ms) in self.retired_signed_prekeys.items()
            if now_ms - retired_ms < MAX_LIFETIME_MS
        }

    def unpublished_count(self) -> int:
        return sum(not secret.published for secret in self.one_time_prekeys.values())

    def bundle(self, *, unpublished_only: bool = True, limit: int | None = None) -> DeviceBundle:
        """The public bundle: the SPK and (up to ``limit``) one-time prekeys not yet
        published, oldest first."""
        spk = self.signed_prekey
        chosen = [
            (key_id, secret)
            for key_id, secret in sorted(self.one_time_prekeys.items())
            if not (unpublished_only and secret.published)
        ][:limit]
        opks = tuple(
            sign_prekey(
                self.identity, self.jid, self.device_id, "opk", key_id, secret.private.public_key()
            )
            for key_id, secret in chosen
        )
        return DeviceBundle(
            jid=self.jid,
            device_id=self.device_id,
            identity_key=point_bytes(self.identity.public_key()),
            suites=(SUITE_P256,),
            signed_prekey=sign_prekey(
                self.identity, self.jid, self.device_id, "spk", spk.key_id, spk.private.public_key()
            ),
            one_time_prekeys=opks,
        )

    def mark_published(self, key_ids: set[int]) -> None:
        for key_id in key_ids:
            if key_id in self.one_time_prekeys:
                self.one_time_prekeys[key_id].published = True

    def prekey(self, key_id: int) -> PrivateKey:
        """Raises: UnknownKeyId: No such prekey here, or a one-time prekey already used."""
        if key_id == self.signed_prekey.key_id:
            return self.signed_prekey.private
        if key_id in self.one_time_prekeys:
            return self.one_time_prekeys[key_id].private
        if key_id in self.retired_signed_prekeys:
            return self.retired_signed_prekeys[key_id][0]
        raise UnknownKeyId(f"this device holds no prekey {key_id}: never issued, or already used")

    def open(
        self,
        data: bytes | str | SealedEnvelope,
        *,
        now_ms: int,
        pinned_app_key: bytes | None,
        sender_jid: str | None = None,
        stanza_id: str | None = None,
        require_pinned: bool = False,
        app_domain: str | None = None,
    ) -> OpenedMessage:
        """Open an envelope for this device and forget the one-time prekey it used.

        Raises: as :func:`~cmaas.envelope.opening.open_envelope`.
        """
        opened = open_envelope(
            data,
            recipient_jid=self.jid,
            device_id=self.device_id,
            prekey=self.prekey,
            now_ms=now_ms,
            pinned_app_key=pinned_app_key,
            sender_jid=sender_jid,
            stanza_id=stanza_id,
            require_pinned=require_pinned,
            app_domain=app_domain,
        )
        self.one_time_prekeys.pop(opened.key_id, None)
        return opened

    def to_json(self) -> dict[str, object]:
        """The private keys as JSON, for the device's own protected key file."""
        return {
            "v": 1,
            "jid": self.jid,
            "device_id": self.device_id,
            "identity": b64url(private_scalar(self.identity)),
            "signed_prekey": {
                "key_id": self.signed_prekey.key_id,
                "private": b64url(private_scalar(self.signed_prekey.private)),
                "created_ms": self.signed_prekey.created_ms,
            },
            "retired_signed_prekeys": [
                {"key_id": key_id, "private": b64url(private_scalar(private)), "retired_ms": at}
                for key_id, (private, at) in sorted(self.retired_signed_prekeys.items())
            ],
            "one_time_prekeys": [
                {
                    "key_id": key_id,
                    "private": b64url(private_scalar(secret.private)),
                    "published": secret.published,
                }
                for key_id, secret in sorted(self.one_time_prekeys.items())
            ],
            "next_key_id": self.next_key_id,
        }

    @classmethod
    def from_json(cls, value: object) -> DeviceKeyring:
        """Raises: MalformedEncoding: The key file's content is damaged."""
        fields = Fields(
            value,
            "keyring",
            frozenset(
                {
                    "v",
                    "jid",
                    "device_id",
                    "identity",
                    "signed_prekey",
                    "retired_signed_prekeys",
                    "one_time_prekeys",
                    "next_key_id",
                }
            ),
        )
        fields.integer("v", low=1, high=1)
        spk = Fields(
            fields.raw("signed_prekey"),
            "keyring.signed_prekey",
            frozenset({"key_id", "private", "created_ms"}),
        )
        keyring = cls(
            jid=fields.text("jid", max_length=3071),
            device_id=fields.integer("device_id", low=1, high=MAX_DEVICE_ID),
            identity=parse_private_scalar(fields.binary("identity", size=32)),
            signed_prekey=SignedPrekeySecret(
                spk.integer("key_id", low=1, high=MAX_DEVICE_ID),
                parse_private_scalar(spk.binary("private", size=32)),
                spk.integer("created_ms", low=0, high=2**53 - 1),
            ),
            next_key_id=fields.integer("next_key_id", low=1, high=MAX_DEVICE_ID + 1),
        )
        for item in fields.array("retired_signed_prekeys", max_items=10_000):
            old = Fields(item, "keyring.retired[]", frozenset({"key_id", "private", "retired_ms"}))
            keyring.retired_signed_prekeys[old.integer("key_id", low=1, high=MAX_DEVICE_ID)] = (
                parse_private_scalar(old.binary("private", size=32)),
                old.integer("retired_ms", low=0, high=2**53 - 1),
            )
        for item in fields.array("one_time_prekeys", max_items=100_000):
            opk = Fields(item, "keyring.opk[]", frozenset({"key_id", "private", "published"}))
            published = opk.raw("published")
            if not isinstance(published, bool):
                raise MalformedEncoding("keyring.opk[].published must be true or false")
            keyring.one_time_prekeys[opk.integer("key_id", low=1, high=MAX_DEVICE_ID)] = (
                OneTimePrekeySecret(parse_private_scalar(opk.binary("private", size=32)), published)
            )
        return keyring
