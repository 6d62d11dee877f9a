"""Issue 10: RVF stores whose backup or restore skips what makes it safe; the
``adr072-backup`` row must catch each, with a reproduction.

- ``open_backup_renamed_first``: the backup's name is put in place (renamed and the directory
  synced) before the bytes are written, and they are never fsynced nor verified: after the
  backup returns, a power loss leaves an empty or partial file at ``dest``, which restore
  rightly refuses, so the acknowledged backup is gone.
- ``open_restore_in_place``: restore checks the backup, then truncates the store's own file
  and writes the backup's bytes into it: a crash in between leaves neither the old contents nor
  the backup's.
"""

from __future__ import annotations

import posixpath

from crashgate.backends import CorruptStore, Env, backup_temp_path, check_options
from crashgate.reference.rvf.replay import load
from crashgate.reference.rvf.store import OPTIONS, RvfStore

__all__ = ["open_backup_renamed_first", "open_restore_in_place"]


class BackupRenamedFirst(RvfStore):
    def backup(self, dest: str) -> None:
        fs = self._env.fs
        tmp = backup_temp_path(dest)
        fs.open(tmp, "w").close()
        fs.rename(tmp, dest)   # the defect: the name first, then the bytes, never fsynced
        fs.sync_dir(posixpath.dirname(dest))
        out = fs.open(dest, "r+")
        out.write(0, self._check_open().read(0, self._end))
        out.close()


class RestoreInPlace(RvfStore):
    def restore(self, src: str) -> None:
        if not self._env.fs.exists(src):
            raise CorruptStore(src, "there is no backup at this path")
        end = self._check_backup(src)
        source = self._env.fs.open(src, "r")
        data = source.read(0, end)
        source.close()
        f = self._check_writable("restore")
        f.truncate(0)   # the defect: the store's own file, rewritten where it is
        f.sync()
        f.write(0, data)
        f.sync()
        self._adopt(load(f, self.path, self._version))


def open_backup_renamed_first(path: str, env: Env, **options: str) -> RvfStore:
    return BackupRenamedFirst(path, env, check_options("rvf", options, OPTIONS), options)


def open_restore_in_place(path: str, env: Env, **options: str) -> RvfStore:
    return RestoreInPlace(path, env, check_options("rvf", options, OPTIONS), options)
