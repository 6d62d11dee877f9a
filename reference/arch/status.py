"""Reading an ARCH-001 phase adapter's directory without creating or changing anything in it:
what ``crashgate arch status`` reports, and the read-only view of a ``missions.db`` that
``crashgate arch export`` and ``crashgate arch import --dry-run`` read.

**Why not just ``readonly=true``.** A read-only SQLite connection to a WAL database creates
its ``-wal`` and ``-shm`` files when no writer has them (sqlite.org/wal.html, "Read-Only
Databases"; checked: apsw 3.54 leaves both behind after ``close``). A view (``open_view``)
therefore reads a WAL file in one of two ways:

- its ``-wal`` and ``-shm`` exist (a writer has it open, or one died): an ordinary read-only
  connection, which uses them and creates nothing (it may write SQLite's shared index in the
  ``-shm``, never data); it takes SQLite's locks, so a commit is never seen half done;
- neither exists (no connection has the file open): ``immutable=1``, which opens no side file
  and takes no lock. A writer could start meanwhile, so the view notes the files' identity
  (size, times, inode, which side files exist) at open, and ``maybe_torn()`` says whether any
  of it moved: a reader checks after its last read and reads again (``read_status`` does,
  three times) or refuses what it read. A writer that opens, checkpoints and closes within
  one tick of the file system's timestamps, leaving the size alone, is the case this cannot
  see.

A file with one of ``-wal``/``-shm`` and not the other is not opened (reading it would create
the missing one): the next writer's open recovers it. A rollback-journal file is read with an
ordinary read-only connection, which creates nothing.

**The view is a reader of the real class** (``MissionDB``, the SQLite store for
``control.db``): the same sums are checked on every read, and every write is refused. Its open
runs no check that refuses: it records the schema version and ``PRAGMA integrity_check``'s rows
(``found_version``, ``integrity``) for the caller to report, and checks the tables' columns only
when the file is at the class's version and intact (``sound``).
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from typing import Any

import apsw

from crashgate.backends import CorruptStore, VersionTooNew, os_env
from crashgate.reference.arch.json_state import is_backup, legacy_files
from crashgate.reference.arch.missions_db import MissionDB
from crashgate.reference.arch.phases import ARCHIVE, MISSIONS_DB
from crashgate.reference.sqlite_file import _IMPLAUSIBLE_VERSION
from crashgate.reference.sqlite_store import SqliteStore
from crashgate.reference.stages.control import Divergence, StageControl

__all__ = ["ArchStatus", "DbStatus", "Unreadable", "open_view", "read_status"]

CONTROL_DB = "control.db"
_SIDE = ("-wal", "-shm", "-journal")
_READS = 3


class Unreadable(Exception):
    """A database a view will not open, or one that changed under every read; the message
    names the file and what to do."""


def _identity(path: str) -> tuple[object, ...]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
            *(os.path.exists(path + s) for s in _SIDE))


def _is_wal(path: str) -> bool:
    with open(path, "rb") as fh:
        header = fh.read(20)
    return header.startswith(b"SQLite format 3\0") and 2 in header[18:20]


class _View:
    """Mixin before a ``SqliteFile`` class: its open reads without creating anything (module
    docstring) and refuses nothing; ``found_version``, ``integrity``, ``sound``,
    ``maybe_torn``."""

    path: str
    _db: apsw.Connection
    _vfs: Any
    _immutable: bool
    _before: tuple[object, ...]
    _busy_timeout: int
    SCHEMA_VERSION: int
    KIND: str
    UPGRADE: str

    def _connect(self) -> None:
        path = self.path
        if not os.path.isfile(path):
            raise FileNotFoundError(2, f"no {self.KIND} here", path)
        self._before = _identity(path)
        wal, shm = self._before[-3:-1]
        immutable = self._immutable = not wal and not shm and _is_wal(path)
        if wal != shm and _is_wal(path):
            raise Unreadable(f"{path}: its {'-wal' if wal else '-shm'} file is there and its "
                             f"{'-shm' if wal else '-wal'} file is not, so reading it would "
                             "create one; open the adapter (or database) once as a writer, "
                             "which recovers it, then look again")
        uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro" + (
            "&immutable=1" if immutable else "")
        self._vfs = None
        self._db = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
        try:
            self._db.set_busy_timeout(self._busy_timeout)
            with self._errors():   # type: ignore[attr-defined]
                version = self._db.execute("PRAGMA user_version").fetchall()[0][0]
                assert isinstance(version, int), version   # SQLite's header field: an int
                self.found_version = version
                self.integrity = tuple(str(r[0]) for r in self._db.execute(
                    "PRAGMA integrity_check"))
                if self.sound:
                    self._check_schema(self.found_version)   # type: ignore[attr-defined]
        except BaseException:
            self._db.close()
            raise

    @property
    def sound(self) -> bool:
        """At this class's schema version and ``integrity_check`` found nothing."""
        return self.found_version == self.SCHEMA_VERSION and self.integrity == ("ok",)

    def problem(self) -> str | None:
        """Why the file needs a person (newer than this code, damaged), with the fix; None
        when it is sound or only older (``older``)."""
        v = self.found_version
        if v >= _IMPLAUSIBLE_VERSION:   # no crashgate writes one: a damaged header, as the
            # open of every SqliteFile judges it
            return str(CorruptStore(self.path, f"the header's schema version reads {v}"))
        if v > self.SCHEMA_VERSION:
            return str(VersionTooNew(self.path, found=v, supported=self.SCHEMA_VERSION,
                                     what="schema version", upgrade=self.UPGRADE))
        if self.integrity != ("ok",):
            return str(CorruptStore(self.path, "PRAGMA integrity_check: "
                                    + "; ".join(self.integrity[:5])))
        return None

    def older(self) -> str | None:
        """What to know about an intact file older than this class's schema, else None."""
        v = self.found_version
        if v >= self.SCHEMA_VERSION or self.integrity != ("ok",):
            return None
        if v == 0:
            return "it holds no schema yet (version 0): no writer finished creating it"
        return (f"schema version {v}, older than {self.SCHEMA_VERSION}: the next writer's open "
                "migrates it, in one transaction")

    def maybe_torn(self) -> bool:
        """Whether what was read may mix a writer's change: read without SQLite's locks
        (``immutable``), and the file or its side files moved since the open (module
        docstring). A locked read sees whole commits, so it is never torn."""
        if not self._immutable:
            return False
        try:
            return _identity(self.path) != self._before
        except FileNotFoundError:
            return True


class MissionsView(_View, MissionDB):
    """A ``missions.db`` read through a view (``open_view``)."""


class _ControlView(_View, SqliteStore):
    """A stage adapter's ``control.db`` read through a view."""


def open_view(path: str, cls: type[_View] = MissionsView) -> Any:
    """A view of the SQLite file at ``path`` (module docstring): an open ``cls`` that refuses
    writes. ``FileNotFoundError`` when there is no file, ``Unreadable`` when it cannot be read
    without creating a file, ``CorruptStore`` when SQLite cannot read it at all."""
    if cls is MissionsView:
        return MissionsView(path, os_env(), "WAL", "FULL", readonly=True)
    return cls(path, os_env(), "WAL", "FULL", "l2", readonly=True)   # type: ignore[call-arg]


@dataclass(frozen=True)
class DbStatus:
    """One database: ``present``; ``schema_version`` and ``integrity`` (``integrity_check``'s
    rows, ``("ok",)`` when intact) when it opened; ``missions``, the count of mission ids
    (each checked against its sum), when it is at the current version and intact;
    ``problem`` what needs a person (damaged, too new, unreadable), with the fix; ``note``
    what is fine but worth knowing (an older version the next writer migrates)."""

    path: str
    present: bool
    schema_version: int | None = None
    integrity: tuple[str, ...] = ()
    missions: int | None = None
    problem: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class ArchStatus:
    """An adapter directory: ``phase`` (None: no adapter recorded one here), ``moving_to`` (a
    promotion or rollback in progress), ``clean_shutdown`` (False: a writer is open or died;
    None: never recorded), the ``divergences`` queued, the ``legacy`` files waiting for the
    importer, the ``backups`` of imported ones, the files under ``archive/`` (relative
    paths), ``missions_db``,
    and ``control_problem``: why ``control.db`` could not be read, with the fix."""

    path: str
    phase: int | None
    moving_to: int | None
    clean_shutdown: bool | None
    divergences: tuple[Divergence, ...]
    legacy: tuple[str, ...]
    backups: tuple[str, ...]
    archive: tuple[str, ...]
    missions_db: DbStatus
    control_problem: str | None = None

    @property
    def sound(self) -> bool:
        """Nothing here needs a person: neither database is damaged, too new or unreadable."""
        return self.control_problem is None and self.missions_db.problem is None


def _db_status(path: str) -> tuple[DbStatus, bool]:
    """(the status of the ``missions.db`` at ``path``, whether it changed while read)."""
    if not os.path.exists(path):
        return DbStatus(path, False), False
    try:
        view = open_view(path)
    except (Unreadable, CorruptStore) as exc:
        return DbStatus(path, True, problem=str(exc)), False
    try:
        problem, count = view.problem(), None
        if view.sound:
            try:
                count = len(view.mission_ids())
            except CorruptStore as exc:
                problem = str(exc)
        return (DbStatus(path, True, view.found_version, view.integrity, count, problem,
                         view.older()), view.maybe_torn())
    finally:
        view.close()


@dataclass(frozen=True)
class _Control:
    phase: int | None = None
    moving_to: int | None = None
    clean_shutdown: bool | None = None
    divergences: tuple[Divergence, ...] = ()
    problem: str | None = None


def _control(path: str) -> tuple[_Control, bool]:
    """(what ``control.db`` at ``path`` holds, whether it changed while read)."""
    if not os.path.exists(path):
        return _Control(), False
    try:
        view = open_view(path, _ControlView)
    except (Unreadable, CorruptStore) as exc:
        return _Control(problem=str(exc)), False
    try:
        problem = view.problem() or (None if view.sound else
                                     f"{path}: {view.older()}; the phase is read after that")
        if problem is not None:
            return _Control(problem=problem), view.maybe_torn()
        control = StageControl(view, path)
        try:
            record = control.stage()
            found = _Control(None if record is None else record.stage,
                             None if record is None else record.moving_to,
                             control.clean_shutdown(), tuple(control.divergences()))
        except CorruptStore as exc:
            found = _Control(problem=str(exc))
        return found, view.maybe_torn()
    finally:
        view.close()


def _files_under(path: str) -> tuple[str, ...]:
    """Every file under the directory ``path``, relative to it, sorted; () when it is none."""
    return tuple(sorted(os.path.relpath(os.path.join(root, f), path)
                        for root, _, files in os.walk(path) for f in files))


def read_status(path: str) -> ArchStatus:
    """The status of the adapter directory ``path`` (``FileNotFoundError`` when it is not a
    directory), read without creating or changing anything; ``Unreadable`` when a writer
    changed a database under each of three reads."""
    if not os.path.isdir(path):
        raise FileNotFoundError(2, "no such directory", path)
    for _ in range(_READS):
        control, moved = _control(os.path.join(path, CONTROL_DB))
        db, db_moved = _db_status(os.path.join(path, MISSIONS_DB))
        if not (moved or db_moved):
            break
    else:
        raise Unreadable(f"{path}: a writer changed its databases under each of {_READS} "
                         "reads; look again when it is idle")
    names = os.listdir(path)
    archive = os.path.join(path, ARCHIVE)
    return ArchStatus(
        path, control.phase, control.moving_to, control.clean_shutdown, control.divergences,
        legacy=tuple(legacy_files(os_env().fs, path)),
        backups=tuple(sorted(os.path.join(path, n) for n in names if is_backup(n))),
        archive=_files_under(archive),
        missions_db=db, control_problem=control.problem)
