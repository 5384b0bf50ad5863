"""One way to read settings: ``--env-file`` under the environment, for every subcommand,
and every problem reported at once with the variable's name."""

from __future__ import annotations

import argparse
import ast
import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cmaas.cli import client as client_cli
from cmaas.cli import device as device_cli
from cmaas.cli.main import main
from cmaas.clientservice import ClientConfig
from cmaas.clientservice.config import (
    DEFAULT_STATE_DIR,
    ClientConfigError,
    client_config,
    client_settings,
)
from cmaas.config import VariableReader, read_variables, with_flags
from cmaas.device.config import DeviceConfigError, device_settings
from cmaas.errors import CmaasError
from cmaas.settings import SettingsError, load_settings

HMAC = base64.b64encode(b"h" * 32).decode()
CLIENT = {
    "CMAAS_CLIENT_ID": "0632801b",
    "CMAAS_CLIENT_SECRET": "s3cret",
    "CMAAS_CLIENT_HMAC_KEY": HMAC,
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CMAAS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def levels(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The levels the commands configure logging with (the root logger stays untouched)."""
    seen: list[str] = []
    monkeypatch.setattr(client_cli, "configure_logging", seen.append)
    monkeypatch.setattr(device_cli, "configure_logging", seen.append)
    return seen


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


# --- the merge ------------------------------------------------------------------------


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    env_file = write_env(tmp_path / "x.env", {"CMAAS_A": "file", "CMAAS_B": "file"})
    assert read_variables(env_file, {"CMAAS_B": "env"}) == {"CMAAS_A": "file", "CMAAS_B": "env"}


def test_a_missing_env_file_is_skipped(tmp_path: Path) -> None:
    assert read_variables(tmp_path / "absent.env", {"CMAAS_A": "env"}) == {"CMAAS_A": "env"}
    assert read_variables(None, {}) == {}


def test_flags_win_unless_left_at_their_defaults() -> None:
    variables = {"CMAAS_PORT": "5222", "CMAAS_HOST": "xmpp.example.org", "CMAAS_TLS": "0"}
    merged = with_flags(
        variables, {"CMAAS_PORT": 0, "CMAAS_HOST": None, "CMAAS_TLS": True, "CMAAS_DIR": ""}
    )
    # Port 0 was typed, so it replaces the variable (and is then refused as a port).
    assert merged == {"CMAAS_PORT": "0", "CMAAS_HOST": "xmpp.example.org", "CMAAS_TLS": "1"}
    assert with_flags(variables, {"CMAAS_TLS": False}) == variables


def test_the_reader_collects_problems_and_keeps_defaults() -> None:
    reader = VariableReader(
        {"CMAAS_P": "http", "CMAAS_N": "7", "CMAAS_F": "maybe"}, {"CMAAS_N": "--n or CMAAS_N"}
    )
    assert reader.port("CMAAS_P", 5222) == 5222
    assert reader.integer("CMAAS_N", 3, 1, 5) == 3
    assert reader.flag("CMAAS_F") is False
    assert reader.required("CMAAS_R", "from somewhere") == ""
    assert reader.problems == [
        "CMAAS_P must be a TCP port (1-65535), got 'http'",
        "--n or CMAAS_N must be a whole number from 1 to 5, got '7'",
        "CMAAS_F must be 1 (or true) or 0 (or false), got 'maybe'",
        "CMAAS_R is required (from somewhere)",
    ]
    with pytest.raises(DeviceConfigError) as raised:
        reader.raise_problems(DeviceConfigError)
    assert str(raised.value) == "; ".join(reader.problems)


def test_secrets_keep_their_blanks() -> None:
    reader = VariableReader({"CMAAS_PASSWORD": " pass word ", "CMAAS_EMPTY": ""})
    assert reader.secret("CMAAS_PASSWORD") == " pass word "
    assert reader.secret("CMAAS_EMPTY") is None
    assert reader.problems == []


# --- every problem at once, each reader with its own error class ----------------------


def load_gateway(variables: dict[str, str]) -> object:
    return load_settings(variables, env_file=None)


@pytest.mark.parametrize(
    ("read", "variables", "error", "problems"),
    [
        (
            load_gateway,
            {
                "CMAAS_COMPONENT_JID": "gateway.example.org",
                "CMAAS_MASTER_KEY": "not base64!",
                "CMAAS_XMPP_PORT": "70000",
                "CMAAS_LOG_LEVEL": "LOUD",
            },
            SettingsError,
            [
                "CMAAS_MASTER_KEY is not valid base64",
                "CMAAS_COMPONENT_SECRET is required",
                "CMAAS_XMPP_PORT must be a TCP port (1-65535), got '70000'",
                "CMAAS_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'",
            ],
        ),
        (
            client_settings,
            {
                "CMAAS_CLIENT_SECRET": "s3cret",
                "CMAAS_CLIENT_HMAC_KEY": "%%%",
                "CMAAS_CLIENT_URL": "gateway.example.org",
                "CMAAS_LOG_LEVEL": "chatty",
            },
            ClientConfigError,
            [
                "CMAAS_CLIENT_ID is required (from app-register)",
                "CMAAS_CLIENT_HMAC_KEY is not valid base64",
                "CMAAS_CLIENT_URL must be an http(s) URL, got 'gateway.example.org'",
                "CMAAS_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got 'CHATTY'",
            ],
        ),
        (
            device_settings,
            {
                "CMAAS_DEVICE_JID": "alice@example.org/phone",
                "CMAAS_DEVICE_PORT": "0",
                "CMAAS_DEVICE_PLAINTEXT": "1",
                "CMAAS_DEVICE_HOST": "192.0.2.1",
                "CMAAS_LOG_LEVEL": "LOUD",
            },
            DeviceConfigError,
            [
                "--jid or CMAAS_DEVICE_JID: 'alice@example.org/phone' must be a bare JID"
                " such as alice@example.org",
                "CMAAS_DEVICE_PASSWORD is required (the account's password)",
                "--gateway or CMAAS_DEVICE_GATEWAY is required",
                "--port or CMAAS_DEVICE_PORT must be a TCP port (1-65535), got '0'",
                "--plaintext is only allowed with a loopback --host",
                "CMAAS_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'",
            ],
        ),
    ],
    ids=["gateway", "client", "device"],
)
def test_every_reader_reports_every_problem_at_once(
    read: Callable[[dict[str, str]], object],
    variables: dict[str, str],
    error: type[CmaasError],
    problems: list[str],
) -> None:
    with pytest.raises(error) as raised:
        read(variables)
    assert str(raised.value).split("; ") == problems


def test_client_config_alone_ignores_the_commands_settings() -> None:
    """The library reads only what it uses: a level meant for the CLI cannot break it."""
    config = client_config({**CLIENT, "CMAAS_LOG_LEVEL": "LOUD"})
    assert config.url == "http://127.0.0.1:8480"
    assert config.state_dir == DEFAULT_STATE_DIR
    assert (config.credentials.client_id, config.credentials.hmac_key) == ("0632801b", b"h" * 32)


def test_the_device_gateway_falls_back_to_the_component() -> None:
    settings = device_settings(
        {
            "CMAAS_DEVICE_JID": "Alice@Example.org",
            "CMAAS_DEVICE_PASSWORD": " pw ",
            "CMAAS_COMPONENT_JID": "gateway.example.org",
        }
    )
    assert settings.config.gateway == "gateway.example.org"
    assert settings.config.jid == "alice@example.org"
    assert settings.config.password == " pw "
    assert (settings.config.port, settings.config.require_tls) == (5222, True)
    assert settings.log_level == "WARNING"


# --- --env-file reaches every subcommand, and the environment wins over it -------------


def test_client_send_reads_the_log_level_from_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, levels: list[str]
) -> None:
    env_file = write_env(
        tmp_path / "client.env",
        {**CLIENT, "CMAAS_LOG_LEVEL": "debug", "CMAAS_CLIENT_URL": "https://gw.example.org"},
    )
    configs: list[ClientConfig] = []

    async def sent(args: argparse.Namespace, config: ClientConfig) -> int:
        configs.append(config)
        return 0

    monkeypatch.setattr(client_cli, "_send_and_wait", sent)
    status = main(["--env-file", str(env_file), "client", "send", "--to", "a@b.c", "--otp", "1"])
    assert status == 0
    assert levels == ["DEBUG"]
    assert configs[0].url == "https://gw.example.org"


def test_client_serve_reads_the_webhook_and_level_from_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, levels: list[str]
) -> None:
    env_file = write_env(
        tmp_path / "client.env",
        {
            **CLIENT,
            "CMAAS_LOG_LEVEL": "ERROR",
            "CMAAS_CLIENT_WEBHOOK": "http://127.0.0.1:8500/from-file",
        },
    )
    served: list[Any] = []

    async def daemon(args: argparse.Namespace, settings: Any) -> int:
        served.append(settings)
        return 0

    monkeypatch.setattr(client_cli, "_daemon", daemon)
    assert main(["--env-file", str(env_file), "client", "serve"]) == 0
    assert levels == ["ERROR"]
    assert served[0].webhook == "http://127.0.0.1:8500/from-file"

    monkeypatch.setenv("CMAAS_LOG_LEVEL", "warning")
    monkeypatch.setenv("CMAAS_CLIENT_WEBHOOK", "http://127.0.0.1:8501/from-env")
    assert main(["--env-file", str(env_file), "client", "serve"]) == 0
    assert levels == ["ERROR", "WARNING"]
    assert served[1].webhook == "http://127.0.0.1:8501/from-env"


def test_client_defaults_differ_by_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, levels: list[str]
) -> None:
    env_file = write_env(tmp_path / "client.env", CLIENT)

    async def done(*args: Any) -> int:
        return 0

    monkeypatch.setattr(client_cli, "_send_and_wait", done)
    monkeypatch.setattr(client_cli, "_daemon", done)
    main(["--env-file", str(env_file), "client", "send", "--to", "a@b.c", "--otp", "1"])
    main(["--env-file", str(env_file), "client", "serve"])
    assert levels == ["WARNING", "INFO"]


def test_a_bad_level_in_the_env_file_stops_the_client_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], levels: list[str]
) -> None:
    env_file = write_env(tmp_path / "client.env", {"CMAAS_LOG_LEVEL": "LOUD"})
    assert main(["--env-file", str(env_file), "client", "serve"]) == 1
    err = capsys.readouterr().err
    assert "CMAAS_CLIENT_ID is required" in err
    assert "CMAAS_LOG_LEVEL must be one of" in err
    assert levels == []


def test_device_commands_read_the_env_file_and_the_environment_wins(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    levels: list[str],
) -> None:
    state = tmp_path / "device-from-file"
    env_file = write_env(
        tmp_path / "device.env",
        {
            "CMAAS_DEVICE_JID": "alice@example.org",
            "CMAAS_DEVICE_PASSWORD": "pw",
            "CMAAS_DEVICE_GATEWAY": "gateway.example.org",
            "CMAAS_DEVICE_HOST": "127.0.0.1",
            "CMAAS_DEVICE_PLAINTEXT": "1",
            "CMAAS_DEVICE_DIR": str(state),
            "CMAAS_LOG_LEVEL": "DEBUG",
        },
    )
    # No key file yet, so the command stops before connecting, with the settings read.
    assert main(["--env-file", str(env_file), "device", "publish"]) == 1
    assert levels == ["DEBUG"]
    assert str(state / "keyring.json") in capsys.readouterr().err

    monkeypatch.setenv("CMAAS_LOG_LEVEL", "ERROR")
    assert main(["--env-file", str(env_file), "device", "devices"]) == 1
    assert levels == ["DEBUG", "ERROR"]


def test_device_flags_win_over_the_env_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], levels: list[str]
) -> None:
    env_file = write_env(
        tmp_path / "device.env",
        {"CMAAS_DEVICE_JID": "alice@example.org", "CMAAS_DEVICE_DIR": str(tmp_path / "file")},
    )
    flag_dir = tmp_path / "flag"
    assert main(["--env-file", str(env_file), "device", "init", "--dir", str(flag_dir)]) == 0
    assert f"of alice@example.org created in {flag_dir}" in capsys.readouterr().out
    assert (flag_dir / "keyring.json").is_file()
    assert not (tmp_path / "file").exists()


def test_no_subcommand_imports_the_main_module() -> None:
    """``cmaas.cli.main`` imports every subcommand; one importing it back, even inside a
    function, is the cycle ``configure_logging`` used to cause."""
    import cmaas.cli

    importers = []
    for path in Path(cmaas.cli.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "cmaas.cli.main":
                importers.append(path.name)
            if isinstance(node, ast.Import) and any(
                alias.name == "cmaas.cli.main" for alias in node.names
            ):
                importers.append(path.name)
    assert importers == []
