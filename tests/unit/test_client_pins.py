"""The client service's pins of recipients' device keys: one SQLite row per device,
shared by the processes of a state directory, and the JSON file of earlier versions
imported once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmaas.clientservice.errors import ClientStateError
from cmaas.clientservice.state import DevicePins
from cmaas.envelope.keys import fingerprint, generate_private_key, public_point

ALICE = "alice@example.org"


def identity_key() -> bytes:
    return public_point(generate_private_key())


@pytest.fixture
def pins(tmp_path: Path) -> DevicePins:
    return DevicePins(tmp_path / "state" / "device-pins.sqlite3")


def test_a_device_is_pinned_on_first_use_and_a_changed_key_is_seen(pins: DevicePins) -> None:
    first, other = identity_key(), identity_key()
    assert not pins.knows(ALICE)
    pins.pin(ALICE, {7: first})
    assert pins.knows(ALICE)
    assert pins.pinned(ALICE, 7)
    assert not pins.pinned(ALICE, 8)
    assert not pins.changed(ALICE, 7, first)
    assert pins.changed(ALICE, 7, other)
    assert not pins.changed(ALICE, 8, other)  # not pinned: nothing to change
    pins.close()


def test_a_pin_is_never_replaced_by_a_later_pin(pins: DevicePins) -> None:
    first, other = identity_key(), identity_key()
    pins.pin(ALICE, {7: first})
    pins.pin(ALICE, {7: other, 8: other})
    assert not pins.changed(ALICE, 7, first)
    assert pins.pinned(ALICE, 8)
    pins.close()


def test_processes_sharing_the_directory_see_each_others_pins(tmp_path: Path) -> None:
    path = tmp_path / "device-pins.sqlite3"
    one, two = DevicePins(path), DevicePins(path)
    key, substitute = identity_key(), identity_key()
    assert not two.knows(ALICE)
    one.pin(ALICE, {7: key})
    # The second pins its view afterwards: the first pin stays, and the change shows.
    two.pin(ALICE, {7: substitute})
    assert two.changed(ALICE, 7, substitute)
    assert one.changed(ALICE, 7, substitute)
    one.close()
    two.close()


def test_pins_survive_a_close_and_the_file_is_private(pins: DevicePins, tmp_path: Path) -> None:
    key = identity_key()
    pins.pin(ALICE, {7: key})
    pins.close()
    path = tmp_path / "state" / "device-pins.sqlite3"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert DevicePins(path).pinned(ALICE, 7)


def test_a_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "device-pins.sqlite3"
    DevicePins(path).pin(ALICE, {7: identity_key()})
    path.chmod(0o644)
    with pytest.raises(ClientStateError, match="chmod 600"):
        DevicePins(path).knows(ALICE)


def test_the_json_file_of_earlier_versions_is_imported_once(tmp_path: Path) -> None:
    key = identity_key()
    legacy = tmp_path / "device-pins.json"
    legacy.write_text(json.dumps({ALICE: {"7": fingerprint(key)}, "bob@example.org": {}}))
    legacy.chmod(0o600)
    pins = DevicePins(tmp_path / "device-pins.sqlite3", legacy=legacy)
    assert pins.pinned(ALICE, 7)
    assert pins.changed(ALICE, 7, identity_key())
    assert not pins.changed(ALICE, 7, key)
    assert not legacy.exists()
    pins.close()


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        json.dumps({ALICE: []}),
        json.dumps({ALICE: {"seven": "ab" * 32}}),
        json.dumps({ALICE: {"7": "not a fingerprint"}}),
        json.dumps({ALICE: {"7": 1}}),
    ],
)
def test_a_malformed_json_file_is_refused_and_kept(tmp_path: Path, content: str) -> None:
    legacy = tmp_path / "device-pins.json"
    legacy.write_text(content)
    legacy.chmod(0o600)
    pins = DevicePins(tmp_path / "device-pins.sqlite3", legacy=legacy)
    with pytest.raises(ClientStateError, match="is not the client's pin file"):
        pins.knows(ALICE)
    assert legacy.read_text() == content
    pins.close()
