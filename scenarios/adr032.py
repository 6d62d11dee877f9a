"""ADR-032's "Failure Modes to Test" and "Key Invariants", as data.

The scenario and expected-behaviour texts are the ADR's own words; each row says what it needs
from a backend and names its procedure. Procedures are named by import path and loaded when the
row runs, so one row's broken dependency cannot stop the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from crashgate.backends import Capability, Declaration
from crashgate.harness.ops import metadata_rows_reason
from crashgate.harness.verdict import Evidence
from crashgate.scenarios.table import Row, RowContext

__all__ = ["CRASHGATE_ROWS", "FAILURE_MODES", "INVARIANTS", "TABLE", "all_rows"]

TABLE = "ADR-032 Failure Modes to Test"
INVARIANT_TABLE = "ADR-032 Key Invariants"
CRASHGATE_TABLE = "crashgate faults"


def _proc(target: str) -> Callable[[RowContext], Evidence]:
    module, _, attr = target.partition(":")

    def run(ctx: RowContext) -> Evidence:
        fn: Callable[[RowContext], Evidence] = getattr(importlib.import_module(module), attr)
        return fn(ctx)

    run.__qualname__ = run.__name__ = attr
    return run


def _always(_decl: Declaration) -> str | None:
    return None


def _needs_all(*caps: Capability, why: str) -> Callable[[Declaration], str | None]:
    def check(decl: Declaration) -> str | None:
        missing = [c.value for c in caps if not decl.has(c)]
        return None if not missing else f"{why} (declares no {', '.join(missing)})"
    return check


def _needs_any(*caps: Capability, why: str) -> Callable[[Declaration], str | None]:
    def check(decl: Declaration) -> str | None:
        if any(decl.has(c) for c in caps):
            return None
        return f"{why} (declares none of {', '.join(c.value for c in caps)})"
    return check


def _on_disk(needs: Callable[[Declaration], str | None], what: str
             ) -> Callable[[Declaration], str | None]:
    """``needs``, and n/a for a server-backed store: the row does ``what`` on crashgate's
    simulated disk, which a server's files never pass through (it would pass unmeasured)."""
    def check(decl: Declaration) -> str | None:
        from crashgate.harness.faults.server import disk_rows_reason
        return needs(decl) or disk_rows_reason(decl, what)
    return check


def _io_errors_reach(decl: Declaration) -> str | None:
    # a child process whose driver injects the errors itself runs the row through it
    if decl.server is not None and decl.injects_io_errors:
        return None
    reason = _on_disk(_always, "I/O errors injected into its file operations")(decl)
    return None if reason is None else (
        f"{reason}; a process driver that injects them itself declares io_errors "
        "(backends/PROTOCOL.md)")


def _version_or_format(decl: Declaration) -> str | None:
    # the gate across implementations writes vectors in a file format two stores share
    if decl.has(Capability.WIRE_VERSION) or decl.has(Capability.SCHEMA_VERSION) or (
            decl.has(Capability.VECTOR) and decl.file_format is not None):
        return None
    return ("declares no file or schema version (none of wire-version, schema-version) and no "
            "vector file format another implementation could share")


def _needs_epoch(decl: Declaration) -> str | None:
    # No failpoints needed: the procedure also crashes after every disk operation of a write
    if not decl.has(Capability.EPOCH):
        return ("not a two-store hybrid: nothing to reconcile by epoch "
                "(declares no epoch)")
    # the rows' promise is metadata rebuilt from RVF after the crash
    return metadata_rows_reason(decl, "metadata rebuilt from RVF after a crash")


def _needs_damage_promise(decl: Declaration) -> str | None:
    # the fault says when it applies; imported here so a broken row cannot stop the table
    from crashgate.harness.faults.corruption import Corruption

    return Corruption().needs(decl)


P = "crashgate.scenarios."

FAILURE_MODES = [
    Row(TABLE, "adr032-1", "1", "Power loss during ingest",
        "Reopen succeeds. Last committed epoch is consistent. Partial append is invisible.",
        _on_disk(_always, "power loss (crash states of unsynced writes)"),
        _proc(P + "procedures_crash:power_loss_during_ingest")),
    Row(TABLE, "adr032-2", "2", "Crash between RVF write and metadata write",
        "Next open reconciles by epoch. Metadata rebuilt from RVF.",
        _on_disk(_needs_epoch, "a crash after each disk operation of a write"),
        _proc(P + "procedures_crash:crash_between_writes")),
    Row(TABLE, "adr032-3", "3", "Two writers attempting to open same store",
        "Second writer gets `ELOCK` error with clear message.",
        _needs_any(Capability.WRITER_LOCK, why="has no writer lock across processes"),
        _proc(P + "procedures_writers:two_writers")),
    Row(TABLE, "adr032-4", "4", "Migration rerun on already-migrated store",
        "No-op. No duplication. Exit code 0.",
        # applies with --migrator or to a backend storing RVF: the procedure sees the context
        _on_disk(_always, "the migration crashed at its disk operations"),
        _proc(P + "procedures_migration:migration_rerun")),
    Row(TABLE, "adr032-5", "5", "Write in Node, read in browser, write, read back in Node",
        "Top-10 nearest neighbors match within 1e-6 distance tolerance.",
        _needs_all(Capability.VECTOR, why="shares no vector file format with another store"),
        _proc(P + "procedures_format:cross_store_round_trip")),
    Row(TABLE, "adr032-6", "6", "Browser refresh during write",
        "Writer lease expires. Next open acquires fresh lease. No corruption.",
        _on_disk(_needs_any(Capability.LEASE, why="has no heartbeat writer lease"),
                 "a lease kept in files, crashed mid-write"),
        _proc(P + "procedures_lease:refresh_during_write")),
    Row(TABLE, "adr032-7", "7", "Mixed RVF versions (v1 file opened by v2 reader)",
        "Forward-compatible read succeeds. v1 file opened by v0 reader fails with upgrade hint.",
        _on_disk(_needs_any(Capability.WIRE_VERSION, Capability.SCHEMA_VERSION,
                            why="declares no file or schema version"),
                 "a refused file compared byte for byte (server-versions checks a server's "
                 "schema version)"),
        _proc(P + "procedures_versions:mixed_versions")),
]

INVARIANTS = [
    Row(INVARIANT_TABLE, "inv-1", "1", "Single writer rule",
        "Any open store has exactly one writer lease. Node uses a file lock (`flock`). Browser "
        "uses a lock record with heartbeat in IndexedDB. Readers are unlimited. A stale lease "
        "(heartbeat older than 30 seconds) is recoverable by a new writer.",
        _needs_any(Capability.WRITER_LOCK, Capability.LEASE,
                   why="has neither a writer lock nor a lease"),
        _proc(P + "procedures_writers:single_writer_rule")),
    Row(INVARIANT_TABLE, "inv-2", "2", "Crash ordering rule (rvlite hybrid mode)",
        "Write order: 1. Write vectors to RVF (append-only, crash-safe) 2. Write metadata to "
        "IndexedDB 3. Commit a shared monotonic epoch value in both stores. On startup: Compare "
        "epochs. If RVF epoch > IndexedDB epoch, rebuild metadata from RVF. If IndexedDB epoch "
        "> RVF epoch (should not happen), log warning and trust RVF.",
        _on_disk(_needs_epoch, "a crash after each disk operation of a write"),
        _proc(P + "procedures_crash:crash_ordering_rule")),
    Row(INVARIANT_TABLE, "inv-3", "3", "Backend selection rule",
        "Explicit override beats auto detection. If user passes `--backend rvf`, do not "
        "silently fall back to `core` or `memory`. Fail loud with a clear install hint.",
        _always, _proc(P + "procedures_selection:backend_selection_rule")),
    Row(INVARIANT_TABLE, "inv-4", "4", "Cross-platform compatibility rule",
        "Every `.rvf` file written by WASM must be readable by Node N-API and vice versa for "
        "the same RVF wire version. If a file uses features from a newer version, the header "
        "must declare it and the CLI must refuse with an upgrade path.",
        # within one implementation on the simulated disk (n/a for a server-backed store),
        # and across implementations sharing the file format on the real file system (any
        # store): the procedure says which half ran and why the other did not
        _version_or_format, _proc(P + "procedures_versions:cross_platform_rule")),
]

CRASHGATE_ROWS = [
    Row(CRASHGATE_TABLE, "model", "M", "Stateful model with process crashes, power loss, "
        "failpoint crashes and reopen",
        "After every step the store answers as the model does; after a crash it shows a state "
        "the acknowledged and indeterminate ops allow.",
        _always, _proc(P + "procedures_model:stateful_model")),
    Row(CRASHGATE_TABLE, "io-errors", "IO", "I/O errors (EIO, ENOSPC at the n-th operation, "
        "transient or persistent)",
        "The store reports the error and loses nothing acknowledged.",
        _io_errors_reach,
        _proc(P + "procedures_ioerrors:io_errors")),
    Row(CRASHGATE_TABLE, "damage", "D", "Damage at rest (bit flips, overwritten, stale or "
        "misdirected sectors, truncation)",
        "Every answer is the acknowledged data or a typed CorruptStore (or the declared "
        "rollback to an earlier commit); never an altered value, never data that was never "
        "written, never an untyped exception.",
        _on_disk(_needs_damage_promise, "damage to its files at rest"),
        _proc(P + "procedures_damage:damage_at_rest")),
]


def all_rows() -> list[Row]:
    # they build on this module's helpers
    from crashgate.scenarios.adr0003 import ADR0003_ROWS
    from crashgate.scenarios.adr072 import ADR072_ROWS
    from crashgate.scenarios.arch001 import ARCH001_ROWS
    from crashgate.scenarios.patterns import PATTERN_ROWS
    from crashgate.scenarios.server_rows import SERVER_ROWS
    return [*FAILURE_MODES, *INVARIANTS, *CRASHGATE_ROWS, *SERVER_ROWS, *ADR072_ROWS,
            *ARCH001_ROWS, *PATTERN_ROWS, *ADR0003_ROWS]
