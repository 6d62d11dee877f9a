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

**Damage at rest.** ``integrity_check`` sees SQLite's structure (pages, b-trees, indexes) but
not what a record holds: a flipped byte inside a value is a valid record with another value.
So every record carries ``sum``, a 16-byte BLAKE2b of its fields (length-prefixed, so no two
records share an input), written with the record and checked on every read before anything
is decoded; keys and metadata are read as bytes (``CAST(... AS BLOB)``) so that text that is
no longer UTF-8 is reported, not raised by apsw. A mismatch, an undecodable field, or SQLite's
own ``CorruptError`` / "malformed" is ``CorruptStore`` naming the key or id and the file.
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

import contextlib
import errno
import hashlib
import json
import posixpath
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import apsw
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
    StoreClosed,
    VectorRecord,
    VersionTooNew,
    check_options,
)
from crashgate.reference.sqlite_backup import SqliteBackup
from crashgate.reference.sqlite_relational import (
    RELATIONAL_COLUMNS,
    RELATIONAL_TABLES,
    SqliteRelational,
)
from crashgate.reference.sqlite_vfs import RoutedVFS
from crashgate.reference.vector_search import METRICS, exact_search

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
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, sum BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY, vector BLOB NOT NULL, metadata TEXT NOT NULL, sum BLOB NOT NULL);
{RELATIONAL_TABLES}
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""
# PRAGMA table_info as (name, type, notnull, pk) of the columns _SCHEMA creates
_COLUMNS = {
    "kv": (("key", "TEXT", 0, 1), ("value", "BLOB", 1, 0)),
    "vectors": (("id", "INTEGER", 0, 1), ("vector", "BLOB", 1, 0), ("metadata", "TEXT", 1, 0)),
}
_SUM_COLUMN = ("sum", "BLOB", 1, 0)
_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1
_DAMAGED = (apsw.CorruptError, apsw.NotADBError)
_IN_DOUBT = (apsw.IOError, apsw.FullError)   # a write may or may not have reached the file
_IMPLAUSIBLE_VERSION = 1 << 16
_SUM_SIZE = 16


def record_sum(*fields: bytes) -> bytes:
    """The ``sum`` column of a record: BLAKE2b-128 of its fields, each length-prefixed.
    kv: (key as UTF-8, value); vectors: (row id as 8 signed LE bytes, vector, metadata)."""
    h = hashlib.blake2b(digest_size=_SUM_SIZE, person=b"crashgate-sqlite")
    for f in fields:
        h.update(len(f).to_bytes(8, "little"))
        h.update(f)
    return h.digest()


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
                      "every read; SQLite's CorruptError and undecodable fields are "
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


def _kv_row(key: str, value: bytes) -> tuple[str, bytes, bytes]:
    """(key, value, sum) of one kv record as it is written."""
    key, value = _check_key(key), bytes(value)
    return key, value, record_sum(key.encode("utf-8"), value)


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


def _blob(path: str, value: object, what: str) -> bytes:
    """A BLOB column's value; a record whose type byte was damaged reads as another type."""
    if not isinstance(value, bytes):
        raise CorruptStore(path, f"the {what} holds {type(value).__name__} where a BLOB was "
                                 "written")
    return value


def _int(value: object) -> int:
    """An INTEGER column (a rowid or the vectors' id, which SQLite keeps as integers)."""
    assert isinstance(value, int), value
    return value


def _key_text(raw: object) -> str:
    """A key read as bytes, for a message (damaged keys may no longer be UTF-8)."""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else repr(raw)


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


class SqliteStore(SqliteRelational, SqliteBackup):
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

    _record_sum = staticmethod(record_sum)   # the sum the relational rows carry too

    def __init__(self, path: str, env: Env, journal_mode: str, synchronous: str,
                 metric: str, *, readonly: bool = False, busy_timeout: int = 5000) -> None:
        self.path = path
        self._env = env
        self._metric = metric
        self._modes = (journal_mode, synchronous)
        self.readonly = readonly
        self._busy_timeout = busy_timeout
        self._closed = False
        self._in_doubt = False
        # one connection: a thread's write must not run inside another thread's transaction
        self._write_lock = threading.RLock()
        self.declaration = declaration_for(journal_mode, synchronous, metric)
        self._connect()

    def _connect(self) -> None:
        """Open the connection: check the file, set the modes, create or migrate the tables.
        On open, and again after an I/O error (``_reconnect``)."""
        path, env = self.path, self._env
        journal_mode, synchronous = self._modes
        parent = posixpath.dirname(path) or "."
        self._vfs: RoutedVFS | None = None
        if self.readonly:
            if not env.fs.exists(path):
                raise FileNotFoundError(errno.ENOENT, "no SQLite store to read here (readonly="
                                        "true never creates one); open it once without "
                                        "readonly=true, or give the path of one", path)
        elif not env.fs.exists(parent):
            env.fs.makedirs(parent)
            env.fs.sync_dir(posixpath.dirname(parent.rstrip("/")) or "/")
        native = env.fs.native_path(path)
        flags = (apsw.SQLITE_OPEN_READONLY if self.readonly
                 else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
        if native is not None:
            self._db = apsw.Connection(native, flags=flags)
            exclusive = False
        else:
            # Decide before the first read: a WAL database needs EXCLUSIVE from the start here.
            # A reader goes by the file alone: it sets no journal mode.
            exclusive = (journal_mode == "WAL" and not self.readonly) or _is_wal_file(env, path)
            self._vfs = RoutedVFS(env.fs)
            self._db = apsw.Connection(path, flags=flags, vfs=self._vfs.name)
        try:
            self._db.set_busy_timeout(self._busy_timeout)
            with self._errors():
                if exclusive:
                    self._pragma("locking_mode", "EXCLUSIVE")
                version = self._check_file()
                if self.readonly:
                    self._check_readable(version)
                    return
                self._set_modes(journal_mode, synchronous, exclusive)
                if version == 0:  # a new file: tables and version in one transaction
                    self._db.execute(_SCHEMA).fetchall()
                elif version < SCHEMA_VERSION:
                    self._migrate(version)
            # The database file is an entry of its directory, and SQLite syncs directories only
            # for journals and WAL files. Every open syncs it, not just the one that created the
            # file: that one may have crashed before doing so.
            env.fs.sync_dir(parent)
        except BaseException:
            self._release()
            raise

    # -- opening ---------------------------------------------------------------------------

    def _check_readable(self, version: int) -> None:
        """A reader reads a file at this store's schema version only: making the schema or
        migrating an older one is a writer's job (module docstring)."""
        if version == 0:   # a writer that died before its schema's commit made nothing
            raise FileNotFoundError(errno.ENOENT, "no SQLite store to read here: the file "
                                    "holds no crashgate schema yet (version 0), and "
                                    "readonly=true never creates one; open it once without "
                                    "readonly=true", self.path)
        if version < SCHEMA_VERSION:
            raise PermissionError(f"{self.path} is at schema version {version}, older than "
                                  f"{SCHEMA_VERSION}, and readonly=true cannot migrate it; "
                                  "open it once without readonly=true (a writer migrates "
                                  "it), then read")

    def _check_writable(self, what: str) -> None:
        """``PermissionError`` naming the option, before a write starts, for a reader."""
        if self.readonly:
            raise PermissionError(f"{what}: {self.path} was opened with readonly=true; open "
                                  "it with readonly=false to change it")

    def _pragma(self, name: str, value: str | None = None) -> Any:
        sql = f"PRAGMA {name}" if value is None else f"PRAGMA {name}={value}"
        rows = self._db.execute(sql).fetchall()
        return rows[0][0] if rows else None

    def _check_file(self) -> int:
        """The schema version, after refusing a newer one and a damaged file."""
        version = int(self._pragma("user_version"))
        if version >= _IMPLAUSIBLE_VERSION:
            # no crashgate writes such a version: a damaged header, not a newer file
            raise CorruptStore(self.path, f"the header's schema version reads {version}")
        if version > SCHEMA_VERSION:
            raise VersionTooNew(self.path, found=version, supported=SCHEMA_VERSION,
                                what="schema version", upgrade="pip install -U crashgate")
        problems = [row[0] for row in self._db.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise CorruptStore(self.path, "PRAGMA integrity_check: " + "; ".join(problems[:5]))
        if version >= 1:
            self._check_schema(version)
        return version

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
        """To ``SCHEMA_VERSION`` in one transaction: 1 -> 2 adds the ``sum`` columns and fills
        them (a sum already there, from a later file whose version was set back, must verify);
        2 -> 3 creates the relational tables."""
        with self._transaction():
            if version < 2:
                self._add_sums()
            self._db.execute(RELATIONAL_TABLES)
            self._pragma("user_version", str(SCHEMA_VERSION))

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
            what = f"kv record of key {_key_text(key)!r}"
            fields: tuple[bytes, ...] = (_blob(self.path, key, what),
                                         _blob(self.path, value, what))
            sums.append((self._sum_to_write(what, fields, got), _int(rowid)))
        self._db.executemany("UPDATE kv SET sum = ? WHERE rowid = ?", sums)
        sums = []
        for row_id, vec, meta, got in self._db.execute(
                "SELECT id, vector, CAST(metadata AS BLOB), sum FROM vectors").fetchall():
            what = f"vector record of id {_from_row_id(_int(row_id))}"
            fields = (_row_id_bytes(_int(row_id)), _blob(self.path, vec, what),
                      _blob(self.path, meta, what))
            sums.append((self._sum_to_write(what, fields, got), _int(row_id)))
        self._db.executemany("UPDATE vectors SET sum = ? WHERE id = ?", sums)

    def _sum_to_write(self, what: str, fields: tuple[bytes, ...], got: object) -> bytes:
        want = record_sum(*fields)
        if got not in (b"", None) and got != want:
            raise CorruptStore(self.path, f"the {what} does not match its checksum")
        return want

    def _verified(self, what: str, fields: tuple[bytes, ...], got: object) -> None:
        """``CorruptStore`` unless ``got`` is the sum of ``fields`` (the record as read)."""
        if got != record_sum(*fields):
            raise CorruptStore(self.path, f"the {what} does not match its checksum (the file "
                                          "changed under SQLite: damage at rest)")

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
        except apsw.Error as exc:
            self._reraise_crash()
            if isinstance(exc, _IN_DOUBT):
                self._in_doubt = True
            # e.g. SQLError "malformed database schema (...)", or "unsupported file format"
            # (a damaged header byte: SQLite's file format numbers are 1..4, never newer here)
            if any(m in str(exc) for m in ("malformed", "unsupported file format")):
                raise CorruptStore(self.path, f"SQLite reports {exc}") from exc
            raise

    def _reraise_crash(self) -> None:
        if self._vfs is not None and self._vfs.crashed is not None:
            raise self._vfs.crashed from None

    @contextmanager
    def _transaction(self, what: str = "a write transaction") -> Iterator[None]:
        """One write transaction: all of it commits or none of it does."""
        with self._write_lock:
            self._check_open()
            self._check_writable(what)
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
        if self._in_doubt:
            self._reconnect()

    def _reconnect(self) -> None:
        """After an I/O error the last write may or may not be in the file: a COMMIT that
        raised can have left a whole transaction in the WAL, which SQLite recovers at the next
        open, while this connection goes on without it (a DELETE of its rows then changes
        nothing, and the rows come back). So the next call opens the database again first,
        and sees what the file holds."""
        self._in_doubt = False
        with contextlib.suppress(apsw.Error):
            self._release()
        try:
            self._connect()
        except BaseException:
            self._in_doubt = True   # still in doubt: the next call tries again
            raise

    def _release(self) -> None:
        try:
            self._db.close()
        finally:
            if self._vfs is not None:
                self._vfs.unregister()

    # -- key-value -------------------------------------------------------------------------

    def put(self, key: str, value: bytes) -> None:
        with self._write_lock:   # not inside another thread's open transaction
            self._check_open()
            self._check_writable("put")
            with self._errors():
                self._db.execute("INSERT OR REPLACE INTO kv(key, value, sum) VALUES (?, ?, ?)",
                                 _kv_row(key, value))

    def get(self, key: str) -> bytes | None:
        self._check_open()
        with self._errors():
            rows = self._db.execute("SELECT value, sum FROM kv WHERE key = ?",
                                    (_check_key(key),)).fetchall()
        if not rows:
            return None
        what = f"kv record of key {key!r}"
        value = _blob(self.path, rows[0][0], what)
        self._verified(what, (key.encode("utf-8"), value), rows[0][1])
        return value

    def delete(self, key: str) -> None:
        with self._write_lock:
            self._check_open()
            self._check_writable("delete")
            with self._errors():
                self._db.execute("DELETE FROM kv WHERE key = ?", (_check_key(key),))

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        self._check_open()
        out: list[tuple[str, bytes]] = []
        # Keys sort as UTF-8 bytes (BINARY collation), which is code-point order, as in Python:
        # the keys with the prefix are one run starting at the prefix.
        with self._errors():
            for raw, value, got in self._db.execute(
                    "SELECT CAST(key AS BLOB), value, sum FROM kv WHERE key >= ? ORDER BY key",
                    (_check_key(prefix),)):
                what = f"kv record of key {_key_text(raw)!r}"
                fields = (_blob(self.path, raw, what), _blob(self.path, value, what))
                self._verified(what, fields, got)
                key = fields[0].decode("utf-8")   # verified: it is the UTF-8 that was written
                if not key.startswith(prefix):
                    break
                out.append((key, fields[1]))
        return out

    def write_batch(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> None:
        """Deletes then puts, in one transaction."""
        dels = [(_check_key(k),) for k in deletes]
        rows = [_kv_row(k, v) for k, v in puts.items()]
        with self._transaction("write_batch"):
            self._db.executemany("DELETE FROM kv WHERE key = ?", dels)
            self._db.executemany("INSERT OR REPLACE INTO kv(key, value, sum) VALUES (?, ?, ?)",
                                 rows)

    # -- vectors ---------------------------------------------------------------------------

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or replace by id, all records in one transaction."""
        rows = []
        for r in records:
            row_id = _to_row_id(r.id)
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

    def _records(self, where_sql: str = "", params: Sequence[int] = ()) -> list[VectorRecord]:
        """The records, each checked against its sum before it is decoded."""
        out = []
        for row_id, blob, meta, got in self._db.execute(
                f"SELECT id, vector, CAST(metadata AS BLOB), sum FROM vectors {where_sql}",
                tuple(params)):
            if not isinstance(row_id, int):
                raise CorruptStore(self.path, f"a vector record's id reads as {row_id!r}")
            vid = _from_row_id(row_id)
            what = f"vector record of id {vid}"
            fields = (_row_id_bytes(row_id), _blob(self.path, blob, what),
                      _blob(self.path, meta, what))
            self._verified(what, fields, got)
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
        return sorted(_from_row_id(_int(r[0])) for r in rows)

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

    def restore(self, src: str) -> None:
        """``SqliteBackup.restore``; refused for a reader."""
        self._check_writable("restore")
        super().restore(src)

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
