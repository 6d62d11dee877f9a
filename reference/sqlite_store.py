"""The SQLite store: the real SQLite engine (through apsw) holding a key-value table and a
vector table, certified per ``journal_mode`` and ``synchronous``.

On the OS's own file system (``env.fs.native_path(path)`` is a path) it uses SQLite's default
VFS, so real OS locks apply between processes. On any other file system (the harness's
simulated disk) every byte goes through ``env.fs`` via ``RoutedVFS``, so crashes and power loss
hit SQLite's own journal and WAL protocol. There, WAL runs with ``locking_mode=EXCLUSIVE`` (the
wal-index kept in heap memory, as the routed VFS has no shared memory); the store is one
connection, so nothing is lost by it.

Schema (``PRAGMA user_version`` = 1)::

    kv(key TEXT PRIMARY KEY, value BLOB NOT NULL)
    vectors(id INTEGER PRIMARY KEY,   -- the u64 id reinterpreted as a signed 64-bit integer
            vector BLOB NOT NULL,     -- little-endian float64
            metadata TEXT NOT NULL)   -- JSON object

Opening reads before it writes: the schema version and ``PRAGMA integrity_check`` come first,
so a file from a newer schema is refused unmodified and a damaged one is reported, never used.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import apsw
import numpy as np

from crashgate.backends import (
    Capability,
    CorruptStore,
    Declaration,
    Durability,
    Env,
    Hit,
    Option,
    StoreClosed,
    VectorRecord,
    VersionTooNew,
    check_options,
)
from crashgate.reference.sqlite_vfs import RoutedVFS
from crashgate.reference.vector_search import METRICS, exact_search

__all__ = ["OPTIONS", "SCHEMA_VERSION", "SqliteStore", "declaration_for", "durability_for",
           "open_sqlite"]

SCHEMA_VERSION = 1
JOURNAL_MODES = ("WAL", "DELETE", "TRUNCATE", "PERSIST", "MEMORY", "OFF")
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
OPTIONS = {
    "journal_mode": Option("WAL", JOURNAL_MODES, help="SQLite PRAGMA journal_mode"),
    "synchronous": Option("FULL", SYNCHRONOUS, help="SQLite PRAGMA synchronous"),
    "metric": Option("l2", METRICS, help="distance for vector queries"),
}
_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY, vector BLOB NOT NULL, metadata TEXT NOT NULL);
PRAGMA user_version = 1;
COMMIT;
"""
_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1
_DAMAGED = (apsw.CorruptError, apsw.NotADBError)


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
    return Declaration(
        durability=durability,
        capabilities=frozenset({Capability.KV, Capability.VECTOR, Capability.BATCH,
                                Capability.METADATA_FILTER, Capability.SCHEMA_VERSION}),
        file_format=f"sqlite3/crashgate-schema-{SCHEMA_VERSION}",
        metric=metric,
        notes={
            "durability": why,
            "options": f"journal_mode={journal_mode} synchronous={synchronous}",
            "batch": "write_batch, upsert and remove each run in one transaction (BEGIN "
                     "IMMEDIATE ... COMMIT); all-or-nothing holds only with a journal on disk",
            "locking": "on a non-native file system WAL runs with locking_mode=EXCLUSIVE "
                       "(wal-index in heap memory; the routed VFS has no shared memory)",
        },
    )


def _to_row_id(id_: int) -> int:
    """u64 -> i64, order-preserving within each half (SQLite's INTEGER is signed 64-bit)."""
    i = int(id_)
    if not 0 <= i < _U64:
        raise ValueError(f"vector id {id_!r} is not a u64 (0 <= id < 2**64)")
    return i - _U64 if i > _I64_MAX else i


def _row_ids(ids: Iterable[int]) -> list[int]:
    """The row ids of those ``ids`` that could be stored (others cannot be live), sorted."""
    return sorted({_to_row_id(i) for i in ids if 0 <= int(i) < _U64})


def _from_row_id(row_id: int) -> int:
    return row_id + _U64 if row_id < 0 else row_id


def _check_key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key must be str, got {type(key).__name__}: {key!r}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"key {key!r} holds a lone surrogate; SQLite TEXT holds valid UTF-8 only. "
            "Use a key that encodes to UTF-8."
        ) from None
    return key


def _is_wal_file(env: Env, path: str) -> bool:
    """Whether the database header says WAL (read/write versions 2 at bytes 18-19)."""
    try:
        f = env.fs.open(path, "r")
    except FileNotFoundError:
        return False
    try:
        header = f.read(0, 20)
    finally:
        f.close()
    return header.startswith(b"SQLite format 3\0") and 2 in header[18:20]


class SqliteStore:
    """Key-value and vector store in one SQLite database file at ``path``."""

    def __init__(self, path: str, env: Env, journal_mode: str, synchronous: str,
                 metric: str) -> None:
        self.path = path
        self._env = env
        self._metric = metric
        self._closed = False
        self.declaration = declaration_for(journal_mode, synchronous, metric)
        parent = posixpath.dirname(path) or "."
        if not env.fs.exists(parent):
            env.fs.makedirs(parent)
            env.fs.sync_dir(posixpath.dirname(parent.rstrip("/")) or "/")
        native = env.fs.native_path(path)
        self._vfs: RoutedVFS | None = None
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        if native is not None:
            self._db = apsw.Connection(native, flags=flags)
            exclusive = False
        else:
            # Decide before the first read: a WAL database needs EXCLUSIVE from the start here.
            exclusive = journal_mode == "WAL" or _is_wal_file(env, path)
            self._vfs = RoutedVFS(env.fs)
            self._db = apsw.Connection(path, flags=flags, vfs=self._vfs.name)
        try:
            with self._errors():
                if exclusive:
                    self._pragma("locking_mode", "EXCLUSIVE")
                version = self._check_file()
                self._set_modes(journal_mode, synchronous, exclusive)
                if version == 0:  # a new file: tables and version in one transaction
                    self._db.execute(_SCHEMA).fetchall()
            # The database file is an entry of its directory, and SQLite syncs directories only
            # for journals and WAL files. Every open syncs it, not just the one that created the
            # file: that one may have crashed before doing so.
            env.fs.sync_dir(parent)
        except BaseException:
            self._release()
            raise

    # -- opening ---------------------------------------------------------------------------

    def _pragma(self, name: str, value: str | None = None) -> Any:
        sql = f"PRAGMA {name}" if value is None else f"PRAGMA {name}={value}"
        rows = self._db.execute(sql).fetchall()
        return rows[0][0] if rows else None

    def _check_file(self) -> int:
        """The schema version, after refusing a newer one and a damaged file."""
        version = int(self._pragma("user_version"))
        if version > SCHEMA_VERSION:
            raise VersionTooNew(self.path, found=version, supported=SCHEMA_VERSION,
                                what="schema version", upgrade="pip install -U crashgate")
        problems = [row[0] for row in self._db.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise CorruptStore(self.path, "PRAGMA integrity_check: " + "; ".join(problems[:5]))
        return version

    def _set_modes(self, journal_mode: str, synchronous: str, exclusive: bool) -> None:
        got = str(self._pragma("journal_mode", journal_mode)).upper()
        if got != journal_mode:
            raise RuntimeError(f"SQLite kept journal_mode={got} when asked for {journal_mode}")
        if exclusive and journal_mode != "WAL" and self._vfs is not None:
            # The file was WAL; now it is not. Back to NORMAL locking, else SQLite zeroes the
            # rollback journal instead of deleting it and DELETE would not mean DELETE. The
            # change takes effect at the next access, hence the read.
            self._pragma("locking_mode", "NORMAL")
            self._db.execute("SELECT count(*) FROM sqlite_schema").fetchall()
        self._pragma("synchronous", synchronous)

    # -- plumbing --------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Damage becomes ``CorruptStore``; a crash inside the VFS comes back out as itself."""
        try:
            yield
        except _DAMAGED as exc:
            self._reraise_crash()
            raise CorruptStore(self.path, f"SQLite reports {exc}") from exc
        except apsw.Error:
            self._reraise_crash()
            raise

    def _reraise_crash(self) -> None:
        if self._vfs is not None and self._vfs.crashed is not None:
            raise self._vfs.crashed from None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction: all of it commits or none of it does."""
        self._check_open()
        with self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except Exception:
                if not self._db.in_transaction or (self._vfs and self._vfs.crashed):
                    raise
                with contextlib.suppress(apsw.Error):  # the first error is the one to report
                    self._db.execute("ROLLBACK")
                raise

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(self.path)

    def _release(self) -> None:
        try:
            self._db.close()
        finally:
            if self._vfs is not None:
                self._vfs.unregister()

    # -- key-value -------------------------------------------------------------------------

    def put(self, key: str, value: bytes) -> None:
        self._check_open()
        with self._errors():
            self._db.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)",
                             (_check_key(key), bytes(value)))

    def get(self, key: str) -> bytes | None:
        self._check_open()
        with self._errors():
            rows = self._db.execute("SELECT value FROM kv WHERE key = ?",
                                    (_check_key(key),)).fetchall()
        return bytes(rows[0][0]) if rows else None  # type: ignore[arg-type]

    def delete(self, key: str) -> None:
        self._check_open()
        with self._errors():
            self._db.execute("DELETE FROM kv WHERE key = ?", (_check_key(key),))

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        self._check_open()
        out: list[tuple[str, bytes]] = []
        # Keys sort as UTF-8 bytes (BINARY collation), which is code-point order, as in Python:
        # the keys with the prefix are one run starting at the prefix.
        with self._errors():
            for key, value in self._db.execute(
                    "SELECT key, value FROM kv WHERE key >= ? ORDER BY key", (_check_key(prefix),)):
                if not key.startswith(prefix):
                    break
                out.append((key, bytes(value)))
        return out

    def write_batch(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> None:
        """Deletes then puts, in one transaction."""
        dels = [(_check_key(k),) for k in deletes]
        rows = [(_check_key(k), bytes(v)) for k, v in puts.items()]
        with self._transaction():
            self._db.executemany("DELETE FROM kv WHERE key = ?", dels)
            self._db.executemany("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", rows)

    # -- vectors ---------------------------------------------------------------------------

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or replace by id, all records in one transaction."""
        rows = []
        for r in records:
            vec = np.asarray(r.vector, dtype="<f8")
            rows.append((_to_row_id(r.id), vec.tobytes(),
                         json.dumps(dict(r.metadata), sort_keys=True)))
        dims = {len(blob) // 8 for _, blob, _ in rows}
        with self._transaction():
            first = self._db.execute("SELECT length(vector) FROM vectors LIMIT 1").fetchall()
            dims |= {int(first[0][0]) // 8} if first else set()  # type: ignore[arg-type]
            if len(dims) > 1:
                raise ValueError(f"vectors of different dimensions in one store: {sorted(dims)}")
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors(id, vector, metadata) VALUES (?, ?, ?)", rows)

    def _records(self, where_sql: str = "", params: Sequence[int] = ()) -> list[VectorRecord]:
        out = []
        for row_id, blob, meta in self._db.execute(
                f"SELECT id, vector, metadata FROM vectors {where_sql}", tuple(params)):
            vec = np.frombuffer(blob, dtype="<f8")
            out.append(VectorRecord(_from_row_id(row_id), tuple(float(x) for x in vec),
                                    json.loads(meta)))
        return out

    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        self._check_open()
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
        row_ids = _row_ids(ids)
        removed = 0
        with self._transaction():
            for row_id in row_ids:
                self._db.execute("DELETE FROM vectors WHERE id = ?", (row_id,))
                removed += self._db.changes()
        return removed

    def count(self) -> int:
        self._check_open()
        with self._errors():
            rows = self._db.execute("SELECT count(*) FROM vectors").fetchall()
        return int(rows[0][0])  # type: ignore[arg-type]

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        self._check_open()
        row_ids = _row_ids(ids)
        out: list[VectorRecord] = []
        with self._errors():
            for start in range(0, len(row_ids), 500):  # under SQLite's bound-parameter limit
                chunk = row_ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                out += self._records(f"WHERE id IN ({marks})", chunk)
        return sorted(out, key=lambda r: r.id)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._errors():
            self._release()

    def __del__(self) -> None:
        # Dropped without close(): a crash in the harness abandoned it. SQLite's own close (its
        # rollback or WAL checkpoint) then meets the crashed disk's dead handles; force=True
        # keeps those expected errors from being printed as unraisable, and the VFS name is
        # freed for good.
        if getattr(self, "_closed", True):
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._db.close(force=True)
        if self._vfs is not None:
            self._vfs.unregister()


def open_sqlite(path: str, env: Env, **options: str) -> SqliteStore:
    """Open (or create) the SQLite database file at ``path``.

    Options: ``journal_mode`` (WAL, DELETE, TRUNCATE, PERSIST, MEMORY, OFF; default WAL),
    ``synchronous`` (OFF, NORMAL, FULL, EXTRA; default FULL), ``metric`` (l2, cosine).
    """
    opts = check_options("sqlite", options, OPTIONS)
    return SqliteStore(path, env, str(opts["journal_mode"]), str(opts["synchronous"]),
                       str(opts["metric"]))
