"""ADR-0003's migration from SQLite to Postgres + pgvector as stage adapters, on the mechanism
every migration's adapter shares (``stages.staged.StagedStores``), with a plan of its own
(``ADR0003``): the registered names ``pg-stage1`` ... ``pg-stage3``.

Stages::

    1  dual-write, SQLite the source of truth, Postgres the shadow: every write reaches SQLite,
       then Postgres (a failed Postgres write is a queued divergence, never a failed call);
       every read is a shadow read: Postgres and SQLite both answer, SQLite's answer is
       served, and each comparison is counted (``shadow_reads``), each disagreement too
       (``mismatches``, ``discrepancies``: a Postgres failure or empty answer is a fallback)
    2  dual-write, Postgres the source of truth, SQLite the fallback (a read Postgres fails,
       e.g. while its server is down, is served from SQLite and counted, unless a queued
       divergence says SQLite is behind on it)
    3  Postgres only

Each promotion catches the next stage's truth up first (1 -> 2: the whole key-value data and
every vector copied from SQLite into Postgres, writing only what differs), each rollback the
store the previous stage reads (2 -> 1, 3 -> 2: Postgres into SQLite): reversible, and a crash
anywhere in a move reopens in one of its two stages with nothing lost (``staged.py``).

Files, in the directory ``path``: ``control.db`` (the stage and the divergence queue),
``sqlite.db`` (the reference SQLite store) and ``postgres.store``, the pgvector store's marker
(it names the server and the schema that hold the Postgres side: ``postgres/store.py``).

**Which rows.** The declaration names ``migration="ADR-0003"``, so ADR-072's stage rows are
n/a for it (they crash a move at every operation of crashgate's simulated disk and replay the
crash states from the disk image; the Postgres side is a server's state, in no image, so a
replayed state would pair an earlier SQLite with a later Postgres: a mix the adapter never
was). ``Declaration.server`` is set whenever Postgres is one of the stage's stores, for the
same reason; the adapter is ``ServerBacked`` through its Postgres store, so the server rows
kill that server under it.
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from crashgate.backends import (
    Capability,
    DamagePromise,
    Declaration,
    Env,
    Hit,
    Option,
    VectorRecord,
    check_options,
)
from crashgate.reference.postgres.store import OPTIONS as PG_OPTIONS
from crashgate.reference.postgres.store import open_pgvector
from crashgate.reference.sqlite_store import OPTIONS as SQLITE_OPTIONS
from crashgate.reference.sqlite_store import checked_busy_timeout, open_sqlite
from crashgate.reference.sqlite_store import declaration_for as sqlite_declaration
from crashgate.reference.stages.reconcile import REFUSALS
from crashgate.reference.stages.roles import Roles, StagePlan
from crashgate.reference.stages.staged import FALLBACK_ERRORS, StagedStores
from crashgate.reference.stages.sync import sync_kv, sync_vectors

__all__ = ["ADR0003", "OPTIONS", "POSTGRES", "POSTGRES_FILE", "SQLITE", "PgStageAdapter",
           "open_pg_stage", "open_pg_stage1", "open_pg_stage2", "open_pg_stage3"]

SQLITE = "sqlite"
POSTGRES = "postgres"
POSTGRES_FILE = "postgres.store"
_TO_SQLITE = (("kv", POSTGRES, SQLITE), ("vectors", POSTGRES, SQLITE))

ADR0003 = StagePlan(
    document="ADR-0003",
    stages={1: Roles(SQLITE, SQLITE, POSTGRES, "verified"),
            2: Roles(POSTGRES, POSTGRES, SQLITE, "fallback"),
            3: Roles(POSTGRES, POSTGRES)},
    catch_up={(1, 2): (("kv", SQLITE, POSTGRES), ("vectors", SQLITE, POSTGRES)),
              (2, 3): (),
              (3, 2): _TO_SQLITE,
              (2, 1): _TO_SQLITE},
    carries={"kv": ("kv",), "vectors": ("vectors",)},
    syncs={"kv": sync_kv, "vectors": sync_vectors},
    prefix="pg-stage",
    labels={SQLITE: "SQLite", POSTGRES: "Postgres"},
)
"""ADR-0003's SQLite -> Postgres stages 1-3 (module docstring). Stage 1's mirror is
``verified``: the mechanism's shadow read that compares every answer and serves the truth's
whenever the two differ (equal answers are the same answer)."""

_PG_PASSED = tuple(k for k in PG_OPTIONS if k not in ("metric", "readonly"))
OPTIONS: dict[str, Option] = {
    "journal_mode": SQLITE_OPTIONS["journal_mode"],
    "synchronous": SQLITE_OPTIONS["synchronous"],
    "busy_timeout": SQLITE_OPTIONS["busy_timeout"],
    "metric": SQLITE_OPTIONS["metric"],
    **{k: PG_OPTIONS[k] for k in _PG_PASSED},
}
"""``journal_mode``, ``synchronous`` and ``busy_timeout`` go to both SQLite files (data and
control), the pgvector store's own options (``synchronous_commit``, ``fsync``, ``index``,
``url`` ...) to Postgres, ``metric`` to both (their distances must be the same to compare)."""
_STAGES = {
    1: "stage 1, dual-write: SQLite the source of truth, Postgres the shadow; every read "
       "compared (shadow_reads), SQLite's answer served, a disagreement recorded",
    2: "stage 2, dual-write: Postgres the source of truth, SQLite the fallback (a read "
       "Postgres fails is served from SQLite and counted)",
    3: "stage 3, Postgres only",
}


class PgStageAdapter(StagedStores):
    """An open ADR-0003 stage adapter (module docstring); build it with ``open_pg_stage``.
    ``store_options``: ``sqlite`` to ``sqlite.db`` and ``control.db``, ``postgres`` to the
    pgvector store."""

    plan = ADR0003

    def __init__(self, path: str, env: Env, initial: int,
                 store_options: Mapping[str, dict[str, str]],
                 declare: Callable[[Any], Declaration], options: Mapping[str, object]) -> None:
        self.shadow_reads: Counter[str] = Counter()
        """Stage 1's reads compared between the two stores, by operation (each read the
        truth answered; ``mismatches`` and ``fallbacks`` count the ones that disagreed)."""
        super().__init__(path, env, initial, store_options, declare, options)

    # -- the mechanism's hooks ----------------------------------------------------------------

    def _open_store(self, name: str) -> Any:
        if name == SQLITE:
            return open_sqlite(self._file(self._sqlite_file), self._env,
                               **self._options[SQLITE])
        return open_pgvector(self._file(POSTGRES_FILE), self._env, **self._options[POSTGRES])

    def _repair_records(self, d: Any, target: Any) -> None:
        sync_vectors(self._stores[self.plan.roles(self.stage).vectors], target, _nothing, d.ids)

    def _truth_read(self, what: str, data: str, keys: Sequence[str], ids: Sequence[int],
                    refs: Sequence[str], call: Callable[[Any], Any]) -> Any:
        # Postgres failing a read (its server down: the driver's OperationalError) is what
        # stage 1's comparison and stage 2's fallback are for: the mechanism knows it as an
        # OSError (``FALLBACK_ERRORS``); an answer (bad input, a closed store) stays itself
        postgres = self._stores.get(POSTGRES)

        def guarded(store: Any) -> Any:
            if store is not postgres:
                return call(store)
            try:
                return call(store)
            except (*REFUSALS, *FALLBACK_ERRORS):
                raise
            except Exception as exc:  # noqa: BLE001 - any other failure of a read is EIO
                raise OSError(errno.EIO, f"{what} on Postgres failed: "
                              f"{type(exc).__name__}: {exc}") from exc
        return super()._truth_read(what, data, keys, ids, refs, guarded)

    def _verified_read(self, what: str, truth: str, mirror: str, names: Sequence[str],
                       call: Callable[[Any], Any]) -> Any:
        got = super()._verified_read(what, truth, mirror, names, call)
        self.shadow_reads[what] += 1   # counted once the truth answered: a comparison made
        return got

    # -- writes -------------------------------------------------------------------------------

    def write_batch(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> None:
        self._check_writable("write_batch")
        deletes = list(deletes)
        keys = sorted(set(puts) | set(deletes))
        if keys:
            self._dual_write("batch", "kv", keys, [], (), lambda s: s.write_batch(puts, deletes))

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        self._check_writable("upsert")
        records = list(records)
        if records:
            self._dual_write("upsert", "vectors", (), [r.id for r in records], (),
                             lambda s: s.upsert(records))

    def remove(self, ids: Iterable[int]) -> int:
        self._check_writable("remove")
        ids = list(ids)
        result: int = self._dual_write("remove", "vectors", (), ids, (), lambda s: s.remove(ids))
        return result

    # -- reads --------------------------------------------------------------------------------

    def _vector_read(self, what: str, ids: Sequence[int], call: Callable[[Any], Any]) -> Any:
        return self._truth_read(what, "vectors", (), ids, (), call)

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        ids = list(ids)
        got: list[VectorRecord] = self._vector_read("fetch", ids, lambda s: s.fetch(ids))
        return got

    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        got: list[Hit] = self._vector_read("query", (), lambda s: s.query(vector, k, where))
        return got

    def count(self) -> int:
        got: int = self._vector_read("count", (), lambda s: s.count())
        return got

    def ids(self) -> list[int]:
        got: list[int] = self._vector_read("ids", (), lambda s: s.ids())
        return got

    # -- the server ---------------------------------------------------------------------------

    def _postgres(self) -> Any:
        self._check_open()
        if POSTGRES not in self._stores:
            raise LookupError(f"the ADR-0003 stage adapter at {self.path} is in stage "
                              f"{self.stage}, which uses no Postgres: no server to name")
        return self._stores[POSTGRES]

    def server_pids(self) -> tuple[int, ...]:
        """The Postgres store's ``server_pids()`` (``ServerBacked``)."""
        pids: tuple[int, ...] = tuple(self._postgres().server_pids())
        return pids

    def session_pid(self) -> int:
        """The Postgres store's ``session_pid()`` (``ServerBacked``)."""
        return int(self._postgres().session_pid())


def _nothing() -> None:
    return None


def _declare(adapter: PgStageAdapter) -> Declaration:
    """What the adapter promises in the stage it is in now: the weakest durability of the
    stores it uses (the control file is SQLite, always), Postgres's server and, where
    Postgres answers queries, its recall; the failpoint between a dual write's two writes."""
    r = ADR0003.roles(adapter.stage)
    sqlite_decl = sqlite_declaration(str(adapter.options["journal_mode"]),
                                     str(adapter.options["synchronous"]))
    durability = sqlite_decl.durability
    extra: dict[str, Any] = {}
    notes = {"stage": f"ADR-0003 {_STAGES[adapter.stage]}",
             "stages": "ADR-0003's own (migration ADR-0003): ADR-072's stage rows crash "
                       "moves on crashgate's simulated disk and replay its images, which "
                       "hold no Postgres state, so they do not apply",
             **{f"sqlite.{k}": v for k, v in sqlite_decl.notes.items() if k != "damage"}}
    if POSTGRES in r.stores:
        pg = adapter.store(POSTGRES).declaration
        if not pg.durability.covers(durability):
            durability = pg.durability
        extra["server"] = pg.server
        if r.vectors == POSTGRES and pg.recall is not None:
            extra["recall"] = pg.recall
        notes.update({f"postgres.{k}": v for k, v in pg.notes.items()})
        notes["durability"] = (f"the weakest of SQLite ({sqlite_decl.durability.value}) "
                               f"and Postgres ({pg.durability.value})")
    between = ADR0003.write_failpoint(adapter.stage)
    failpoints = (between,) if between else ()
    notes["damage"] = ("the stage and divergences live in a SQLite file (control.db) beside "
                       "sqlite.db, checked as the SQLite store checks its own; a sector "
                       "misdirected from one SQLite file to the other is a well-formed page "
                       "with valid sums, so it is not detected")
    return Declaration(
        durability=durability,
        capabilities=frozenset({Capability.KV, Capability.VECTOR, Capability.BATCH,
                                Capability.METADATA_FILTER, Capability.STAGES})
        | ({Capability.FAILPOINTS} if failpoints else set()),
        file_format="crashgate-pg-stages/sqlite+pgvector",
        failpoints=failpoints,
        metric=str(adapter.options["metric"]),
        notes=notes,
        damage=DamagePromise.DETECTED,
        undetected_damage=sqlite_decl.undetected_damage | {"misdirected-sector"},
        migration="ADR-0003",
        **extra,
    )


def open_pg_stage(path: str, env: Env, stage: int, **options: str) -> PgStageAdapter:
    """Open (or create, in ``stage``) the ADR-0003 stage adapter whose directory is ``path``
    (an existing one opens in the stage it recorded). Options: ``OPTIONS``."""
    name = f"pg-stage{stage}"
    opts = check_options(name, options, OPTIONS)
    checked_busy_timeout(name, opts["busy_timeout"])
    sqlite = {k: str(opts[k]) for k in ("journal_mode", "synchronous", "metric",
                                        "busy_timeout")}
    # only what was given: the pgvector store decides its own defaults
    postgres = {k: str(opts[k]) for k in _PG_PASSED if k in options}
    if "metric" in PG_OPTIONS:
        postgres["metric"] = str(opts["metric"])
    return PgStageAdapter(path, env, stage, {SQLITE: sqlite, POSTGRES: postgres}, _declare,
                          opts)


def _opener(stage: int) -> Any:
    opener = partial(open_pg_stage, stage=stage)
    opener.__doc__ = (f"Open (or create, in stage {stage}) an ADR-0003 SQLite -> Postgres stage "
                      "adapter; see open_pg_stage.")
    return opener


open_pg_stage1 = _opener(1)
open_pg_stage2 = _opener(2)
open_pg_stage3 = _opener(3)
