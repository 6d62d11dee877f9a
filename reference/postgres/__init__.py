"""ADR-0003's Postgres + pgvector as a crashgate backend (``pgvector``): the servers crashgate
starts itself (``server``), the store's marker and tables (``schema``), reaching a store's
schema (``connect``) and the contract store (``store``).

Importing this package needs neither pgserver nor psycopg; opening a store without them is
``BackendMissing`` with the install command.
"""

from __future__ import annotations

from crashgate.reference.postgres.server import (
    INSTALL,
    PostgresServer,
    ServerFailed,
    local_server,
    stop_local_servers,
)
from crashgate.reference.postgres.store import OPTIONS, PgvectorStore, open_pgvector

__all__ = ["INSTALL", "OPTIONS", "PgvectorStore", "PostgresServer", "ServerFailed",
           "local_server", "open_pgvector", "stop_local_servers"]
