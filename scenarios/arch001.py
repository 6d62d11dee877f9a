"""ARCH-001's promises about its JSON-to-SQLite migration, as rows. The texts are the document's own
words: its key principles ("Data Integrity - Never lose mission state or audit trail",
"Backward Compatible", "Reversible - Can rollback to JSON if needed"), its phases ("If SQLite
fails, system continues with JSON-only", "Log discrepancies for debugging"), its schema
versioning ("PRAGMA user_version"), its rollback trigger ("PRAGMA integrity_check") and its
end-to-end test ("Verify JSON matches original").

The rows apply to an adapter that declares ``Capability.STAGES`` with ``migration`` ARCH-001
and ``Capability.MISSIONS``; the schema rows also need ``backends.MissionSchema`` and the
phase-2 row ``backends.Discrepant`` (probed on the open store by the procedure, which says n/a
with the reason when it is missing)."""

from __future__ import annotations

from crashgate.backends import Capability, Declaration
from crashgate.scenarios.adr032 import _on_disk, _proc
from crashgate.scenarios.table import Row

__all__ = ["ARCH001_ROWS", "TABLE", "needs_arch"]

TABLE = "ARCH-001 SQLite Migration Plan"
P = "crashgate.scenarios.procedures_arch:"
C = "crashgate.scenarios.procedures_arch_crash:"


def _arch_on_disk(decl: Declaration) -> str | None:
    """``needs_arch``; every ARCH-001 row crashes, damages or fails the simulated disk."""
    return _on_disk(needs_arch, "crashes, I/O errors and damage on its files")(decl)


def needs_arch(decl: Declaration) -> str | None:
    """An ARCH-001 phase adapter: stages of ARCH-001's migration, and mission documents."""
    if not decl.has(Capability.STAGES) or decl.migration != "ARCH-001":
        return ("not an ARCH-001 phase adapter (declares no stages of ARCH-001's migration: "
                "Declaration.migration is " + repr(decl.migration) + ")")
    if not decl.has(Capability.MISSIONS):
        return "holds no ARCH-001 mission documents (declares no missions)"
    return None


ARCH001_ROWS = [
    Row(TABLE, "arch001-integrity", "3", "Mission documents and key-value state written in "
        "every phase, with a process crash or power loss after any disk operation",
        "Data Integrity - Never lose mission state or audit trail.",
        _arch_on_disk, _proc(C + "integrity")),
    Row(TABLE, "arch001-compat", "2", "Old sessions' JSON state (legacy mission files) beside "
        "the adapter when phase 3 opens, with a crash anywhere in the import",
        "Backward Compatible - Support both JSON and SQLite during transition. (Import JSON "
        "into SQLite, then rename JSON, keep as backup: no legacy mission is ever lost.)",
        _arch_on_disk, _proc(C + "legacy_import")),
    Row(TABLE, "arch001-reversible", "4", "Roll back from SQLite to JSON (phase 3 to 2) after "
        "phase 3 changed what JSON holds, with a crash anywhere in the export",
        "Reversible - Can rollback to JSON if needed. (Export SQLite to JSON, preserve latest "
        "state: every JSON document whole, and the rollback completes after any crash.)",
        _arch_on_disk, _proc(C + "reversible")),
    Row(TABLE, "arch001-sqlite-fails", "Phase 1", "SQLite's writes fail (I/O errors) in the "
        "dual-write phase",
        "If SQLite fails, system continues with JSON-only. (The call succeeds, the data reads "
        "back, and the divergence is recorded.)",
        _arch_on_disk, _proc(P + "sqlite_fails")),
    Row(TABLE, "arch001-discrepancies", "Phase 2", "Reads in the hybrid phase when SQLite "
        "misses a record or holds another version of it",
        "Fallback to JSON if SQLite query fails. Log discrepancies for debugging. Alert on JSON "
        "fallbacks (indicates SQLite write failure).",
        _arch_on_disk, _proc(P + "discrepancies")),
    Row(TABLE, "arch001-schema-newer", "Schema", "A mission database whose PRAGMA user_version "
        "is newer than the code's",
        "Schema Versioning Strategy: PRAGMA user_version. (A newer schema is refused with an "
        "upgrade hint and never modified.)",
        _arch_on_disk, _proc(P + "schema_newer")),
    Row(TABLE, "arch001-schema-migration", "Schema", "A mission database at an older schema "
        "version opened by the current code, with a crash anywhere in the migration",
        "Version all migrations. (A migration from version n to n+1 and its version bump are "
        "one transaction: every mission survives it.)",
        _arch_on_disk, _proc(P + "schema_migration")),
    Row(TABLE, "arch001-integrity-check", "Rollback trigger 1", "A damaged mission database "
        "opened",
        "SQLite corruption detected (PRAGMA integrity_check fails). (`PRAGMA integrity_check` "
        "on boot: the damage is reported, never served.)",
        _arch_on_disk, _proc(P + "integrity_check")),
    Row(TABLE, "arch001-roundtrip", "E2E", "Generated mission documents (nested, unicode, "
        "large narratives, empty arrays) written to JSON, migrated to SQLite, rolled back to "
        "JSON",
        "Verify JSON matches original.",
        _arch_on_disk, _proc(P + "roundtrip")),
]
