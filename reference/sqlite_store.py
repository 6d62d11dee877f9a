"""The SQLite store: the real SQLite engine (through apsw) holding a key-value table and a
vector table, certified per ``journal_mode`` and ``synchronous``.

On the OS's own file system (``env.fs.native_path(path)`` is a path) it uses SQLite's default
VFS, so real OS locks apply between processes. On any other file system (the harness's
simulated disk) every byte goes through ``env.fs`` via ``RoutedVFS``, so crashes and power loss
hit SQLite's own journal and WAL protocol. There, WAL runs with ``locking_mode=EXCLUSIVE`` (the
wal-index kept in heap memory, as the routed VFS has no shared memory); the store is one
connection, so nothing is lost by it.

Schema (``PRAGMA user_version`` = 3)::

    kv(key TEXT PRIMARY KEY, value BLOB NOT NULL,
       sum BLOB NOT NULL)         -- record_sum over the key and the value
    vectors(id INTEGER PRIMARY KEY,   -- the u64 id reinterpreted as a signed 64-bit integer
            vector BLOB NOT NULL,     -- little-endian float64
            metadata TEXT NOT NULL,   -- JSON object
            sum BLOB NOT NULL)        -- record_sum over the id, the vector and the metadata
    q_values, goap_plans              -- ADR-072's relational records (sqlite_relational.py)

Opening reads before it writes: the schema version and ``PRAGMA integrity_check`` come first,
so a file from a newer schema is refused unmodified and a damaged one is reported, never used.
The connection, opening, versioning and transaction machinery is ``SqliteFile``'s
(``sqlite_file.py``), the key-value operations ``SqliteKV``'s (``sqlite_kv.py``); this module
holds the store's schema, its migrations, and the vector operations.

**Damage at rest.** ``integrity_check`` sees SQLite's structure (pages, b-trees, indexes) but
not what a record holds: a flipped byte inside a value is a valid record with another value.
So every record carries ``sum``, a 16-byte BLAKE2b of its fields (length-prefixed, so no two
records share an input), written with the record and checked on every read before anything
is decoded. The vectors' id is their rowid, which no index repeats for ``integrity_check`` to
compare: a flipped bit in it moves a record to another id, and a read by the old id finds
nothing. So every open also checks every vector record against its sum
(``_check_rowid_keys``). Keys and metadata are read as bytes (``CAST(... AS BLOB)``) so that
text that is no longer UTF-8 is reported, not raised by apsw. A mismatch, an undecodable
field, or SQLite's own ``CorruptError`` / "malformed" is ``CorruptStore`` naming the key or
id and the file.
(SQLite's checksum VFS, ``cksumvfs``, would check whole pages, but it is a loadable extension
that the apsw build does not carry, and it wraps the OS VFS, not the routed one.)

**Older files** are migrated on open, by a writer, in one transaction that ends by setting
``user_version`` to 3. Version 1 (no ``sum`` columns): the columns are added and the sum of
every existing record is computed. Records written before the migration are only as
trustworthy as the file was then (``integrity_check`` runs first); from then on every read is
checked. Version 2 (no relational tables): the tables are created (``IF NOT EXISTS``: a
version-3 file whose version was set back has them, and keeps its rows). A release from
before the migration refuses the migrated file as too new, so it can never write a record
without a sum, nor miss the relational tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from crashgate.backends import (
    BadOption,
    Capability,
    CorruptStore,
    DamagePromise,
    Declaration,
    Durability,
    Env,
    Hit,
    Option,
    VectorRecord,
    check_options,
)
from crashgate.reference.row_ids import from_row_id, storable_row_ids, to_row_id
from crashgate.reference.sqlite_backup import SqliteBackup
from crashgate.reference.sqlite_file import SqliteFile, blob_field, record_sum
from crashgate.reference.sqlite_kv import SqliteKV, key_text
from crashgate.reference.sqlite_relational import (
    RELATIONAL_COLUMNS,
    RELATIONAL_TABLES,
    SqliteRelational,
)
from crashgate.reference.vector_search import METRICS, check_where, exact_search

__all__ = ["OPTIONS", "SCHEMA_VERSION", "SqliteStore", "checked_busy_timeout",
           "declaration_for", "durability_for", "open_sqlite", "record_sum"]

SCHEMA_VERSION = 3
JOURNAL_MODES = ("WAL", "DELETE", "TRUNCATE", "PERSIST", "MEMORY", "OFF")
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
OPTIONS = {
    "journal_mode": Option("WAL", JOURNAL_MODES, help="SQLite PRAGMA journal_mode"),
    "synchronous": Option("FULL", SYNCHRONOUS, help="SQLite PRAGMA synchronous"),
    "metric": Option("l2", METRICS, help="distance for vector queries"),
    "readonly": Option("false", ("true", "false"), help="open an existing file as a reader: "
                       "nothing created, migrated or written; every write refused"),
    "busy_timeout": Option("5000", convert=int, help="milliseconds a statement waits for "
                           "another connection's lock before SQLITE_BUSY"),
}
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, sum BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY, vector BLOB NOT NULL, metadata TEXT NOT NULL, sum BLOB NOT NULL);
{RELATIONAL_TABLES}"""
# PRAGMA table_info as (name, type, notnull, pk) of the columns _SCHEMA creates
_COLUMNS = {
    "kv": (("key", "TEXT", 0, 1), ("value", "BLOB", 1, 0)),
    "vectors": (("id", "INTEGER", 0, 1), ("vector", "BLOB", 1, 0), ("metadata", "TEXT", 1, 0)),
}
_SUM_COLUMN = ("sum", "BLOB", 1, 0)


def _row_id_bytes(row_id: int) -> bytes:
    return row_id.to_bytes(8, "little", signed=True)


def durability_for(journal_mode: str, synchronous: str) -> tuple[Durability, str]:
    """What SQLite's documentation promises for a commit, and why (for ``Declaration.notes``).

    Sources: https://www.sqlite.org/pragma.html#pragma_synchronous,
    https://www.sqlite.org/pragma.html#pragma_journal_mode and https://www.sqlite.org/wal.html.
    """
    if journal_mode in ("OFF", "MEMORY"):
        return Durability.NONE, (
            f"journal_mode={journal_mode}: no rollback journal on disk, so a crash in the middle "
            "of a transaction can leave the database corrupt (pragma.html#pragma_journal_mode); "
            "nothing is promised")
    if synchronous == "OFF":
        return Durability.PROCESS_CRASH, (
            "synchronous=OFF: SQLite never syncs; commits survive an application crash but on "
            "power loss the database may be corrupted (pragma.html#pragma_synchronous)")
    if journal_mode == "WAL":
        if synchronous == "NORMAL":
            return Durability.PROCESS_CRASH, (
                "WAL with synchronous=NORMAL: the WAL is synced only at checkpoints; always "
                "consistent, but a commit may roll back after power loss (wal.html, "
                "pragma.html#pragma_synchronous)")
        return Durability.POWER_LOSS, (
            f"WAL with synchronous={synchronous}: the WAL is synced at every commit "
            "(pragma.html#pragma_synchronous)")
    if synchronous == "NORMAL":
        return Durability.PROCESS_CRASH, (
            f"journal_mode={journal_mode} with synchronous=NORMAL: SQLite syncs less often than "
            "FULL and documents a small chance of corruption on power loss in rollback modes; "
            "no power-loss durability is claimed (pragma.html#pragma_synchronous)")
    if journal_mode == "DELETE" and synchronous == "FULL":
        return Durability.PROCESS_CRASH, (
            "DELETE with synchronous=FULL: a commit is the unlink of the journal, and the "
            "directory is not synced after it; after power loss the journal can reappear and "
            "roll the last commit back. synchronous=EXTRA exists to close exactly this "
            "(pragma.html#pragma_synchronous). Consistent, but not power-loss durable")
    return Durability.POWER_LOSS, (
        f"journal_mode={journal_mode} with synchronous={synchronous}: the commit point (journal "
        "deleted with a directory sync, truncated or its header zeroed) is synced before the "
        "commit returns (pragma.html#pragma_synchronous)")


def declaration_for(journal_mode: str, synchronous: str, metric: str = "l2") -> Declaration:
    """The declaration of a store opened with these (already checked) options."""
    durability, why = durability_for(journal_mode, synchronous)
    # restore is one transaction: atomic only with a journal on disk (sqlite_backup.py)
    backup = {Capability.BACKUP} if journal_mode not in ("OFF", "MEMORY") else set()
    return Declaration(
        durability=durability,
        capabilities=frozenset({Capability.KV, Capability.VECTOR, Capability.BATCH,
                                Capability.METADATA_FILTER, Capability.SCHEMA_VERSION,
                                Capability.RELATIONAL, *backup}),
        file_format=f"sqlite3/crashgate-schema-{SCHEMA_VERSION}",
        metric=metric,
        damage=DamagePromise.DETECTED,
        undetected_damage=frozenset({"stale-sector", "truncation"}),
        notes={
            "damage": "PRAGMA integrity_check on open; a BLAKE2b sum per record, checked on "
                      "every read, and on open for every vector record (its id is its rowid, "
                      "which no index repeats: a flipped id would move the record unseen); "
                      "SQLite's CorruptError and undecodable fields are "
                      "CorruptStore. Not detected: a lost write (a sector holding an older, "
                      "self-consistent version of itself), since nothing in the file ties a "
                      "page to the file's history (SQLite's checksum VFS would not see it "
                      "either, and is not in this apsw build); and a database file cut to a "
                      "length SQLite reads as a valid smaller database (to 0 bytes it is a new "
                      "empty one, and in WAL mode the log's later frames then replay over it)",
            "durability": why,
            "options": f"journal_mode={journal_mode} synchronous={synchronous}",
            "batch": "write_batch, upsert and remove each run in one transaction (BEGIN "
                     "IMMEDIATE ... COMMIT); all-or-nothing holds only with a journal on disk",
            "relational": "Q-values and GOAP plans in their own tables, each row with its "
                          "sum; q_value_update is one BEGIN IMMEDIATE transaction",
            "locking": "on a non-native file system WAL runs with locking_mode=EXCLUSIVE "
                       "(wal-index in heap memory; the routed VFS has no shared memory)",
        },
    )








def _int(value: object) -> int:
    """An INTEGER column (a rowid or the vectors' id, which SQLite keeps as integers)."""
    assert isinstance(value, int), value
    return value


class SqliteStore(SqliteFile, SqliteKV, SqliteRelational, SqliteBackup):
    """Key-value and vector store in one SQLite database file at ``path``, with ADR-072's
    relational records (``SqliteRelational``).

    ``readonly``: a reader of a file a writer made. It opens the connection with
    ``SQLITE_OPEN_READONLY`` (a missing file is ``FileNotFoundError``, never created), keeps
    the file's journal mode (``journal_mode`` and ``synchronous`` are not set: setting them
    is a write), refuses a file it would have to create the schema in or migrate, and
    refuses every write with ``PermissionError`` naming the option. Each statement outside a
    transaction reads the newest commit, so a reader sees what writers commit after it
    opened. On the OS's file system a reader of a WAL file uses its ``-shm``/``-wal``
    (SQLite creates them, empty, when no writer has them open: sqlite.org/wal.html,
    "Read-Only Databases"); on the routed VFS it reads a WAL file in EXCLUSIVE locking mode
    (heap wal-index), so it waits for, and then keeps out, a writer on the same disk.

    ``busy_timeout`` (ms): how long a statement waits for another connection's lock
    (``Connection.set_busy_timeout``, SQLite's ``sqlite3_busy_timeout``) before it fails
    with ``SQLITE_BUSY``: a reader opening while a writer in another process commits or
    checkpoints, or a writer committing while a rollback-journal reader holds SHARED."""

    SCHEMA_VERSION = SCHEMA_VERSION
    _record_sum = staticmethod(record_sum)   # the sum the relational rows carry too

    def __init__(self, path: str, env: Env, journal_mode: str, synchronous: str,
                 metric: str, *, readonly: bool = False, busy_timeout: int = 5000) -> None:
        self._metric = metric
        self.declaration = declaration_for(journal_mode, synchronous, metric)
        super().__init__(path, env, journal_mode, synchronous, readonly=readonly,
                         busy_timeout=busy_timeout)

    # -- the schema (SqliteFile's hooks) ---------------------------------------------------

    def _create_schema(self) -> None:
        self._db.execute(_SCHEMA).fetchall()

    def _check_schema(self, version: int) -> None:
        """The tables' columns are the ones this store writes (for version 1, with or without
        the ``sum`` columns a version-2 file set back has). The schema is text SQLite parses on
        open: a flipped bit there can rename a column without breaking ``integrity_check``,
        and every later query would fail as a programming error rather than damage."""
        tables = {t: (c + (_SUM_COLUMN,), {c} if version == 1 else set())
                  for t, c in _COLUMNS.items()}
        # before version 3 the relational tables are absent, or there from a later version
        tables |= {t: (c, {()} if version < 3 else set()) for t, c in RELATIONAL_COLUMNS.items()}
        for table, (columns, also) in tables.items():
            try:
                got = tuple((row[1], str(row[2]).upper(), row[3], row[5])
                            for row in self._db.execute(f"PRAGMA table_info({table})"))
            except UnicodeDecodeError as exc:   # a name whose bytes are no longer UTF-8
                raise CorruptStore(self.path, f"the schema of table {table} does not decode: "
                                   f"{exc}") from exc
            if got != columns and got not in also:
                raise CorruptStore(self.path, f"table {table} has the columns "
                                   f"{[c[0] for c in got]}, not the ones this store writes "
                                   f"{[c[0] for c in columns]}: its schema text is damaged")

    def _migrate(self, version: int) -> None:
        """To ``SCHEMA_VERSION`` inside ``SqliteFile``'s one migrating transaction: 1 -> 2 adds
        the ``sum`` columns and fills them (a sum already there, from a later file whose
        version was set back, must verify); 2 -> 3 creates the relational tables."""
        if version < 2:
            self._add_sums()
        self._db.execute(RELATIONAL_TABLES)

    def _add_sums(self) -> None:
        """Version 1 -> 2, inside ``_migrate``'s transaction."""
        for table in ("kv", "vectors"):
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if "sum" not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN sum BLOB NOT NULL "
                                 "DEFAULT x''")
        sums: list[tuple[bytes, int]] = []
        for rowid, key, value, got in self._db.execute(
                "SELECT rowid, CAST(key AS BLOB), value, sum FROM kv").fetchall():
            what = f"kv record of key {key_text(key)!r}"
            fields: tuple[bytes, ...] = (blob_field(self.path, key, what),
                                         blob_field(self.path, value, what))
            sums.append((self._sum_to_write(what, fields, got), _int(rowid)))
        self._db.executemany("UPDATE kv SET sum = ? WHERE rowid = ?", sums)
        sums = []
        for row_id, vec, meta, got in self._db.execute(
                "SELECT id, vector, CAST(metadata AS BLOB), sum FROM vectors").fetchall():
            what = f"vector record of id {from_row_id(_int(row_id))}"
            fields = (_row_id_bytes(_int(row_id)), blob_field(self.path, vec, what),
                      blob_field(self.path, meta, what))
            sums.append((self._sum_to_write(what, fields, got), _int(row_id)))
        self._db.executemany("UPDATE vectors SET sum = ? WHERE id = ?", sums)

    def _sum_to_write(self, what: str, fields: tuple[bytes, ...], got: object) -> bytes:
        want = record_sum(*fields)
        if got not in (b"", None) and got != want:
            raise CorruptStore(self.path, f"the {what} does not match its checksum")
        return want

    # -- vectors ---------------------------------------------------------------------------

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or replace by id, all records in one transaction."""
        rows = []
        for r in records:
            row_id = to_row_id(r.id)
            vec = np.asarray(r.vector, dtype="<f8").tobytes()
            meta = json.dumps(dict(r.metadata), sort_keys=True)
            rows.append((row_id, vec, meta,
                         record_sum(_row_id_bytes(row_id), vec, meta.encode("utf-8"))))
        dims = {len(blob) // 8 for _, blob, _, _ in rows}
        with self._transaction("upsert"):
            first = self._db.execute("SELECT length(vector) FROM vectors LIMIT 1").fetchall()
            dims |= {int(first[0][0]) // 8} if first else set()  # type: ignore[arg-type]
            if len(dims) > 1:
                raise ValueError(f"vectors of different dimensions in one store: {sorted(dims)}")
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors(id, vector, metadata, sum) VALUES (?, ?, ?, ?)",
                rows)

    def _verified_vectors(self, where_sql: str = "", params: Sequence[int] = ()
                          ) -> Iterator[tuple[int, tuple[bytes, bytes, bytes]]]:
        """(id, (id bytes, vector bytes, metadata bytes)) of the vector records, each checked
        against its sum (which covers the id) before anything is decoded."""
        for row_id, blob, meta, got in self._db.execute(
                f"SELECT id, vector, CAST(metadata AS BLOB), sum FROM vectors {where_sql}",
                tuple(params)):
            if not isinstance(row_id, int):
                raise CorruptStore(self.path, f"a vector record's id reads as {row_id!r}")
            vid = from_row_id(row_id)
            what = f"vector record of id {vid}"
            fields = (_row_id_bytes(row_id), blob_field(self.path, blob, what),
                      blob_field(self.path, meta, what))
            self._verified(what, fields, got)
            yield vid, fields

    def _check_rowid_keys(self, version: int) -> None:
        """The vectors' id is their rowid (``SqliteFile._check_rowid_keys``): every vector
        record is checked against its sum on open. Before version 2 there are no sums; the
        migration computes them."""
        if version >= 2:
            for _ in self._verified_vectors():
                pass

    def _records(self, where_sql: str = "", params: Sequence[int] = ()) -> list[VectorRecord]:
        """The records, each checked against its sum before it is decoded."""
        out = []
        for vid, fields in self._verified_vectors(where_sql, params):
            what = f"vector record of id {vid}"
            try:   # verified, so this fails only for a record written wrong, not damaged
                vec = np.frombuffer(fields[1], dtype="<f8")
                metadata = json.loads(fields[2].decode("utf-8"))
                if not isinstance(metadata, dict):
                    raise TypeError(f"metadata is {type(metadata).__name__}, not an object")
            except (ValueError, TypeError) as exc:
                raise CorruptStore(self.path, f"the {what} does not decode: {exc}") from exc
            out.append(VectorRecord(vid, tuple(float(x) for x in vec), metadata))
        return out

    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        self._check_open()
        check_where(where)   # a bad filter is refused on an empty store too
        with self._errors():
            recs = self._records()
        if not recs:
            return []
        recs.sort(key=lambda r: r.id)
        matrix = np.array([r.vector for r in recs], dtype=np.float64)
        return exact_search([r.id for r in recs], matrix, [r.metadata for r in recs],
                            vector, k, self._metric, where)

    def remove(self, ids: Iterable[int]) -> int:
        """Delete by id in one transaction; how many of them were live."""
        row_ids = storable_row_ids(ids)
        removed = 0
        with self._transaction("remove"):
            for row_id in row_ids:
                self._db.execute("DELETE FROM vectors WHERE id = ?", (row_id,))
                removed += self._db.changes()
        return removed

    def count(self) -> int:
        self._check_open()
        with self._errors():
            rows = self._db.execute("SELECT count(*) FROM vectors").fetchall()
        return int(rows[0][0])  # type: ignore[arg-type]

    def ids(self) -> list[int]:
        """Every live vector id, sorted (as the RVF store's ``ids``)."""
        self._check_open()
        with self._errors():
            rows = self._db.execute("SELECT id FROM vectors").fetchall()
        return sorted(from_row_id(_int(r[0])) for r in rows)

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        self._check_open()
        row_ids = storable_row_ids(ids)
        out: list[VectorRecord] = []
        with self._errors():
            for start in range(0, len(row_ids), 500):  # under SQLite's bound-parameter limit
                chunk = row_ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                out += self._records(f"WHERE id IN ({marks})", chunk)
        return sorted(out, key=lambda r: r.id)

    def restore(self, src: str) -> None:
        """``SqliteBackup.restore``; refused for a reader."""
        self._check_writable("restore")
        super().restore(src)


def open_sqlite(path: str, env: Env, **options: str) -> SqliteStore:
    """Open (or create) the SQLite database file at ``path``.

    Options: ``journal_mode`` (WAL, DELETE, TRUNCATE, PERSIST, MEMORY, OFF; default WAL),
    ``synchronous`` (OFF, NORMAL, FULL, EXTRA; default FULL), ``metric`` (l2, cosine),
    ``readonly`` (true, false; default false: ``SqliteStore``), ``busy_timeout``
    (milliseconds >= 0, default 5000).
    """
    opts = check_options("sqlite", options, OPTIONS)
    return SqliteStore(path, env, str(opts["journal_mode"]), str(opts["synchronous"]),
                       str(opts["metric"]), readonly=opts["readonly"] == "true",
                       busy_timeout=checked_busy_timeout("sqlite", opts["busy_timeout"]))


def checked_busy_timeout(backend: str, value: object) -> int:
    """``busy_timeout`` as ``check_options`` converted it (an int), refused below 0 with
    ``BadOption`` naming ``backend`` (a negative timeout would mean no wait at all)."""
    busy = int(value)  # type: ignore[call-overload]
    if busy < 0:
        raise BadOption(backend, "busy_timeout", str(busy),   # as given, as check_options
                        ["0 (fail at once with SQLITE_BUSY)", "a positive number of "
                         "milliseconds to wait for another connection's lock"])
    return busy
