"""ADR-072's promises about its stages, as rows. The texts are the ADR's own words: "a
reversible migration path where any stage can be rolled back to the previous stage without data
loss", stage 4's "Emergency rollback: export RVF to SQLite and switch", and the latency
criteria of the stage gates ("RVF read latency within 2x of SQLite", "write latency within
1.5x"), for a backend that declares a baseline (``procedures_latency``)."""

from __future__ import annotations

from crashgate.backends import Declaration
from crashgate.scenarios.adr032 import _on_disk, _proc
from crashgate.scenarios.table import Row

__all__ = ["ADR072_ROWS", "TABLE"]

TABLE = "ADR-072 Stages"
P = "crashgate.scenarios.procedures_stages:"
L = "crashgate.scenarios.procedures_latency:"


def _needs_stages(decl: Declaration) -> str | None:
    from crashgate.scenarios.procedures_stages import needs_stages
    return needs_stages(decl)


def _needs_baseline(decl: Declaration) -> str | None:
    from crashgate.scenarios.procedures_latency import needs_baseline
    return needs_baseline(decl)


def _needs_backup(decl: Declaration) -> str | None:
    from crashgate.scenarios.procedures_backup import needs_backup
    return needs_backup(decl)


ADR072_ROWS = [
    Row(TABLE, "adr072-reversible", "R", "Any stage can be rolled back to the previous stage "
        "(and promoted to the next), with a crash anywhere in the transition",
        "A reversible migration path where any stage can be rolled back to the previous stage "
        "without data loss.",
        _on_disk(_needs_stages, "crashes anywhere in a transition"), _proc(P + "reversible")),
    Row(TABLE, "adr072-escape", "E", "Stage 4's escape hatch activated, with a crash anywhere "
        "in the export",
        "Emergency rollback: export RVF to SQLite and switch. (A crash half-way leaves the "
        "previous SQLite untouched.)",
        _on_disk(_needs_stages, "crashes anywhere in the export"), _proc(P + "escape_hatch")),
    Row(TABLE, "adr072-backup", "B", "Back up, write more, restore, with a crash anywhere in "
        "the backup or the restore and a damaged backup",
        "Backup/restore cycle validated for RVF (go/no-go for stage 3). Full backup/restore "
        "cycle validated (go/no-go for stage 4).",
        _on_disk(_needs_backup, "crashes in the backup or the restore and a damaged backup"),
        _proc("crashgate.scenarios.procedures_backup:backup_restore")),
    Row(TABLE, "adr072-read-latency", "G3.2", "The backend's reads (get, scan, fetch, query) "
        "against its declared baseline's, interleaved in one process on real files, with an "
        "A/A run of the baseline against itself",
        "RVF read latency within 2x of SQLite for all query types (go/no-go for stage 3).",
        _needs_baseline, _proc(L + "read_latency")),
    Row(TABLE, "adr072-write-latency", "G4.2", "The backend's writes (put, upsert, "
        "q_value_update) against its declared baseline's, interleaved in one process on real "
        "files, with an A/A run of the baseline against itself",
        "RVF write latency within 1.5x of SQLite for all operation types (go/no-go for "
        "stage 4).",
        _needs_baseline, _proc(L + "write_latency")),
]
