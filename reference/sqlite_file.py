"""One SQLite database file with a versioned schema: the connection machinery that the SQLite
store (``sqlite_store.py``) and ARCH-001's mission database (``arch/missions_db.py``) share.

On the OS's own file system (``env.fs.native_path(path)`` is a path) the connection uses
SQLite's default VFS, so real OS locks apply between processes. On any other file system (the
harness's simulated disk) every byte goes through ``env.fs`` via ``RoutedVFS``, so crashes and
power loss hit SQLite's own journal and WAL protocol. There, WAL runs with
``locking_mode=EXCLUSIVE`` (the wal-index kept in heap memory, as the routed VFS has no shared
memory); a ``SqliteFile`` is one connection, so nothing is lost by it.

**Opening reads before it writes.** ``PRAGMA user_version`` and ``PRAGMA integrity_check``
come first, so a file from a newer schema is refused (``VersionTooNew`` with the subclass's
upgrade hint) before a byte is written, an implausible version (a damaged header) and a failed
integrity check are ``CorruptStore``, and the subclass's ``_check_schema`` compares the tables'
columns with the ones it writes. Then a writer sets the journal mode and ``synchronous`` and
brings the schema to ``SCHEMA_VERSION``:

- version 0 (a new file): ``_create_schema()`` and ``PRAGMA user_version = SCHEMA_VERSION``
  in one write transaction;
- an older version: ``_migrate(version)`` and the bump to ``SCHEMA_VERSION`` in one write
  transaction, **all steps at once** (v1 -> v3 is one transaction, not two): after a crash
  the file is at its old version or the current one, never in between, and a release that
  knows only the old version never sees a half-migrated file.

A reader (``readonly``) never creates, migrates or writes: a file at version 0 is
``FileNotFoundError``, an older one ``PermissionError`` naming the option.

**Per-record sums.** ``integrity_check`` sees SQLite's structure, not what a record holds: a
flipped byte inside a value is a valid record with another value. So the subclasses' records
carry ``record_sum`` of their fields, checked on every read (``_verified``).

Subclasses set the class attributes ``SCHEMA_VERSION``, ``KIND`` (what the file is, for
messages) and ``UPGRADE`` (the hint of ``VersionTooNew``), and implement ``_create_schema``,
``_migrate`` and ``_check_schema``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import posixpath
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import apsw

from crashgate.backends import CorruptStore, Declaration, Env, StoreClosed, VersionTooNew
from crashgate.reference.sqlite_vfs import RoutedVFS, has_wal_frames

__all__ = ["SqliteFile", "blob_field", "record_sum"]

_DAMAGED = (apsw.CorruptError, apsw.NotADBError)
_IN_DOUBT = (apsw.IOError, apsw.FullError)   # a write may or may not have reached the file
_IMPLAUSIBLE_VERSION = 1 << 16
_SUM_SIZE = 16


def record_sum(*fields: bytes) -> bytes:
    """The ``sum`` column of a record: BLAKE2b-128 of its fields, each length-prefixed (so no
    two records share an input). kv: (key as UTF-8, value); vectors: (row id as 8 signed LE
    bytes, vector, metadata)."""
    h = hashlib.blake2b(digest_size=_SUM_SIZE, person=b"crashgate-sqlite")
    for f in fields:
        h.update(len(f).to_bytes(8, "little"))
        h.update(f)
    return h.digest()


def blob_field(path: str, value: object, what: str) -> bytes:
    """A BLOB column's value; a record whose type byte was damaged reads as another type,
    which is ``CorruptStore`` naming ``what`` and the file ``path``."""
    if not isinstance(value, bytes):
        raise CorruptStore(path, f"the {what} holds {type(value).__name__} where a BLOB was "
                                 "written")
    return value


def _head(env: Env, path: str, size: int) -> bytes | None:
    """The first ``size`` bytes of ``path`` (fewer if it is shorter); None when it is missing."""
    try:
        f = env.fs.open(path, "r")
    except FileNotFoundError:
        return None
    try:
        return f.read(0, size)
    finally:
        f.close()


def _is_wal_file(env: Env, path: str) -> bool:
    """Whether the database header says WAL (read/write versions 2 at bytes 18-19)."""
    header = _head(env, path, 20) or b""
    return header.startswith(b"SQLite format 3\0") and 2 in header[18:20]


def _format_versions_problem(env: Env, path: str) -> str | None:
    """What is wrong with the header's file format versions (bytes 18-19: write and read
    version, 1 legacy or 2 WAL, sqlite.org/fileformat2.html), or None. SQLite opens a file
    whose write version is above 2 read-only and fails its first write: a damaged byte there
    must be reported as damage, not as a read-only database."""
    header = _head(env, path, 20) or b""
    if not header.startswith(b"SQLite format 3\0") or len(header) < 20:
        return None   # SQLite itself reports a file that is not a database
    write, read = header[18], header[19]
    if write in (1, 2) and read in (1, 2):
        return None
    return (f"the header's file format versions read write={write} read={read} (bytes 18-19; "
            "SQLite writes 1 or 2)")


class SqliteFile:
    """One connection to the SQLite database file at ``path`` (module docstring).

    ``journal_mode``/``synchronous`` are already-checked option values; ``readonly`` opens
    with ``SQLITE_OPEN_READONLY`` (a missing file is ``FileNotFoundError``, never created),
    sets neither mode (setting one is a write) and refuses every write with
    ``PermissionError``; ``busy_timeout`` (ms) is how long a statement waits for another
    connection's lock before ``SQLITE_BUSY``. A subclass sets ``declaration`` (and its own
    attributes) before calling ``__init__``, which opens the connection."""

    SCHEMA_VERSION: ClassVar[int]
    KIND: ClassVar[str] = "SQLite store"
    UPGRADE: ClassVar[str] = "pip install -U crashgate"

    declaration: Declaration
    _vfs: RoutedVFS | None
    _db: apsw.Connection

    def __init__(self, path: str, env: Env, journal_mode: str, synchronous: str, *,
                 readonly: bool = False, busy_timeout: int = 5000) -> None:
        self.path = path
        self._env = env
        self._modes = (journal_mode, synchronous)
        self.readonly = readonly
        self._busy_timeout = busy_timeout
        self._closed = False
        self._in_doubt = False
        # one connection: a thread's write must not run inside another thread's transaction
        self._write_lock = threading.RLock()
        self._connect()

    # -- the schema (the subclass's) ---------------------------------------------------------

    def _create_schema(self) -> None:
        """Create every table of ``SCHEMA_VERSION``, inside the creating transaction (which
        sets ``user_version`` after it)."""
        raise NotImplementedError

    def _migrate(self, version: int) -> None:
        """Bring the schema from ``version`` (1 <= version < ``SCHEMA_VERSION``) to
        ``SCHEMA_VERSION``, inside the one migrating transaction (which sets
        ``user_version`` after it)."""
        raise NotImplementedError

    def _check_schema(self, version: int) -> None:
        """``CorruptStore`` unless the tables of a file at ``version`` (>= 1) have the columns
        this class writes (a flipped bit in the schema text can rename a column without
        failing ``integrity_check``)."""
        raise NotImplementedError

    def _check_rowid_keys(self, version: int) -> None:
        """``CorruptStore`` unless every record keyed by its table's rowid matches its sum.

        ``integrity_check`` compares every index with its table, so a damaged TEXT key no
        longer matches its index entry; but a rowid key has no index to disagree with. A
        flipped bit in it moves the record to another id (the b-tree stays in order when the
        neighbours allow), and a read by the old id then finds nothing: an absence that no
        per-read check can see. So the open checks such records whole. No such tables: nothing
        to check (the default)."""

    # -- opening -----------------------------------------------------------------------------

    def _connect(self) -> None:
        """Open the connection: check the file, set the modes, create or migrate the schema.
        On open, and again after an I/O error (``_reconnect``)."""
        path, env = self.path, self._env
        journal_mode, synchronous = self._modes
        parent = posixpath.dirname(path) or "."
        self._vfs = None
        if self.readonly:
            if not env.fs.exists(path):
                raise FileNotFoundError(errno.ENOENT, f"no {self.KIND} to read here (readonly="
                                        "true never creates one); open it once without "
                                        "readonly=true, or give the path of one", path)
        elif not env.fs.exists(parent):
            env.fs.makedirs(parent)
            env.fs.sync_dir(posixpath.dirname(parent.rstrip("/")) or "/")
        # a WAL with frames in it before the open: what closing must not copy into the file
        # until the file is known to be ours (below)
        frames = has_wal_frames(env.fs, path)
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
            # Until the file is known to be ours, closing must not checkpoint a WAL that holds
            # frames: the last connection to close a WAL database copies the WAL into it and
            # deletes the WAL, which would rewrite a refused newer file whose commits are still
            # in its WAL (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE). A WAL the open itself created is
            # empty: closing then removes it, and a refused open leaves no file behind.
            # A reader of a WAL that held frames never checkpoints either: its close would
            # write a file it opened read-only (an I/O error on the routed VFS, whose handle is
            # read-only). One that found no frames checkpoints nothing and removes the empty WAL
            # its open created, leaving the files as it found them.
            if frames:
                self._db.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
            with self._errors():
                if exclusive:
                    self._pragma("locking_mode", "EXCLUSIVE")
                version = self._check_file()
                if frames and not self.readonly:
                    self._db.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0)
                if self.readonly:
                    self._check_readable(version)
                    return
                self._set_modes(journal_mode, synchronous, exclusive)
                if version < self.SCHEMA_VERSION:
                    # a new file or an older one: the schema and its version in one transaction
                    with self._transaction("creating the schema" if version == 0
                                           else f"migrating schema version {version}"):
                        if version == 0:
                            self._create_schema()
                        else:
                            self._migrate(version)
                        self._pragma("user_version", str(self.SCHEMA_VERSION))
            # The database file is an entry of its directory, and SQLite syncs directories only
            # for journals and WAL files. Every open syncs it, not just the one that created the
            # file: that one may have crashed before doing so.
            env.fs.sync_dir(parent)
        except BaseException:
            self._release()
            raise

    def _check_readable(self, version: int) -> None:
        """A reader reads a file at this class's schema version only: making the schema or
        migrating an older one is a writer's job."""
        if version == 0:   # a writer that died before its schema's commit made nothing
            raise FileNotFoundError(errno.ENOENT, f"no {self.KIND} to read here: the file "
                                    "holds no crashgate schema yet (version 0), and "
                                    "readonly=true never creates one; open it once without "
                                    "readonly=true", self.path)
        if version < self.SCHEMA_VERSION:
            raise PermissionError(f"{self.path} is at schema version {version}, older than "
                                  f"{self.SCHEMA_VERSION}, and readonly=true cannot migrate "
                                  "it; open it once without readonly=true (a writer migrates "
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
        if version < 0 or version >= _IMPLAUSIBLE_VERSION:
            # no crashgate writes such a version: a damaged header, not a newer file (SQLite
            # reads the 4 header bytes as signed: a flipped top bit is a negative version)
            raise CorruptStore(self.path, f"the header's schema version reads {version}")
        if version > self.SCHEMA_VERSION:
            raise VersionTooNew(self.path, found=version, supported=self.SCHEMA_VERSION,
                                what="schema version", upgrade=self.UPGRADE)
        if (damaged := _format_versions_problem(self._env, self.path)) is not None:
            raise CorruptStore(self.path, damaged)
        try:
            problems = [row[0] for row in self._db.execute("PRAGMA integrity_check")]
        except apsw.TooBigError as exc:
            # the check writes nothing and reads only the file: a record there claims a length
            # beyond SQLite's limit (found by the damage row: an overwritten sector)
            raise CorruptStore(self.path, f"PRAGMA integrity_check: SQLite reports {exc} (a "
                                          "record claims a length beyond SQLite's limit)"
                               ) from exc
        if problems != ["ok"]:
            raise CorruptStore(self.path, "PRAGMA integrity_check: " + "; ".join(problems[:5]))
        if version >= 1:
            self._check_schema(version)
            self._check_rowid_keys(version)
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

    # -- records -----------------------------------------------------------------------------

    def _verified(self, what: str, fields: tuple[bytes, ...], got: object) -> None:
        """``CorruptStore`` unless ``got`` is the sum of ``fields`` (the record as read)."""
        if got != record_sum(*fields):
            raise CorruptStore(self.path, f"the {what} does not match its checksum (the file "
                                          "changed under SQLite: damage at rest)")

    # -- plumbing ----------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Damage becomes ``CorruptStore``; a crash inside the VFS comes back out as itself."""
        try:
            yield
        except _DAMAGED as exc:
            self._reraise_crash()
            raise CorruptStore(self.path, f"SQLite reports {exc}") from exc
        except UnicodeDecodeError as exc:
            # every text this store writes is UTF-8: a value read back as text that is not was
            # changed at rest (its bytes, or the record's type byte turning a BLOB into TEXT)
            raise CorruptStore(self.path, f"a value SQLite returns as text is not UTF-8 "
                                          f"({exc.reason} at byte {exc.start}): damage at "
                                          "rest") from exc
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
    def _transaction(self, what: str = "a write transaction", *,
                     durable: bool = False) -> Iterator[None]:
        """One write transaction: all of it commits or none of it does. ``durable``: the
        commit is fsynced whatever ``synchronous`` says (``PRAGMA synchronous=FULL`` for this
        transaction), for a caller that removes or renames the source of what it wrote once
        the commit returns."""
        with self._write_lock:
            self._check_open()
            self._check_writable(what)
            with self._errors(), self._synchronous_full(durable):
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

    @contextmanager
    def _synchronous_full(self, on: bool = True) -> Iterator[None]:
        """``PRAGMA synchronous=FULL`` inside (when ``on`` and the file's is weaker), the
        file's own after: set outside any transaction (SQLite ignores it inside one)."""
        weaker = on and self._modes[1] in ("OFF", "NORMAL")
        if weaker:
            self._pragma("synchronous", "FULL")
        try:
            yield
        finally:
            if weaker and not (self._vfs and self._vfs.crashed):
                self._pragma("synchronous", self._modes[1])

    def flush(self) -> None:
        """Make every commit so far durable, whatever ``synchronous`` says: in WAL mode a
        passive checkpoint with ``synchronous=FULL``, which syncs the WAL first (it never waits
        for readers); in the other journal modes a commit already syncs the file, unless
        ``synchronous=OFF``, which promises nothing (``durability_for``)."""
        with self._write_lock:
            self._check_open()
            if self.readonly or self._modes[0] != "WAL":
                return
            with self._errors(), self._synchronous_full():
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

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
