"""ARCH-001's ``missions.db`` schema, versions 1 and 2, as DDL, and a writer of version-1 files.

**Version 1** (ARCH-001 before its "Schema v2 Revisions", 5 tables): ``missions`` with
``id, mission_uuid, phase, status, created_at, completed_at, metadata``, where ``metadata`` is
the whole document as JSON, as ARCH-001's phase-1 example writes it (``insert_mission(...,
metadata=mission_data)``; the other columns are copies of the document's str fields, NULL
otherwise); ``tool_calls``, ``decisions``, ``playbook_runs`` as ARCH-001_schema.sql has them,
which crashgate's version 1 created but never wrote; ``agent_memory``, the key-value table
(``sqlite_kv.py``) where the session handoff goes.

**Version 2** (``SCHEMA_V2``, 11 tables): ``missions`` gains ARCH-001's columns (``updated_at``,
``planning_sub_state``, the budget, ``owner``, ``description``, ``api_version``) and two sums
(``sum`` = ``mission_sum(doc)``, ``id_sum`` = ``record_sum(b"mission", mission_uuid)``), and its
``metadata`` becomes the rest of the document that no column or row took (``flatten.py``). One
child table per array or object ARCH-001 flattens (``flatten.CHILD_TABLES``); each row has
``mission_id`` (-> ``missions.id``), ``seq`` (its position) and ``extra`` (what no column took).
Column types follow the kinds of ``flatten``: ``text`` TEXT, ``bool`` INTEGER, ``json`` TEXT,
and ``num`` **no type** (no affinity: an INTEGER stays one, a REAL stays one, and numeric
comparisons such as "over budget" still work across both).

Where this departs from ARCH-001_schema.sql, for losslessness: no CHECK on phase, status and
gate status, and no NOT NULL on extracted columns (a document may hold any value there or
none; what a column cannot hold stays in JSON); no UNIQUE on concepts or session numbers (an
array may repeat them), ``UNIQUE (mission_id, seq)`` instead. Foreign keys are on
(``PRAGMA foreign_keys``, set on every writer's connection) and cascade from ``missions``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import apsw

from crashgate.backends import CorruptStore, Env, check_mission, check_options
from crashgate.reference.arch.flatten import (
    CHILD_TABLES,
    MISSION_FIELDS,
    V1_MISSION_FIELDS,
    ListTable,
    dumps,
)
from crashgate.reference.sqlite_file import SqliteFile
from crashgate.reference.sqlite_kv import SqliteKV
from crashgate.reference.sqlite_store import OPTIONS as SQLITE_OPTIONS
from crashgate.reference.sqlite_store import checked_busy_timeout

__all__ = ["MISSIONS_ADDED", "OPTIONS", "SCHEMA_V1", "SCHEMA_V2", "V2_CHILDREN", "check_columns",
           "columns_of", "create_v1"]

# the SQLite store's options that apply to one mission database file (not its vector metric)
OPTIONS = {k: SQLITE_OPTIONS[k] for k in ("journal_mode", "synchronous", "readonly",
                                          "busy_timeout")}
_TYPES = {"text": "TEXT", "num": "", "bool": "INTEGER", "json": "TEXT"}

_MISSIONS_V1 = """CREATE TABLE IF NOT EXISTS missions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mission_uuid TEXT UNIQUE NOT NULL,       -- the document's mission_id
    phase TEXT, status TEXT, created_at TEXT, completed_at TEXT,
    -- metadata: in version 1 the whole document, in version 2 the rest of it (flatten.py)
    metadata TEXT NOT NULL);
"""
# version 2's columns of missions, each added by ALTER TABLE ... ADD COLUMN in the migration
MISSIONS_ADDED: tuple[str, ...] = tuple(
    f"{column} {_TYPES[kind]}".rstrip() for column, _, kind in MISSION_FIELDS[4:]) + (
    "sum BLOB NOT NULL DEFAULT x''",      # mission_sum(document)
    "id_sum BLOB NOT NULL DEFAULT x''")   # record_sum(b"mission", mission_uuid as UTF-8)
_AGENT_MEMORY = """CREATE TABLE IF NOT EXISTS agent_memory (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, sum BLOB NOT NULL,
    mission_id INTEGER REFERENCES missions(id) ON DELETE CASCADE);  -- NULL: global (kv API)
CREATE INDEX IF NOT EXISTS idx_agent_memory_mission_key ON agent_memory(mission_id, key);
"""

SCHEMA_V1 = _MISSIONS_V1 + _AGENT_MEMORY + """
CREATE TABLE IF NOT EXISTS tool_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mission_id INTEGER NOT NULL REFERENCES missions(id) ON DELETE CASCADE,
    tool_name TEXT NOT NULL, args TEXT NOT NULL, result TEXT, timestamp TEXT NOT NULL,
    duration_ms INTEGER, success INTEGER NOT NULL, error_message TEXT);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mission_id INTEGER NOT NULL REFERENCES missions(id) ON DELETE CASCADE,
    decision_type TEXT NOT NULL, rationale TEXT, timestamp TEXT NOT NULL, agent_name TEXT,
    context TEXT);
CREATE TABLE IF NOT EXISTS playbook_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mission_id INTEGER NOT NULL REFERENCES missions(id) ON DELETE CASCADE,
    playbook_name TEXT NOT NULL, phase TEXT, started_at TEXT NOT NULL, completed_at TEXT,
    success INTEGER, metrics TEXT, error_message TEXT);
CREATE INDEX IF NOT EXISTS idx_missions_status ON missions(status);
CREATE INDEX IF NOT EXISTS idx_tool_calls_mission_time ON tool_calls(mission_id, timestamp);
"""

# ARCH-001's hot paths ("Indexes on Hot Paths", and the indexes of ARCH-001_schema.sql)
_INDEXES: dict[str, tuple[str, ...]] = {
    "missions": ("status", "phase", "owner", "max_cost_usd, current_cost_usd"),
    "tool_calls": ("mission_id, timestamp", "tool_name", "success"),
    "decisions": ("mission_id, timestamp", "decision_type", "agent_name"),
    "playbook_runs": ("playbook_name", "success"),
    "session_narrative": ("phase",),
    "domain_concepts": ("concept",),
    "domain_concerns": ("concern",),
    "trajectory": ("current_phase",),
    "artifacts": ("mission_id, artifact_type", "artifact_type", "ref"),
    "quality_gates": ("gate_name", "status"),
}


def _child_ddl(spec: ListTable) -> str:
    keys = ("artifact_type TEXT NOT NULL, artifact_name TEXT NOT NULL, "
            if spec.table == "artifacts" else "")
    columns = ", ".join(f"{f.column} {_TYPES[f.kind]}".rstrip() for f in spec.fields)
    return (f"CREATE TABLE IF NOT EXISTS {spec.table} (\n    id INTEGER PRIMARY KEY "
            "AUTOINCREMENT,\n    mission_id INTEGER NOT NULL REFERENCES missions(id) ON DELETE "
            f"CASCADE,\n    seq INTEGER NOT NULL, {keys}{columns}, extra TEXT,\n"
            "    UNIQUE (mission_id, seq));\n")


def _index_ddl(tables: Iterable[str]) -> str:
    return "".join(
        f"CREATE INDEX IF NOT EXISTS idx_{t}_{cols.replace(', ', '_')} ON {t}({cols});\n"
        for t in tables for cols in _INDEXES.get(t, ()))


# the child tables and indexes version 2 creates (in a new file, and in the migration)
V2_CHILDREN = "".join(_child_ddl(s) for s in CHILD_TABLES) + _index_ddl(_INDEXES)
SCHEMA_V2 = (_MISSIONS_V1.replace("metadata TEXT NOT NULL);",
                                  "metadata TEXT NOT NULL,\n    "
                                  + ",\n    ".join(MISSIONS_ADDED) + ");")
             + _AGENT_MEMORY + V2_CHILDREN)


@functools.cache
def columns_of(version: int) -> dict[str, tuple[tuple[str, str, int, int], ...]]:
    """{table: PRAGMA table_info as (name, type, notnull, pk)} of a file at ``version`` (1 or
    2), computed from the DDL itself in an in-memory database."""
    db = apsw.Connection(":memory:")
    try:
        db.execute(SCHEMA_V1 if version == 1 else SCHEMA_V2)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type = "
                                           "'table' AND name NOT LIKE 'sqlite_%'")]
        return {t: tuple((str(r[1]), str(r[2]).upper(), int(r[3]), int(r[5]))
                         for r in db.execute(f"PRAGMA table_info({t})")) for t in tables}
    finally:
        db.close()


def check_columns(db: apsw.Connection, path: str, version: int) -> None:
    """``CorruptStore`` unless every table of ``version`` has the columns its DDL makes (a
    flipped bit in the schema text can rename a column without failing integrity_check)."""
    for table, want in columns_of(version).items():
        try:
            got = tuple((r[1], str(r[2]).upper(), r[3], r[5])
                        for r in db.execute(f"PRAGMA table_info({table})"))
        except UnicodeDecodeError as exc:   # a name whose bytes are no longer UTF-8
            raise CorruptStore(path, f"the schema of table {table} does not decode: "
                               f"{exc}") from exc
        if got != want:
            raise CorruptStore(path, f"table {table} has the columns {[c[0] for c in got]}, not "
                               f"the ones of schema version {version} {[c[0] for c in want]}: "
                               "its schema text is damaged")


class _V1File(SqliteFile, SqliteKV):
    """A version-1 ``missions.db`` as crashgate's version 1 wrote it (for ``create_v1``)."""

    SCHEMA_VERSION = 1
    KIND = "ARCH-001 mission database"
    KV_TABLE = "agent_memory"

    def _create_schema(self) -> None:
        self._db.execute(SCHEMA_V1)

    def _check_schema(self, version: int) -> None:
        check_columns(self._db, self.path, version)


def create_v1(path: str, env: Env, docs: Iterable[Mapping[str, Any]],
              kv: Mapping[str, bytes] | None = None, **options: str) -> None:
    """Write a new version-1 ``missions.db`` at ``path`` holding ``docs`` (each as ARCH-001's
    phase-1 example stores it) and the key-value records ``kv``, in one transaction.
    ``options``: ``journal_mode``, ``synchronous`` as for the SQLite store."""
    opts = check_options("arch-missions-v1", options, OPTIONS)
    f = _V1File(path, env, str(opts["journal_mode"]), str(opts["synchronous"]),
                busy_timeout=checked_busy_timeout("arch-missions-v1", opts["busy_timeout"]))
    try:
        rows = []
        for doc in map(check_mission, docs):
            derived = [doc.get(p[0]) if isinstance(doc.get(p[0]), str) else None
                       for _, p, _ in V1_MISSION_FIELDS]
            rows.append((doc["mission_id"], *derived, dumps(dict(doc))))
        with f._transaction("create_v1"):
            f._db.executemany("INSERT INTO missions(mission_uuid, phase, status, created_at, "
                              "completed_at, metadata) VALUES (?, ?, ?, ?, ?, ?)", rows)
        if kv:
            f.write_batch(kv)
    finally:
        f.close()
