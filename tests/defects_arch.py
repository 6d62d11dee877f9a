"""Issue 13: ARCH-001 phase adapters with one deliberate defect each, for the ARCH-001 rows'
tests (``test_arch_rows_crash.py``, ``test_arch_rows.py``). Each is the reference
``ArchPhaseAdapter`` (``reference/arch``) with one thing done wrong, opened by a factory
(``defects_arch:open_importer_renames_first`` and so on) in the phase it starts in.

Crash rows:

- ``ImporterRenamesFirst`` (starts in phase 2): phase 3's legacy importer renames each legacy
  file to its backup name *before* the transaction that imports it commits (the reference
  renames after). A crash between the two leaves the mission in neither place the importer
  looks: not in SQLite, and under a backup name it never imports again. ``arch001-compat``
  must catch it.
- ``ExporterWritesInPlace`` (starts in phase 1): the JSON side's ``mission_put`` overwrites the
  mission's file in place (open, truncate, write, fsync) instead of the JSON store's temp file
  and rename. The rollback 3 -> 2 exports into files JSON already holds, so a crash half-way
  leaves a document that is neither the old one nor the new one. ``arch001-reversible`` must
  catch it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from crashgate.backends import Clock, CorruptStore, Env, FileSystem
from crashgate.reference.arch.factory import open_phase
from crashgate.reference.arch.json_state import (
    MISSIONS_DIR,
    JsonState,
    backup_name,
    legacy_files,
    read_legacy,
    utc_stamp,
)
from crashgate.reference.arch.missions_db import MissionDB
from crashgate.reference.arch.phases import JSON, JSON_DIR, SQLITE, ArchPhaseAdapter
from crashgate.reference.json_store import JsonStore, _encode_document, file_name_for
from crashgate.reference.stages.staged import FALLBACK_ERRORS

__all__ = ["ExporterWritesInPlace", "ImporterRenamesFirst", "open_exporter_writes_in_place",
           "open_importer_renames_first"]

# -- crash rows --


def _import_renaming_first(db: Any, fs: FileSystem, directory: str, clock: Clock,
                           checkpoint: Callable[[], None]) -> None:
    """The reference importer's steps in the wrong order: rename, then import."""
    stamp = utc_stamp(clock.time())
    taken = set(fs.listdir(directory))
    for file in legacy_files(fs, directory):
        try:
            doc = read_legacy(fs, file)
        except CorruptStore:
            checkpoint()
            continue
        backup = backup_name(file, stamp, taken)
        taken.add(os.path.basename(backup))
        fs.rename(file, backup)   # the defect: before the import committed
        fs.sync_dir(directory)
        db.mission_import([doc])
        checkpoint()


class ImporterRenamesFirst(ArchPhaseAdapter):
    """Phase 3's importer renames each legacy file before its import commits."""

    def _settle(self) -> None:
        if self.stage == 3:
            _import_renaming_first(self._stores[SQLITE], self._env.fs, self.path,
                                   self._env.clock, self._import_checkpoint)


class _InPlaceJsonStore(JsonStore):
    """A JSON store whose put rewrites the key's file in place."""

    def put(self, key: str, value: bytes) -> None:
        self._check_open()
        path = self._file(file_name_for(key))
        existed = self._fs.exists(path)
        f = self._fs.open(path, "c")
        try:   # the defect: no temp file and rename, the old document is cut first
            f.truncate(0)
            f.write(0, _encode_document(key, bytes(value)))
            f.sync()
        finally:
            f.close()
        if not existed:
            self._fs.sync_dir(self.path)


class _InPlaceJsonState(JsonState):
    """The JSON side with its mission documents written in place (key-value state as the
    reference writes it)."""

    def __init__(self, path: str, env: Env) -> None:
        super().__init__(path, env)
        self._missions.close()
        self._missions: JsonStore = _InPlaceJsonStore(os.path.join(path, MISSIONS_DIR), env)


class ExporterWritesInPlace(ArchPhaseAdapter):
    """The JSON side's mission_put (the exporter's too) overwrites files in place."""

    def _open_store(self, name: str) -> Any:
        if name == JSON:
            return _InPlaceJsonState(self._file(JSON_DIR), self._env)
        return super()._open_store(name)


def open_importer_renames_first(path: str, env: Env, **options: str) -> ArchPhaseAdapter:
    return open_phase(path, env, 2, cls=ImporterRenamesFirst, **options)


def open_exporter_writes_in_place(path: str, env: Env, **options: str) -> ArchPhaseAdapter:
    return open_phase(path, env, 1, cls=ExporterWritesInPlace, **options)


# -- other rows --
# ``UnrecordedFallback`` (starts in phase 2): a read SQLite fails, misses or answers otherwise is
# served from JSON, and nothing is counted or logged. ``arch001-discrepancies`` must catch it.
# ``UpgradingReader`` (starts in phase 3): its missions.db opens a file of a newer schema and
# "upgrades" it, writing its own PRAGMA user_version over the newer one.
# ``arch001-schema-newer`` must catch it.
# ``BumpsVersionFirst`` (starts in phase 3): the migration of an older missions.db commits the
# new PRAGMA user_version before the migrated tables and documents, in a transaction of its
# own; a crash between the two leaves a file that says version 2 and holds version 1's tables.
# ``arch001-schema-migration`` must catch it.
# ``SkipsIntegrityCheck`` (starts in phase 3): its missions.db opens without PRAGMA
# integrity_check. ``arch001-integrity-check`` must catch it.
# ``LosesEmptyArrays`` (starts in phase 1): SQLite's mission_get drops a top-level field
# holding an empty array. ``arch001-roundtrip`` must catch it and shrink the document.

__all__ += ["BumpsVersionFirst", "LosesEmptyArrays", "SkipsIntegrityCheck",
            "UnrecordedFallback", "UpgradingReader", "open_bumps_version_first",
            "open_loses_empty_arrays", "open_skips_integrity_check", "open_unrecorded_fallback",
            "open_upgrading_reader"]


class UnrecordedFallback(ArchPhaseAdapter):
    """Phase 2 serves JSON's answer when SQLite fails or differs, without recording it."""

    def _verified_read(self, what: str, truth: str, mirror: str, names: Any,
                       call: Callable[[Any], Any]) -> Any:
        try:
            got = call(self._stores[mirror])
        except FALLBACK_ERRORS:
            got = None
        want = call(self._stores[truth])
        return got if got == want else want   # the defect: no fallback, no mismatch recorded


def _open_missions_db(cls: type[MissionDB], adapter: ArchPhaseAdapter) -> MissionDB:
    """``cls`` (a ``MissionDB`` variant) at the adapter's missions.db, with its options."""
    o = adapter._options[SQLITE]
    return cls(adapter.schema_file, adapter._env, o["journal_mode"], o["synchronous"],
               busy_timeout=int(o["busy_timeout"]))


class _UpgradingMissionDB(MissionDB):
    def _check_file(self) -> int:
        if int(self._pragma("user_version")) > self.SCHEMA_VERSION:
            # the defect: a newer file is taken over instead of refused
            self._pragma("user_version", str(self.SCHEMA_VERSION))
        return super()._check_file()


class UpgradingReader(ArchPhaseAdapter):
    """Its missions.db rewrites a newer schema's user_version to its own and opens it."""

    def _open_store(self, name: str) -> Any:
        if name == SQLITE:
            return _open_missions_db(_UpgradingMissionDB, self)
        return super()._open_store(name)


class _BumpFirstMissionDB(MissionDB):
    def _migrate(self, version: int) -> None:
        # the defect: the version bump commits on its own, before the migrated data
        self._pragma("user_version", str(self.SCHEMA_VERSION))
        self._db.execute("COMMIT")
        self._db.execute("BEGIN IMMEDIATE")
        super()._migrate(version)


class BumpsVersionFirst(ArchPhaseAdapter):
    """Its missions.db commits a migration's version bump before the migration."""

    def _open_store(self, name: str) -> Any:
        if name == SQLITE:
            return _open_missions_db(_BumpFirstMissionDB, self)
        return super()._open_store(name)


def open_unrecorded_fallback(path: str, env: Env, **options: str) -> ArchPhaseAdapter:
    return open_phase(path, env, 2, cls=UnrecordedFallback, **options)


def open_upgrading_reader(path: str, env: Env, **options: str) -> ArchPhaseAdapter:
    return open_phase(path, env, 3, cls=UpgradingReader, **options)


def open_bumps_version_first(path: str, env: Env, **options: str) -> ArchPhaseAdapter:
    return open_phase(path, env, 3, cls=BumpsVersionFirst, **options)


class _NoIntegrityCheckDB(MissionDB):
    def _check_file(self) -> int:
        version = int(self._pragma("user_version"))
        if version >= 1:
            self._check_schema(version)
        return version   # the defect: no PRAGMA integrity_check (nor the version checks)


class SkipsIntegrityCheck(ArchPhaseAdapter):
    """Its missions.db opens without PRAGMA integrity_check."""

    def _open_store(self, name: str) -> Any:
        if name == SQLITE:
            return _open_missions_db(_NoIntegrityCheckDB, self)
        return super()._open_store(name)


class _EmptyArraysLostDB(MissionDB):
    def mission_get(self, mission_id: str) -> dict[str, Any] | None:
        doc = super().mission_get(mission_id)
        # the defect: a field holding an empty array does not come back
        return None if doc is None else {k: v for k, v in doc.items() if v != []}


class LosesEmptyArrays(ArchPhaseAdapter):
    """SQLite's mission_get drops top-level fields that hold an empty array."""

    def _open_store(self, name: str) -> Any:
        if name == SQLITE:
            return _open_missions_db(_EmptyArraysLostDB, self)
        return super()._open_store(name)


def open_skips_integrity_check(path: str, env: Env, **options: str) -> ArchPhaseAdapter:
    return open_phase(path, env, 3, cls=SkipsIntegrityCheck, **options)


def open_loses_empty_arrays(path: str, env: Env, **options: str) -> ArchPhaseAdapter:
    return open_phase(path, env, 1, cls=LosesEmptyArrays, **options)
