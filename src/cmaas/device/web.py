"""``cmaas device web``: serves the web device's built files on a fixed loopback origin.

Whoever serves the page's script can read the person's messages, so the page never comes
from the gateway: it comes from the files installed with this package
(``cmaas/device/web_static``, written by ``scripts/build-web-device``), served by this
small server on the person's own machine. It serves those files and a generated
``/config.json`` and nothing else, with a strict Content-Security-Policy, and checks at
start that the ``integrity`` attributes of ``index.html`` match the files beside it, so
the browser refuses a script or stylesheet that was changed after the build.

The origin is fixed (``http://127.0.0.1:5290/`` by default): a browser keeps IndexedDB,
where the device's keys live, per origin, port included, so another port or host name
would be another, empty device.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import mimetypes
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, urlsplit

from aiohttp import web

from cmaas.config import VariableReader
from cmaas.device.errors import DeviceError
from cmaas.identifiers import parse_bare_jid

__all__ = [
    "DEFAULT_PORT",
    "WEB_FLAGS",
    "WEB_STATIC",
    "StaticFiles",
    "WebDeviceConfig",
    "WebDeviceError",
    "serving_web_device",
    "web_application",
    "web_device_config",
]

DEFAULT_PORT = 5290
WEB_STATIC = Path(__file__).with_name("web_static")

# The ``cmaas device web`` flags and the variables they stand in for.
WEB_FLAGS = {
    "jid": "CMAAS_DEVICE_JID",
    "gateway": "CMAAS_DEVICE_GATEWAY",
    "websocket": "CMAAS_WEB_WEBSOCKET",
    "blob_origin": "CMAAS_WEB_BLOB_ORIGINS",
    "bind": "CMAAS_WEB_BIND",
    "port": "CMAAS_WEB_PORT",
}
_LABELS = {
    variable: f"--{flag.replace('_', '-')} or {variable}" for flag, variable in WEB_FLAGS.items()
}

# Characters that would end or split a source expression in the CSP header.
_UNSAFE_IN_HEADER = frozenset(" \t\r\n;,'\"")

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


class WebDeviceError(DeviceError):
    """The web device cannot be served: a setting is missing or malformed, the built
    files are missing, or ``index.html`` does not match them."""


@dataclass(frozen=True, slots=True)
class WebDeviceConfig:
    """Attributes:
    websocket: The XMPP server's RFC 7395 WebSocket URL (``ws://`` or ``wss://``).
    gateway: The gateway's component domain.
    blob_origins: The gateway API origins the page may download file blobs from.
    jid: An account to prefill in the sign-in form, or ``None``.
    bind: The loopback address to listen on.
    port: The TCP port; part of the origin, so of where the keys live.
    """

    websocket: str
    gateway: str
    blob_origins: tuple[str, ...] = ()
    jid: str | None = None
    bind: str = "127.0.0.1"
    port: int = DEFAULT_PORT

    @property
    def origin(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The address to open, with the account prefilled when one is set."""
        # "@" may stand as it is in a query; anything else a JID may hold is escaped.
        return f"{self.origin}/" + (f"?jid={quote(self.jid, safe='@')}" if self.jid else "")

    def config_json(self) -> bytes:
        """The page's ``/config.json``."""
        document = {"websocket": self.websocket, "gateway": self.gateway, "jid": self.jid}
        return json.dumps(document, separators=(",", ":")).encode()

    def content_security_policy(self) -> str:
        connect = " ".join(["'self'", self.websocket, *self.blob_origins])
        return (
            "default-src 'none'; script-src 'self'; style-src 'self';"
            f" img-src 'self' blob: data:; connect-src {connect}; base-uri 'none';"
            " form-action 'none'; frame-ancestors 'none'"
        )


def web_device_config(variables: Mapping[str, str]) -> WebDeviceConfig:
    """Read the web device's variables (flags already merged over them).

    ``CMAAS_WEB_BLOB_ORIGINS`` is a comma-separated list; the gateway domain falls back
    to ``CMAAS_COMPONENT_JID``.

    Raises: WebDeviceError: Every problem found, in one message.
    """
    reader = VariableReader(variables, _LABELS)
    websocket = _websocket_url(reader, reader.required("CMAAS_WEB_WEBSOCKET"))
    gateway_name = "CMAAS_DEVICE_GATEWAY"
    if reader.get(gateway_name) is None and reader.get("CMAAS_COMPONENT_JID") is not None:
        gateway_name = "CMAAS_COMPONENT_JID"
    gateway = reader.domain(gateway_name)
    origins = tuple(
        origin
        for item in (reader.get("CMAAS_WEB_BLOB_ORIGINS") or "").split(",")
        if item.strip() and (origin := _http_origin(reader, item.strip()))
    )
    jid = reader.get("CMAAS_DEVICE_JID")
    if jid is not None:
        try:
            jid = parse_bare_jid(jid)
        except ValueError as error:
            reader.problem(f"{reader.label('CMAAS_DEVICE_JID')}: {error}")
    bind = reader.text("CMAAS_WEB_BIND", "127.0.0.1")
    if not _is_loopback_address(bind):
        reader.problem(
            f"{reader.label('CMAAS_WEB_BIND')}: {bind!r} is not a loopback address; the web"
            " device is served only to this machine (127.0.0.1 or ::1)"
        )
    config = WebDeviceConfig(
        websocket=websocket,
        gateway=gateway,
        blob_origins=origins,
        jid=jid,
        bind=bind,
        port=reader.port("CMAAS_WEB_PORT", DEFAULT_PORT),
    )
    reader.raise_problems(WebDeviceError)
    return config


def _websocket_url(reader: VariableReader, value: str) -> str:
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.hostname or parts.query or parts.fragment:
        reader.problem(
            f"{reader.label('CMAAS_WEB_WEBSOCKET')} must be a ws:// or wss:// URL without"
            f" query, such as wss://example.org/xmpp-websocket, got {value!r}"
        )
        return ""
    if _UNSAFE_IN_HEADER & set(value):
        reader.problem(f"{reader.label('CMAAS_WEB_WEBSOCKET')}: {value!r} has blanks or quotes")
        return ""
    return value


def _http_origin(reader: VariableReader, value: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL given without path, query or fragment."""
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
        or _UNSAFE_IN_HEADER & set(value)
    ):
        reader.problem(
            f"{reader.label('CMAAS_WEB_BLOB_ORIGINS')}: {value!r} is not an http(s) origin"
            " such as https://gateway.example.org:8480"
        )
        return None
    return f"{parts.scheme}://{parts.netloc}"


def _is_loopback_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _SubresourceLinks(HTMLParser):
    """The ``(reference, integrity)`` of every script and stylesheet the page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            reference = attributes.get("src")
            if reference is None:
                # An inline script would run under no integrity check (and CSP blocks it).
                self.links.append(("(inline script)", None))
                return
            self.links.append((reference, attributes.get("integrity")))
        elif tag == "link" and "stylesheet" in (attributes.get("rel") or "").lower().split():
            self.links.append((attributes.get("href") or "", attributes.get("integrity")))


@dataclass(frozen=True, slots=True)
class StaticFiles:
    """The built page, read once at start: what the integrity check passed is exactly
    what is served, whatever happens to the files afterwards."""

    files: Mapping[str, bytes]

    @classmethod
    def load(cls, directory: Path) -> StaticFiles:
        """Read every file at the top of ``directory`` and check ``index.html``'s
        integrity attributes against them.

        Raises:
            WebDeviceError: No ``index.html`` (the page was not built), a script or
                stylesheet without an integrity attribute, one naming a file not served,
                or one whose sha384 differs from the file.
        """
        index = directory / "index.html"
        if not index.is_file():
            raise WebDeviceError(
                f"{index} is missing: build the web device first (scripts/build-web-device)"
            )
        files = {path.name: path.read_bytes() for path in directory.iterdir() if path.is_file()}
        static = cls(files)
        static.check_integrity()
        return static

    def check_integrity(self) -> None:
        """Raises: WebDeviceError: as :meth:`load`."""
        parser = _SubresourceLinks()
        parser.feed(self.files["index.html"].decode("utf-8"))
        parser.close()
        if not parser.links:
            raise WebDeviceError("index.html loads no script: it is not the web device's page")
        for reference, integrity in parser.links:
            name = reference.removeprefix("./").removeprefix("/")
            if integrity is None:
                raise WebDeviceError(f"index.html loads {reference} without an integrity hash")
            if name not in self.files or name == "index.html":
                raise WebDeviceError(f"index.html loads {reference}, which is not a built file")
            digest = hashlib.sha384(self.files[name]).digest()
            expected = "sha384-" + base64.b64encode(digest).decode()
            if integrity.strip() != expected:
                raise WebDeviceError(
                    f"{name} does not match the integrity hash in index.html (changed after"
                    " the build?); rebuild with scripts/build-web-device"
                )


def web_application(config: WebDeviceConfig, static: StaticFiles) -> web.Application:
    """The server: GET and HEAD of the built files and ``/config.json``, nothing else.

    Every answer, refusals included, carries the security headers. A request for
    another host name than the configured origin's is refused (421): the page opened
    under another name would be another origin with other, empty storage.
    """
    security = {
        "Content-Security-Policy": config.content_security_policy(),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }
    served = dict(static.files)
    served["config.json"] = config.config_json()
    expected_host = config.origin.removeprefix("http://")

    def answer(status: int, text: str, **headers: str) -> web.Response:
        return web.Response(
            status=status,
            text=text,
            headers={**security, **headers, "Content-Type": "text/plain; charset=utf-8"},
        )

    async def handle(request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            return answer(405, "only GET and HEAD\n", Allow="GET, HEAD")
        if request.host != expected_host:
            return answer(421, f"open {config.origin}/ (the device's keys live there)\n")
        path = request.path
        name = "index.html" if path == "/" else path.removeprefix("/")
        # Only a name listed at start is served: no path is ever joined to a directory.
        body = served.get(name) if name.count("/") == 0 else None
        if body is None:
            return answer(404, "not found\n")
        suffix = Path(name).suffix
        content_type = _CONTENT_TYPES.get(suffix) or (
            mimetypes.guess_type(name)[0] or "application/octet-stream"
        )
        return web.Response(body=body, headers={**security, "Content-Type": content_type})

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handle)
    return app


@contextlib.asynccontextmanager
async def serving_web_device(config: WebDeviceConfig, static: StaticFiles) -> AsyncIterator[None]:
    """Serve while the context is open; listening once it is entered.

    Raises: OSError: The address is in use (another ``cmaas device web``?).
    """
    runner = web.AppRunner(web_application(config, static), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.bind, config.port).start()
        yield
    finally:
        await runner.cleanup()
