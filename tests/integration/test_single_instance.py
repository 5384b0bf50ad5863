"""A second gateway on the same SQLite file refuses to start; admin commands still run."""

from __future__ import annotations

import subprocess
import time

import pytest

from cmaas.devservers import cmaas_executable

from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration


def test_a_second_gateway_on_the_same_file_exits_at_once_with_the_reason(
    gateway: GatewayProcess,
) -> None:
    started = time.monotonic()
    second = subprocess.run(
        [cmaas_executable(), "--env-file", "/dev/null", "gateway", "run"],
        env={**gateway.env, "CMAAS_HTTP_PORT": str(gateway.http_port + 1)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1, second.stderr
    assert time.monotonic() - started < 10
    assert f"another gateway process uses the database {gateway.database}" in second.stderr
    assert "CMAAS_DATABASE=postgresql://" in second.stderr
    # The first gateway goes on, and the operator's admin commands open the same file.
    assert gateway.health().get("component_link") == "connected"
    listed = gateway.admin_cli("--json", "plan-list")
    assert listed.returncode == 0, listed.stderr
