"""The files a pattern migration keeps beside its work: the source's backup (SQLite's online
backup API), the journal that says what the migration owns, and the target's files.

**Backup.** ``backup_database`` copies the source database with apsw's ``Connection.backup``
(sqlite.org/backup.html): the copy is read through the source's pager, so commits still in
its WAL are in the copy, and it is one consistent snapshot (one read transaction), not a file
copy that could pair a database file with a WAL of another moment. The copy is written under
``backup_temp_path(dest)``, made a one-file rollback-journal database, fsynced and renamed into
place (``publish``): after a crash there is no backup, or the whole of it.
``restore_database`` runs the backup API the other way, into the live source: SQLite applies
it as one write transaction of the source (through its own journal or WAL), so a crash leaves
the source as it was or as the backup is.

On a simulated disk every byte goes through ``env.fs`` (``RoutedVFS``, with
``locking_mode=EXCLUSIVE`` from the first read: the routed VFS has no shared memory for a WAL
index, as in ``sqlite_file``); on the OS's own file system SQLite's default VFS is used, with
its real locks.

**Journal.** ``<target>.migration.json``, written atomically (temporary file, fsync, rename,
fsync of the directory). Its presence means the migration owns the target: a rerun resumes
into it and a rollback removes it. A target that exists without a journal is not ours, and
the migrator refuses to write into it (it is never destroyed).

**The target's files.** ``owned_paths`` lists what a rollback removes: the target (a file, or
every file under it when a backend keeps a directory), every sibling whose name begins with
the target's followed by ``.`` or ``-`` (its lock, index, temporary files:
``patterns.rvf.lock``, ``patterns.rvf.hnsw``) and the journal, last.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import apsw

from crashgate.backends import (
    CorruptStore,
    Env,
    backup_temp_path,
    publish,
    remove_if_present,
    write_whole,
)
from crashgate.reference.sqlite_vfs import file_connection

__all__ = ["JOURNAL_SUFFIX", "backup_database", "backup_path_for", "foreign_paths",
           "journal_path", "owned_paths", "read_journal", "restore_database", "write_journal"]

JOURNAL_SUFFIX = ".migration.json"
JOURNAL_FORMAT = "crashgate-pattern-migration"


def journal_path(target: str) -> str:
    return target + JOURNAL_SUFFIX


def backup_path_for(source: str, now: float) -> str:
    """The guide's name: ``data/agentic-qe.db`` -> ``data/agentic-qe.backup-<UTC>.db``, the
    time to the second (``2025-11-30T12-00-05``, no colons: a valid name everywhere)."""
    stem, ext = posixpath.splitext(source)
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H-%M-%S")
    return f"{stem}.backup-{stamp}{ext or '.db'}"


# -- SQLite's backup API ------------------------------------------------------------------------

@contextmanager
def _connection(env: Env, path: str, *, readonly: bool) -> Iterator[apsw.Connection]:
    """A plain apsw connection to ``path`` (module docstring: routed or native). A crash of the
    simulated disk inside SQLite comes out as the ``SimulatedCrash`` itself."""
    with file_connection(env.fs, path, readonly=readonly, prefix="crashgate-patterns") as (
            conn, vfs):
        if vfs is not None:   # a WAL file's wal-index in heap memory (sqlite_vfs: no xShm)
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        yield conn


def _copy(into: apsw.Connection, source: apsw.Connection) -> None:
    with into.backup("main", source, "main") as copy:
        copy.step()   # all pages in one step: one read transaction of the source


def backup_database(env: Env, source: str, dest: str) -> None:
    """A consistent copy of the SQLite database ``source`` (its WAL included) at ``dest``, made
    with the backup API and published atomically (module docstring)."""
    fs = env.fs
    tmp = backup_temp_path(dest)
    remove_if_present(fs, tmp, tmp + "-journal", tmp + "-wal")   # a crashed backup's
    with _connection(env, source, readonly=True) as src, \
            _connection(env, tmp, readonly=False) as out:
        out.execute("PRAGMA journal_mode=OFF")   # a crash leaves a tmp that is never renamed
        out.execute("PRAGMA synchronous=OFF")    # synced once, whole, below
        _copy(out, src)
        if str(out.execute("PRAGMA journal_mode").fetchall()[0][0]).lower() == "wal":
            out.execute("PRAGMA journal_mode=DELETE")   # one file: it opens without a -wal
        problems = [row[0] for row in out.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise CorruptStore(source, "its backup fails PRAGMA integrity_check: "
                               + "; ".join(problems[:3]))
    f = fs.open(tmp, "r+")
    try:
        f.sync()
    finally:
        f.close()
    publish(fs, tmp, dest)


def restore_database(env: Env, backup: str, dest: str) -> None:
    """Replace the database ``dest`` with the backup at ``backup`` in one transaction of
    ``dest`` (module docstring); ``CorruptStore`` naming ``backup`` when it is not a sound
    database, ``dest`` then unchanged."""
    if not env.fs.exists(backup):
        raise CorruptStore(backup, "the migration's backup is gone; restore the source by hand "
                           "from another copy")
    with _connection(env, backup, readonly=True) as bk:
        problems = [row[0] for row in bk.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise CorruptStore(backup, "PRAGMA integrity_check: " + "; ".join(problems[:3]))
        with _connection(env, dest, readonly=False) as live:
            _copy(live, bk)


# -- the journal ---------------------------------------------------------------------------------

def write_journal(env: Env, target: str, state: dict[str, Any]) -> None:
    """Write the journal of ``target`` atomically (module docstring)."""
    data = json.dumps({"format": JOURNAL_FORMAT, "version": 1, **state}, sort_keys=True,
                      indent=1).encode()
    write_whole(env.fs, journal_path(target), data)


def read_journal(env: Env, target: str) -> dict[str, Any] | None:
    """The journal of ``target``, or None when there is none. A journal that does not parse
    is ``CorruptStore`` (never taken for "no migration")."""
    path = journal_path(target)
    if not env.fs.exists(path):
        return None
    f = env.fs.open(path, "r")
    try:
        raw = f.read(0, f.size())
    finally:
        f.close()
    try:
        state = json.loads(raw)
        if not isinstance(state, dict) or state.get("format") != JOURNAL_FORMAT:
            raise ValueError(f"it is not a {JOURNAL_FORMAT} journal")
    except ValueError as exc:
        raise CorruptStore(path, f"the migration journal does not parse ({exc}); move it aside "
                           "and check the target by hand") from exc
    return state


# -- the target's files --------------------------------------------------------------------------

def _files_under(env: Env, path: str) -> list[str]:
    """``path`` when it is a file, every file under it when it is a directory."""
    try:
        names = env.fs.listdir(path)
    except NotADirectoryError:
        return [path]
    out: list[str] = []
    for name in names:
        out += _files_under(env, posixpath.join(path, name))
    return out


def owned_paths(env: Env, target: str) -> list[str]:
    """What a migration into ``target`` may have written and a rollback removes, the journal
    last; only paths that exist."""
    parent = posixpath.dirname(target) or "."
    base = posixpath.basename(target)
    journal = journal_path(target)
    out: list[str] = []
    if env.fs.exists(parent):
        for name in env.fs.listdir(parent):
            path = posixpath.join(parent, name)
            side = name == base or name.startswith((base + ".", base + "-"))
            if side and path != journal:
                out += _files_under(env, path)
    if env.fs.exists(journal):
        out.append(journal)
    return out


def foreign_paths(env: Env, target: str) -> list[str]:
    """The target's files that exist while no journal does (a migration that crashed before
    writing its journal wrote nothing but the journal's temporary file, which is ours)."""
    journal_tmp = backup_temp_path(journal_path(target))
    return [p for p in owned_paths(env, target) if p != journal_tmp]
