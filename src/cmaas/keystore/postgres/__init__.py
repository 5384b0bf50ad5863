"""The keystore on PostgreSQL (``CMAAS_DATABASE=postgresql://...``), behind the same
interfaces as the SQLite one and with the same semantics."""

from cmaas.keystore.postgres.keystore import PostgresKeystore

__all__ = ["PostgresKeystore"]
