"""ADR-072's stage adapter: one store over the reference SQLite and RVF stores, doing what its
stage does (``roles.py``), and able to move to the next stage or back, on the mechanism every
migration's adapter shares (``staged.StagedStores``: dual writes, the divergence queue, the
fallback, promotion and rollback, the reconcile at open).

Files, in the directory ``path``::

    control.db    the stage and the divergence queue (``control.py``)
    sqlite.db     the reference SQLite store (with its -wal / -journal); after the escape hatch
                  was used, ``sqlite.<n>.db``: the control record names the one in use
    store.rvf     the reference RVF store (with its .lock)

What is ADR-072's own: vectors (``upsert``, ``query`` ...), relational records (Q-values, GOAP
plans, ``relational.py``) that go where key-value data goes (``roles.CARRIES``: the other store
gets a Q-value as the truth's update left it, ``q_value_put``, never the update again: a store
that had missed one update would otherwise stay a count short for good), stage 1's RVF epoch,
the escape hatch (``escape.py``) and backup (``backup.py``).

**Readers** (``readonly=true``, ``factory.OPTIONS``): an adapter opened to read an existing
directory beside its writer, in another process. Nothing is created or written: the
directory, ``control.db`` and its stage record must exist (else ``FileNotFoundError``); the
control file and the stores are opened with their own ``readonly=true`` (SQLite read-only,
RVF without its writer lock); a committed restore not yet finished is refused (only a writer
finishes it); every write, ``repair``, ``promote``, ``rollback``, the escape hatch's
activation, ``backup`` (a reader cannot keep the writer's dual writes out from between the
parts) and ``restore`` raise ``PermissionError`` naming the option. Reads follow the stage's
roles as the writer's do (stage 3: RVF, with SQLite as the fallback). What a reader sees:

- the stage record is read once, at open: a reader opened before a promotion, rollback or
  escape hatch (or during one: ``moving_to`` set) keeps reading as the stage it opened in,
  from stores the new stage may no longer write (after 3 -> 4, the SQLite a stage-3 reader
  falls back to gets nothing more); open a new reader to follow the writer to its new stage;
- SQLite (data and control) is read live: each read sees the writer's last commit;
- the RVF store loads its newest manifest at open and never re-reads it (``rvf/store.py``),
  so what a reader reads from RVF is the state at its open: commits after it are not seen
  until the reader is opened again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from crashgate.backends import CorruptStore, Declaration, Env, Hit, VectorRecord
from crashgate.reference.rvf.store import open_rvf
from crashgate.reference.sqlite_store import open_sqlite
from crashgate.reference.stages.backup import StageBackup
from crashgate.reference.stages.control import Divergence, StageRecord, split_refs
from crashgate.reference.stages.escape import (
    ESCAPE_FAILPOINTS,
    export_into_sqlite,
    next_sqlite_name,
    remove_sqlite,
)
from crashgate.reference.stages.relational import StageRelational
from crashgate.reference.stages.roles import ADR072, RVF, SQLITE, Data, roles
from crashgate.reference.stages.staged import FALLBACK_ERRORS, StagedStores
from crashgate.reference.stages.sync import (
    RelationalData,
    relational_data,
    sync_relational,
    sync_vectors,
)

__all__ = ["FALLBACK_ERRORS", "TRANSITION_FAILPOINTS", "StageAdapter", "write_failpoint"]

TRANSITION_FAILPOINTS = (ADR072.failpoint("backfill-batch"), ADR072.failpoint("before-switch"))
"""Hit by ``promote``/``rollback``: after each batch the catch-up writes, and before the
switch. Not in a declaration (a plain write never reaches them)."""


def write_failpoint(stage: int) -> str | None:
    """The failpoint between the two writes of an ADR-072 dual-write stage (None for the
    others)."""
    return ADR072.write_failpoint(stage)


class StageAdapter(StagedStores, StageRelational, StageBackup):
    """An open ADR-072 stage adapter; build it with ``factory.open_stage``. ``store_options``
    are passed to the stores: ``sqlite`` to every SQLite file (data and control), ``rvf`` to
    the RVF file. ``declare`` makes the declaration of the stage the adapter is in."""

    plan = ADR072

    def __init__(self, path: str, env: Env, initial: int,
                 store_options: Mapping[str, dict[str, str]],
                 declare: Callable[[StageAdapter], Declaration],
                 options: Mapping[str, object]) -> None:
        self._recorded_epoch: int | None = None
        super().__init__(path, env, initial, store_options, declare, options)
        self.transition_failpoints = (*TRANSITION_FAILPOINTS, *ESCAPE_FAILPOINTS)
        """What ``promote``, ``rollback`` and ``activate_escape_hatch`` hit (``Staged``)."""

    # -- the mechanism's hooks ----------------------------------------------------------------

    def _open_store(self, name: str) -> Any:
        if name == SQLITE:
            return open_sqlite(self._file(self._sqlite_file), self._env,
                               **self._options[SQLITE])
        return open_rvf(self._file("store.rvf"), self._env, **self._options[RVF])

    def _prepare(self, record: StageRecord) -> None:
        if self.readonly and record.restoring is not None:
            raise PermissionError(f"the stage adapter at {self.path} has a committed restore "
                                  "not yet finished, which readonly=true cannot finish; "
                                  "open it once without readonly=true, then read")
        if not self.readonly:
            self._finish_restore(record)   # a committed restore first (backup.py)
        # read before RVF loads: a writer records the epoch after RVF's commit, so the
        # RVF a reader then loads is at least this new unless RVF lost commits
        self._recorded_epoch = self._control.rvf_epoch()

    def _opened(self) -> None:
        self._check_rvf_epoch(self._recorded_epoch)

    def _after_truth_write(self, truth: str) -> None:
        r = roles(self.stage)
        if truth == RVF and r.kv != r.vectors:
            self._record_rvf_epoch()

    def _after_switch(self) -> None:
        # a split stage records the epoch the catch-up left
        self._check_rvf_epoch(self._control.rvf_epoch())

    def _repair_records(self, d: Divergence, target: Any) -> None:
        r = roles(self.stage)
        sync_vectors(self._stores[r.vectors], target, _nothing, d.ids)
        states, plans, _ = split_refs(d.relational)
        sync_relational(self._stores[r.truth("relational")], target, _nothing, states, plans)

    def _write(self, op: str, keys: Sequence[str], ids: Sequence[int],
               call: Callable[[Any], Any]) -> Any:
        """A key-value write (``keys``) or a vector write (``ids``): ``_dual_write``."""
        return self._dual_write(op, "kv" if keys else "vectors", keys, ids, (), call)

    def _write_relational(self, op: str, refs: Sequence[str], call: Callable[[Any], Any],
                          mirror: Callable[[Any, Any], Any] | None = None) -> Any:
        """A write of the relational records ``refs`` names (``control.q_value_ref``,
        ``plan_ref``): ``_dual_write``."""
        return self._dual_write(op, "relational", (), (), refs, call, mirror)

    def write_batch(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> None:
        self._check_writable("write_batch")   # an empty batch too, as the stores refuse it
        deletes = list(deletes)
        keys = sorted(set(puts) | set(deletes))
        if keys:
            self._write("batch", keys, [], lambda s: s.write_batch(puts, deletes))

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        self._check_writable("upsert")
        records = list(records)
        if records:
            self._write("upsert", [], [r.id for r in records], lambda s: s.upsert(records))

    def remove(self, ids: Iterable[int]) -> int:
        self._check_writable("remove")
        ids = list(ids)
        result: int = self._write("remove", [], ids, lambda s: s.remove(ids))
        return result

    # -- reads --------------------------------------------------------------------------------

    def _read(self, what: str, kind: Data, keys: Sequence[str], ids: Sequence[int],
              call: Callable[[Any], Any]) -> Any:
        """A key-value read (``kind`` "kv") or a vector read ("vectors"): ``_truth_read``."""
        return self._truth_read(what, kind, keys, ids, (), call)

    def _read_relational(self, what: str, refs: Sequence[str],
                         call: Callable[[Any], Any]) -> Any:
        """A read of the relational records whose names start with one of ``refs``."""
        return self._truth_read(what, "relational", (), (), refs, call)

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        ids = list(ids)
        got: list[VectorRecord] = self._read("fetch", "vectors", [], ids,
                                             lambda s: s.fetch(ids))
        return got

    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        got: list[Hit] = self._read("query", "vectors", [], [],
                                    lambda s: s.query(vector, k, where))
        return got

    def count(self) -> int:
        got: int = self._read("count", "vectors", [], [], lambda s: s.count())
        return got

    def ids(self) -> list[int]:
        got: list[int] = self._read("ids", "vectors", [], [], lambda s: s.ids())
        return got

    # -- divergences --------------------------------------------------------------------------

    # -- promotion and rollback ---------------------------------------------------------------

    def activate_escape_hatch(self) -> int:
        """Stage 4 only: export RVF into a new SQLite file, then switch to stage 0 (SQLite the
        primary again) and to that file in one write; returns 0. A crash before the switch
        reopens in stage 4 with the previous SQLite file untouched (``escape.py``)."""
        self._check_writable("activate_escape_hatch")
        if self.stage != 4:
            raise ValueError(f"the escape hatch is stage 4's; this adapter is in stage "
                             f"{self.stage}: use rollback() to leave it")
        old, new = self._sqlite_file, next_sqlite_name(self._sqlite_file)
        self._control.set_stage(StageRecord(4, 0, old))
        export_into_sqlite(self._stores[RVF], self._file(new), self._env,
                           self._options[SQLITE], self._batch_done)
        self._env.failpoints.hit(ESCAPE_FAILPOINTS[0])
        self._control.set_stage(StageRecord(0, sqlite=new))
        self.stage, self._sqlite_file = 0, new
        self._env.failpoints.hit(ESCAPE_FAILPOINTS[1])
        remove_sqlite(self._env, self._file(old))   # no longer named: a crash here leaves litter
        self._control.forget(d for d in self._control.divergences() if d.behind == SQLITE)
        self._open_stores(roles(0).stores)
        self._close_stores(roles(0).stores)
        self.declaration = self._declare(self)
        return 0

    def escape_hatch(self) -> tuple[list[tuple[str, bytes]], list[VectorRecord], RelationalData]:
        """Stage 4: what the escape hatch holds (its key-value data, vectors and relational
        records), read through a connection of its own; an adapter that never had one holds
        nothing (and no file is made to say so)."""
        self._check_open()
        if self.stage != 4:
            raise ValueError(f"the escape hatch is stage 4's; this adapter is in stage "
                             f"{self.stage}, where SQLite is a store it uses")
        if not self._env.fs.exists(self._file(self._sqlite_file)):
            return [], [], RelationalData((), ())
        hatch = open_sqlite(self._file(self._sqlite_file), self._env, **self._options[SQLITE])
        try:
            return hatch.scan(""), hatch.fetch(hatch.ids()), relational_data(hatch)
        finally:
            hatch.close()

    def _record_rvf_epoch(self) -> None:
        self._control.set_rvf_epoch(self._stores[RVF].epoch)

    def _check_rvf_epoch(self, recorded: int | None) -> None:
        """In a stage that reads key-value data from SQLite and vectors from RVF, refuse an RVF
        file older than ``recorded``, the epoch of the last vector write this adapter recorded
        (read before RVF was loaded): damage rolled RVF back to an earlier commit while SQLite
        kept newer data, and the two together are a state that never was. (Newer is a crash
        between RVF's commit and the record, or, for a reader, a commit since: a writer
        records it.)"""
        r = roles(self.stage)
        if r.kv == r.vectors or RVF not in self._stores:
            return
        seen = self._stores[RVF].epoch
        if recorded is not None and seen < recorded:
            raise CorruptStore(self._file("store.rvf"), f"RVF opened at epoch {seen}, but this "
                               f"stage {self.stage} adapter recorded epoch {recorded} after its "
                               "last vector write: RVF lost committed writes, while SQLite's "
                               "key-value data is newer. Restore from a backup")
        if recorded != seen and not self.readonly:
            self._record_rvf_epoch()

    # -- closing ------------------------------------------------------------------------------

def _nothing() -> None:
    return None
