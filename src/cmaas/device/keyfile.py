"""The device's key file: its :class:`DeviceKeyring` on disk, optionally under a passphrase.

The file is one JSON object, mode 0600::

    {"format": "cmaas-device-keyfile", "v": 1, "encryption": "none", "keyring": {...}}

    {"format": "cmaas-device-keyfile", "v": 1, "encryption": "scrypt-aes256gcm",
     "kdf": {"n": 32768, "r": 8, "p": 1, "salt": "<16 bytes, base64url>"},
     "nonce": "<12 bytes, base64url>", "ciphertext": "<base64url>"}

Encrypted, the ciphertext is AES-256-GCM of the keyring's canonical JSON under
scrypt(passphrase as NFC UTF-8, salt), with additional data
``b"cmaas-device-keyfile-v1"``. The salt and key are derived once per process and
passphrase; every save draws a fresh random 96-bit nonce, so a nonce does not repeat under
one key within the birthday bound, far beyond a device's saves.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from cmaas.device.errors import KeyFileError, KeyFileExists, PassphraseRequired, WrongPassphrase
from cmaas.envelope.encoding import Fields, b64url, canonical_json, parse_json
from cmaas.envelope.errors import MalformedEncoding
from cmaas.envelope.keyring import DeviceKeyring
from cmaas.file_lock import lock_exclusively
from cmaas.private_files import ensure_private_dir, read_private, write_private

__all__ = [
    "DEFAULT_SCRYPT_N",
    "ENCRYPTION_NONE",
    "ENCRYPTION_SCRYPT",
    "KEY_FILE_FORMAT",
    "MAX_KEY_FILE_BYTES",
    "MAX_SCRYPT_MEMORY",
    "MAX_SCRYPT_N",
    "MAX_SCRYPT_P",
    "MAX_SCRYPT_R",
    "KeyFile",
]

KEY_FILE_FORMAT = "cmaas-device-keyfile"
ENCRYPTION_NONE = "none"
ENCRYPTION_SCRYPT = "scrypt-aes256gcm"

DEFAULT_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1
# The file names its scrypt parameters, so a hostile or damaged file could ask for
# gigabytes of memory or hours of work; these bounds refuse it before deriving.
MAX_SCRYPT_N = 2**20
MAX_SCRYPT_R = 16
MAX_SCRYPT_P = 4
# scrypt needs 128 * n * r bytes; the bounds above alone would still allow 2 GiB.
MAX_SCRYPT_MEMORY = 256 * 2**20

# A keyring holds at most 100,000 one-time prekeys (about 9 MB as JSON); base64url
# of the ciphertext adds a third.
MAX_KEY_FILE_BYTES = 16 * 2**20

_AAD = b"cmaas-device-keyfile-v1"
_SALT_SIZE = 16
_NONCE_SIZE = 12
_KEY_SIZE = 32
_COMMON = frozenset({"format", "v", "encryption"})


class KeyFile:
    """One device's key file, and the lock that keeps two processes from sharing it.

    Two processes using one keyring would each consume one-time prekeys the other
    still holds, and the later save would undo the earlier one; hold :meth:`lock`
    for as long as the device runs.

    Attributes:
        path: The key file.
    """

    def __init__(self, path: Path | str, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> None:
        """Name the key file; nothing is read or written yet.

        Args:
            path: The key file; its directory is created (mode 0700) on first save.
            scrypt_n: scrypt's cost for files this object encrypts. Loading always
                uses the parameters the file names. Lower it only in tests.

        Raises:
            ValueError: ``scrypt_n`` is not a power of two within the bounds.
        """
        problem = _scrypt_problem(scrypt_n, _SCRYPT_R, _SCRYPT_P)
        if problem:
            raise ValueError(f"scrypt_n: {problem}")
        self.path = Path(path)
        self._scrypt_n = scrypt_n
        # The last derived key with what derived it. scrypt costs ~100 ms by design; a
        # device saves after every message it opens, so later saves reuse the salt and
        # key (with a fresh nonce each time) instead of paying it per message.
        self._derived: _DerivedKey | None = None

    def exists(self) -> bool:
        """Whether something is at the key file's path (a device was created)."""
        return os.path.lexists(self.path)

    def create(self, keyring: DeviceKeyring, passphrase: str | None) -> None:
        """Write the key file of a new device; never overwrite one.

        Args:
            keyring: The new device's keys.
            passphrase: Encrypts the file; None stores the keys unencrypted.

        Raises:
            KeyFileExists: A key file is already there.
            KeyFileError: It cannot be written.
            ValueError: ``passphrase`` is empty.
        """
        # Two processes creating at once are a race here; callers hold lock() first.
        if self.exists():
            raise KeyFileExists(
                f"a key file is already at {self.path}; a new device never overwrites one"
            )
        self.save(keyring, passphrase)

    def save(self, keyring: DeviceKeyring, passphrase: str | None) -> None:
        """Replace the key file atomically with ``keyring``.

        Args:
            keyring: The keys to store.
            passphrase: Encrypts the file; None stores the keys unencrypted.

        Raises:
            KeyFileError: It cannot be written; the old file is then unchanged.
            ValueError: ``passphrase`` is empty.
        """
        write_private(self.path, self._encode(keyring, passphrase), error=KeyFileError)

    def load(self, passphrase: str | None = None) -> DeviceKeyring:
        """Read the keys.

        Args:
            passphrase: Opens an encrypted file; ignored for an unencrypted one.

        Raises:
            PassphraseRequired: The file is encrypted and ``passphrase`` is None.
            WrongPassphrase: The passphrase does not open it (or the ciphertext is damaged).
            KeyFileError: No file, accessible to other users, damaged, or an
                encryption this version does not know.
        """
        data = read_private(self.path, max_bytes=MAX_KEY_FILE_BYTES, error=KeyFileError)
        if data is None:
            raise KeyFileError(f"no key file at {self.path}; create the device first")
        try:
            return self._decode(data, passphrase)
        except MalformedEncoding as exc:
            raise KeyFileError(f"the key file {self.path} is damaged: {exc}") from exc

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the key file for the duration of the ``with`` block.

        The lock is an ``flock`` on the sibling file ``<name>.lock``; the kernel drops
        it when the process ends, however it ends, so a crash leaves no stale lock.

        Raises:
            KeyFileError: Another process (or another :meth:`lock` in this one) holds
                it, or the lock file cannot be opened.
        """
        lock_path = self.path.with_name(f"{self.path.name}.lock")
        ensure_private_dir(lock_path.parent, error=KeyFileError)
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            raise KeyFileError(f"cannot open {lock_path}: {exc.strerror or exc}") from exc
        # The lock file is never deleted: a process could lock the unlinked file while
        # another creates a new one, and both would believe they hold the lock.
        try:
            try:
                lock_exclusively(fd)
            except BlockingIOError as exc:
                raise KeyFileError(
                    f"another cmaas device process uses {self.path}; stop it first"
                ) from exc
            except OSError as exc:
                raise KeyFileError(f"cannot lock {lock_path}: {exc.strerror or exc}") from exc
            yield
        finally:
            os.close(fd)  # releases the lock

    def _encode(self, keyring: DeviceKeyring, passphrase: str | None) -> bytes:
        document: dict[str, object] = {"format": KEY_FILE_FORMAT, "v": 1}
        if passphrase is None:
            document |= {"encryption": ENCRYPTION_NONE, "keyring": keyring.to_json()}
        else:
            if not passphrase:
                raise ValueError("an empty passphrase protects nothing; pass None instead")
            salt, key = self._key_for(passphrase)
            nonce = os.urandom(_NONCE_SIZE)
            ciphertext = AESGCM(key).encrypt(nonce, canonical_json(keyring.to_json()), _AAD)
            document |= {
                "encryption": ENCRYPTION_SCRYPT,
                "kdf": {"n": self._scrypt_n, "r": _SCRYPT_R, "p": _SCRYPT_P, "salt": b64url(salt)},
                "nonce": b64url(nonce),
                "ciphertext": b64url(ciphertext),
            }
        return canonical_json(document) + b"\n"

    def _key_for(self, passphrase: str) -> tuple[bytes, bytes]:
        """(salt, key) for ``passphrase``: the cached pair, or a fresh salt derived now."""
        cached = self._derived
        if cached is not None and hmac.compare_digest(
            cached.passphrase.encode("utf-8", "surrogateescape"),
            passphrase.encode("utf-8", "surrogateescape"),
        ):
            return cached.salt, cached.key
        salt = os.urandom(_SALT_SIZE)
        key = _derive(passphrase, salt, self._scrypt_n, _SCRYPT_R, _SCRYPT_P)
        self._derived = _DerivedKey(passphrase, salt, key)
        return salt, key

    def _decode(self, data: bytes, passphrase: str | None) -> DeviceKeyring:
        # Raises MalformedEncoding for anything damaged; load() says which file.
        document = parse_json(data, max_bytes=MAX_KEY_FILE_BYTES, what="the key file")
        if not isinstance(document, dict) or document.get("format") != KEY_FILE_FORMAT:
            raise MalformedEncoding(f"it is not a {KEY_FILE_FORMAT} file")
        if document.get("v") != 1:
            # Checked before the fields, so a file from a newer version says so.
            raise KeyFileError(
                f"the key file {self.path} has format version {document.get('v')!r}; "
                "this cmaas reads version 1 only"
            )
        encryption = document.get("encryption")
        if encryption == ENCRYPTION_NONE:
            fields = Fields(document, "key file", _COMMON | {"keyring"})
            return DeviceKeyring.from_json(fields.raw("keyring"))
        if encryption != ENCRYPTION_SCRYPT:
            raise KeyFileError(
                f"the key file {self.path} uses encryption {encryption!r}, "
                "which this cmaas does not know"
            )
        fields = Fields(document, "key file", _COMMON | {"kdf", "nonce", "ciphertext"})
        kdf = Fields(fields.raw("kdf"), "key file.kdf", frozenset({"n", "r", "p", "salt"}))
        n = kdf.integer("n", low=2, high=MAX_SCRYPT_N)
        r = kdf.integer("r", low=1, high=MAX_SCRYPT_R)
        p = kdf.integer("p", low=1, high=MAX_SCRYPT_P)
        problem = _scrypt_problem(n, r, p)
        if problem:
            raise MalformedEncoding(f"key file.kdf: {problem}")
        salt = kdf.binary("salt", size=_SALT_SIZE)
        nonce = fields.binary("nonce", size=_NONCE_SIZE)
        ciphertext = fields.binary("ciphertext", max_size=MAX_KEY_FILE_BYTES)
        # After the checks above, so a damaged file says so before anyone is asked
        # for a passphrase.
        if passphrase is None:
            raise PassphraseRequired(f"the key file {self.path} is encrypted; give its passphrase")
        key = _derive(passphrase, salt, n, r, p)
        try:
            plaintext = AESGCM(key).decrypt(nonce, ciphertext, _AAD)
        except InvalidTag as exc:
            raise WrongPassphrase(
                f"the passphrase does not open {self.path} (or the file is damaged)"
            ) from exc
        if (n, r, p) == (self._scrypt_n, _SCRYPT_R, _SCRYPT_P):
            self._derived = _DerivedKey(passphrase, salt, key)
        return DeviceKeyring.from_json(
            parse_json(plaintext, max_bytes=MAX_KEY_FILE_BYTES, what="the decrypted key file")
        )


@dataclass(frozen=True, slots=True)
class _DerivedKey:
    passphrase: str
    salt: bytes
    key: bytes


def _scrypt_problem(n: int, r: int, p: int) -> str | None:
    """What is wrong with scrypt parameters, or None when they are within bounds."""
    if n < 2 or n > MAX_SCRYPT_N or n & (n - 1):
        return f"n must be a power of two from 2 to {MAX_SCRYPT_N}"
    if not 1 <= r <= MAX_SCRYPT_R:
        return f"r must be from 1 to {MAX_SCRYPT_R}"
    if not 1 <= p <= MAX_SCRYPT_P:
        return f"p must be from 1 to {MAX_SCRYPT_P}"
    if 128 * n * r > MAX_SCRYPT_MEMORY:
        return f"n = {n} and r = {r} would need more than {MAX_SCRYPT_MEMORY >> 20} MiB"
    return None


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # NFC: the same passphrase typed on another keyboard or system may arrive in
    # another Unicode normal form. surrogateescape: bytes a non-UTF-8 terminal passed
    # through undecoded are used as they came, not refused.
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8", "surrogateescape")
    return Scrypt(salt=salt, length=_KEY_SIZE, n=n, r=r, p=p).derive(secret)
