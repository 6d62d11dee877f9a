"""The ``pgvector`` store: ADR-0003's Postgres + pgvector as a crashgate contract store (KV,
vectors, batches, metadata filters, a schema version), on crashgate's own server or on an
existing one (``url=``).

The store at ``path`` is a Postgres schema named by a marker file at ``path`` (``schema.py``).
Every call is one statement or one transaction on one connection (autocommit outside them).
Vectors are kept exactly (float64 bytes) beside pgvector's float32 copy; every answer is
re-scored in float64 from the exact bytes and filtered with ``backends.search.matches``, so
exact search (``index=none``) gives the true ``k`` nearest, and an index only proposes
candidates: when the candidates hold fewer than ``k`` matching records (pgvector 0.6 filters
after the index scan, so a selective filter can leave too few), the query falls back to an
exact search, and ``min(k, matching)`` hits always come back.

A server crash breaks the connection: the call in flight raises ``psycopg.OperationalError``
(indeterminate: it may have committed), and every later call raises at once (the connection
is closed; it is never silently reopened). Reopen with ``open_pgvector``, which restarts
crashgate's own server if it is down.

Schemas on a server named by ``url=`` are dropped when the process that created them exits
(atexit): a certification leaves nothing behind there. On crashgate's own server the whole
server and its directory go at exit.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from crashgate.backends import (
    BadOption,
    Env,
    Hit,
    StoreClosed,
    VectorBlock,
    VectorRecord,
    check_options,
)
from crashgate.reference.postgres.connect import Connection, connect_store
from crashgate.reference.postgres.declaration import OPTIONS, declaration_for
from crashgate.reference.row_ids import from_row_id, storable_row_ids, to_row_id
from crashgate.reference.vector_search import check_where, exact_search

__all__ = ["OPTIONS", "PgvectorStore", "open_pgvector"]

_F32_MAX = float(np.finfo(np.float32).max)
_OPS = {"l2": ("<->", "vector_l2_ops"), "cosine": ("<=>", "vector_cosine_ops")}


def _vector_text(vec: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in vec.astype(np.float32)) + "]"


class PgvectorStore:
    """One schema on one Postgres server (see the module docstring). ``ServerBacked``."""

    def __init__(self, path: str, conn: Connection, opts: Mapping[str, object]) -> None:
        self.path = path
        self._c = conn
        self._db: Any = conn.db
        self._metric = str(opts["metric"])
        self._index = str(opts["index"])
        self._opts = dict(opts)
        self._closed = False
        self.declaration = declaration_for(conn, opts)

    # -- ServerBacked -------------------------------------------------------------------------

    def server_pids(self) -> tuple[int, ...]:
        return self._c.server.pids() if self._c.server is not None else ()

    def session_pid(self) -> int:
        return int(self._db.info.backend_pid)

    # -- key-value ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(self.path)

    @staticmethod
    def _key(key: str) -> str:
        if not isinstance(key, str) or "\x00" in key:
            raise ValueError(f"key {key!r}: a Postgres text key is a str without NUL characters")
        return key

    def put(self, key: str, value: bytes) -> None:
        self._check_open()
        self._db.execute("INSERT INTO kv(key, value) VALUES (%s, %s) ON CONFLICT (key) DO "
                         "UPDATE SET value = excluded.value", (self._key(key), bytes(value)))

    def get(self, key: str) -> bytes | None:
        self._check_open()
        row = self._db.execute("SELECT value FROM kv WHERE key = %s", (self._key(key),)
                               ).fetchone()
        return None if row is None else bytes(row[0])

    def delete(self, key: str) -> None:
        self._check_open()
        self._db.execute("DELETE FROM kv WHERE key = %s", (self._key(key),))

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        self._check_open()
        rows = self._db.execute("SELECT key, value FROM kv WHERE starts_with(key, %s)",
                                (self._key(prefix),)).fetchall()
        return sorted((str(k), bytes(v)) for k, v in rows)

    def write_batch(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> None:
        """Deletes, then puts, in one transaction."""
        self._check_open()
        dels = [self._key(k) for k in deletes]
        rows = [(self._key(k), bytes(v)) for k, v in puts.items()]
        with self._db.transaction():
            if dels:
                self._db.execute("DELETE FROM kv WHERE key = ANY(%s)", (dels,))
            if rows:
                with self._db.cursor() as cur:
                    cur.executemany("INSERT INTO kv(key, value) VALUES (%s, %s) ON CONFLICT "
                                    "(key) DO UPDATE SET value = excluded.value", rows)

    # -- vectors ------------------------------------------------------------------------------

    def _dimension(self) -> int | None:
        row = self._db.execute("SELECT length(exact) / 8 FROM vectors LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or replace by id, all records in one transaction."""
        self._check_open()
        rows = []
        for r in records:
            vec = np.asarray(r.vector, dtype="<f8")
            if not np.all(np.isfinite(vec)) or np.any(np.abs(vec) > _F32_MAX):
                raise ValueError(f"vector of id {r.id}: pgvector holds finite float32 values; "
                                 "this one has a NaN, an infinity or a value beyond float32")
            rows.append((to_row_id(r.id), vec.tobytes(), _vector_text(vec),
                         json.dumps(dict(r.metadata), sort_keys=True)))
        if not rows:
            return
        dims = {len(b) // 8 for _, b, _, _ in rows}
        with self._db.transaction():
            # one upsert at a time per store: the dimension check must see the other's rows
            self._db.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))")
            held = self._dimension()
            every = dims if held is None else dims | {held}
            if len(every) > 1:
                raise ValueError(f"vectors of different dimensions in one store: "
                                 f"{sorted(every)}")
            with self._db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO vectors(id, exact, embedding, metadata) VALUES "
                    "(%s, %s, %s::vector, %s) ON CONFLICT (id) DO UPDATE SET exact = "
                    "excluded.exact, embedding = excluded.embedding, metadata = "
                    "excluded.metadata", rows)
            if self._index != "none":
                self._ensure_index(dims.pop())

    def _ensure_index(self, dim: int) -> None:
        """The ANN index for dimension ``dim`` (an older dimension's index dropped: the store
        was emptied and refilled), inside the caller's transaction."""
        name = f"vectors_ann_{dim}"
        have = [str(r[0]) for r in self._db.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND "
            "indexname LIKE 'vectors_ann_%'").fetchall()]
        for other in have:
            if other != name:
                self._db.execute(f'DROP INDEX "{other}"')
        if name in have:
            return
        _, opclass = _OPS[self._metric]
        if self._index == "hnsw":
            using = (f"hnsw ((embedding::vector({dim})) {opclass}) WITH (m = "
                     f"{int(self._opts['m'])}, ef_construction = "  # type: ignore[call-overload]
                     f"{int(self._opts['ef_construction'])})")  # type: ignore[call-overload]
        else:
            using = (f"ivfflat ((embedding::vector({dim})) {opclass}) WITH (lists = "
                     f"{int(self._opts['lists'])})")  # type: ignore[call-overload]
        self._db.execute(f'CREATE INDEX "{name}" ON vectors USING {using}')

    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        self._check_open()
        check_where(where)   # a bad filter is refused on an empty store too
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        q = np.asarray(vector, dtype=np.float64)
        dim = self._dimension()
        if k == 0 or dim is None:
            return []
        if q.ndim != 1 or q.shape[0] != dim:
            raise ValueError(f"query has dimension {q.shape[0] if q.ndim == 1 else q.shape}, "
                             f"the store holds dimension {dim}")
        if self._index != "none" and np.all(np.isfinite(q)):
            hits = self._index_candidates(q, k, dim, where)
            if hits is not None:
                return hits
        return self._search(self._db.execute("SELECT id, exact, metadata FROM vectors"),
                            q, k, where)

    def _index_candidates(self, q: np.ndarray, k: int, dim: int,
                          where: Mapping[str, Any] | None) -> list[Hit] | None:
        """The top ``k`` of the index's candidates re-scored, or None when the candidates hold
        fewer than ``k`` matching records (the caller then searches exactly)."""
        op, _ = _OPS[self._metric]
        if self._index == "hnsw":
            limit = max(k, int(self._opts["ef_search"]))  # type: ignore[call-overload]
            if limit > 1000:   # hnsw.ef_search's upper bound
                return None
            setting = f"SET LOCAL hnsw.ef_search = {limit}"
        else:
            lists = int(self._opts["lists"])  # type: ignore[call-overload]
            probes = int(self._opts["probes"]) or lists  # type: ignore[call-overload]
            limit = max(k, 4 * k)
            setting = f"SET LOCAL ivfflat.probes = {min(probes, lists)}"
        with self._db.transaction():
            self._db.execute(setting)
            cur = self._db.execute(
                f"SELECT id, exact, metadata FROM vectors ORDER BY embedding::vector({dim}) "
                f"{op} %s::vector({dim}) LIMIT %s", (_vector_text(q), limit))
            hits = self._search(cur, q, k, where)
        return hits if len(hits) >= k else None

    def _search(self, cur: Any, q: np.ndarray, k: int,
                where: Mapping[str, Any] | None) -> list[Hit]:
        ids, blobs, metas = [], [], []
        for row_id, blob, meta in cur:
            ids.append(from_row_id(int(row_id)))
            blobs.append(bytes(blob))
            metas.append(json.loads(meta))
        if not ids:
            return []
        matrix = np.frombuffer(b"".join(blobs), dtype="<f8").reshape(len(ids), -1)
        return exact_search(ids, matrix, metas, q, k, self._metric, where)

    def remove(self, ids: Iterable[int]) -> int:
        """Delete by id in one statement; how many of them were live."""
        self._check_open()
        row_ids = storable_row_ids(ids)
        if not row_ids:
            return 0
        cur = self._db.execute("DELETE FROM vectors WHERE id = ANY(%s)", (row_ids,))
        return int(cur.rowcount)

    def count(self) -> int:
        self._check_open()
        return int(self._db.execute("SELECT count(*) FROM vectors").fetchone()[0])

    def ids(self) -> list[int]:
        """Every live vector id, sorted."""
        self._check_open()
        return sorted(from_row_id(int(r[0]))
                      for r in self._db.execute("SELECT id FROM vectors").fetchall())

    def _rows(self, ids: Iterable[int]) -> list[tuple[int, bytes, dict[str, Any]]]:
        self._check_open()
        row_ids = storable_row_ids(ids)
        if not row_ids:
            return []
        rows = self._db.execute("SELECT id, exact, metadata FROM vectors WHERE id = ANY(%s)",
                                (row_ids,)).fetchall()
        return sorted((from_row_id(int(i)), bytes(b), json.loads(m)) for i, b, m in rows)

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        return [VectorRecord.of(i, np.frombuffer(b, dtype="<f8"), m)
                for i, b, m in self._rows(ids)]

    def fetch_block(self, ids: Iterable[int]) -> VectorBlock:
        """``fetch`` as arrays (``BulkFetch``), float64 from the exact bytes."""
        rows = self._rows(ids)
        dim = len(rows[0][1]) // 8 if rows else 0
        matrix = np.frombuffer(b"".join(b for _, b, _ in rows), dtype="<f8").reshape(
            len(rows), dim).copy()
        return VectorBlock(tuple(i for i, _, _ in rows), matrix, tuple(m for _, _, m in rows))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):   # a connection a crash broke closes anyway
                self._db.close()


def open_pgvector(path: str, env: Env, **options: str) -> PgvectorStore:
    """Open (or create) the store whose marker file is at ``path``.

    Options: ``synchronous_commit`` (on, off, local), ``fsync`` (on, off: a server setting,
    crashgate's own server only), ``index`` (none, hnsw, ivfflat), ``url`` (an existing
    server; default crashgate's own), ``metric`` (l2, cosine), HNSW ``m``,
    ``ef_construction``, ``ef_search``, IVFFlat ``lists``, ``probes`` (0: all lists),
    ``schema_version`` (the newest this code reads and writes; a newer schema is
    ``VersionTooNew``, unmodified)."""
    opts = check_options("pgvector", options, OPTIONS)
    for name, low in (("m", 2), ("ef_construction", 4), ("ef_search", 1), ("lists", 1),
                      ("probes", 0), ("schema_version", 1)):
        if int(opts[name]) < low:  # type: ignore[call-overload]
            raise BadOption("pgvector", name, str(opts[name]), [f"an integer >= {low}"])
    if opts["url"] and opts["fsync"] != "on":
        raise BadOption("pgvector", "fsync", str(opts["fsync"]),
                        ["on (with url=, fsync is the server's own setting: crashgate never "
                         "changes a server it did not start; drop url= to use its own)"])
    conn = connect_store(path, env, url=str(opts["url"]), fsync=opts["fsync"] == "on",
                         synchronous_commit=str(opts["synchronous_commit"]),
                         supported=int(opts["schema_version"]))  # type: ignore[call-overload]
    return PgvectorStore(path, conn, opts)

