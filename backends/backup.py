"""Backup and restore (ADR-072: "Backup/restore cycle validated for RVF", "Full backup/restore
cycle validated"): an optional capability, ``Capability.BACKUP``, that the harness probes.

The promises, which the ``adr072-backup`` row holds a store to:

- ``backup(dest)`` never changes the store; a crash or power loss during it leaves the store
  opening with every acknowledged write, and leaves at ``dest`` nothing, something ``restore``
  refuses, or the whole backup. Once it returns, the backup survives power loss. The way to
  keep these is ``publish``'s: write under ``backup_temp_path(dest)``, fsync, check, rename,
  fsync the directory.
- ``restore(src)`` is atomic: a crash during it reopens the store with its old contents or the
  backup's, never a mix. A backup that is partial or damaged is refused with ``CorruptStore``
  naming ``src``, and the store is then unchanged. The store stays open and usable after.
"""

from __future__ import annotations

import contextlib
import posixpath
from typing import Protocol, runtime_checkable

from crashgate.backends.env import FileSystem

__all__ = ["Backupable", "backup_temp_path", "publish", "remove_if_present", "write_whole"]


@runtime_checkable
class Backupable(Protocol):
    """Optional: a store that backs itself up to one file and restores from one. Paths are on
    the store's env file system (``env.fs``)."""

    def backup(self, dest: str) -> None:
        """Write a complete, consistent backup of the store as it is now to ``dest``
        (replacing what is there), without changing the store."""
        ...

    def restore(self, src: str) -> None:
        """Replace the store's whole contents with the backup at ``src``, atomically; a
        partial, damaged or missing backup is ``CorruptStore`` naming ``src``, and the store
        is then unchanged."""
        ...


def backup_temp_path(dest: str) -> str:
    """Where a backup to ``dest`` is written before it is renamed into place: beside it, so
    that the rename stays within one directory (atomic)."""
    return dest + ".tmp-backup"


def remove_if_present(fs: FileSystem, *paths: str) -> None:
    """Remove each of ``paths`` that exists (what a crashed backup or restore left)."""
    for path in paths:
        if fs.exists(path):
            with contextlib.suppress(FileNotFoundError):
                fs.remove(path)


def publish(fs: FileSystem, tmp: str, dest: str) -> None:
    """Rename the finished, fsynced file ``tmp`` over ``dest`` and fsync the directory: ``dest``
    is then the old file or the new one after any crash, and the new one once this returns."""
    fs.rename(tmp, dest)
    fs.sync_dir(posixpath.dirname(dest) or ".")


def write_whole(fs: FileSystem, dest: str, *chunks: bytes | memoryview) -> None:
    """Replace ``dest`` with ``chunks`` (written one after another) atomically: a temporary file
    beside it (``backup_temp_path``), fsynced, then ``publish``ed. After any crash ``dest`` is
    the old file or the new one; a write that fails (an I/O error) leaves no temporary file."""
    tmp = backup_temp_path(dest)
    try:
        f = fs.open(tmp, "w")
        try:
            at = 0
            for chunk in chunks:
                f.write(at, bytes(chunk))
                at += len(chunk)
            f.sync()
        finally:
            f.close()
        publish(fs, tmp, dest)
    except Exception:   # not a SimulatedCrash (a BaseException): a crashed process cleans nothing
        remove_if_present(fs, tmp)
        raise
