"""ARCH-001's ``missions.db``: mission documents flattened into the version-2 tables
(``schema.py``, ``flatten.py``) and the ``agent_memory`` key-value table (where the session
handoff goes), in one SQLite file (``SqliteFile``).

**Missions.** ``mission_put`` replaces every row of the mission in every table in one
transaction (the ``missions`` row keeps its ``id``, the child rows are deleted and written
again). ``mission_get`` reads them in one read transaction (so a writer's commit cannot land
between two tables) and reassembles the document; the ``missions`` row's ``sum`` is
``mission_sum`` of the document as put, so damage in any row, of any table, is
``CorruptStore`` naming the mission and the file, never an altered document. ``id_sum`` covers
the mission id alone, which ``mission_ids`` checks without reassembling every document.

**Versions.** 0 (a new file): version 2 is created. 1: migrated to 2 in one transaction
ending with ``PRAGMA user_version = 2`` (``SqliteFile``): every version-1 document is read
from its ``metadata`` JSON (a row that is not a mission document, or whose ``mission_uuid`` is
not its ``mission_id``, is ``CorruptStore`` and nothing changes), the never-written version-1
child tables are replaced by version 2's, the new ``missions`` columns added, and each
document written again as version 2 rows under its old ``id``. Newer than 2: ``VersionTooNew``
before a byte is written. A reader (``readonly``) migrates nothing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import apsw

from crashgate.backends import (
    Capability,
    CorruptStore,
    DamagePromise,
    Declaration,
    Env,
    canonical_mission,
    check_mission,
    check_mission_id,
    check_options,
    mission_sum,
)
from crashgate.reference.arch.flatten import (
    ARTIFACTS,
    CHILD_TABLES,
    MISSION_FIELDS,
    ListTable,
    Rows,
    flatten,
    unflatten,
)
from crashgate.reference.arch.schema import (
    MISSIONS_ADDED,
    OPTIONS,
    SCHEMA_V2,
    V2_CHILDREN,
    check_columns,
)
from crashgate.reference.sqlite_file import SqliteFile, record_sum
from crashgate.reference.sqlite_kv import SqliteKV
from crashgate.reference.sqlite_store import checked_busy_timeout, durability_for

__all__ = ["FILE_FORMAT", "ImportCounts", "MissionDB", "missions_declaration",
           "open_missions_db"]

FILE_FORMAT = "arch001-missions/sqlite"
_MISSION_COLUMNS = ("mission_uuid", *(c for c, _, _ in MISSION_FIELDS), "metadata")
_ID_TAG = b"mission"


def _child_columns(spec: ListTable) -> tuple[str, ...]:
    keys = ("artifact_type", "artifact_name") if spec is ARTIFACTS else ()
    return ("seq", *keys, *(f.column for f in spec.fields), "extra")


_CHILD_COLUMNS = {spec.table: _child_columns(spec) for spec in CHILD_TABLES}


@dataclass(frozen=True)
class ImportCounts:
    """What ``mission_import`` did, by mission id, in the order given: ``imported`` (new),
    ``same`` (already there, equal: skipped), ``differing`` (already there, different: kept as
    it is, never overwritten)."""

    imported: tuple[str, ...] = ()
    same: tuple[str, ...] = ()
    differing: tuple[str, ...] = ()


def missions_declaration(journal_mode: str, synchronous: str) -> Declaration:
    """The declaration of a ``MissionDB`` opened with these (already checked) options."""
    durability, why = durability_for(journal_mode, synchronous)
    return Declaration(
        durability=durability,
        capabilities=frozenset({Capability.KV, Capability.BATCH, Capability.MISSIONS,
                                Capability.SCHEMA_VERSION}),
        file_format=FILE_FORMAT,
        damage=DamagePromise.DETECTED,
        undetected_damage=frozenset({"stale-sector", "truncation"}),
        notes={
            "damage": "PRAGMA integrity_check on open; a BLAKE2b sum per agent_memory record "
                      "and per mission document (mission_sum, over all of its rows), checked "
                      "on every read. Not detected, as for the SQLite store: a lost write, and "
                      "a file cut to a length SQLite reads as a valid smaller database",
            "durability": why,
            "options": f"journal_mode={journal_mode} synchronous={synchronous}",
            "batch": "write_batch, mission_put and mission_import each run in one transaction",
        },
    )


class MissionDB(SqliteFile, SqliteKV):
    """ARCH-001's ``missions.db`` at ``path`` (module docstring): the key-value operations on
    ``agent_memory`` (``SqliteKV``) and the mission operations (``MissionStore``)."""

    SCHEMA_VERSION = 2
    KIND = "ARCH-001 mission database"
    KV_TABLE = "agent_memory"

    def __init__(self, path: str, env: Env, journal_mode: str, synchronous: str, *,
                 readonly: bool = False, busy_timeout: int = 5000) -> None:
        self.declaration = missions_declaration(journal_mode, synchronous)
        super().__init__(path, env, journal_mode, synchronous, readonly=readonly,
                         busy_timeout=busy_timeout)

    @property
    def schema_version(self) -> int:
        """The file's ``PRAGMA user_version`` (after open: always ``SCHEMA_VERSION``)."""
        self._check_open()
        with self._errors():
            return int(self._pragma("user_version"))

    # -- the schema (SqliteFile's hooks) -----------------------------------------------------

    def _set_modes(self, journal_mode: str, synchronous: str, exclusive: bool) -> None:
        super()._set_modes(journal_mode, synchronous, exclusive)
        self._pragma("foreign_keys", "ON")   # per connection, and a no-op inside a transaction

    def _create_schema(self) -> None:
        self._db.execute(SCHEMA_V2)

    def _check_schema(self, version: int) -> None:
        check_columns(self._db, self.path, version)

    def _migrate(self, version: int) -> None:
        """1 -> 2 inside ``SqliteFile``'s one migrating transaction (module docstring)."""
        assert version == 1, version
        for table in ("tool_calls", "decisions", "playbook_runs"):
            if self._db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall():
                raise CorruptStore(self.path, f"version 1's {table} holds rows, which "
                                   "crashgate's version 1 never wrote (its documents are whole "
                                   "in missions.metadata); migrate it with the tool that wrote "
                                   "them")
        docs: list[tuple[int, Rows, bytes]] = []
        for row_id, raw_id, raw_doc in self._db.execute(
                "SELECT id, CAST(mission_uuid AS BLOB), CAST(metadata AS BLOB) FROM missions"
                ).fetchall():
            try:
                mission_id = bytes(raw_id).decode("utf-8")  # type: ignore[arg-type]
                doc = check_mission(json.loads(bytes(raw_doc).decode("utf-8")))  # type: ignore[arg-type]
            except (ValueError, TypeError) as exc:
                raise CorruptStore(self.path, f"version 1's mission row {row_id} does not "
                                   f"hold a mission document: {exc}") from exc
            if doc["mission_id"] != mission_id:
                raise CorruptStore(self.path, f"version 1's mission {mission_id!r} holds the "
                                   f"document of {doc['mission_id']!r}")
            docs.append((int(row_id), flatten(doc), mission_sum(doc)))  # type: ignore[arg-type]
        self._db.execute("DROP TABLE tool_calls; DROP TABLE decisions; DROP TABLE playbook_runs")
        for column in MISSIONS_ADDED:
            self._db.execute(f"ALTER TABLE missions ADD COLUMN {column}")
        self._db.execute(V2_CHILDREN)
        for row_id, rows, doc_sum in docs:
            self._write(rows, doc_sum, row_id)

    # -- missions ----------------------------------------------------------------------------

    def _write(self, rows: Rows, doc_sum: bytes, row_id: int | None) -> None:
        """The rows of one document whose ``mission_sum`` is ``doc_sum`` (of the document as
        given, so a flatten that lost anything would be caught on the first read), inside a
        write transaction: the ``missions`` row (a new one, or ``row_id`` updated) and every
        child row, the old ones deleted first."""
        m = rows.mission
        values = [m[c] for c in _MISSION_COLUMNS] + [
            doc_sum, record_sum(_ID_TAG, m["mission_uuid"].encode("utf-8"))]
        names = (*_MISSION_COLUMNS, "sum", "id_sum")
        if row_id is None:
            self._db.execute(f"INSERT INTO missions({', '.join(names)}) VALUES "
                             f"({', '.join('?' * len(names))})", values)
            row_id = self._db.last_insert_rowid()
        else:
            self._db.execute(f"UPDATE missions SET {', '.join(f'{n} = ?' for n in names)} "
                             "WHERE id = ?", [*values, row_id])
            for table in _CHILD_COLUMNS:
                self._db.execute(f"DELETE FROM {table} WHERE mission_id = ?", (row_id,))
        for table, table_rows in rows.children.items():
            columns = _CHILD_COLUMNS[table]
            self._db.executemany(
                f"INSERT INTO {table}(mission_id, {', '.join(columns)}) VALUES "
                f"(?, {', '.join('?' * len(columns))})",
                [(row_id, *(r[c] for c in columns)) for r in table_rows])

    def _row_id(self, mission_id: str) -> int | None:
        rows = self._db.execute("SELECT id FROM missions WHERE mission_uuid = ?",
                                (mission_id,)).fetchall()
        return int(rows[0][0]) if rows else None  # type: ignore[arg-type]

    def _read(self, mission_id: str) -> dict[str, Any] | None:
        """The verified document of ``mission_id``, inside a transaction (read or write)."""
        names = (*_MISSION_COLUMNS, "sum", "id_sum", "id")
        try:
            found = self._db.execute(f"SELECT {', '.join(names)} FROM missions WHERE "
                                     "mission_uuid = ?", (mission_id,)).fetchall()
            if not found:
                return None
            m = dict(zip(names, found[0], strict=True))
            children = {table: [dict(zip(columns, r, strict=True)) for r in self._db.execute(
                f"SELECT {', '.join(columns)} FROM {table} WHERE mission_id = ? ORDER BY seq",
                (m["id"],))] for table, columns in _CHILD_COLUMNS.items()}
            doc = unflatten(Rows(m, {t: rs for t, rs in children.items() if rs}))
        except (ValueError, TypeError, KeyError) as exc:   # incl. UnicodeDecodeError
            raise CorruptStore(self.path, f"mission {mission_id!r} does not reassemble from "
                               f"its rows: {exc}") from exc
        if m["sum"] != mission_sum(doc) or doc["mission_id"] != mission_id:
            raise CorruptStore(self.path, f"mission {mission_id!r} does not match its "
                               "checksum (a row of it changed under SQLite: damage at rest)")
        return doc

    def mission_put(self, doc: Mapping[str, Any]) -> None:
        """Insert or replace ``doc`` (``check_mission``): all of its rows, one transaction."""
        doc = check_mission(doc)
        rows = flatten(doc)
        with self._transaction("mission_put"):
            self._write(rows, mission_sum(doc), self._row_id(doc["mission_id"]))

    def mission_get(self, mission_id: str) -> dict[str, Any] | None:
        """The document as it was put, or None; ``CorruptStore`` if any of its rows is
        damaged."""
        check_mission_id(mission_id)
        with self._write_lock:   # the read transaction is the connection's, not a thread's
            self._check_open()
            with self._errors():
                self._db.execute("BEGIN")
                try:
                    doc = self._read(mission_id)
                except BaseException:
                    with contextlib.suppress(apsw.Error):   # the first error is the one to report
                        if self._db.in_transaction:
                            self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return doc

    def mission_delete(self, mission_id: str) -> None:
        check_mission_id(mission_id)
        with self._transaction("mission_delete"):
            row_id = self._row_id(mission_id)
            if row_id is not None:
                for table in _CHILD_COLUMNS:
                    self._db.execute(f"DELETE FROM {table} WHERE mission_id = ?", (row_id,))
                self._db.execute("DELETE FROM missions WHERE id = ?", (row_id,))

    def mission_ids(self) -> list[str]:
        """Every mission id, sorted; each checked against its ``id_sum``."""
        self._check_open()
        out = []
        with self._errors():
            for raw, got in self._db.execute(
                    "SELECT CAST(mission_uuid AS BLOB), id_sum FROM missions"):
                if not isinstance(raw, bytes) or got != record_sum(_ID_TAG, raw):
                    raise CorruptStore(self.path, f"the id of mission {raw!r} does not match "
                                       "its checksum (damage at rest)")
                out.append(raw.decode("utf-8"))   # verified: the UTF-8 that was written
        return sorted(out)

    def mission_import(self, docs: Iterable[Mapping[str, Any]]) -> ImportCounts:
        """Import ``docs`` in one transaction, idempotently by mission id (ARCH-001: "skips
        duplicates"): a mission already there is never overwritten (``ImportCounts``). Every
        document is checked before anything is written. The commit is fsynced whatever
        ``synchronous`` says: the importer renames the legacy files once this returns, and a
        power loss must not keep the rename and lose the import."""
        todo = [(flatten(d), mission_sum(d), canonical_mission(d))
                for d in map(check_mission, docs)]
        imported: list[str] = []
        same: list[str] = []
        differing: list[str] = []
        with self._transaction("mission_import", durable=True):
            for rows, doc_sum, canonical in todo:
                mission_id = rows.mission["mission_uuid"]
                old = self._read(mission_id)
                if old is None:
                    self._write(rows, doc_sum, None)
                    imported.append(mission_id)
                else:
                    (same if canonical_mission(old) == canonical else differing).append(
                        mission_id)
        return ImportCounts(tuple(imported), tuple(same), tuple(differing))


def open_missions_db(path: str, env: Env, **options: str) -> MissionDB:
    """Open (or create, or migrate) ARCH-001's mission database at ``path``.

    Options, as the SQLite store's: ``journal_mode`` (default WAL), ``synchronous`` (default
    FULL), ``readonly`` (true, false), ``busy_timeout`` (ms, default 5000)."""
    opts = check_options("arch-missions", options, OPTIONS)
    return MissionDB(path, env, str(opts["journal_mode"]), str(opts["synchronous"]),
                     readonly=opts["readonly"] == "true",
                     busy_timeout=checked_busy_timeout("arch-missions", opts["busy_timeout"]))
