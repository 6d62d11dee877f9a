"""The ``pgvector`` store's identity and tables: the marker file at the store's path that names
its server and schema, and the SQL that creates and versions the schema.

**The marker.** The store at ``path`` is a Postgres schema; the small JSON file at ``path``
(written through ``env.fs``, atomically and fsynced: ``backends.write_whole``) says which::

    {"crashgate": "pgvector-store", "marker_version": 1,
     "server": "postgresql://postgres:@/postgres?host=/tmp/crashgate-pg-xxxx",
     "schema": "crashgate_3f2a...", "own": true}

``own``: the server is one crashgate started (it may kill and restart it); false for a server
named by ``url=``. A new store gets a fresh schema name, so every row's fresh simulated disk
gets a fresh empty store, and every process opening the same path reaches the same schema.

**The tables** (in the store's schema; ``SCHEMA_VERSION`` = 1)::

    schema_version(version integer NOT NULL)   -- one row: what wrote the schema
    kv(key text PRIMARY KEY, value bytea NOT NULL)
    vectors(id bigint PRIMARY KEY,             -- the u64 id as a signed 64-bit integer
            exact bytea NOT NULL,              -- the vector as written: little-endian float64
            embedding vector NOT NULL,         -- pgvector's float32 copy, for its index
            metadata text NOT NULL)            -- JSON object, as written (sorted keys)

The ANN index (option ``index``) is an expression index on ``embedding::vector(d)`` named
``vectors_ann_<d>``, created once the dimension ``d`` is known (the first upsert).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from crashgate.backends import CorruptStore, Env, read_all, write_whole

__all__ = ["CREATE_TABLES", "SCHEMA_VERSION", "Marker", "new_schema_name", "read_marker",
           "write_marker"]

SCHEMA_VERSION = 1
_MARKER_KIND = "pgvector-store"

CREATE_TABLES = """
CREATE TABLE schema_version (version integer NOT NULL);
CREATE TABLE kv (key text COLLATE "C" PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE vectors (id bigint PRIMARY KEY, exact bytea NOT NULL, embedding vector NOT NULL,
                      metadata text NOT NULL);
"""


@dataclass(frozen=True)
class Marker:
    """Which server (a libpq URL) and which schema the store at a path is."""

    server: str
    schema: str
    own: bool

    def to_bytes(self) -> bytes:
        return json.dumps({"crashgate": _MARKER_KIND, "marker_version": 1,
                           "server": self.server, "schema": self.schema, "own": self.own},
                          sort_keys=True).encode() + b"\n"


def new_schema_name() -> str:
    """A fresh schema name (a Postgres identifier: lower case, under 63 bytes)."""
    return f"crashgate_{uuid.uuid4().hex}"


def read_marker(env: Env, path: str) -> Marker | None:
    """The marker at ``path``, None when there is no file; ``CorruptStore`` if it is not one."""
    if not env.fs.exists(path):
        return None
    raw = read_all(env.fs, path)
    try:
        doc = json.loads(raw)
        if doc.get("crashgate") != _MARKER_KIND:
            raise ValueError(f"it is not a pgvector store marker "
                             f"(crashgate={doc.get('crashgate')!r})")
        marker = Marker(str(doc["server"]), str(doc["schema"]), bool(doc["own"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptStore(path, f"the pgvector store marker does not parse: {exc}") from exc
    if not marker.schema.isidentifier() or not marker.schema.islower():
        raise CorruptStore(path, f"the marker names schema {marker.schema!r}, not one crashgate "
                           "makes")
    return marker


def write_marker(env: Env, path: str, marker: Marker) -> None:
    """Write ``marker`` at ``path`` atomically and durably (temporary file, fsync, rename)."""
    write_whole(env.fs, path, marker.to_bytes())
