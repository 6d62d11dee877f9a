"""ARCH-001's mission state in SQLite: the ``missions.db`` schema (versions 1 and 2), the
flattening of a mission document into its tables and back, and the database itself; the JSON
state files and legacy mission files (``json_state``), the legacy importer and the exporter
back to JSON (``transfer``)."""

from __future__ import annotations

from crashgate.reference.arch.flatten import Rows, flatten, unflatten
from crashgate.reference.arch.importer import ImportReport, import_legacy
from crashgate.reference.arch.json_state import (
    JsonState,
    backup_name,
    legacy_files,
    read_legacy,
)
from crashgate.reference.arch.missions_db import (
    FILE_FORMAT,
    ImportCounts,
    MissionDB,
    missions_declaration,
    open_missions_db,
)
from crashgate.reference.arch.schema import OPTIONS, SCHEMA_V1, SCHEMA_V2, create_v1
from crashgate.reference.arch.transfer import export_memory, export_missions

__all__ = ["FILE_FORMAT", "OPTIONS", "SCHEMA_V1", "SCHEMA_V2", "ImportCounts", "ImportReport",
           "JsonState", "MissionDB", "Rows", "backup_name", "create_v1", "export_memory",
           "export_missions", "flatten", "import_legacy", "legacy_files", "missions_declaration",
           "open_missions_db", "read_legacy", "unflatten"]
