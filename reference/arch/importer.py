"""ARCH-001's legacy importer (JSON -> SQLite, "Backward Compatibility"; the tool
``migrate_json_to_sqlite.py``: "Idempotent", "Validation", "Dry-run", "Backs up JSON"), and its
dry run.

``import_files`` takes each legacy mission file (as old sessions wrote
``.vibe/state/active_mission.json``) into the mission database, ``batch`` files per
``mission_import`` transaction, and renames the file to ``<stem>_migrated_<UTC timestamp>.json``
only after the transaction that imported it committed (``--keep``: no rename). So after a
crash anywhere a legacy mission is in the database, or still under its legacy name (and the
next run imports it), or both; never in neither. ``mission_import`` fsyncs its commit whatever
the database's ``synchronous`` says, so a power loss cannot keep the rename and lose the
import. A directory fsync follows each batch of renames; a rename lost to power loss is redone
by the next run. A rerun imports nothing twice: a mission the database already holds with the
same document is not written again, and its file is renamed. The database is the newer state:
a legacy document whose id it holds with a *different* document is not imported, and is
reported; its file is renamed too (kept, not deleted). A file that is not a mission document
is left where it is and reported.

``import_legacy(db, fs, directory, ...)`` is ``import_files`` over ``legacy_files(fs,
directory)``: what a phase adapter runs when phase 3 opens. ``plan_import`` is the dry run:
the ``ImportReport`` a run would make (``renamed`` empty), from reads alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from crashgate.backends import Clock, CorruptStore, FileSystem, canonical_mission
from crashgate.reference.arch.json_state import (
    backup_name,
    legacy_files,
    read_legacy,
    utc_stamp,
)
from crashgate.reference.stages.sync import BATCH

__all__ = ["BATCH", "ImportReport", "import_files", "import_legacy", "plan_import"]


@dataclass(frozen=True)
class ImportReport:
    """What one run of the importer did. ``imported``: mission ids written to the database;
    ``already``: ids it held with the same document (a rerun); ``conflicts``: (file, mission
    id) whose document differs from the database's, not imported (the database is newer), the
    file kept as its backup; ``damaged``: (file, why) of files that are not mission documents,
    left where they are; ``renamed``: (file, backup) of every file renamed."""

    imported: tuple[str, ...] = ()
    already: tuple[str, ...] = ()
    conflicts: tuple[tuple[str, str], ...] = ()
    damaged: tuple[tuple[str, str], ...] = ()
    renamed: tuple[tuple[str, str], ...] = ()

    @property
    def files(self) -> int:
        """How many legacy files the run found."""
        return len(self.renamed) + len(self.damaged)


def _read(fs: FileSystem, file: str, damaged: list[tuple[str, str]]) -> dict[str, Any] | None:
    """The document in ``file``, or None (gone, or damaged: then noted in ``damaged``)."""
    try:
        return read_legacy(fs, file)
    except FileNotFoundError:
        return None   # gone since it was listed: nothing here to import
    except CorruptStore as exc:
        damaged.append((file, exc.detail))
        return None


def import_files(db: Any, fs: FileSystem, files: Sequence[str], clock: Clock,
                 checkpoint: Callable[[], None], *, batch: int = BATCH,
                 rename: bool = True) -> ImportReport:
    """Import the legacy ``files`` into ``db`` (``mission_import(docs) -> ImportCounts``, one
    transaction) ``batch`` at a time (two files with one mission id never share one: the second
    sees what the first wrote), and, when ``rename``, rename each to its backup name (timestamp
    ``clock.time()`` at the start, UTC) once its import committed. ``checkpoint()`` runs after
    each file is handled: imported (and renamed), or found damaged."""
    if batch < 1:
        raise ValueError(f"import_files(batch={batch}): batch must be >= 1")
    stamp = utc_stamp(clock.time())
    taken: dict[str, set[str]] = {}
    imported: list[str] = []
    already: list[str] = []
    conflicts: list[tuple[str, str]] = []
    damaged: list[tuple[str, str]] = []
    renamed: list[tuple[str, str]] = []
    pending: list[tuple[str, dict[str, Any]]] = []
    pending_ids: set[str] = set()

    def flush() -> None:
        if not pending:
            return
        counts = db.mission_import([doc for _, doc in pending])   # committed when it returns
        new, same = set(counts.imported), set(counts.same)
        dirs: set[str] = set()
        for file, doc in pending:
            mission_id = doc["mission_id"]
            if mission_id in new:
                imported.append(mission_id)
            elif mission_id in same:
                already.append(mission_id)
            else:   # the database holds another document under this id: it is kept
                conflicts.append((file, mission_id))
            if rename:
                directory = os.path.dirname(file) or "."
                if directory not in taken:   # listed once: not once per file (10,000 files)
                    taken[directory] = set(fs.listdir(directory))
                names = taken[directory]
                backup = backup_name(file, stamp, names)
                names.add(os.path.basename(backup))
                fs.rename(file, backup)
                renamed.append((file, backup))
                dirs.add(directory)
            checkpoint()
        for directory in sorted(dirs):
            fs.sync_dir(directory)
        pending.clear()
        pending_ids.clear()

    for file in files:
        found = len(damaged)
        doc = _read(fs, file, damaged)
        if doc is None:
            if len(damaged) > found:
                checkpoint()
            continue
        if len(pending) >= batch or doc["mission_id"] in pending_ids:
            flush()
        pending.append((file, doc))
        pending_ids.add(doc["mission_id"])
    flush()
    return ImportReport(tuple(imported), tuple(already), tuple(conflicts), tuple(damaged),
                        tuple(renamed))


def import_legacy(db: Any, fs: FileSystem, directory: str, clock: Clock,
                  checkpoint: Callable[[], None], *, batch: int = BATCH) -> ImportReport:
    """``import_files`` over the legacy files of ``directory`` (``legacy_files``), renamed."""
    if batch < 1:   # before the directory is read
        raise ValueError(f"import_legacy(batch={batch}): batch must be >= 1")
    return import_files(db, fs, legacy_files(fs, directory), clock, checkpoint, batch=batch)


def plan_import(db: Any | None, fs: FileSystem, files: Sequence[str],
                checkpoint: Callable[[], None]) -> ImportReport:
    """What ``import_files(db, fs, files, ...)`` would report, read without writing: ``db``
    is read (``mission_get``) or None for a database that does not exist yet; ``renamed`` is
    empty. ``checkpoint()`` runs after each file."""
    imported: list[str] = []
    already: list[str] = []
    conflicts: list[tuple[str, str]] = []
    damaged: list[tuple[str, str]] = []
    planned: dict[str, bytes] = {}   # mission id -> the document this run would import
    for file in files:
        doc = _read(fs, file, damaged)
        if doc is not None:
            mission_id, canonical = doc["mission_id"], canonical_mission(doc)
            if mission_id not in planned and db is not None:
                held = db.mission_get(mission_id)
                if held is not None:
                    planned[mission_id] = canonical_mission(held)
            if mission_id not in planned:
                planned[mission_id] = canonical
                imported.append(mission_id)
            elif planned[mission_id] == canonical:
                already.append(mission_id)
            else:
                conflicts.append((file, mission_id))
        checkpoint()
    return ImportReport(tuple(imported), tuple(already), tuple(conflicts), tuple(damaged))
