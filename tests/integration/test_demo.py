"""The README's first command: ``cmaas dev run`` brings everything up on loopback and
shows a sealed one-time password travelling from an app to a device."""

from __future__ import annotations

import asyncio
import os
import re

import pytest

from cmaas.devservers import cmaas_executable


@pytest.mark.parametrize("server", ["prosody", "ejabberd"])
async def test_dev_run_shows_a_sealed_message_opened_on_a_device(server: str) -> None:
    process = await asyncio.create_subprocess_exec(
        cmaas_executable(),
        "--env-file",
        os.devnull,
        "dev",
        "run",
        "--server",
        server,
        "--duration",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-3000:]
    text = out.decode()
    assert re.search(r"opened on the device: one-time password \d{6} \(demo login\)", text)
    assert 'from "Demo Bank"' in text
    assert re.search(r"message \S+: accepted -> dispatched -> delivered -> read", text), text
    assert "urn:cmaas:cmd:device-publish" in text
    assert "Traceback" not in err.decode()
