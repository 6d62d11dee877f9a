"""The AgentDB pattern store (``agentdb``): the SQLite pattern database the pattern migration
guide migrates from, as a reference vector store. The baseline the guide's ratios (170x faster
search, 53x the queries per second, 129x faster batch inserts) are claimed against.

One SQLite file holding the ``patterns`` table (``schema.py``: the guide's fields, an ``extra``
JSON column, the embedding as a BLOB, a sum per record). The connection, opening (version and
``integrity_check`` before any write), transactions, durable commits, the routed VFS on the
harness's simulated disk and the mapping of SQLite's errors (``CorruptStore``,
``StoreClosed``, ``VersionTooNew``) are ``SqliteFile``'s (``sqlite_file.py``); this module
holds the table's operations.

**Search is brute force**, as AgentDB's is: every query reads every row's embedding, checks
it (``vector_sum``) and searches the embeddings exactly (``vector_search.exact_search``), then
reads the hits' whole rows (checked against ``sum``) for their metadata, in one read
transaction. A filter (``where`` as ``backends.search`` defines it) needs every row's
metadata: every whole row is read and checked. Nothing is cached between queries, so a query
always sees the file (a reader sees a writer's commits) and damage is found by the query that
meets it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import apsw
import numpy as np

from crashgate.backends import (
    Capability,
    CorruptStore,
    DamagePromise,
    Declaration,
    Env,
    Hit,
    Option,
    VectorBlock,
    VectorRecord,
    check_options,
)
from crashgate.reference.patterns.schema import COLUMNS as VALUE_COLUMNS
from crashgate.reference.patterns.schema import (
    CREATE,
    SCHEMA_VERSION,
    SELECT,
    SELECT_VECTORS,
    TABLE,
    decode_row,
    decode_vector,
    id_text,
    parse_id,
    to_row,
)
from crashgate.reference.sqlite_file import SqliteFile
from crashgate.reference.sqlite_store import OPTIONS as SQLITE_OPTIONS
from crashgate.reference.sqlite_store import checked_busy_timeout, durability_for
from crashgate.reference.vector_search import METRICS, check_where, exact_search

__all__ = ["OPTIONS", "AgentDB", "declaration_for", "open_agentdb"]

OPTIONS = {
    "journal_mode": SQLITE_OPTIONS["journal_mode"],
    "synchronous": SQLITE_OPTIONS["synchronous"],
    "metric": Option("cosine", METRICS, help="distance for queries (the guide's similarity "
                     "search over embeddings: cosine)"),
    "readonly": SQLITE_OPTIONS["readonly"],
    "busy_timeout": SQLITE_OPTIONS["busy_timeout"],
}
# PRAGMA table_info as (name, type, notnull, pk)
_TABLE_INFO = (("id", "TEXT", 0, 1), *((n, t, 0, 0) for n, t in VALUE_COLUMNS),
               ("embedding", "BLOB", 1, 0), ("vector_sum", "BLOB", 1, 0), ("sum", "BLOB", 1, 0))
_CHUNK = 500   # ids per IN (...): under SQLite's bound-parameter limit


def declaration_for(journal_mode: str, synchronous: str, metric: str) -> Declaration:
    """What a store opened with these (checked) options promises: durability as SQLite
    documents it for the modes (``sqlite_store.durability_for``)."""
    durability, why = durability_for(journal_mode, synchronous)
    return Declaration(
        durability=durability,
        capabilities=frozenset({Capability.VECTOR, Capability.BATCH,
                                Capability.METADATA_FILTER, Capability.SCHEMA_VERSION}),
        file_format=f"sqlite3/agentdb-patterns-{SCHEMA_VERSION}",
        metric=metric,
        damage=DamagePromise.DETECTED,
        undetected_damage=frozenset({"stale-sector", "truncation"}),
        notes={
            "damage": "PRAGMA integrity_check on open; a BLAKE2b sum per pattern over its id, "
                      "embedding and every column, checked on every read; SQLite's "
                      "CorruptError and undecodable fields are CorruptStore. Not detected, as "
                      "for the SQLite store: a lost write (a sector holding an older, "
                      "self-consistent version of itself) and a file cut to a length SQLite "
                      "reads as a valid smaller database",
            "durability": why,
            "options": f"journal_mode={journal_mode} synchronous={synchronous}",
            "batch": "upsert and remove each run in one transaction (BEGIN IMMEDIATE ... "
                     "COMMIT); all-or-nothing holds only with a journal on disk",
            "search": "brute force: every query reads and verifies every pattern and searches "
                      "the embeddings exactly (float64)",
            "schema": "the guide's pattern fields in their own columns when their type fits, "
                      "every other metadata key in a JSON column (schema.py)",
        },
    )


class AgentDB(SqliteFile):
    """An open AgentDB pattern file at ``path`` (module docstring). ``readonly``: a reader
    of a file a writer made (``SqliteFile``)."""

    SCHEMA_VERSION = SCHEMA_VERSION
    KIND = "AgentDB pattern store"

    def __init__(self, path: str, env: Env, journal_mode: str, synchronous: str, metric: str,
                 *, readonly: bool = False, busy_timeout: int = 5000) -> None:
        self._metric = metric
        self.declaration = declaration_for(journal_mode, synchronous, metric)
        super().__init__(path, env, journal_mode, synchronous, readonly=readonly,
                         busy_timeout=busy_timeout)

    # -- the schema (SqliteFile's hooks) ---------------------------------------------------

    def _create_schema(self) -> None:
        self._db.execute(CREATE).fetchall()

    def _migrate(self, version: int) -> None:
        raise AssertionError(f"no schema version before {SCHEMA_VERSION} (got {version})")

    def _check_schema(self, version: int) -> None:
        """The table's columns are the ones this store writes: a flipped bit in the schema
        text can rename one without failing ``integrity_check``."""
        try:
            got = tuple((row[1], str(row[2]).upper(), row[3], row[5])
                        for row in self._db.execute(f"PRAGMA table_info({TABLE})"))
        except UnicodeDecodeError as exc:
            raise CorruptStore(self.path, f"the schema of table {TABLE} does not decode: "
                               f"{exc}") from exc
        if got != _TABLE_INFO:
            raise CorruptStore(self.path, f"table {TABLE} has the columns "
                               f"{[c[0] for c in got]}, not the ones this store writes "
                               f"{[c[0] for c in _TABLE_INFO]}: its schema text is damaged")

    # -- writes ----------------------------------------------------------------------------

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or replace by id, all records in one transaction."""
        rows = [to_row(r) for r in records]
        dims = {len(row[-3]) // 8 for row in rows}
        marks = ", ".join("?" * len(_TABLE_INFO))
        with self._transaction("upsert"):
            first = self._db.execute(f"SELECT length(embedding) FROM {TABLE} LIMIT 1"
                                     ).fetchall()
            dims |= {int(first[0][0]) // 8} if first else set()  # type: ignore[arg-type]
            if len(dims) > 1:
                raise ValueError(f"embeddings of different dimensions in one store: "
                                 f"{sorted(dims)}")
            self._db.executemany(f"INSERT OR REPLACE INTO {TABLE} VALUES ({marks})", rows)

    def remove(self, ids: Iterable[int]) -> int:
        """Delete by id in one transaction; how many of them were live."""
        keys = _keys(ids)
        removed = 0
        with self._transaction("remove"):
            for key in keys:
                self._db.execute(f"DELETE FROM {TABLE} WHERE id = ?", (key,))
                removed += self._db.changes()
        return removed

    # -- reads -----------------------------------------------------------------------------

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One read transaction: the statements inside see one commit (a query's two reads
        must not straddle another connection's write). Under the write lock: the connection
        is shared, and a thread's write must not land inside it."""
        with self._write_lock:
            self._check_open()
            with self._errors():
                self._db.execute("BEGIN")
                try:
                    yield
                except BaseException:
                    if self._db.in_transaction and not (self._vfs and self._vfs.crashed):
                        with contextlib.suppress(apsw.Error):
                            self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")

    def _rows(self, ids: Iterable[int] | None = None) -> list[tuple[int, bytes, dict[str, Any]]]:
        """(id, embedding, metadata) of every row (of ``ids``' live ones), verified, by id."""
        self._check_open()
        out = []
        with self._errors():
            if ids is None:
                out = [decode_row(self.path, row) for row in self._db.execute(SELECT)]
            else:
                keys = _keys(ids)
                for start in range(0, len(keys), _CHUNK):
                    chunk = keys[start:start + _CHUNK]
                    out += [decode_row(self.path, row) for row in self._db.execute(
                        f"{SELECT} WHERE id IN ({','.join('?' * len(chunk))})", chunk)]
        out.sort(key=lambda r: r[0])
        return out

    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        check_where(where)   # a malformed filter is refused before anything is read
        if where:   # every row's metadata is needed: whole rows, each checked
            rows = self._rows()
            if not rows:
                return []
            return exact_search([r[0] for r in rows], _matrix([r[1] for r in rows], self.path),
                                [r[2] for r in rows], vector, k, self._metric, where)
        with self._snapshot():
            pairs = sorted((decode_vector(self.path, row)
                            for row in self._db.execute(SELECT_VECTORS)), key=lambda p: p[0])
            if not pairs:
                return []
            hits = exact_search([p[0] for p in pairs], _matrix([p[1] for p in pairs], self.path),
                                [{}] * len(pairs), vector, k, self._metric)
            # the hits' whole rows, checked against their sums, for the metadata
            metadata = {i: m for i, _, m in self._rows(h.id for h in hits)}
        return [Hit(h.id, h.distance, metadata[h.id]) for h in hits]

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        return [VectorRecord.of(i, np.frombuffer(e, dtype="<f8"), m)
                for i, e, m in self._rows(ids)]

    def fetch_block(self, ids: Iterable[int]) -> VectorBlock:
        """``fetch`` as arrays (``BulkFetch``): float64 rows."""
        rows = self._rows(ids)
        if not rows:
            return VectorBlock((), np.zeros((0, 0)), ())
        return VectorBlock(tuple(r[0] for r in rows), _matrix([r[1] for r in rows], self.path),
                           tuple(r[2] for r in rows))

    def count(self) -> int:
        self._check_open()
        with self._errors():
            rows = self._db.execute(f"SELECT count(*) FROM {TABLE}").fetchall()
        return int(rows[0][0])  # type: ignore[arg-type]

    def ids(self) -> list[int]:
        """Every live pattern id, sorted."""
        self._check_open()
        with self._errors():
            raw = self._db.execute(f"SELECT CAST(id AS BLOB) FROM {TABLE}").fetchall()
        out = []
        for (text,) in raw:
            try:
                out.append(parse_id(text if isinstance(text, bytes) else b"?"))
            except ValueError as exc:
                raise CorruptStore(self.path, f"a pattern id reads as {text!r}: {exc}") from exc
        return sorted(out)


def _keys(ids: Iterable[int]) -> list[str]:
    """The ``id`` column values of those ``ids`` that could be stored (others cannot be
    live), sorted and each once."""
    out = set()
    for i in ids:
        try:
            out.add(id_text(i))
        except ValueError:
            continue
    return sorted(out)


def _matrix(embeddings: list[bytes], path: str) -> np.ndarray:
    """The embeddings as one (n, d) float64 array; ``CorruptStore`` if their lengths differ
    (every upsert keeps one dimension, so only a row this store did not write can)."""
    if len({len(e) for e in embeddings}) > 1:
        raise CorruptStore(path, "the patterns' embeddings have different dimensions: "
                                 f"{sorted({len(e) // 8 for e in embeddings})}")
    d = len(embeddings[0]) // 8
    return np.frombuffer(b"".join(embeddings), dtype="<f8").reshape(len(embeddings), d)


def open_agentdb(path: str, env: Env, **options: str) -> AgentDB:
    """Open (or create) the AgentDB pattern file at ``path``.

    Options: ``journal_mode`` (WAL, DELETE, TRUNCATE, PERSIST, MEMORY, OFF; default WAL),
    ``synchronous`` (OFF, NORMAL, FULL, EXTRA; default FULL), ``metric`` (cosine, l2; default
    cosine), ``readonly`` (true, false; default false), ``busy_timeout`` (milliseconds >= 0,
    default 5000).
    """
    opts = check_options("agentdb", options, OPTIONS)
    return AgentDB(path, env, str(opts["journal_mode"]), str(opts["synchronous"]),
                   str(opts["metric"]), readonly=opts["readonly"] == "true",
                   busy_timeout=checked_busy_timeout("agentdb", opts["busy_timeout"]))
