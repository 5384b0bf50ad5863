"""``cmaas device``: settings are checked before anything connects; init writes a
private, optionally encrypted key file once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cmaas.cli.main import main
from cmaas.device.keyfile import KeyFile


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("CMAAS_"):
            monkeypatch.delenv(name)
    directory = tmp_path / "device"
    monkeypatch.setenv("CMAAS_DEVICE_DIR", str(directory))
    return directory


def device(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["--env-file", os.devnull, "device", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_init_writes_a_private_key_file_once(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = device(capsys, "init", "--jid", "Alice@Example.org", "--one-time-prekeys", "3")
    assert status == 0
    assert "of alice@example.org" in out  # the JID as servers stamp it
    key_file = state / "keyring.json"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700
    keyring = KeyFile(key_file).load()
    assert (keyring.jid, len(keyring.one_time_prekeys)) == ("alice@example.org", 3)
    assert str(keyring.device_id) in out

    status, _, err = device(capsys, "init", "--jid", "alice@example.org")
    assert status == 1
    assert "already" in err
    assert KeyFile(key_file).load().device_id == keyring.device_id


def test_init_with_a_passphrase_encrypts(
    state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CMAAS_DEVICE_PASSPHRASE", "correct horse")
    assert device(capsys, "init", "--jid", "alice@example.org", "--one-time-prekeys", "0")[0] == 0
    stored = json.loads((state / "keyring.json").read_text())
    assert stored["encryption"] == "scrypt-aes256gcm"
    assert "identity" not in json.dumps(stored)


@pytest.mark.parametrize(
    ("args", "variables", "complaint"),
    [
        (["publish"], {}, "CMAAS_DEVICE_JID is required"),
        (["publish", "--jid", "alice@example.org"], {}, "CMAAS_DEVICE_PASSWORD"),
        (
            ["publish", "--jid", "alice@example.org", "--plaintext", "--host", "192.0.2.1"],
            {"CMAAS_DEVICE_PASSWORD": "x", "CMAAS_DEVICE_GATEWAY": "gw.example.org"},
            "only allowed with a loopback",
        ),
        (
            ["devices", "--jid", "alice@example.org/phone"],
            {"CMAAS_DEVICE_PASSWORD": "x", "CMAAS_DEVICE_GATEWAY": "gw.example.org"},
            "must be a bare JID",
        ),
        (["init", "--jid", "alice@example.org", "--one-time-prekeys", "101"], {}, "0 to 100"),
    ],
)
def test_bad_settings_are_refused_before_connecting(
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    variables: dict[str, str],
    complaint: str,
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    status, _, err = device(capsys, *args)
    assert status == 1
    assert complaint in err


def test_commands_need_the_key_file(
    state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CMAAS_DEVICE_PASSWORD", "x")
    monkeypatch.setenv("CMAAS_DEVICE_GATEWAY", "gw.example.org")
    status, _, err = device(
        capsys, "publish", "--jid", "alice@example.org", "--host", "127.0.0.1", "--plaintext"
    )
    assert status == 1
    assert "keyring.json" in err


def test_trust_accepts_only_the_offered_fingerprint(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cmaas.device.pins import PinStore
    from cmaas.envelope import fingerprint, generate_private_key, point_bytes

    old, new = (point_bytes(generate_private_key().public_key()) for _ in range(2))
    pins = PinStore(state / "pins.json")
    pins.pin("bank@gw.example.org", old, 1)
    pins.offer("bank@gw.example.org", new, 2)
    status, out, _ = device(capsys, "pins")
    assert status == 0
    assert "trusted  bank@gw.example.org" in out
    assert "OFFERED  bank@gw.example.org" in out

    status, _, err = device(capsys, "trust", "bank@gw.example.org", fingerprint(old))
    assert status == 1
    assert "nothing changed" in err
    status, out, _ = device(capsys, "trust", "bank@gw.example.org", fingerprint(new))
    assert status == 0
    assert pins.get("bank@gw.example.org") == new
