"""python-omemo's key/value storage, kept in one private file of the instance's state
directory: the identity key, the signed prekey (rotated by python-omemo), the one-time
prekeys, the own device id, the recipients' device lists and one ratchet session per
recipient device.

The file is mode 0600 in a 0700 directory and replaced atomically on every change
(:mod:`cmaas.private_files`), so a crash leaves the state before or after a change, never
a torn ratchet. The whole file is rewritten on each change, which is cheap for the tens of
recipients an app has and the reason for the size cap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

from omemo import JSONType, Just, Maybe, Nothing, Storage

from cmaas.clientservice.omemo.errors import OmemoStateError
from cmaas.private_files import read_private, write_private

__all__ = ["FileStorage"]

_MAX_STATE = 64 * 1024 * 1024


class FileStorage(Storage):
    """The OMEMO state of one client-service instance, in ``path``.

    Raises (constructor): OmemoStateError: The file is unreadable, too open, too large,
        or not a JSON object.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(disable_cache=True)  # the values are in memory already
        self._path = path
        data = read_private(path, max_bytes=_MAX_STATE, error=OmemoStateError)
        try:
            loaded = json.loads(data) if data else {}
        except ValueError as error:
            raise OmemoStateError(f"{path} is not the client's OMEMO state") from error
        if not isinstance(loaded, dict):
            raise OmemoStateError(f"{path} is not the client's OMEMO state")
        self._values: dict[str, JSONType] = loaded

    async def _load(self, key: str) -> Maybe[JSONType]:
        if key in self._values:
            return Just(self._values[key])
        return Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        """Raises: OmemoStateError: The file cannot be written; the value is not kept."""
        previous = self._values.get(key)
        had = key in self._values
        self._values[key] = value
        try:
            self._write()
        except OmemoStateError:
            # Memory must not run ahead of the file: a restart would resume from the file.
            if had:
                self._values[key] = previous
            else:
                del self._values[key]
            raise

    async def _delete(self, key: str) -> None:
        """Raises: OmemoStateError: The file cannot be written; the value is kept."""
        if key not in self._values:
            return
        value = self._values.pop(key)
        try:
            self._write()
        except OmemoStateError:
            self._values[key] = value
            raise

    def _write(self) -> None:
        data = json.dumps(cast(object, self._values), separators=(",", ":")).encode()
        if len(data) > _MAX_STATE:
            raise OmemoStateError(f"the OMEMO state would exceed {_MAX_STATE} bytes")
        write_private(self._path, data, error=OmemoStateError)
