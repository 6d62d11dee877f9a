"""The routed VFS: real SQLite doing its I/O through an env's FileSystem."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from crashgate.backends import Env, File, OpenMode, OsFS, SimulatedCrash
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.reference.sqlite_store import open_sqlite
from crashgate.reference.sqlite_vfs import SECTOR_SIZE, RoutedVFS

MAIN_DB = apsw.SQLITE_OPEN_MAIN_DB | apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE


class NonNativeFS(OsFS):
    """Real files, but not handed to SQLite's own VFS: the routed VFS runs on real files."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.crash_at_write: int | None = None
        self.writes = 0

    def native_path(self, path: str) -> str | None:
        return None

    def open(self, path: str, mode: OpenMode = "r") -> File:
        return _LoggedFile(self, super().open(path, mode))

    def remove(self, path: str) -> None:
        self.log.append(("remove", os.path.basename(path)))
        super().remove(path)

    def sync_dir(self, path: str) -> None:
        self.log.append(("sync_dir", os.path.basename(path)))
        super().sync_dir(path)


class _LoggedFile:
    def __init__(self, fs: NonNativeFS, f: File) -> None:
        self._fs, self._f, self.path = fs, f, f.path

    def read(self, offset: int, size: int) -> bytes:
        return self._f.read(offset, size)

    def write(self, offset: int, data: bytes) -> None:
        self._fs.writes += 1
        if self._fs.crash_at_write is not None and self._fs.writes >= self._fs.crash_at_write:
            raise SimulatedCrash(f"write #{self._fs.writes} to {self.path}")
        self._f.write(offset, data)

    def size(self) -> int:
        return self._f.size()

    def truncate(self, size: int) -> None:
        self._f.truncate(size)

    def sync(self) -> None:
        self._fs.log.append(("sync", os.path.basename(self.path)))
        self._f.sync()

    def close(self) -> None:
        self._f.close()


@pytest.fixture
def fs() -> NonNativeFS:
    return NonNativeFS()


@pytest.fixture
def vfs(fs: NonNativeFS) -> Iterator[RoutedVFS]:
    v = RoutedVFS(fs)
    yield v
    v.unregister()


def _run(db: apsw.Connection, *statements: str) -> None:
    # one execute per statement: apsw runs the statements after a row-returning one
    # (a PRAGMA) only as its cursor is read
    for sql in statements:
        db.execute(sql).fetchall()


def _ours() -> list[str]:
    return [n for n in apsw.vfs_names() if n.startswith("crashgate-")]


def test_each_vfs_has_its_own_name_and_close_unregisters_it(tmp_path: Path, fs: NonNativeFS
                                                            ) -> None:
    before = set(_ours())
    a = open_sqlite(str(tmp_path / "a"), Env(fs=fs))
    b = open_sqlite(str(tmp_path / "b"), Env(fs=fs))
    assert len(set(_ours()) - before) == 2
    a.close()
    b.close()
    assert set(_ours()) == before


def test_short_read_returns_what_is_there(tmp_path: Path, vfs: RoutedVFS) -> None:
    # apsw zero-fills SQLite's buffer and reports SQLITE_IOERR_SHORT_READ when xRead returns
    # fewer bytes than asked (apsw vfs.c, apswvfsfile_xRead); the VFS must not pad or fail.
    p = tmp_path / "f"
    p.write_bytes(b"0123456789")
    f = apsw.VFSFile(vfs.name, str(p), [MAIN_DB, 0])
    try:
        assert f.xRead(16, 4) == b"456789"
        assert f.xRead(4, 100) == b""
        assert f.xSectorSize() == SECTOR_SIZE
        assert f.xDeviceCharacteristics() == 0
    finally:
        f.xClose()


def test_creating_a_journal_syncs_its_directory_once(tmp_path: Path, fs: NonNativeFS,
                                                     vfs: RoutedVFS) -> None:
    db = apsw.Connection(str(tmp_path / "db"), vfs=vfs.name)
    _run(db, "PRAGMA journal_mode=DELETE", "CREATE TABLE t(x)")
    fs.log.clear()
    db.execute("INSERT INTO t VALUES (1)")
    syncs = [e for e in fs.log if e[0] in ("sync", "sync_dir")]
    # journal synced, then its directory (the new entry), then the database; the unlink of
    # the journal at commit is not followed by a directory sync under synchronous=FULL
    assert syncs[:2] == [("sync", "db-journal"), ("sync_dir", tmp_path.name)]
    assert ("sync", "db") in syncs
    assert fs.log[-1] == ("remove", "db-journal")
    db.close()


def test_delete_with_syncdir_syncs_the_directory(tmp_path: Path, fs: NonNativeFS,
                                                 vfs: RoutedVFS) -> None:
    db = apsw.Connection(str(tmp_path / "db"), vfs=vfs.name)
    _run(db, "PRAGMA journal_mode=DELETE", "PRAGMA synchronous=EXTRA", "CREATE TABLE t(x)")
    fs.log.clear()
    db.execute("INSERT INTO t VALUES (1)")
    assert fs.log[-2:] == [("remove", "db-journal"), ("sync_dir", tmp_path.name)]
    db.close()


def test_delete_of_a_missing_file_is_noent_and_access_ignores_empty_files(
        tmp_path: Path, vfs: RoutedVFS) -> None:
    with pytest.raises(apsw.IOError) as err:
        vfs.xDelete(str(tmp_path / "missing"), False)
    assert getattr(err.value, "extendedresult", None) == apsw.SQLITE_IOERR_DELETE_NOENT
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "full").write_bytes(b"x")
    assert not vfs.xAccess(str(tmp_path / "empty"), apsw.SQLITE_ACCESS_EXISTS)
    assert vfs.xAccess(str(tmp_path / "full"), apsw.SQLITE_ACCESS_EXISTS)
    assert not vfs.xAccess(str(tmp_path / "missing"), apsw.SQLITE_ACCESS_EXISTS)


def test_locks_keep_a_second_writer_out(tmp_path: Path, fs: NonNativeFS) -> None:
    # two VFS objects on one file system share its lock table, as two processes share a disk
    v1, v2 = RoutedVFS(fs), RoutedVFS(fs)
    path = str(tmp_path / "db")
    one = apsw.Connection(path, vfs=v1.name)
    _run(one, "PRAGMA journal_mode=DELETE", "CREATE TABLE t(x)")
    two = apsw.Connection(path, vfs=v2.name)
    one.execute("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
    with pytest.raises(apsw.BusyError):
        two.execute("BEGIN IMMEDIATE")
    assert two.execute("SELECT count(*) FROM t").fetchall() == [(0,)]  # readers still read
    one.execute("COMMIT")
    two.execute("BEGIN IMMEDIATE; INSERT INTO t VALUES (2); COMMIT")
    assert one.execute("SELECT count(*) FROM t").fetchall() == [(2,)]
    one.close()
    two.close()
    v1.unregister()
    v2.unregister()


def test_a_simulated_crash_inside_sqlite_comes_out_as_itself(tmp_path: Path,
                                                             fs: NonNativeFS) -> None:
    store = open_sqlite(str(tmp_path / "db"), Env(fs=fs), journal_mode="DELETE")
    store.put("a", b"1")
    fs.crash_at_write = fs.writes + 2
    with pytest.raises(SimulatedCrash):
        store.put("b", b"2")
    writes = fs.writes
    del store  # abandoned, as the harness abandons a crashed store
    gc.collect()
    assert fs.writes == writes, "nothing may reach the disk after the crash"
    fs.crash_at_write = None
    again = open_sqlite(str(tmp_path / "db"), Env(fs=fs), journal_mode="DELETE")
    assert again.scan() == [("a", b"1")]  # the hot journal rolled the torn transaction back
    again.close()


def test_an_abandoned_store_on_a_crashed_disk_breaks_nothing_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    before = set(_ours())
    disk = SimDisk(DiskImage.empty("/data"))
    store = open_sqlite("/data/db", Env(fs=disk.fs()))
    store.put("a", b"1")
    disk.crash()  # the old handles now raise EIO
    del store
    gc.collect()
    assert unraisable == []
    assert set(_ours()) == before
    again = open_sqlite("/data/db", Env(fs=SimDisk(disk.cache_image()).fs()))
    assert again.get("a") == b"1"
    again.close()
