"""``cmaas admin``: the same operations as the ad-hoc commands, for shells and scripts."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import pytest

from cmaas.cli.main import main
from cmaas.keystore import MasterKeyring, SqliteKeystore


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "CMAAS_COMPONENT_JID": "gateway.example.org",
        "CMAAS_COMPONENT_SECRET": "secret",
        "CMAAS_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "CMAAS_DATABASE": str(tmp_path / "cmaas.sqlite3"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def admin(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["--env-file", os.devnull, "admin", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_register_prints_credentials_once_and_json(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = admin(
        capsys,
        "--json",
        "app-register",
        "otp",
        "--name",
        "OTP",
        "--network",
        "203.0.113.0/24",
        "--jid",
        "bot@example.org",
    )
    assert status == 0
    issued = json.loads(out)
    assert issued["app_jid"] == "otp@gateway.example.org"
    assert issued["networks"] == ["203.0.113.0/24"]
    assert len(base64.b64decode(issued["hmac_key"])) == 32

    status, out, _ = admin(capsys, "app-show", "otp")
    assert status == 0
    assert "Sends as" in out and "otp@gateway.example.org" in out
    assert issued["client_secret"] not in out  # shown once, never again


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["app-register", "Bad Id", "--name", "X"], "app_id"),
        (["app-register", "ok", "--name", "X", "--network", "10.0.0.0/33"], "networks"),
        (["app-register", "ok", "--name", "X", "--plan", "gold"], "no plan named 'gold'"),
        (["app-update", "missing", "--plan", "default"], "no app named"),
        (["plan-set", "gold", "--rate", "0", "--burst", "1"], "sustained_per_second"),
        (["directory-set", "not-an-address", "alice@example.org"], "address"),
        (["app-rotate", "missing"], "no app named"),
    ],
)
def test_refusals_exit_2_and_change_nothing(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    status, out, err = admin(capsys, *args)
    assert status == 2
    assert words in err
    assert out == ""
    status, out, _ = admin(capsys, "--json", "app-list")
    assert json.loads(out) == []


def test_update_suspend_resume(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert admin(capsys, "app-register", "otp", "--name", "OTP")[0] == 0
    assert (
        admin(
            capsys,
            "plan-set",
            "gold",
            "--rate",
            "50",
            "--burst",
            "100",
            "--priorities",
            "high,normal",
        )[0]
        == 0
    )
    status, out, _ = admin(
        capsys,
        "--json",
        "app-update",
        "otp",
        "--plan",
        "gold",
        "--suspend",
        "--network",
        "2001:db8::/48",
        "--callback-url",
        "https://a.example/cb",
    )
    assert status == 0
    shown = json.loads(out)
    assert (shown["plan"], shown["status"], shown["networks"], shown["callback_url"]) == (
        "gold",
        "suspended",
        ["2001:db8::/48"],
        "https://a.example/cb",
    )
    status, out, _ = admin(
        capsys, "--json", "app-update", "otp", "--resume", "--no-networks", "--callback-url", ""
    )
    shown = json.loads(out)
    assert (shown["status"], shown["networks"], shown["callback_url"]) == ("active", [], "")


def test_directory_bind_and_unbind(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = admin(capsys, "directory-set", "+91 98765 43210", "alice@example.org")
    assert status == 0 and "+919876543210" in out and "Bound." in out
    status, out, _ = admin(capsys, "directory-set", "+919876543210")
    assert status == 0 and "Unbound." in out


def test_master_key_rotation_procedure(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, _ = admin(capsys, "--json", "app-register", "otp", "--name", "OTP")
    issued = json.loads(out)
    status, new_key, _ = admin(capsys, "master-key-generate")
    new_key = new_key.strip()
    assert status == 0 and len(base64.b64decode(new_key)) == 32

    monkeypatch.setenv("CMAAS_PREVIOUS_MASTER_KEY", env["CMAAS_MASTER_KEY"])
    monkeypatch.setenv("CMAAS_MASTER_KEY", new_key)
    status, out, _ = admin(capsys, "master-key-rotate")
    assert status == 0 and "Re-encrypted 1 HMAC key(s)" in out
    status, out, _ = admin(capsys, "master-key-rotate")
    assert "Re-encrypted 0 HMAC key(s)" in out

    async def stored_hmac_key() -> bytes:
        store = await SqliteKeystore.open(
            Path(env["CMAAS_DATABASE"]), MasterKeyring(base64.b64decode(new_key))
        )
        try:
            auth = await store.authenticate(issued["client_id"], issued["client_secret"])
            return auth.hmac_key
        finally:
            await store.close()

    assert base64.b64encode(asyncio.run(stored_hmac_key())).decode() == issued["hmac_key"]


def test_missing_settings_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith("CMAAS_"):
            monkeypatch.delenv(name)
    status, _, err = admin(capsys, "app-list")
    assert status == 1
    assert "CMAAS_COMPONENT_JID is required" in err
