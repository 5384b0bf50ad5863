"""Fetching an encrypted file a message points to: download the blob, check it against the
envelope (CMB1, docs/protocol.md 10.1.1), and keep the plaintext only once all of it passed."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from cmaas.device.errors import DeviceError
from cmaas.envelope import FileContent
from cmaas.envelope.blob import decrypt_blob, encrypted_blob_size
from cmaas.private_files import ensure_private_dir

__all__ = ["FileUnavailable", "fetch_file", "safe_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_ATTEMPTS = 3


class FileUnavailable(DeviceError):
    """The message's file could not be downloaded (after retries)."""


def safe_name(message_id: str, name: str) -> str:
    """A file name that cannot escape the directory or hide: the sender's name is untrusted."""
    cleaned = _UNSAFE.sub("_", name).lstrip("._")[:100] or "file"
    return f"{message_id}-{cleaned}"


async def fetch_file(
    content: FileContent, directory: Path, message_id: str, *, require_tls: bool
) -> Path:
    """Download, verify and save a file; returns where it was saved.

    Raises:
        FileUnavailable: The URL is not allowed (``http://`` when TLS is required) or the
            blob could not be downloaded.
        EnvelopeError: The blob is not CMB1, or fails any check (``TamperedBlob``).
    """
    if urlsplit(content.url).scheme != "https" and require_tls:
        raise FileUnavailable(f"refusing to fetch {content.url!r} without TLS")
    ensure_private_dir(directory, error=FileUnavailable)
    token = secrets.token_hex(6)
    encrypted = directory / f".{token}.blob"
    plain = directory / f".{token}.part"
    try:
        await _download(content.url, encrypted, encrypted_blob_size(content.size))
        await asyncio.to_thread(_decrypt, encrypted, plain, content)
        target = directory / safe_name(message_id, content.name)
        plain.replace(target)
        return target
    finally:
        for leftover in (encrypted, plain):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


async def _download(url: str, target: Path, expected: int) -> None:
    reason = ""
    for attempt in range(_ATTEMPTS):
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                if response.status != 200:
                    raise FileUnavailable(f"{url}: HTTP {response.status}")
                size = 0
                with target.open("wb") as out:
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        size += len(chunk)
                        if size > expected:
                            break  # longer than the envelope allows: the check will refuse it
                        out.write(chunk)
                return
        except (aiohttp.ClientError, TimeoutError) as error:
            reason = f"{type(error).__name__}: {error}"
            await asyncio.sleep(0.5 * 2**attempt)
    raise FileUnavailable(f"{url}: {reason}")


def _decrypt(encrypted: Path, plain: Path, content: FileContent) -> None:
    with encrypted.open("rb") as source, plain.open("wb") as target:
        decrypt_blob(
            source,
            target,
            content.file_key,
            expected_size=content.size,
            expected_sha256=content.sha256,
        )
