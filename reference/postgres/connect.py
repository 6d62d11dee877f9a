"""Reaching the schema a ``pgvector`` store's marker names: which server (crashgate's own,
restarted if it was killed, or one named by ``url=``), the pgvector extension, a new schema
for a new store, and the schema version check that comes before any write.

Schemas a process creates on a server named by ``url=`` are dropped when that process exits
(atexit, only in the process that created them).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from crashgate.backends import CorruptStore, CrashgateError, Env, VersionTooNew
from crashgate.reference.postgres.schema import (
    CREATE_TABLES,
    Marker,
    new_schema_name,
    read_marker,
    write_marker,
)
from crashgate.reference.postgres.server import (
    INSTALL,
    PostgresServer,
    import_driver,
    local_server,
    own_server_for,
)

__all__ = ["Connection", "ServerUnreachable", "connect_store", "drop_created_schemas",
           "redacted"]

_EXTENSION_LOCK = 0x63726173   # an advisory lock key: one CREATE EXTENSION at a time
_CREATED: list[tuple[str, str]] = []   # (url, schema) made on servers named by url=
_CREATED_PID = os.getpid()
_CREATED_LOCK = threading.Lock()


def redacted(url: str) -> str:
    """``url`` without its password: declarations and errors end up in certificates."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class ServerUnreachable(CrashgateError):
    """The server a store's marker names does not answer."""

    def __init__(self, path: str, url: str, cause: str, hint: str) -> None:
        self.path = path
        self.url = url
        super().__init__(f"the pgvector store at {path} lives on the Postgres server "
                         f"{redacted(url)}, "
                         f"which does not answer ({cause}).\n  {hint}")


@dataclass
class Connection:
    """An open connection (``db``, a ``psycopg.Connection`` in autocommit mode, its
    ``search_path`` set to the store's schema) and what the store needs to know about it.
    ``server``: crashgate's own server of this process (the harness may kill it), else None."""

    db: Any
    url: str
    schema: str
    version: int
    pgvector: str
    server: PostgresServer | None

    def setting(self, name: str) -> str:
        return str(self.db.execute(f"SHOW {name}").fetchone()[0])


def connect_store(path: str, env: Env, *, url: str, fsync: bool, synchronous_commit: str,
                  supported: int) -> Connection:
    """Connect to the store at ``path`` (creating it when there is no marker); nothing in an
    existing schema is written before its version is checked against ``supported``."""
    psycopg = import_driver()
    marker = read_marker(env, path)
    server: PostgresServer | None = None
    if marker is None:
        if url:
            target = url
        else:
            server = local_server(fsync)
            target = server.url
    else:
        target = marker.server
        if url and url != marker.server:
            raise ValueError(f"url={redacted(url)!r}: the store at {path} lives on "
                             f"{redacted(marker.server)!r}; "
                             "open it with that url, or use a new path for a new store")
        if not url and not marker.own:
            raise ValueError(f"the store at {path} lives on the server "
                             f"{redacted(marker.server)!r} "
                             "(not crashgate's own); open it with "
                             f"url={redacted(marker.server)!r}")
        if marker.own:
            server = own_server_for(marker.server)
            if server is not None:
                if server.fsync != fsync:
                    raise ValueError(
                        f"fsync={'on' if fsync else 'off'}: the store at {path} lives on "
                        f"crashgate's fsync={'on' if server.fsync else 'off'} server; open it "
                        "with that fsync option")
                server.ensure_running()   # after a kill: restart, crash recovery
    try:
        db = psycopg.connect(target, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        hint = ("Fix: check the url and that the server runs." if marker is None or
                not marker.own else
                "That server was started by another crashgate process and stops when it "
                "exits: open the store from that process, or make a new store at a new path.")
        raise ServerUnreachable(path, target, str(exc).strip().splitlines()[0], hint) from exc
    try:
        ext_version, ext_schema = _extension(db, target)
        if marker is None:
            schema, version = new_schema_name(), supported
            _create(db, schema, version)
            if url:
                with _CREATED_LOCK:
                    _CREATED.append((url, schema))
            write_marker(env, path, Marker(target, schema, own=not url))
        else:
            schema = marker.schema
            version = _version(db, path, schema, target, supported)
        sql = psycopg.sql
        db.execute(sql.SQL("SET search_path TO {}, {}").format(
            sql.Identifier(schema), sql.Identifier(ext_schema)))
        db.execute(f"SET synchronous_commit TO {synchronous_commit}")
    except BaseException:
        db.close()
        raise
    return Connection(db, target, schema, version, ext_version, server)


def _extension(db: Any, url: str) -> tuple[str, str]:
    """(pgvector's version, the schema it lives in), creating the extension if it is missing."""
    query = ("SELECT extversion, extnamespace::regnamespace::text FROM pg_extension "
             "WHERE extname = 'vector'")
    row = db.execute(query).fetchone()
    if row is None:
        psycopg = import_driver()
        try:
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_EXTENSION_LOCK,))
                db.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
        except psycopg.Error as exc:
            raise CrashgateError(
                f"the Postgres server at {redacted(url)} has no pgvector extension and "
                "CREATE EXTENSION "
                f"vector failed: {str(exc).strip().splitlines()[0]}.\n  Fix: install pgvector "
                f"on that server, or drop url= so crashgate starts its own ({INSTALL})"
            ) from exc
        row = db.execute(query).fetchone()
    return str(row[0]), str(row[1])


def _create(db: Any, schema: str, version: int) -> None:
    sql = import_driver().sql
    with db.transaction():
        db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        db.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(
            sql.Identifier(schema)))
        db.execute(CREATE_TABLES)
        db.execute("INSERT INTO schema_version(version) VALUES (%s)", (version,))


def _version(db: Any, path: str, schema: str, url: str, supported: int) -> int:
    sql = import_driver().sql
    if db.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
        raise CorruptStore(path, f"its marker names schema {schema} on {redacted(url)}, "
                           "which has no "
                           "such schema (dropped, or another server at that address)")
    rows = db.execute(sql.SQL("SELECT version FROM {}.schema_version").format(
        sql.Identifier(schema))).fetchall()
    if len(rows) != 1:
        raise CorruptStore(path, f"schema {schema}'s schema_version table holds {len(rows)} "
                           "rows, not one")
    found = int(rows[0][0])
    if found > supported:
        raise VersionTooNew(path, found=found, supported=supported,
                            what="pgvector store schema version",
                            upgrade="pip install -U 'crashgate[postgres]'")
    return found


def drop_created_schemas() -> None:
    """Drop the schemas this process created on servers named by ``url=`` (at exit)."""
    if os.getpid() != _CREATED_PID:
        return
    psycopg = import_driver()
    sql = psycopg.sql
    with _CREATED_LOCK:
        created, _CREATED[:] = list(_CREATED), []
    for url, schema in created:
        with contextlib.suppress(psycopg.Error), \
                psycopg.connect(url, autocommit=True, connect_timeout=10) as db:
            db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(schema)))


atexit.register(drop_created_schemas)
