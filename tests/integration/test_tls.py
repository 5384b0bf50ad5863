"""The HTTP API over TLS: the gateway process serves it with the operator's certificate
and key (CMAAS_HTTP_TLS_CERT, CMAAS_HTTP_TLS_KEY), and signed requests work over it."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import time
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cmaas.clientservice import AppCredentials, GatewayApi
from cmaas.devservers import XmppServer

from .apps import admin
from .gateway_process import GatewayProcess

pytestmark = pytest.mark.integration


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "api.crt", directory / "api.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_api_over_tls(xmpp_server: XmppServer, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    gateway = GatewayProcess(xmpp_server, tmp_path, admins=f"admin@{xmpp_server.domain}")
    gateway.env["CMAAS_HTTP_TLS_CERT"] = str(cert)
    gateway.env["CMAAS_HTTP_TLS_KEY"] = str(key)
    trusted = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{gateway.http_port}"
    gateway.start(wait=False)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusted)) as session:
            deadline = time.monotonic() + 30
            health: dict[str, object] = {}
            while health.get("component_link") != "connected":
                assert time.monotonic() < deadline, gateway.log()
                try:
                    async with session.get(f"{base}/healthz") as response:
                        health = await response.json()
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.2)
            issued = await asyncio.to_thread(
                admin, gateway, "app-register", "tls", "--name", "TLS", "--network", "127.0.0.0/8"
            )
            api = GatewayApi(base, AppCredentials.from_issued(issued), session)
            assert await api.request("GET", "/v1/signing-keys") == {"fingerprints": []}

        # Plain HTTP to the TLS listener gets nowhere.
        async with aiohttp.ClientSession() as plain:
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(f"http://127.0.0.1:{gateway.http_port}/healthz") as answer:
                    await answer.read()
    finally:
        assert gateway.stop() == 0, gateway.log()
