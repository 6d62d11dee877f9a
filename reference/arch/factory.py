"""Opening an ARCH-001 phase adapter: the registered names ``arch-phase1`` ... ``arch-phase4``,
their options and the declaration each phase makes.

The name is the phase a new adapter starts in; an adapter that exists opens in the phase it
recorded (an ``arch-phase1`` promoted to 2 reopens in phase 2 under either name).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from crashgate.backends import (
    Capability,
    DamagePromise,
    Declaration,
    Env,
    Option,
    check_options,
)
from crashgate.reference.arch.phases import ARCH001, JSON, SQLITE, ArchPhaseAdapter
from crashgate.reference.rvf.store import OPTIONS as RVF_OPTIONS
from crashgate.reference.sqlite_store import OPTIONS as SQLITE_OPTIONS
from crashgate.reference.sqlite_store import checked_busy_timeout
from crashgate.reference.sqlite_store import declaration_for as sqlite_declaration

__all__ = ["OPTIONS", "open_arch_phase1", "open_arch_phase2", "open_arch_phase3",
           "open_arch_phase4", "open_phase"]

OPTIONS: dict[str, Option] = {
    "journal_mode": SQLITE_OPTIONS["journal_mode"],
    "synchronous": SQLITE_OPTIONS["synchronous"],
    "busy_timeout": SQLITE_OPTIONS["busy_timeout"],
    "stale_after": RVF_OPTIONS["stale_after"],
}
"""``journal_mode``, ``synchronous`` and ``busy_timeout`` go to both SQLite files,
``missions.db`` and ``control.db``; ``stale_after`` is when the writer lock of a dead writer
may be recovered (as the RVF store's)."""
_PHASES = {
    1: "phase 1, dual-write: JSON the primary (reads), SQLite the shadow; a SQLite failure is "
       "queued as a divergence, never a failed call",
    2: "phase 2, hybrid read: writes as phase 1; reads from SQLite, each checked against JSON; "
       "a fallback to JSON or a mismatch is recorded with its key",
    3: "phase 3, SQLite primary: JSON neither written nor read; legacy files imported at open "
       "and renamed to their backup after the import committed",
    4: "phase 4, JSON removal: the JSON state files archived (moved, never deleted); SQLite "
       "only",
}


def _declare(adapter: ArchPhaseAdapter) -> Declaration:
    """What the adapter promises in the phase it is in now: the weaker durability of the
    stores it writes (the control file is SQLite, always), the failpoint between a dual
    write's two writes, and SQLite's and the JSON store's damage detection."""
    r = ARCH001.roles(adapter.stage)
    sqlite_decl = sqlite_declaration(str(adapter.options["journal_mode"]),
                                     str(adapter.options["synchronous"]))
    durability = sqlite_decl.durability
    if JSON in r.stores:
        json_decl = adapter.store(JSON).declaration
        if not json_decl.durability.covers(durability):
            durability = json_decl.durability
    between = ARCH001.write_failpoint(adapter.stage)
    failpoints = (between,) if between else ()
    return Declaration(
        durability=durability,
        capabilities=frozenset({Capability.KV, Capability.MISSIONS, Capability.STAGES,
                                Capability.WRITER_LOCK})
        | ({Capability.FAILPOINTS} if failpoints else set()),
        file_format="crashgate-arch001/json+sqlite",
        failpoints=failpoints,
        notes={
            "phase": f"ARCH-001 {_PHASES[adapter.stage]}",
            "batch": "not declared: the JSON side (one file per key) commits one key at a "
                     "time, and a phase adapter must not promise in phase 3 what a rollback "
                     "to phase 2 would take back",
            "damage": "the phase and divergences live in a SQLite file (control.db) beside "
                      "missions.db; every record of missions.db and of the JSON store "
                      "carries a sum checked on read; a sector misdirected from one SQLite "
                      "file to the other is a well-formed page with valid sums, so it is not "
                      "detected",
            **{f"sqlite.{k}": v for k, v in sqlite_decl.notes.items() if k != "damage"},
        },
        damage=DamagePromise.DETECTED,
        undetected_damage=sqlite_decl.undetected_damage | {"misdirected-sector"},
        migration="ARCH-001",
    )


def open_phase(path: str, env: Env, phase: int, *, cls: type[ArchPhaseAdapter] = ArchPhaseAdapter,
               **options: str) -> ArchPhaseAdapter:
    """Open (or create, in ``phase``) the phase adapter whose directory is ``path``; ``cls``
    is the adapter class (a test's variant of it)."""
    opts = check_options(f"arch-phase{phase}", options, OPTIONS)
    checked_busy_timeout(f"arch-phase{phase}", opts["busy_timeout"])
    sqlite = {k: str(opts[k]) for k in ("journal_mode", "synchronous", "busy_timeout")}
    return cls(path, env, phase, {SQLITE: sqlite, JSON: {}}, _declare, opts)


def _opener(phase: int) -> Any:
    opener = partial(open_phase, phase=phase)
    opener.__doc__ = f"Open (or create, in phase {phase}) an ARCH-001 phase adapter; see " \
                     "open_phase."
    return opener


open_arch_phase1 = _opener(1)
open_arch_phase2 = _opener(2)
open_arch_phase3 = _opener(3)
open_arch_phase4 = _opener(4)
