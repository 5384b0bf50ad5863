"""A plaintext canary sent end to end never appears in the gateway's database files
(WAL and shared memory included) or in any log record, even at DEBUG with stanza dumps."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from cmaas.devservers import XmppServer
from cmaas.devservers.sender import DirectSender
from cmaas.envelope import TextContent

from .devices import new_device
from .live_gateway import live_gateway
from .test_device_messaging import APP


async def test_plaintext_canary_stays_out_of_the_gateway(
    xmpp_server: XmppServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    canary = f"CANARY-{os.urandom(8).hex()}"
    caplog.set_level(logging.DEBUG)
    workdir = tmp_path / "gateway"
    async with live_gateway(xmpp_server, workdir, app_id=APP) as (gateway, _):
        async with new_device(xmpp_server, tmp_path, "alice", "phone") as device:
            await device.publish()
            await DirectSender(gateway, APP).send(
                f"alice@{xmpp_server.domain}", TextContent(f"your code is {canary}")
            )
            async with asyncio.timeout(15):
                shown = await device.next_message()
            assert shown.content == TextContent(f"your code is {canary}")
        files = [path for path in workdir.rglob("*") if path.is_file()]
        assert any(path.name.endswith("-wal") for path in files)  # read while still open
        for path in files:
            assert canary.encode() not in path.read_bytes(), path
    assert caplog.records, "nothing was logged: the check would prove nothing"
    assert any("stanza" in r.name or "xmlstream" in r.name for r in caplog.records)
    for record in caplog.records:
        assert canary not in record.getMessage(), record.name
