"""The device's key file, pins and seen messages, against real files in a temporary directory."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cmaas.device.errors import (
    DeviceError,
    DeviceFileError,
    KeyFileError,
    KeyFileExists,
    PassphraseRequired,
    WrongPassphrase,
)
from cmaas.device.keyfile import DEFAULT_SCRYPT_N, KeyFile
from cmaas.device.pins import PinStore
from cmaas.device.seen import SeenMessages
from cmaas.envelope.encoding import b64url
from cmaas.envelope.errors import InvalidPoint
from cmaas.envelope.keyring import DeviceKeyring
from cmaas.envelope.keys import fingerprint, generate_private_key, point_bytes

NOW_MS = 1_800_000_000_000
# Small enough to keep the tests fast; the default stays 2**15.
FAST_N = 2**10
APP = "shop.example"


@pytest.fixture
def keyring() -> DeviceKeyring:
    return DeviceKeyring.generate("alice@cmaas.test", now_ms=NOW_MS, one_time_prekeys=3)


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "device" / "keys.json"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_raw(path: Path, document: object) -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(json.dumps(document))
    path.chmod(0o600)


def app_key() -> bytes:
    return point_bytes(generate_private_key().public_key())


# --- key file ----------------------------------------------------------------


def test_default_scrypt_cost_is_2_to_15() -> None:
    assert DEFAULT_SCRYPT_N == 2**15


def test_plain_key_file_round_trips(key_path: Path, keyring: DeviceKeyring) -> None:
    KeyFile(key_path).create(keyring, None)

    loaded = KeyFile(key_path).load()

    assert loaded.to_json() == keyring.to_json()
    document = json.loads(key_path.read_text())
    assert document["format"] == "cmaas-device-keyfile"
    assert document["encryption"] == "none"


def test_encrypted_key_file_round_trips(key_path: Path, keyring: DeviceKeyring) -> None:
    KeyFile(key_path, scrypt_n=FAST_N).create(keyring, "correct horse")

    # Loading uses the parameters the file names, whatever the reader's default.
    loaded = KeyFile(key_path).load("correct horse")

    assert loaded.to_json() == keyring.to_json()
    document = json.loads(key_path.read_text())
    assert document["encryption"] == "scrypt-aes256gcm"
    assert document["kdf"]["n"] == FAST_N
    assert "keyring" not in document
    identity = keyring.to_json()["identity"]
    assert isinstance(identity, str)
    assert identity not in key_path.read_text()


def test_passphrase_in_another_unicode_form_opens(key_path: Path, keyring: DeviceKeyring) -> None:
    KeyFile(key_path, scrypt_n=FAST_N).create(keyring, "caf\u00e9")

    assert KeyFile(key_path).load("cafe\u0301").jid == keyring.jid


def test_every_save_draws_a_fresh_nonce_and_derives_once(
    key_path: Path, keyring: DeviceKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cmaas.device.keyfile as keyfile_module

    derivations: list[bytes] = []
    real_derive = keyfile_module._derive

    def counting_derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
        derivations.append(salt)
        return real_derive(passphrase, salt, n, r, p)

    monkeypatch.setattr(keyfile_module, "_derive", counting_derive)
    key_file = KeyFile(key_path, scrypt_n=FAST_N)
    key_file.create(keyring, "pass")
    first = json.loads(key_path.read_text())
    key_file.save(keyring, "pass")
    second = json.loads(key_path.read_text())

    # A device saves after every message: scrypt runs once, every save gets a new nonce.
    assert len(derivations) == 1
    assert first["kdf"]["salt"] == second["kdf"]["salt"]
    assert first["nonce"] != second["nonce"]
    assert first["ciphertext"] != second["ciphertext"]
    assert KeyFile(key_path, scrypt_n=FAST_N).load("pass").device_id == keyring.device_id

    # Another passphrase, or another process, draws a fresh salt.
    key_file.save(keyring, "other")
    assert json.loads(key_path.read_text())["kdf"]["salt"] != first["kdf"]["salt"]
    fresh = KeyFile(key_path, scrypt_n=FAST_N)
    fresh.save(keyring, "pass")
    assert json.loads(key_path.read_text())["kdf"]["salt"] != first["kdf"]["salt"]


def test_wrong_passphrase_is_refused(key_path: Path, keyring: DeviceKeyring) -> None:
    KeyFile(key_path, scrypt_n=FAST_N).create(keyring, "right")

    with pytest.raises(WrongPassphrase):
        KeyFile(key_path).load("wrong")


def test_tampered_ciphertext_is_refused(key_path: Path, keyring: DeviceKeyring) -> None:
    KeyFile(key_path, scrypt_n=FAST_N).create(keyring, "right")
    document = json.loads(key_path.read_text())
    document["nonce"] = b64url(bytes(12))
    write_raw(key_path, document)

    with pytest.raises(WrongPassphrase):
        KeyFile(key_path).load("right")


def test_encrypted_file_needs_a_passphrase(key_path: Path, keyring: DeviceKeyring) -> None:
    KeyFile(key_path, scrypt_n=FAST_N).create(keyring, "secret")

    with pytest.raises(PassphraseRequired):
        KeyFile(key_path).load(None)


def test_empty_passphrase_is_refused_on_save(key_path: Path, keyring: DeviceKeyring) -> None:
    with pytest.raises(ValueError, match="empty passphrase"):
        KeyFile(key_path).create(keyring, "")
    assert not key_path.exists()


def test_key_file_is_0600_in_a_0700_directory(key_path: Path, keyring: DeviceKeyring) -> None:
    KeyFile(key_path, scrypt_n=FAST_N).create(keyring, "pass")

    assert mode(key_path) == 0o600
    assert mode(key_path.parent) == 0o700


def test_key_file_readable_by_others_is_refused(key_path: Path, keyring: DeviceKeyring) -> None:
    KeyFile(key_path).create(keyring, None)
    key_path.chmod(0o644)

    with pytest.raises(KeyFileError, match="chmod 600"):
        KeyFile(key_path).load()


def test_saves_leave_no_temporary_files(key_path: Path, keyring: DeviceKeyring) -> None:
    key_file = KeyFile(key_path, scrypt_n=FAST_N)
    key_file.create(keyring, None)
    key_file.save(keyring, "pass")
    key_file.save(keyring, None)

    assert os.listdir(key_path.parent) == [key_path.name]


def test_create_never_overwrites(key_path: Path, keyring: DeviceKeyring) -> None:
    KeyFile(key_path).create(keyring, None)
    before = key_path.read_bytes()
    other = DeviceKeyring.generate("bob@cmaas.test", now_ms=NOW_MS, one_time_prekeys=1)

    with pytest.raises(KeyFileExists):
        KeyFile(key_path).create(other, None)

    assert key_path.read_bytes() == before


def test_missing_key_file_is_refused(key_path: Path) -> None:
    key_file = KeyFile(key_path)

    assert not key_file.exists()
    with pytest.raises(KeyFileError, match="no key file"):
        key_file.load()


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"format": "something-else", "v": 1}',
        b'{"format": "cmaas-device-keyfile", "v": 1, "encryption": "none"}',
        b'{"format": "cmaas-device-keyfile", "v": 1, "encryption": "none", "keyring": {"v": 1}}',
        b'{"format": "cmaas-device-keyfile", "v": 2, "encryption": "none", "keyring": {}}',
        b'{"format": "cmaas-device-keyfile", "v": 1, "encryption": "rot13", "keyring": {}}',
    ],
)
def test_damaged_key_file_is_refused(key_path: Path, content: bytes) -> None:
    key_path.parent.mkdir()
    key_path.write_bytes(content)
    key_path.chmod(0o600)

    with pytest.raises(KeyFileError) as caught:
        KeyFile(key_path).load("pass")

    assert not isinstance(caught.value, WrongPassphrase | PassphraseRequired)


@pytest.mark.parametrize(
    "kdf",
    [
        {"n": 2**30, "r": 8, "p": 1},
        {"n": 2**20, "r": 16, "p": 1},  # 2 GiB of memory
        {"n": 1000, "r": 8, "p": 1},  # not a power of two
        {"n": 2**10, "r": 1000, "p": 1},
        {"n": 2**10, "r": 8, "p": 64},
    ],
)
def test_hostile_scrypt_parameters_are_refused(
    key_path: Path, keyring: DeviceKeyring, kdf: dict[str, int]
) -> None:
    KeyFile(key_path, scrypt_n=FAST_N).create(keyring, "pass")
    document = json.loads(key_path.read_text())
    document["kdf"].update(kdf)
    write_raw(key_path, document)

    with pytest.raises(KeyFileError, match="damaged") as caught:
        KeyFile(key_path).load("pass")

    assert not isinstance(caught.value, WrongPassphrase)


def test_scrypt_cost_out_of_bounds_is_refused_by_the_constructor(key_path: Path) -> None:
    with pytest.raises(ValueError, match="scrypt_n"):
        KeyFile(key_path, scrypt_n=2**21)


def test_lock_refuses_a_second_holder(key_path: Path) -> None:
    # The second lock() is entered while the first is still held.
    with (
        KeyFile(key_path).lock(),
        pytest.raises(KeyFileError, match="another cmaas device process"),
        KeyFile(key_path).lock(),
    ):
        pass

    # Released on leaving the block.
    with KeyFile(key_path).lock():
        pass
    assert mode(key_path.parent) == 0o700


def test_key_file_errors_are_device_errors() -> None:
    assert issubclass(KeyFileError, DeviceFileError)
    assert issubclass(DeviceFileError, DeviceError)
    for error in (WrongPassphrase, PassphraseRequired, KeyFileExists):
        assert issubclass(error, KeyFileError)


def shown_once(seen: SeenMessages, app_jid: str, message_id: str) -> bool:
    """What the device does per message: show it only if new, then remember it."""
    new = seen.is_new(app_jid, message_id)
    if new:
        seen.record(app_jid, message_id, auto_delete_at_ms=None)
    return new


# --- pins --------------------------------------------------------------------


def test_pins_persist_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "device" / "pins.json"
    first, second = app_key(), app_key()
    pins = PinStore(path)

    assert pins.get(APP) is None
    assert pins.pin(APP, first, NOW_MS) is True
    assert pins.pin(APP, second, NOW_MS + 1) is False
    assert PinStore(path).get(APP) == first
    assert mode(path) == 0o600

    PinStore(path).replace(APP, second, NOW_MS + 2)
    assert pins.get(APP) == second
    [(jid, pin)] = PinStore(path).items()
    assert (jid, pin.public_key, pin.first_seen_ms) == (APP, second, NOW_MS + 2)
    assert pin.fingerprint == fingerprint(second)

    assert PinStore(path).forget(APP) is True
    assert PinStore(path).forget(APP) is False
    assert pins.get(APP) is None
    assert os.listdir(path.parent) == [path.name]


def test_offered_key_is_pinned_only_with_its_full_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "pins.json"
    old, new = app_key(), app_key()
    pins = PinStore(path)
    pins.pin(APP, old, NOW_MS)
    with pytest.raises(DeviceFileError, match="offered no new key"):
        pins.accept(APP, fingerprint(new), NOW_MS)
    pins.offer(APP, new, NOW_MS + 1)
    [(jid, offered)] = PinStore(path).offers()
    assert (jid, offered.public_key) == (APP, new)
    assert pins.get(APP) == old  # an offer alone changes nothing

    with pytest.raises(DeviceFileError, match="nothing changed"):
        pins.accept(APP, fingerprint(new)[:16], NOW_MS + 2)
    with pytest.raises(DeviceFileError, match="nothing changed"):
        pins.accept(APP, fingerprint(old), NOW_MS + 2)
    assert pins.get(APP) == old

    spaced = " ".join(fingerprint(new).upper()[i : i + 8] for i in range(0, 64, 8))
    accepted = pins.accept(APP, spaced, NOW_MS + 3)
    assert (accepted.public_key, accepted.first_seen_ms) == (new, NOW_MS + 3)
    assert PinStore(path).get(APP) == new
    assert PinStore(path).offers() == []


def test_pin_refuses_a_non_key(tmp_path: Path) -> None:
    with pytest.raises(InvalidPoint):
        PinStore(tmp_path / "pins.json").pin(APP, b"\x04" + bytes(64), NOW_MS)


def test_pins_file_with_a_wrong_fingerprint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pins.json"
    PinStore(path).pin(APP, app_key(), NOW_MS)
    document = json.loads(path.read_text())
    document["pins"][APP]["fingerprint"] = "00" * 32
    write_raw(path, document)

    with pytest.raises(DeviceFileError, match="damaged"):
        PinStore(path).get(APP)


def test_pins_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pins.json"
    PinStore(path).pin(APP, app_key(), NOW_MS)
    path.chmod(0o640)

    with pytest.raises(DeviceFileError, match="chmod 600"):
        PinStore(path).get(APP)


# --- seen messages -----------------------------------------------------------


def test_seen_messages_dedupe_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "device" / "seen.json"
    seen = SeenMessages(path)

    assert shown_once(seen, APP, "m1") is True
    assert shown_once(seen, APP, "m1") is False
    assert shown_once(seen, "other.example", "m1") is True

    again = SeenMessages(path)
    assert shown_once(again, APP, "m1") is False
    assert again.is_new(APP, "m1") is False
    assert again.is_new(APP, "m2") is True
    assert len(again) == 2
    assert mode(path) == 0o600
    assert os.listdir(path.parent) == [path.name]


def test_seen_messages_forget_the_oldest_beyond_capacity(tmp_path: Path) -> None:
    path = tmp_path / "seen.json"
    seen = SeenMessages(path, capacity=3)
    for message_id in ("m1", "m2", "m3", "m4"):
        assert shown_once(seen, APP, message_id)

    again = SeenMessages(path, capacity=3)
    assert len(again) == 3
    assert [again.is_new(APP, m) for m in ("m1", "m2", "m3", "m4")] == [True, False, False, False]


def test_seen_messages_remember_deletion_times(tmp_path: Path) -> None:
    path = tmp_path / "seen.json"
    seen = SeenMessages(path)
    assert shown_once(seen, APP, "m1")
    seen.record(APP, "m1", auto_delete_at_ms=NOW_MS + 500)
    seen.record(APP, "m2", auto_delete_at_ms=NOW_MS + 100)
    seen.record(APP, "m3", auto_delete_at_ms=None)

    again = SeenMessages(path)
    assert shown_once(again, APP, "m2") is False
    assert again.due(NOW_MS) == []
    assert again.due(NOW_MS + 1000) == [(APP, "m2"), (APP, "m1")]

    again.record(APP, "m2", auto_delete_at_ms=None)
    assert SeenMessages(path).due(NOW_MS + 1000) == [(APP, "m1")]


def test_is_new_remembers_nothing_and_sender_of_finds_the_app(tmp_path: Path) -> None:
    path = tmp_path / "seen.json"
    seen = SeenMessages(path)

    # A stanza id the envelope would refuse must not make the check fail.
    assert seen.is_new(APP, "x" * 500) is True
    assert seen.is_new(APP, "m1") is True
    assert not path.exists()

    seen.record(APP, "m1", auto_delete_at_ms=None)
    assert seen.is_new(APP, "m1") is False
    assert SeenMessages(path).sender_of("m1") == APP
    assert SeenMessages(path).sender_of("m2") is None


def test_damaged_seen_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "seen.json"
    write_raw(path, {"format": "cmaas-device-seen", "v": 1, "messages": [{"app": APP}]})

    with pytest.raises(DeviceFileError, match="damaged"):
        shown_once(SeenMessages(path), APP, "m1")


def test_seen_journal_survives_a_torn_line_and_compacts(tmp_path: Path) -> None:
    path = tmp_path / "seen.json"
    seen = SeenMessages(path, capacity=4)
    for message_id in ("m1", "m2", "m3"):
        seen.record(APP, message_id, auto_delete_at_ms=None)
    seen.record(APP, "m2", auto_delete_at_ms=NOW_MS)  # a later line changes m2
    lines = path.read_bytes().split(b"\n")
    assert json.loads(lines[0]) == {"format": "cmaas-device-seen", "v": 1}
    assert len(lines) == 1 + 4 + 1  # header, four appended changes, final newline
    # A crash in the middle of an append leaves a partial last line: it is ignored.
    with path.open("ab") as journal:
        journal.write(b'{"app":"' + APP.encode() + b'","id":"m4')
    again = SeenMessages(path, capacity=4)
    assert [again.is_new(APP, m) for m in ("m1", "m2", "m3", "m4")] == [False, False, False, True]
    assert again.due(NOW_MS) == [(APP, "m2")]
    again.record(APP, "m4", auto_delete_at_ms=None)  # rewrites rather than append to it
    assert not SeenMessages(path, capacity=4).is_new(APP, "m4")
    # Past twice the capacity the journal is rewritten with the remembered messages only.
    for number in range(5, 20):
        again.record(APP, f"m{number}", auto_delete_at_ms=None)
    assert len(path.read_bytes().split(b"\n")) <= 1 + 2 * 4 + 1
    latest = SeenMessages(path, capacity=4)
    assert [latest.is_new(APP, f"m{n}") for n in (15, 16, 17, 18, 19)] == [True] + [False] * 4
    assert mode(path) == 0o600
