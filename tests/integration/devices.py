"""Reference devices for integration tests: keys made locally, as on a phone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cmaas.device.client import DeviceClient
from cmaas.device.config import DeviceConfig
from cmaas.device.keyfile import KeyFile
from cmaas.devservers import XmppServer
from cmaas.envelope import DeviceKeyring

from .conftest import PASSWORD


def device_config(server: XmppServer, state: Path, user: str, resource: str) -> DeviceConfig:
    return DeviceConfig(
        jid=f"{user}@{server.domain}",
        password=PASSWORD,
        gateway=server.component_domain,
        state_dir=state,
        host=server.host,
        port=server.c2s_port,
        require_tls=False,
        resource=resource,
    )


def new_device(
    server: XmppServer, tmp_path: Path, user: str, resource: str, one_time_prekeys: int = 20
) -> DeviceClient:
    config = device_config(server, tmp_path / f"{user}-{resource}", user, resource)
    keyring = DeviceKeyring.generate(
        config.jid, now_ms=int(time.time() * 1000), one_time_prekeys=one_time_prekeys
    )
    KeyFile(config.keyring_path).create(keyring, None)
    return DeviceClient(config)


def collect_shown(device: DeviceClient, shown: list[str]) -> asyncio.Task[None]:
    """Append the id of every message ``device`` shows to ``shown``; cancel to stop."""

    async def collect() -> None:
        while True:
            shown.append((await device.next_message()).message_id)

    return asyncio.create_task(collect())
