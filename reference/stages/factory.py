"""Opening a stage adapter: the registered names ``stage0`` ... ``stage4``, their options and the
declaration each stage makes.

The name is the stage a new adapter starts in. An adapter that exists opens in the stage it
recorded (a ``stage2`` promoted to 3 reopens in stage 3 under either name): the stage is the
adapter's durable state, never the caller's guess.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from crashgate.backends import (
    Capability,
    DamagePromise,
    Declaration,
    Durability,
    Env,
    Option,
    check_options,
)
from crashgate.backends.registry import label_of
from crashgate.reference.rvf.store import OPTIONS as RVF_OPTIONS
from crashgate.reference.sqlite_store import OPTIONS as SQLITE_OPTIONS
from crashgate.reference.sqlite_store import checked_busy_timeout
from crashgate.reference.sqlite_store import declaration_for as sqlite_declaration
from crashgate.reference.stages.adapter import StageAdapter, write_failpoint
from crashgate.reference.stages.roles import RVF, SQLITE, roles

__all__ = ["OPTIONS", "open_stage", "open_stage0", "open_stage1", "open_stage2", "open_stage3",
           "open_stage4"]

OPTIONS: dict[str, Option] = {
    "journal_mode": SQLITE_OPTIONS["journal_mode"],
    "synchronous": SQLITE_OPTIONS["synchronous"],
    "sync": RVF_OPTIONS["sync"],
    "metric": SQLITE_OPTIONS["metric"],
    "busy_timeout": SQLITE_OPTIONS["busy_timeout"],
    "wire_version": RVF_OPTIONS["wire_version"],
    "readonly": Option("false", ("true", "false"), help="open an existing adapter as a reader: "
                       "nothing created or written; writes, promotion, rollback, repair, the "
                       "escape hatch, backup and restore refused"),
}
"""``journal_mode``, ``synchronous`` and ``busy_timeout`` go to every SQLite file (data and
control), ``sync`` and ``wire_version`` to the RVF file (an older wire version refuses a newer
file with ``VersionTooNew``; a newer one reads older files), ``metric`` and ``readonly`` to both
(``adapter.py``, "Readers")."""
CAPABILITIES = frozenset({Capability.KV, Capability.VECTOR, Capability.BATCH,
                          Capability.METADATA_FILTER, Capability.STAGES, Capability.RELATIONAL})


def _declare(adapter: StageAdapter) -> Declaration:
    """What the adapter promises in the stage it is in now: the weaker durability of the stores
    it uses (the control file is SQLite, always), RVF's rollback on damage once RVF is read,
    the failpoints one write hits, in order, and RVF's writer lock where RVF is open (a second
    writer's adapter gets ``LockHeld`` from it, and closes what it had opened) and its wire
    version (``wire_version``: the adapter opens, or refuses, what its RVF does); backup where
    every store of the stage declares it and the control file's commits survive power loss."""
    r = roles(adapter.stage)
    sqlite_decl = sqlite_declaration(str(adapter.options["journal_mode"]),
                                     str(adapter.options["synchronous"]))
    durability = sqlite_decl.durability
    failpoints: list[str] = []
    wire_version = None
    if RVF in r.stores:
        rvf_decl = adapter.store(RVF).declaration
        wire_version = rvf_decl.wire_version   # the RVF file's version gate is the adapter's
        if not rvf_decl.durability.covers(durability):
            durability = rvf_decl.durability
        rvf_writes = [f for f in rvf_decl.failpoints if not f.startswith("rvf.compact.")]
        between = write_failpoint(adapter.stage)
        failpoints = ([between, *rvf_writes] if r.kv == SQLITE else [*rvf_writes, between]) \
            if between else rvf_writes
    # RVF may show its last commit that verifies (FORMAT.md): a rollback, when everything is
    # read from RVF; in stage 1 the adapter refuses an RVF older than its last vector write
    # (``_check_rvf_epoch``), since SQLite's newer key-value data beside it would be a mix
    rolls_back = r.kv == RVF and r.vectors == RVF
    # backup.py's commit point is a control write: it must survive what the stores' restores
    # survive (RVF's is fsynced and renamed), or power loss could undo it after them: a mix
    backup = all(adapter.store(name).declaration.has(Capability.BACKUP) for name in r.stores) \
        and sqlite_decl.durability.covers(Durability.POWER_LOSS)
    notes = {
        "stage": f"ADR-072 stage {adapter.stage}: key-value and relational records from "
                 f"{r.kv}, vectors from "
                 f"{r.vectors}" + (f", every write also to {r.mirror} as the {r.mirror_as}"
                                   if r.mirror else ""),
        "damage": "the stage and divergences live in a SQLite file (control.db), checked as "
                  "the SQLite store checks its own; beside the SQLite data file, a sector "
                  "misdirected from one SQLite file to the other is a well-formed page whose "
                  "records carry valid sums (nothing in either ties a page to its file), so "
                  "it is not detected" + (
                      "; RVF, from which this stage reads everything, may show its last "
                      "commit that verifies" if rolls_back else
                      "; an RVF file older than the last vector write is refused"
                      if RVF in (r.kv, r.vectors) else ""),
        **{f"sqlite.{k}": v for k, v in sqlite_decl.notes.items() if k != "damage"},
    }
    return Declaration(
        durability=durability,
        capabilities=CAPABILITIES | ({Capability.FAILPOINTS} if failpoints else set())
        | ({Capability.WRITER_LOCK, Capability.WIRE_VERSION} if RVF in r.stores else set())
        | ({Capability.BACKUP} if backup else set()),
        file_format=f"crashgate-stages/{SQLITE}+{RVF}", wire_version=wire_version,
        failpoints=tuple(failpoints), metric=str(adapter.options["metric"]), notes=notes,
        damage=DamagePromise.ROLLBACK if rolls_back else DamagePromise.DETECTED,
        undetected_damage=sqlite_decl.undetected_damage | {"misdirected-sector"},
        migration="ADR-072",
        # ADR-072's latency criteria are RVF's against SQLite's, as this adapter opens each
        **_latency_pair(adapter.options, {SQLITE, RVF} <= r.stores))


def _latency_pair(options: dict[str, Any], both: bool) -> dict[str, Any]:
    """``candidate`` and ``baseline`` for a stage that uses ``both`` stores: RVF and SQLite as
    names with the options this adapter gives each (``open_stage``); else none."""
    if not both:
        return {"candidate": None, "baseline": None}
    pick = {RVF: ("sync", "metric"), SQLITE: ("journal_mode", "synchronous", "metric")}
    label = {name: label_of(name, tuple((k, str(options[k])) for k in keys))
             for name, keys in pick.items()}
    return {"candidate": label[RVF], "baseline": label[SQLITE]}


def open_stage(path: str, env: Env, stage: int, *, cls: type[StageAdapter] = StageAdapter,
               **options: str) -> StageAdapter:
    """Open (or create, in ``stage``) the stage adapter whose directory is ``path``; ``cls``
    is the adapter class (a test's variant of it)."""
    opts = check_options(f"stage{stage}", options, OPTIONS)
    checked_busy_timeout(f"stage{stage}", opts["busy_timeout"])
    sqlite = {k: str(opts[k]) for k in ("journal_mode", "synchronous", "metric", "busy_timeout",
                                        "readonly")}
    rvf = {k: str(opts[k]) for k in ("sync", "metric", "readonly", "wire_version")}
    return cls(path, env, stage, {SQLITE: sqlite, RVF: rvf}, _declare, opts)


def _opener(stage: int) -> Any:
    opener = partial(open_stage, stage=stage)
    opener.__doc__ = f"Open (or create, in stage {stage}) a stage adapter; see open_stage."
    return opener


open_stage0 = _opener(0)
open_stage1 = _opener(1)
open_stage2 = _opener(2)
open_stage3 = _opener(3)
open_stage4 = _opener(4)
