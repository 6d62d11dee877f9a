"""Backup and restore of the RVF store (``Backupable``): ADR-072's "RVF file copy with witness
chain validation".

**Backup.** The committed bytes of the file (``[0, committed end)``: never a failed attempt's
tail) are copied to ``backup_temp_path(dest)`` and fsynced; the copy is opened read-only and
checked (below); only then is it renamed into place and the directory fsynced (``publish``).
The store's file is only read, under the store's write lock, so no commit lands mid-copy.

**What a whole backup is.** It opens read-only (every header and the content hash of every
segment the live state is rebuilt from, as any open checks), holds at least one commit, has
nothing past its last good commit (a cut-short or torn copy reads as an older commit followed
by a tail, which a store's own file may show after a crash, but a backup must not), and
``verify()`` finds no problem: the witness chain and the content hash of every segment of the
committed region (``WitnessVerifiable``). Anything else is ``CorruptStore`` naming the file.
What this cannot tell: a copy cut exactly at an earlier commit's end is a whole, older file
(the store's declared ``rollback`` promise, FORMAT.md "Limits"); the temporary name and the
fsync before the rename are what keep such a copy from ever being at ``dest``.

**Restore.** The backup is checked the same way, its committed bytes are copied beside the
store's file (``<file>.tmp-rvf``, the name a writer's open removes, so a crash leaves nothing
that matters), fsynced and renamed over the file; the store then reloads its state from the
new file. The writer lock (``<file>.lock``) is held throughout.

``RvfBackup`` is a mixin: ``RvfStore`` inherits it and provides what the host block names.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from crashgate.backends import (
    CorruptStore,
    Env,
    File,
    FileSystem,
    backup_temp_path,
    publish,
    remove_if_present,
)

if TYPE_CHECKING:
    from crashgate.reference.rvf.replay import Loaded

__all__ = ["RvfBackup", "copy_prefix"]

_CHUNK = 1 << 20


def copy_prefix(src: File, length: int, fs: FileSystem, dest: str) -> None:
    """Write the first ``length`` bytes of ``src`` to a new file ``dest`` (replacing it) and
    fsync it; read and written in 1 MiB pieces."""
    out = fs.open(dest, "w")
    try:
        for at in range(0, length, _CHUNK):
            out.write(at, src.read(at, min(_CHUNK, length - at)))
        out.sync()
    finally:
        out.close()


class RvfBackup:
    """``Backupable`` for ``RvfStore`` (module docstring)."""

    # -- the host's (RvfStore's) --
    path: str
    _env: Env
    _opts: dict[str, object]
    _version: int
    _write_lock: threading.RLock
    _end: int
    _file: File | None
    _tail_dirty: bool
    if TYPE_CHECKING:
        def _check_open(self) -> File: ...
        def _check_writable(self, what: str) -> File: ...
        def _adopt(self, st: Loaded) -> None: ...
        def verify(self) -> list[str]: ...
        def tail(self) -> str | None: ...
        def close(self) -> None: ...

    def backup(self, dest: str) -> None:
        """Copy the committed file to ``dest``, checked (module docstring); the store is not
        changed. ``CorruptStore`` if the copy does not check (the store's file is damaged)."""
        fs = self._env.fs
        tmp = backup_temp_path(dest)
        with self._write_lock:
            f = self._check_open()
            remove_if_present(fs, tmp)
            try:
                copy_prefix(f, self._end, fs, tmp)
                self._check_backup(tmp)
            except Exception:
                with contextlib.suppress(Exception):   # the first error is the one to report
                    remove_if_present(fs, tmp)
                raise
            publish(fs, tmp, dest)

    def restore(self, src: str) -> None:
        """Replace the store's file with the backup at ``src`` (module docstring); a missing,
        partial or damaged backup is ``CorruptStore`` naming ``src``, the store unchanged."""
        from crashgate.reference.rvf.replay import load  # store.py imports this module
        fs = self._env.fs
        with self._write_lock:
            self._check_writable("restore")
            if not fs.exists(src):
                raise CorruptStore(src, "there is no backup at this path (a backup that never "
                                        "finished leaves none); give the path backup() wrote")
            end = self._check_backup(src)
            tmp = self.path + ".tmp-rvf"   # what a writer's open removes after a crash
            source = fs.open(src, "r")
            try:
                copy_prefix(source, end, fs, tmp)
            finally:
                source.close()
            publish(fs, tmp, self.path)
            old, self._file = self._file, fs.open(self.path, "r+")
            if old is not None:
                old.close()
            self._tail_dirty = False   # a failed commit's tail was in the old file
            self._adopt(load(self._file, self.path, self._version))

    def _check_backup(self, path: str) -> int:
        """The committed length of the backup at ``path``, after checking it is whole (module
        docstring); ``CorruptStore`` naming ``path`` otherwise."""
        options = {**self._opts, "readonly": "true", "lock": "false", "dimension": 0}
        # the store's own read-only open: CorruptStore or VersionTooNew if it will not open
        copy: Any = type(self)(path, self._env, options, {})  # type: ignore[call-arg]
        try:
            if copy._end == 0:
                raise CorruptStore(path, "it holds no commit (an empty or cut-short copy): not "
                                         "a whole backup")
            tail = copy.tail()
            if tail is not None:
                raise CorruptStore(path, f"bytes follow its last good commit ({tail}): a "
                                         "partial or torn copy, not a whole backup")
            problems = copy.verify()
            if problems:
                raise CorruptStore(path, f"its witness chain or content hashes do not verify: "
                                         f"{problems[0]}")
            return int(copy._end)
        finally:
            copy.close()
