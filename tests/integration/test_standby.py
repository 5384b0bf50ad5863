"""Two gateway instances for one component: Prosody takes one connection per component
host and refuses the second with ``<conflict/>``, so the second stands by, serving its
HTTP API, and takes over within seconds of the first's end; ejabberd takes both."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cmaas.devservers import XmppServer

from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration

_RETRY_S = 1.0


def _wait_for_link(gateway: GatewayProcess, state: str, within: float) -> dict[str, object]:
    deadline = time.monotonic() + within
    health: dict[str, object] = {}
    while time.monotonic() < deadline:
        health = gateway.health()
        if health.get("component_link") == state:
            return health
        time.sleep(0.1)
    raise AssertionError(f"link not {state} after {within} s ({health}):\n{gateway.log()}")


def test_a_second_instance_stands_by_and_takes_over(
    xmpp_server: XmppServer, tmp_path: Path
) -> None:
    admins = f"admin@{xmpp_server.domain}"
    active = GatewayProcess(xmpp_server, tmp_path / "a", admins=admins)
    standby = GatewayProcess(xmpp_server, tmp_path / "b", admins=admins)
    standby.env["CMAAS_STANDBY_RETRY"] = str(_RETRY_S)
    for workdir in (active.workdir, standby.workdir):
        workdir.mkdir()
    active.start()
    try:
        standby.start(wait=False)
        if xmpp_server.kind == "ejabberd":
            # Several connections for one component: both instances are connected.
            standby.wait_healthy(20)
            assert active.health()["component_link"] == "connected"
            return
        health = _wait_for_link(standby, "standby", 20)
        assert health["status"] == "standby"  # answered with 200: it serves its API
        assert active.health()["component_link"] == "connected"
        # It keeps trying without backing off, and says so once.
        time.sleep(3 * _RETRY_S)
        assert standby.health()["component_link"] == "standby"
        assert standby.log().count("standing by") == 1

        active.kill()
        ended = time.monotonic()
        standby.wait_healthy(10)
        took = time.monotonic() - ended
        assert took < 2 * _RETRY_S + 2, f"took over after {took:.1f} s"
    finally:
        standby.stop()
        active.stop()
