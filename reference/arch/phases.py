"""ARCH-001's migration from JSON state files to SQLite, as phase adapters on the stage mechanism
every migration shares (``stages.staged.StagedStores``): the same durable stage, dual write,
divergence queue, reconcile at open, promotion and rollback as ADR-072's adapters, with
ARCH-001's roles (``ARCH001``).

Files, in the adapter's directory (it plays ARCH-001's ``.vibe/state/``)::

    writer.lock                    the writer lock (``rvf/lock.py``): one writer at a time
    control.db                     the phase and the divergence queue (``stages/control.py``)
    missions.db                    the SQLite side: ARCH-001's schema (``missions_db.py``)
    json/                          the JSON side: state files (``json_state.py``)
    <name>.json                    legacy files: mission documents old sessions wrote
    <name>_migrated_<UTC>.json     a legacy file's backup, once its import committed
    archive/<UTC>/                 phase 4: json/ and the backups, moved (never deleted)

The phases (ARCH-001's "Migration Strategy")::

    1  dual-write: JSON the primary, SQLite the shadow. A SQLite failure never fails the
       call: it is queued as a divergence ("If SQLite fails, system continues with
       JSON-only"). Reads from JSON.
    2  hybrid read: writes as in phase 1 (JSON stays the source of truth: a SQLite write
       failure is "indicated" by a fallback, not lost); every read is served from SQLite
       and checked against JSON. A read SQLite fails or misses is served from JSON and
       recorded as a fallback, one it answers otherwise as a mismatch, each with its key
       ("Log discrepancies", "Alert on JSON fallbacks"): ``fallbacks``, ``mismatches``,
       ``discrepancies``.
    3  SQLite primary: JSON is no longer written or read. The legacy importer runs at every
       writer's open and right after the promotion: each legacy file is imported by
       mission id (idempotent: an id SQLite has is not overwritten) and renamed to its
       backup only after its import committed (``transfer.import_legacy``).
    4  JSON removal: the promotion moves the JSON state files and the backups into
       ``archive/``; nothing of the JSON side is read or written again.

Moves catch up what the next phase reads, before the switch: 1 -> 2 and 2 -> 3 copy JSON into
SQLite (key-value state and missions); 3 -> 2 is the rollback to JSON: the exporter makes the
JSON side hold exactly what SQLite holds, each document written atomically (the JSON store's
temp file, fsync, rename); 3 -> 4 archives; 4 -> 3 and 2 -> 1 copy nothing (phase 3 does not
read JSON; phase 1 does not read SQLite).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from crashgate.backends import Env, check_mission, check_mission_id
from crashgate.reference.arch.importer import ImportReport, import_legacy
from crashgate.reference.arch.json_state import JsonState, is_backup, utc_stamp
from crashgate.reference.arch.missions_db import MissionDB, open_missions_db
from crashgate.reference.arch.schema import create_v1
from crashgate.reference.rvf.lock import WriterLock
from crashgate.reference.stages.control import Divergence, mission_ref, split_refs
from crashgate.reference.stages.roles import Roles, StagePlan
from crashgate.reference.stages.staged import StagedStores
from crashgate.reference.stages.sync import sync_kv, sync_missions

__all__ = ["ARCH001", "IMPORT_FAILPOINT", "JSON", "SQLITE", "ArchPhaseAdapter",
           "archive_json"]

JSON = "json"
SQLITE = "sqlite"
IMPORT_FAILPOINT = "phase.import-file"
"""Hit after each legacy file the importer handled (imported and renamed, or left damaged)."""
ARCHIVE = "archive"
MISSIONS_DB = "missions.db"
LOCK = "writer"
"""The writer lock is ``<dir>/writer.lock``."""
JSON_DIR = "json"


def archive_json(src: JsonState, _dst: Any, checkpoint: Callable[[], None]) -> int:
    """The 3 -> 4 step: move the JSON state files (``src``'s directory) and the legacy
    backups beside it into ``archive/<UTC timestamp>/``, each a rename keeping its name, then
    fsync the directories; returns how many were moved. What is already moved stays moved: a
    crash half-way is resumed by the next promotion, into a directory of its own."""
    fs = src.fs
    home = os.path.dirname(os.path.normpath(src.path))
    names = [JSON_DIR] if fs.exists(src.path) else []
    names += [n for n in fs.listdir(home) if is_backup(n)]
    if not names:
        return 0
    archive = os.path.join(home, ARCHIVE)
    fs.makedirs(archive)
    stamp = utc_stamp(src.clock.time())
    taken = set(fs.listdir(archive))
    target, n = stamp, 1
    while target in taken:
        n += 1
        target = f"{stamp}-{n}"
    into = os.path.join(archive, target)
    fs.makedirs(into)
    fs.sync_dir(archive)
    fs.sync_dir(home)
    for name in names:
        fs.rename(os.path.join(home, name), os.path.join(into, name))
    fs.sync_dir(into)
    fs.sync_dir(home)
    checkpoint()
    return len(names)


ARCH001 = StagePlan(
    document="ARCH-001",
    stages={1: Roles(JSON, JSON, SQLITE, "shadow"),
            2: Roles(JSON, JSON, SQLITE, "verified"),
            3: Roles(SQLITE, SQLITE),
            4: Roles(SQLITE, SQLITE)},
    catch_up={(1, 2): (("kv", JSON, SQLITE),),
              (2, 3): (("kv", JSON, SQLITE),),
              (3, 4): ((ARCHIVE, JSON, JSON),),
              (4, 3): (),
              (3, 2): (("kv", SQLITE, JSON),),
              (2, 1): ()},
    carries={"kv": ("kv", "missions"), ARCHIVE: (ARCHIVE,)},
    syncs={"kv": sync_kv, "missions": sync_missions, ARCHIVE: archive_json},
    prefix="phase",
    labels={JSON: "JSON", SQLITE: "SQLite"},
)
"""ARCH-001's phases 1-4 (module docstring)."""


class ArchPhaseAdapter(StagedStores):
    """An open ARCH-001 phase adapter; build it with ``factory.open_phase``.
    ``store_options["sqlite"]`` go to ``missions.db`` and ``control.db``."""

    plan = ARCH001
    imported: ImportReport | None = None
    """What the last legacy import found (phase 3), None before one ran."""

    def __init__(self, path: str, env: Env, initial: int,
                 store_options: Mapping[str, dict[str, str]],
                 declare: Callable[[Any], Any], options: Mapping[str, object]) -> None:
        # one writer at a time, before anything is read or written: two processes dual-writing
        # (or one moving the phase under the other) would leave the two sides apart unseen
        self.plan.roles(initial)   # a bad phase is refused before the lock is made
        env.fs.makedirs(path)
        self._lock = WriterLock(env.fs, env.clock, os.path.join(path, LOCK), process=env.process,
                                stale_after=float(str(options["stale_after"])))
        self._lock.acquire()
        try:
            super().__init__(path, env, initial, store_options, declare, options)
        except Exception:   # not on a SimulatedCrash: a dead process releases nothing
            self._lock.release()
            raise
        self.transition_failpoints = (*self.transition_failpoints, IMPORT_FAILPOINT)

    def close(self) -> None:
        if self._closed:
            return
        try:
            super().close()
        finally:
            self._lock.release()

    # -- the mechanism's hooks ----------------------------------------------------------------

    def _open_store(self, name: str) -> Any:
        if name == SQLITE:
            return open_missions_db(self._file(MISSIONS_DB), self._env,
                                    **self._options[SQLITE])
        return JsonState(self._file(JSON_DIR), self._env)

    def _settle(self) -> None:
        if self.stage == 3:
            self.imported = import_legacy(self._stores[SQLITE], self._env.fs, self.path,
                                          self._env.clock, self._import_checkpoint)

    def _import_checkpoint(self) -> None:
        self._env.failpoints.hit(IMPORT_FAILPOINT)

    def _repair_records(self, d: Divergence, target: Any) -> None:
        missions = split_refs(d.relational)[2]
        if missions:
            sync_missions(self._stores[self.plan.roles(self.stage).kv], target,
                          _nothing, missions)

    # -- the schema (backends.MissionSchema) --------------------------------------------------

    schema_version = MissionDB.SCHEMA_VERSION
    """The ``PRAGMA user_version`` this code writes into ``missions.db``."""
    old_schema_versions = (1,)
    """The older versions an open migrates (``write_schema_fixture`` writes them)."""

    @property
    def schema_file(self) -> str:
        """``missions.db``, the SQLite side, versioned with ``PRAGMA user_version``."""
        return self._file(MISSIONS_DB)

    def write_schema_fixture(self, path: str, version: int, docs: list[dict[str, Any]]) -> None:
        """A new ``missions.db`` at ``path`` at the older schema ``version``, holding
        ``docs`` as that version stored them (for the harness's migration row)."""
        if version not in self.old_schema_versions:
            raise ValueError(f"write_schema_fixture(version={version!r}): the older versions "
                             f"are {list(self.old_schema_versions)}")
        sqlite = self._options[SQLITE]
        create_v1(path, self._env, docs, journal_mode=sqlite["journal_mode"],
                  synchronous=sqlite["synchronous"])

    # -- missions -----------------------------------------------------------------------------

    def mission_put(self, doc: Mapping[str, Any]) -> None:
        doc = check_mission(doc)
        self._dual_write("mission_put", "missions", (), (), [mission_ref(doc["mission_id"])],
                         lambda s: s.mission_put(doc))

    def mission_delete(self, mission_id: str) -> None:
        check_mission_id(mission_id)
        self._dual_write("mission_delete", "missions", (), (), [mission_ref(mission_id)],
                         lambda s: s.mission_delete(mission_id))

    def mission_get(self, mission_id: str) -> dict[str, Any] | None:
        check_mission_id(mission_id)
        got: dict[str, Any] | None = self._truth_read(
            "mission_get", "missions", (), (), [mission_ref(mission_id)],
            lambda s: s.mission_get(mission_id))
        return got

    def mission_ids(self) -> list[str]:
        got: list[str] = self._truth_read("mission_ids", "missions", (), (), (),
                                          lambda s: s.mission_ids())
        return got


def _nothing() -> None:
    return None
