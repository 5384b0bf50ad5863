"""A plaintext canary sent end to end, as a text and as a file, never appears in what
the gateway keeps: its database files (WAL and shared memory included), its blob store
or its log, written at DEBUG with stanza dumps."""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from cmaas.clientservice import GatewayClient
from cmaas.devservers import XmppServer
from cmaas.envelope import FileContent, TextContent

from .apps import client_config_for
from .devices import new_device
from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration


def _gateway_files(gateway: GatewayProcess) -> list[Path]:
    """Everything the gateway writes: the database and its companions, blobs, the log."""
    database = gateway.database
    companions = [database.with_name(database.name + suffix) for suffix in ("-wal", "-shm")]
    blobs = database.with_name(database.name + ".blobs")
    return [
        database,
        *(path for path in companions if path.exists()),
        *(path for path in blobs.rglob("*") if path.is_file()),
        gateway.log_path,
    ]


def _assert_absent(canary: bytes, files: list[Path]) -> None:
    for path in files:
        assert canary not in path.read_bytes(), path


async def test_plaintext_canary_stays_out_of_the_gateway(
    xmpp_server: XmppServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    canary = f"CANARY-{os.urandom(8).hex()}"
    alice = f"alice@{xmpp_server.domain}"
    config = await client_config_for(gateway, tmp_path / "client")
    source = tmp_path / "outside" / f"{canary}.txt"
    source.parent.mkdir()
    source.write_bytes(f"statement {canary}\n".encode() * 5000)
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(GatewayClient(config))
        device = await stack.enter_async_context(new_device(xmpp_server, tmp_path, "alice", "c"))
        await device.publish()
        sent = [
            await client.send(alice, text=f"your code is {canary}"),
            await client.send_file(alice, source, media_type="text/plain"),
        ]
        async with asyncio.timeout(30):
            text = await device.next_message()
            document = await device.next_message()
        assert text.content == TextContent(f"your code is {canary}")
        assert isinstance(document.content, FileContent)
        assert document.saved_file is not None
        assert document.saved_file.read_bytes() == source.read_bytes()

        files = _gateway_files(gateway)
        # Read while the gateway runs, so the WAL still holds the latest pages.
        assert any(path.name.endswith("-wal") for path in files)
        assert any(".blobs" in path.parent.name for path in files)
        # The log recorded these very messages, at DEBUG; neither stanza dumps nor SQL
        # statements with their parameters are ever written (see
        # cmaas.cli.logging_setup.configure_logging).
        async with asyncio.timeout(15):
            while not all(m.message_id in gateway.log() for m in sent):
                await asyncio.sleep(0.1)
        assert " DEBUG slixmpp" in gateway.log()
        assert " DEBUG aiosqlite: " not in gateway.log()
        _assert_absent(canary.encode(), files)

    assert gateway.stop() == 0  # the checkpoint at shutdown writes the WAL back
    _assert_absent(canary.encode(), _gateway_files(gateway))
