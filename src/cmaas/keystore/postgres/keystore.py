"""The keystore on PostgreSQL (psycopg 3, asyncio)."""

from __future__ import annotations

import time
from collections.abc import Callable

from cmaas.keystore._db import runner_of
from cmaas.keystore.base import SqlKeystore
from cmaas.keystore.credentials import MasterKeyring
from cmaas.keystore.postgres._connection import Connections
from cmaas.keystore.postgres.blobs import PostgresBlobChunks

__all__ = ["PostgresKeystore"]


class PostgresKeystore(SqlKeystore):
    """:class:`~cmaas.keystore.Keystore` on a PostgreSQL database.

    Use :meth:`open`. The stores are the SQLite keystore's, with their semantics: one
    writer at a time (see :class:`~cmaas.keystore.postgres._connection.Connections`),
    but for the rate buckets' takes, which lock only their row; times from the given
    clock, or the database's where the instances must agree. Each write is a
    transaction of its own: there is no group commit. Blobs' bytes are rows of the
    database (:class:`~cmaas.keystore.postgres.blobs.PostgresBlobChunks`), which every
    instance reads.
    """

    def __init__(
        self,
        url: str,
        connections: Connections,
        keyring: MasterKeyring,
        clock: Callable[[], float],
    ) -> None:
        write = runner_of(connections)
        self._chunks = PostgresBlobChunks(url, connections)
        super().__init__(
            connections, keyring, write=write, take=write, clock=clock, blob_content=self._chunks
        )
        self._connections = connections

    @classmethod
    async def open(
        cls, url: str, keyring: MasterKeyring, clock: Callable[[], float] = time.time
    ) -> PostgresKeystore:
        """Connect to the database at ``url`` (``postgresql://...``) and migrate it.

        Raises:
            SchemaTooNew: The database was migrated by a newer CMaaS.
            psycopg.Error: The server cannot be reached or refuses the connection.
        """
        return cls(url, await Connections.open(url, clock), keyring, clock)

    async def close(self) -> None:
        await self._chunks.close()
        await self._connections.close()
