"""Backup and restore of the SQLite store (``Backupable``) with SQLite's online backup API.

**Backup.** apsw's ``Connection.backup`` copies every page of the live database into a new
database at ``backup_temp_path(dest)``, opened through the same kind of VFS as the store (the
routed one on the harness's disk), so every byte goes through ``env.fs``. The backup API reads
the source through its pager, so a commit still in the WAL is in the copy (sqlite.org/backup.html;
SQLite's ``walbak.test``). The copy is then made a one-file, rollback-journal database (a WAL
source's header says WAL, and a WAL database cannot be opened read-only without its ``-wal``),
fsynced, checked as ``restore`` checks it, and renamed into place (``publish``). The temporary
database runs with ``journal_mode=OFF``: a crash leaves a temporary file that is never renamed,
so a journal would protect nothing.

**What a complete backup is.** It opens, read-only, as a database whose schema version is this
store's, whose ``PRAGMA integrity_check`` passes and whose tables are the ones this store
writes (the checks the store runs on open, ``_check_file``), and every record of which matches
its sum (the checks the store runs on every read: every record is read once). Anything else is
``CorruptStore`` naming the file.

**Restore.** The backup API the other way: from the checked backup into the live connection.
SQLite runs the copy as one write transaction of the live database, through its own journal or
WAL, so a crash during it rolls back to the old contents or keeps the whole backup; the live
connection is the store's, so the store stays open and sees the new contents at once.

``SqliteBackup`` is a mixin: ``SqliteStore`` inherits it and provides what the host block names.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

import apsw

from crashgate.backends import (
    CorruptStore,
    Env,
    backup_temp_path,
    publish,
    remove_if_present,
)
from crashgate.reference.sqlite_vfs import RoutedVFS, file_connection

if TYPE_CHECKING:
    from crashgate.backends import VectorRecord

__all__ = ["SqliteBackup"]

_CANNOT_OPEN = (apsw.CantOpenError, apsw.NotADBError, apsw.CorruptError)


class SqliteBackup:
    """``Backupable`` for ``SqliteStore`` (module docstring)."""

    # -- the host's (SqliteStore's) --
    path: str
    _env: Env
    _db: apsw.Connection
    _vfs: RoutedVFS | None
    _write_lock: threading.RLock
    _closed: bool
    _in_doubt: bool
    if TYPE_CHECKING:
        def _check_open(self) -> None: ...
        def _errors(self) -> AbstractContextManager[None]: ...
        def _reraise_crash(self) -> None: ...
        def _check_file(self) -> int: ...
        def _records(self, where_sql: str = "", params: Any = ()) -> list[VectorRecord]: ...
        def scan(self, prefix: str = "") -> list[tuple[str, bytes]]: ...
        def q_values(self, state: str) -> dict[str, Any]: ...
        def goap_retrieve(self, plan_id: str) -> dict[str, Any] | None: ...
        def relational_states(self) -> list[str]: ...
        def goap_ids(self) -> list[str]: ...

    def backup(self, dest: str) -> None:
        """Write a checked copy of the database to ``dest`` (module docstring); the store is
        not changed. ``CorruptStore`` if the copy does not check (the store is damaged)."""
        fs = self._env.fs
        tmp = backup_temp_path(dest)
        with self._write_lock:   # no write of this store's threads lands mid-copy
            self._check_open()
            # a crashed backup's leftovers; its journal would be rolled into the new copy
            remove_if_present(fs, tmp, tmp + "-journal", tmp + "-wal")
            try:
                self._copy_to(tmp)
                f = fs.open(tmp, "r+")
                try:
                    f.sync()
                finally:
                    f.close()
                with self._opened(tmp, readonly=True) as view:
                    view._check_backup()
            except Exception:
                with contextlib.suppress(Exception):   # the first error is the one to report
                    remove_if_present(fs, tmp, tmp + "-journal", tmp + "-wal")
                raise
            publish(fs, tmp, dest)

    def restore(self, src: str) -> None:
        """Replace the whole database with the backup at ``src`` in one transaction; a missing,
        partial or damaged backup is ``CorruptStore`` naming ``src``, the store unchanged."""
        with self._write_lock:
            self._check_open()
            if not self._env.fs.exists(src):
                raise CorruptStore(src, "there is no backup at this path (a backup that never "
                                        "finished leaves none); give the path backup() wrote")
            with self._opened(src, readonly=True) as view:
                view._check_backup()
                self._check_open()   # after an I/O error: the live connection, reopened
                self._copy_pages(into=self, source=view)

    # -- plumbing ----------------------------------------------------------------------------

    def _copy_to(self, tmp: str) -> None:
        """Every page of the live database into a new database at ``tmp`` (not yet synced)."""
        with self._opened(tmp, readonly=False) as target:
            conn = target._db
            with target._errors():
                # a WAL source's page 1 says WAL: the copy then needs the heap wal-index
                # that only EXCLUSIVE gives on the routed VFS, until it is converted below
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
                conn.execute("PRAGMA journal_mode=OFF")
                conn.execute("PRAGMA synchronous=OFF")   # synced once, whole, by backup()
            self._copy_pages(into=target, source=self)
            with target._errors():
                if str(conn.execute("PRAGMA journal_mode").fetchall()[0][0]).lower() == "wal":
                    conn.execute("PRAGMA journal_mode=DELETE")   # one file, opens read-only

    def _copy_pages(self, *, into: Any, source: Any) -> None:
        """Every page of ``source``'s database into ``into``'s (each the store or a view), in
        one step: one read transaction of the source, one write transaction of the target,
        committed at the end. A crash from either side's VFS comes out as itself; damage is
        read from the source, so it is named by the source's path."""
        try:
            with into._db.backup("main", source._db, "main") as copy:
                copy.step()
        except apsw.Error as exc:
            source._reraise_crash()
            into._reraise_crash()
            if into is self and isinstance(exc, (apsw.IOError, apsw.FullError)):
                self._in_doubt = True   # the commit may or may not be in the file: reconnect
            if isinstance(exc, (apsw.CorruptError, apsw.NotADBError)):
                raise CorruptStore(source.path, f"SQLite reports {exc}") from exc
            raise

    @contextmanager
    def _opened(self, path: str, *, readonly: bool) -> Iterator[Any]:
        """A connection to the database file ``path``, through the VFS the store would use
        for it, wrapped as a store of this class that is never written through (``view``):
        the store's own open checks and verified reads then run on it unchanged."""
        with file_connection(self._env.fs, path, readonly=readonly, prefix="crashgate-backup",
                             cannot_open=_CANNOT_OPEN) as (conn, vfs):
            view = object.__new__(type(self))
            vars(view).update(vars(self))   # its options, metric and declaration
            view.path, view._db, view._vfs = path, conn, vfs
            view._write_lock, view._closed, view._in_doubt = threading.RLock(), False, False
            try:
                yield view
            finally:
                view._closed = True   # never closed as a store (``__del__``): closed here

    def _check_backup(self) -> None:
        """On a ``view`` of a backup: the store's open checks, then every record read once
        through the store's verified reads (module docstring, "What a complete backup is")."""
        from crashgate.reference.sqlite_store import SCHEMA_VERSION  # it imports this module
        with self._errors():
            version = self._check_file()
            if version != SCHEMA_VERSION:
                raise CorruptStore(self.path, f"it holds schema version {version}, not "
                                   f"{SCHEMA_VERSION}: not a whole backup of this store (an "
                                   "empty or cut-short file reads as version 0)")
            self.scan("")
            self._records()
            for state in self.relational_states():
                self.q_values(state)
            for plan_id in self.goap_ids():
                self.goap_retrieve(plan_id)
