"""Backup and restore of a stage adapter (``Backupable``): one file holding the backups of the
stores the stage uses and its divergence queue, restored into every store or none.

**The container.** One file, big-endian::

    magic   8 bytes  b"CGSTGBK\\n"
    version u32      FORMAT_VERSION (1)
    hlen    u32      length of the header
    hsum    32 bytes BLAKE2b-256 of the header
    header  hlen     UTF-8 JSON: {"stage": n, "sqlite": name,
                                  "parts": [{"name", "length", "blake2b"}, ...]}
    parts            each part's bytes, back to back, in the header's order

``sqlite`` is the name the SQLite data file had in the adapter backed up (informative: a
restore writes into the file the restoring adapter uses). The parts are, in this order, the
backup of each store stage ``n`` uses (``roles(n).stores``, sorted: ``rvf``, an RVF file copy;
``sqlite``, a SQLite database), each made by the store's own ``backup()``, then
``divergences``: the queue as a JSON list of ``control.divergence_doc`` objects with their
``seq``. A whole container is exactly this long, and every sum matches; anything else is
``CorruptStore`` naming it.

**Backup.** Under the adapter's write lock (no dual write lands between two parts), each store
backs itself up to ``<dest>.part-<name>`` (its own temporary file, check and rename); the
container is written at ``backup_temp_path(dest)``, fsynced, read back and checked, and
``publish``ed. The part files are then removed. The stores are only read.

**Restore.** The container is read and every sum checked while its parts are copied into
``restore.pending/`` in the adapter's directory (fsynced, and the directory and its parent);
each store of the backup's stage (opened, if this stage does not use it) checks its part as it
checks a backup of its own; the queue is parsed. Any failure so far is ``CorruptStore``
naming ``src`` with nothing changed. Then ONE write of the control record names the pending
restore (``StageRecord.restoring``): the commit point. The roll-forward: each store restores
its part (its own atomic ``restore``), one write sets the backup's stage and queue and clears
``restoring``, the pending files are removed. An adapter that opens with ``restoring`` set
finishes the roll-forward before anything else; each step is idempotent. A crash before the
commit point reopens with the old contents, after it with the backup's. An error during the
roll-forward closes the adapter (it would otherwise answer from a mix); reopening finishes it.

**Stores a backup does not have.** A backup holds only the stores its stage uses; the others
are left as they are (e.g. a stage-0 backup restored into stage 4 leaves the RVF file, and a
stage-4 backup the escape hatch). No stage reads such a store before a promotion or rollback
catches it up, and every catch-up is a whole sync (``roles.CATCH_UP``), so what it held never
shows. The divergences are the backup's: ones for a store not in the backup wait, as they did
in the adapter backed up, for the catch-up that covers them.

What FileSystem cannot do: remove a directory; ``restore.pending/`` stays, empty.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from crashgate.backends import (
    Capability,
    CorruptStore,
    Declaration,
    Env,
    backup_temp_path,
    publish,
    remove_if_present,
)
from crashgate.reference.stages.control import (
    Divergence,
    StageControl,
    StageRecord,
    divergence_doc,
    divergence_from_doc,
)
from crashgate.reference.stages.roles import RVF, SQLITE, roles

__all__ = ["FORMAT_VERSION", "MAGIC", "PENDING", "StageBackup"]

MAGIC = b"CGSTGBK\n"
FORMAT_VERSION = 1
PENDING = "restore.pending"
"""The directory, in the adapter's, that a committed restore's parts wait in."""
_PREFIX = struct.Struct(">8sII32s")
_CHUNK = 1 << 20
_DIVERGENCES = "divergences"
_PART_FILES = {SQLITE: "sqlite.db", RVF: "store.rvf", _DIVERGENCES: "divergences.json"}
"""Each part's file name in ``restore.pending/``."""


@dataclass(frozen=True)
class _Part:
    name: str
    offset: int
    length: int
    blake2b: str


def _sum() -> Any:
    return hashlib.blake2b(digest_size=32)


def _parts_of(stage: int) -> list[str]:
    return [*sorted(roles(stage).stores), _DIVERGENCES]


def _header(fs: Any, src: str) -> tuple[int, tuple[_Part, ...]]:
    """The backup's stage and parts, after checking the prefix, the header's sum, its
    fields and the file's length; ``CorruptStore`` naming ``src`` otherwise."""
    if not fs.exists(src):
        raise CorruptStore(src, "there is no backup at this path (a backup that never "
                                "finished leaves none); give the path backup() wrote")
    f = fs.open(src, "r")
    try:
        size, head = f.size(), f.read(0, _PREFIX.size)
        if len(head) < _PREFIX.size:
            raise CorruptStore(src, f"it is {size} bytes, shorter than a container's prefix")
        magic, version, hlen, hsum = _PREFIX.unpack(head)
        if magic != MAGIC or version != FORMAT_VERSION:
            raise CorruptStore(src, f"it does not start as a stage backup of format "
                                    f"{FORMAT_VERSION} does ({magic!r}, version {version})")
        raw = f.read(_PREFIX.size, hlen)
    finally:
        f.close()
    digest = _sum()
    digest.update(raw)
    if len(raw) != hlen or digest.digest() != hsum:
        raise CorruptStore(src, "its header does not match its sum: damaged or cut short")
    try:
        doc = json.loads(raw)
        stage = doc["stage"]
        if not isinstance(stage, int) or isinstance(stage, bool):
            raise TypeError(f"stage {stage!r} is not a number")
        names = _parts_of(stage)
        at, parts = _PREFIX.size + hlen, []
        for name, part in zip(names, doc["parts"], strict=True):
            length = part["length"]
            if part["name"] != name or not isinstance(length, int) or length < 0:
                raise ValueError(f"part {part!r} where {name!r} belongs")
            parts.append(_Part(name, at, part["length"], str(part["blake2b"])))
            at += part["length"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptStore(src, f"its header is not a stage backup's: {exc}") from None
    if at != size:
        raise CorruptStore(src, f"it is {size} bytes, its header says {at}: cut short or "
                                "followed by other bytes")
    return stage, tuple(parts)


def _check_parts(fs: Any, src: str, parts: Iterable[_Part], into: str | None = None) -> None:
    """Check every part's sum, copying each into ``<into>/<its file>`` (fsynced) when
    ``into`` is given; ``CorruptStore`` naming ``src`` at the first that does not match."""
    f = fs.open(src, "r")
    try:
        for part in parts:
            digest = _sum()
            out = fs.open(os.path.join(into, _PART_FILES[part.name]), "w") if into else None
            try:
                for at in range(0, part.length, _CHUNK):
                    data = f.read(part.offset + at, min(_CHUNK, part.length - at))
                    digest.update(data)
                    if out is not None:
                        out.write(at, data)
                if out is not None:
                    out.sync()
            finally:
                if out is not None:
                    out.close()
            if digest.hexdigest() != part.blake2b:
                raise CorruptStore(src, f"its {part.name} part does not match its sum")
    finally:
        f.close()


def _write_container(fs: Any, path: str, stage: int, sqlite: str,
                     parts: Mapping[str, str | bytes]) -> None:
    """The container (module docstring) at ``path``, fsynced; ``parts``: name -> the file
    holding the part, or its bytes."""
    entries, sources = [], []
    for name, source in parts.items():
        digest, length = _sum(), 0
        for chunk in _chunks(fs, source):
            digest.update(chunk)
            length += len(chunk)
        entries.append({"name": name, "length": length, "blake2b": digest.hexdigest()})
        sources.append(source)
    header = json.dumps({"stage": stage, "sqlite": sqlite, "parts": entries}).encode()
    hsum = _sum()
    hsum.update(header)
    out = fs.open(path, "w")
    try:
        out.write(0, _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header), hsum.digest()) + header)
        at = _PREFIX.size + len(header)
        for source in sources:
            for chunk in _chunks(fs, source):
                out.write(at, chunk)
                at += len(chunk)
        out.sync()
    finally:
        out.close()


def _chunks(fs: Any, source: str | bytes) -> Iterable[bytes]:
    if isinstance(source, bytes):
        yield source
        return
    f = fs.open(source, "r")
    try:
        size = f.size()
        for at in range(0, size, _CHUNK):
            yield f.read(at, min(_CHUNK, size - at))
    finally:
        f.close()


def _check_part(store: Any, name: str, path: str) -> None:
    """``path`` checked as ``store`` checks a backup before restoring it: its own check (the
    reference stores' backup mixins), not a copy of it."""
    if name == SQLITE:
        with store._opened(path, readonly=True) as view:
            view._check_backup()
    else:
        store._check_backup(path)


class StageBackup:
    """``Backupable`` for ``StageAdapter`` (module docstring)."""

    # -- the host's (StageAdapter's) --
    path: str
    stage: int
    declaration: Declaration
    _env: Env
    _stores: dict[str, Any]
    _control: StageControl
    _sqlite_file: str
    _write_lock: threading.RLock
    _declare: Callable[[Any], Declaration]
    if TYPE_CHECKING:
        def _file(self, name: str) -> str: ...
        def _open(self, name: str) -> Any: ...
        def _close_stores(self, keep: Iterable[str]) -> None: ...
        def close(self) -> None: ...

    def _check_open(self) -> None:
        raise NotImplementedError

    def _check_writable(self, what: str) -> None:
        raise NotImplementedError

    def backup(self, dest: str) -> None:
        """Write the stage, its stores' backups and its queue to ``dest`` as one checked file
        (module docstring); the stores are not changed. Refused for a reader
        (``readonly=true``): it cannot keep the writer's dual writes from landing between two
        parts, so its parts could be a state that never was."""
        self._check_writable("backup")
        fs = self._env.fs
        tmp = backup_temp_path(dest)
        with self._write_lock:
            self._check_open()
            names = sorted(roles(self.stage).stores)
            stores = self._backupable(names)
            files = {name: f"{dest}.part-{name}" for name in names}
            remove_if_present(fs, tmp, *files.values())   # a crashed backup's leftovers
            try:
                for name in names:
                    stores[name].backup(files[name])
                queue = [{"seq": d.seq, **divergence_doc(d)}
                         for d in self._control.divergences()]
                _write_container(fs, tmp, self.stage, self._sqlite_file,
                                 {**files, _DIVERGENCES: json.dumps(queue).encode()})
                _check_parts(fs, tmp, _header(fs, tmp)[1])
            except Exception:
                with contextlib.suppress(Exception):   # the first error is the one to report
                    remove_if_present(fs, tmp)
                raise
            finally:
                with contextlib.suppress(Exception):
                    remove_if_present(fs, *files.values())
            publish(fs, tmp, dest)

    def restore(self, src: str) -> None:
        """Replace the stage, every store it uses and the queue with the backup at ``src``,
        atomically (module docstring); a missing, partial or damaged backup is
        ``CorruptStore`` naming ``src``, the adapter unchanged."""
        self._check_writable("restore")
        with self._write_lock:
            self._check_open()
            stage, parts = _header(self._env.fs, src)
            before = set(self._stores)
            try:
                self._stage_parts(src, stage, parts)
            except Exception:
                with contextlib.suppress(Exception):   # the refusal is the error to report
                    self._close_stores(before)
                with contextlib.suppress(Exception):
                    self._clear_pending()
                raise
            record = self._control.stage() or StageRecord(self.stage, sqlite=self._sqlite_file)
            self._control.set_stage(replace(record, restoring=stage))   # the commit point
            try:
                self._roll_forward(stage)
            except Exception:
                with contextlib.suppress(Exception):   # reopening finishes the restore
                    self.close()
                raise
            self.declaration = self._declare(self)

    def _finish_restore(self, record: StageRecord) -> None:
        """At open: finish the restore ``record`` names, if any; else remove what a restore
        that never reached its commit point left."""
        if record.restoring is not None:
            self._roll_forward(record.restoring)
        elif self._env.fs.exists(self._file(PENDING)):
            self._clear_pending()

    # -- plumbing ----------------------------------------------------------------------------

    def _backupable(self, names: Iterable[str]) -> dict[str, Any]:
        """The stores ``names``, opened, each declaring backup; ``ValueError`` otherwise."""
        stores = {name: self._open(name) for name in names}
        for name, store in stores.items():
            if not store.declaration.has(Capability.BACKUP):
                raise ValueError(f"the {name} store of the adapter at {self.path} declares no "
                                 f"backup ({store.declaration.notes.get('options', '')}); "
                                 "open the adapter with journal_mode WAL or DELETE")
        return stores

    def _stage_parts(self, src: str, stage: int, parts: Iterable[_Part]) -> None:
        """Before the commit point: every part checked and copied into ``PENDING``, synced;
        ``CorruptStore`` naming ``src`` for a part that does not check."""
        fs, pending = self._env.fs, self._file(PENDING)
        self._clear_pending()
        fs.makedirs(pending)
        _check_parts(fs, src, parts, into=pending)
        fs.sync_dir(pending)
        fs.sync_dir(self.path)
        stores = self._backupable(roles(stage).stores)
        for name, store in sorted(stores.items()):
            try:
                _check_part(store, name, os.path.join(pending, _PART_FILES[name]))
            except CorruptStore as exc:
                raise CorruptStore(src, f"its {name} part is not a whole backup: "
                                        f"{exc.detail}") from exc
        try:
            self._queue()
        except CorruptStore as exc:
            raise CorruptStore(src, f"its divergences part: {exc.detail}") from exc

    def _queue(self) -> list[Divergence]:
        path = os.path.join(self._file(PENDING), _PART_FILES[_DIVERGENCES])
        f = self._env.fs.open(path, "r")
        try:
            raw = f.read(0, f.size())
        finally:
            f.close()
        try:
            return [divergence_from_doc(int(doc.pop("seq")), doc) for doc in json.loads(raw)]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise CorruptStore(path, f"not a divergence queue: {type(exc).__name__}: {exc}"
                               ) from None

    def _roll_forward(self, stage: int) -> None:
        """After the commit point: each store restores its pending part, one write sets the
        stage and queue and clears ``restoring``, the pending files go. Idempotent."""
        pending = self._file(PENDING)
        queue = self._queue()
        for name, store in sorted(self._backupable(roles(stage).stores).items()):
            store.restore(os.path.join(pending, _PART_FILES[name]))
        self._control.replace(StageRecord(stage, sqlite=self._sqlite_file), queue)
        self.stage = stage
        self._close_stores(roles(stage).stores)
        self._clear_pending()

    def _clear_pending(self) -> None:
        fs, pending = self._env.fs, self._file(PENDING)
        if fs.exists(pending):
            remove_if_present(fs, *(os.path.join(pending, n) for n in fs.listdir(pending)))
