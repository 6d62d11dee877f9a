"""A migration stage adapter: one store over the reference SQLite and RVF stores, doing what its
ADR-072 stage does (``roles.py``), and able to move to the next stage or back.

Files, in the directory ``path``::

    control.db    the stage and the divergence queue (``control.py``)
    sqlite.db     the reference SQLite store (with its -wal / -journal); after the escape hatch
                  was used, ``sqlite.<n>.db``: the control record names the one in use
    store.rvf     the reference RVF store (with its .lock)

A write reaches the source of truth first; in a dual-write stage it then hits the failpoint
``stage<n>.after-<truth>-write`` and reaches the other store. A failure there does not fail the
call (the truth has it): it is recorded as a divergence, which ``repair()`` replays. A crash
there is not recorded (the process is gone): the writer's next open finds the adapter was not
closed cleanly and reconciles the other store from the truth; a failure nothing could record
puts the adapter in doubt until it is reopened (``reconcile.py``). The next promotion or
rollback also catches the whole store up (``roles.CATCH_UP``), so no stage ever relies on the
two having stayed in step.

Relational records (Q-values, GOAP plans) go where key-value data goes (``roles.CARRIES``). The
other store gets a Q-value as the truth's update left it (``q_value_put``), never the update
again: a store that had missed one update would otherwise stay a count short for good.

Promotion and rollback (``_move``): record ``moving_to``, catch up what the next stage reads,
hit ``stage.before-switch``, then write the new stage: one SQLite transaction, so after any
crash the adapter opens in exactly one of the two stages. The catch-up writes only what
differs, so a crash half-way is resumed, not redone, by the next call.

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

import contextlib
import errno
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from crashgate.backends import (
    CorruptStore,
    Declaration,
    Env,
    Hit,
    StoreClosed,
    VectorRecord,
)
from crashgate.reference.rvf.store import open_rvf
from crashgate.reference.sqlite_store import open_sqlite
from crashgate.reference.stages.backup import StageBackup
from crashgate.reference.stages.control import (
    Divergence,
    StageControl,
    StageRecord,
    split_refs,
)
from crashgate.reference.stages.escape import (
    ESCAPE_FAILPOINTS,
    export_into_sqlite,
    next_sqlite_name,
    remove_sqlite,
)
from crashgate.reference.stages.reconcile import REFUSALS, StageReconcile
from crashgate.reference.stages.relational import StageRelational
from crashgate.reference.stages.roles import CATCH_UP, RVF, SQLITE, Data, catch_up, roles
from crashgate.reference.stages.sync import (
    SYNCS,
    RelationalData,
    relational_data,
    sync_kv,
    sync_relational,
    sync_vectors,
)

__all__ = ["FALLBACK_ERRORS", "TRANSITION_FAILPOINTS", "StageAdapter", "write_failpoint"]

TRANSITION_FAILPOINTS = ("stage.backfill-batch", "stage.before-switch")
"""Hit by ``promote``/``rollback``: after each batch the catch-up writes, and before the
switch. Not in a declaration (a plain write never reaches them)."""
FALLBACK_ERRORS = (CorruptStore, OSError)
"""What a failed read on RVF in stage 3 may be: damage or an I/O error. Bad input, a closed
store, a file too new: those are answers, not failures, and are not served from SQLite."""
_EXAMPLES = 20


def write_failpoint(stage: int) -> str | None:
    """The failpoint between the two writes of a dual-write stage (None for the others)."""
    r = roles(stage)
    return f"stage{stage}.after-{r.kv}-write" if r.mirror else None


class StageAdapter(StageRelational, StageBackup, StageReconcile):
    """An open stage adapter; build it with ``factory.open_stage``. ``store_options`` are
    passed to the stores: ``sqlite`` to every SQLite file (data and control), ``rvf`` to the RVF
    file. ``declare`` makes the declaration of the stage the adapter is in."""

    def __init__(self, path: str, env: Env, initial: int,
                 store_options: Mapping[str, dict[str, str]],
                 declare: Callable[[StageAdapter], Declaration],
                 options: Mapping[str, object]) -> None:
        self.path = path
        self.options = dict(options)
        """The adapter's own options, checked (``factory.OPTIONS``)."""
        self._env = env
        self._options = store_options
        self._declare = declare
        self._stores: dict[str, Any] = {}
        self._closed = False
        self.readonly = self.options.get("readonly") == "true"
        """Opened with ``readonly=true``: a reader (module docstring)."""
        # a dual write's two writes, as one: threads must reach the mirror in the order they
        # reached the truth (else a Q-value's older record, or a key's older value, lands last)
        self._write_lock = threading.RLock()
        self.transition_failpoints = (*TRANSITION_FAILPOINTS, *ESCAPE_FAILPOINTS)
        """What ``promote``, ``rollback`` and ``activate_escape_hatch`` hit (``Staged``)."""
        self.fallbacks: Counter[str] = Counter()
        """Reads served from SQLite in stage 3, by operation."""
        self.fallback_examples: list[tuple[str, str]] = []
        """(what was read, the error RVF gave), the first few."""
        fs = env.fs
        if self.readonly:
            self._check_exists(self._file("control.db"))
        else:
            fs.makedirs(path)
            fs.sync_dir(os.path.dirname(os.path.normpath(path)) or ".")
        self._control = StageControl(open_sqlite(self._file("control.db"), env,
                                                 **store_options[SQLITE]),
                                     self._file("control.db"))
        try:
            record = self._control.stage()
            if record is None:
                if self.readonly:
                    raise FileNotFoundError(errno.ENOENT, "no stage adapter here: its control "
                                            "file holds no stage record (readonly=true never "
                                            "writes one); open it once without readonly=true",
                                            self._file("control.db"))
                roles(initial)   # a bad stage is refused before anything is written
                record = StageRecord(initial)
                self._control.set_stage(record)
            self._sqlite_file = record.sqlite
            self.stage = record.stage
            if self.readonly and record.restoring is not None:
                raise PermissionError(f"the stage adapter at {path} has a committed restore "
                                      "not yet finished, which readonly=true cannot finish; "
                                      "open it once without readonly=true, then read")
            if not self.readonly:
                self._finish_restore(record)   # a committed restore first (backup.py)
            # read before RVF loads: a writer records the epoch after RVF's commit, so the
            # RVF a reader then loads is at least this new unless RVF lost commits
            recorded = self._control.rvf_epoch()
            self._open_stores(roles(self.stage).stores)
            self._check_rvf_epoch(recorded)
            if not self.readonly:
                self._start_writing()   # after the stores open: a refused open writes nothing
        except Exception:   # not on a SimulatedCrash: a dead process cleans nothing up
            with contextlib.suppress(Exception):   # the open's own error is the one to see
                self._close_all()
            raise
        self.declaration = declare(self)

    # -- files and stores ---------------------------------------------------------------------

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _check_exists(self, control: str) -> None:
        """A reader's open: the directory and its control file exist, else
        ``FileNotFoundError`` naming what is missing (nothing is created)."""
        fs = self._env.fs
        for what, where in (("directory", self.path), ("control file", control)):
            if not fs.exists(where):
                raise FileNotFoundError(errno.ENOENT, f"no stage adapter here: its {what} is "
                                        "missing (readonly=true never creates one); give the "
                                        "directory of an existing adapter, or open it without "
                                        "readonly=true to create it", where)

    def _check_writable(self, what: str, *, doubt: bool = True) -> None:
        """``PermissionError`` naming the option, before anything is done, for a reader;
        ``InDoubt`` for a writer in doubt (``reconcile.py``), unless not ``doubt``."""
        self._check_open()
        if self.readonly:
            raise PermissionError(f"{what}: the stage adapter at {self.path} was opened with "
                                  "readonly=true; open it with readonly=false (a writer, which "
                                  "takes the writer lock where the stage has RVF) to change it")
        if doubt:
            self._check_doubt(what)

    def _open(self, name: str) -> Any:
        if name not in self._stores:
            if name == SQLITE:
                self._stores[name] = open_sqlite(self._file(self._sqlite_file), self._env,
                                                 **self._options[SQLITE])
            else:
                self._stores[name] = open_rvf(self._file("store.rvf"), self._env,
                                              **self._options[RVF])
        return self._stores[name]

    def _open_stores(self, names: Iterable[str]) -> None:
        for name in sorted(names):
            self._open(name)

    def _close_stores(self, keep: Iterable[str]) -> None:
        for name in sorted(set(self._stores) - set(keep)):
            self._stores.pop(name).close()

    def store(self, name: str) -> Any:
        """The open ``sqlite`` or ``rvf`` store (for tests and tools; writes go through the
        adapter)."""
        self._check_open()
        return self._stores[name]

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(self.path)

    # -- writes -------------------------------------------------------------------------------

    def _write(self, op: str, keys: Sequence[str], ids: Sequence[int],
               call: Callable[[Any], Any]) -> Any:
        """A key-value write (``keys``) or a vector write (``ids``): ``_dual_write``."""
        return self._dual_write(op, "kv" if keys else "vectors", keys, ids, (), call)

    def _write_relational(self, op: str, refs: Sequence[str], call: Callable[[Any], Any],
                          mirror: Callable[[Any, Any], Any] | None = None) -> Any:
        """A write of the relational records ``refs`` names (``control.q_value_ref``,
        ``plan_ref``): ``_dual_write``."""
        return self._dual_write(op, "relational", (), (), refs, call, mirror)

    def _dual_write(self, op: str, data: Data, keys: Sequence[str], ids: Sequence[int],
                    refs: Sequence[str], call: Callable[[Any], Any],
                    mirror: Callable[[Any, Any], Any] | None = None) -> Any:
        """``call`` on the source of truth of ``data``, then (dual-write stages) on the other
        store, where a failure is recorded instead of raised; ``mirror(store, result)``, when
        given, is what the other store gets instead (``result``: what the truth returned).
        What nothing could record puts the adapter in doubt (``reconcile.py``)."""
        self._check_writable(op)
        r = roles(self.stage)
        truth = r.truth(data)
        with self._write_lock:
            self._check_doubt(op)   # another thread's write may have put it in doubt
            try:
                result = call(self._stores[truth])
            except REFUSALS:
                raise
            except Exception as exc:
                if r.mirror is not None:   # the truth may hold it (its file), the mirror not
                    self._enter_doubt(f"{op} failed on {truth}, the source of truth, and may "
                                      f"be in its file ({type(exc).__name__}: {exc})")
                raise
            if truth == RVF and r.kv != r.vectors:
                self._record_rvf_epoch()
            if r.mirror is not None:
                self._env.failpoints.hit(f"stage{self.stage}.after-{truth}-write")
                try:
                    if mirror is None:
                        call(self._stores[r.mirror])
                    else:
                        mirror(self._stores[r.mirror], result)
                except Exception as exc:  # noqa: BLE001 - any failure of the mirror diverges
                    self._queue_divergence(op, keys, ids, refs, r.mirror, exc)
        return result

    def _queue_divergence(self, op: str, keys: Sequence[str], ids: Sequence[int],
                          refs: Sequence[str], behind: str, exc: Exception) -> None:
        """Record the failed mirror write; if that fails too, the adapter is in doubt and the
        call raises ``OSError`` (indeterminate: the truth took the write)."""
        try:
            self._control.record(op, keys, ids, exc, behind, self.stage, refs)
        except Exception as lost:
            why = (f"{op} reached the source of truth, failed on {behind} "
                   f"({type(exc).__name__}: {exc}) and could not be queued "
                   f"({type(lost).__name__}: {lost})")
            self._enter_doubt(why)
            code = lost.errno if isinstance(lost, OSError) and lost.errno else errno.EIO
            raise OSError(code, f"{why}: the write is indeterminate; the adapter at "
                          f"{self.path} refuses writes until it is reopened, which reconciles "
                          f"{behind}") from lost

    def put(self, key: str, value: bytes) -> None:
        self._write("put", [key], [], lambda s: s.put(key, value))

    def delete(self, key: str) -> None:
        self._write("delete", [key], [], lambda s: s.delete(key))

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

    def _truth_read(self, what: str, data: Data, keys: Sequence[str], ids: Sequence[int],
                    refs: Sequence[str], call: Callable[[Any], Any]) -> Any:
        """``call`` on the source of truth of ``data``; in stage 3 a failure there is served
        from SQLite, counted, unless SQLite is known to be behind on what is read (``keys``,
        ``ids``, relational records named from ``refs`` on; all of it when all are empty)."""
        self._check_open()
        r = roles(self.stage)
        try:
            return call(self._stores[r.truth(data)])
        except FALLBACK_ERRORS as exc:
            if r.mirror_as != "fallback" or r.mirror is None:
                raise
            if self.in_doubt is not None:
                raise CorruptStore(self.path, f"{what} failed on RVF ({exc}) and SQLite may be "
                                   f"behind on anything: the adapter is in doubt since "
                                   f"{self.in_doubt}; reopen it (the open reconciles SQLite)"
                                   ) from exc
            behind = self._behind(r.mirror, keys, ids,
                                  whole=not keys and not ids and not refs, refs=refs)
            if behind:
                first = behind[0]
                touched: list[object] = [*first.keys, *first.ids, *first.relational]
                raise CorruptStore(self.path, f"{what} failed on RVF ({exc}) and SQLite is "
                                   f"behind on it ({first.op} of {touched} failed there: "
                                   f"{first.error}); run repair() once RVF reads again"
                                   ) from exc
            self.fallbacks[what] += 1
            if len(self.fallback_examples) < _EXAMPLES:
                self.fallback_examples.append((f"{what} {list(keys) or list(ids) or list(refs)}",
                                               f"{type(exc).__name__}: {exc}"))
            return call(self._stores[r.mirror])

    def _behind(self, store: str, keys: Sequence[str], ids: Sequence[int], whole: bool,
                refs: Sequence[str] = ()) -> list[Divergence]:
        """The queued divergences that leave ``store`` behind on these keys or ids, or on a
        relational record whose name starts with one of ``refs`` (on anything, when
        ``whole``)."""
        wanted_keys, wanted_ids = set(keys), set(ids)
        return [d for d in self._control.divergences() if d.behind == store and (
            whole or wanted_keys & set(d.keys) or wanted_ids & set(d.ids)
            or any(name.startswith(ref) for name in d.relational for ref in refs))]

    def get(self, key: str) -> bytes | None:
        value: bytes | None = self._read("get", "kv", [key], [], lambda s: s.get(key))
        return value

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = self._read("scan", "kv", [], [],
                                                  lambda s: s.scan(prefix))
        return got

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

    def divergences(self) -> list[Divergence]:
        """The writes one store took and the other did not, not yet repaired, oldest first."""
        self._check_open()
        return self._control.divergences()

    def repair(self) -> int:
        """Replay the queue: copy what the source of truth holds now for each entry's keys, ids
        and relational records (a Q-value's whole state) into the store that is behind, then
        drop the entry. Entries for a store this stage
        does not write (an escape hatch) wait for the rollback that catches it up. Returns how
        many entries were repaired. Runs in doubt too (it only copies the truth into the
        other store), though only the reopen's reconcile mends what was never queued."""
        self._check_writable("repair", doubt=False)
        r = roles(self.stage)
        done = []
        for d in self._control.divergences():
            if d.behind != r.mirror:
                continue
            target = self._stores[d.behind]
            sync_kv(self._stores[r.kv], target, _nothing, d.keys)
            sync_vectors(self._stores[r.vectors], target, _nothing, d.ids)
            states, plans = split_refs(d.relational)
            sync_relational(self._stores[r.truth("relational")], target, _nothing, states,
                            plans)
            done.append(d)
        self._control.forget(done)
        return len(done)

    # -- promotion and rollback ---------------------------------------------------------------

    def promote(self) -> int:
        """Move to the next stage, after catching up what it reads; returns the new stage."""
        return self._move(self.stage + 1)

    def rollback(self) -> int:
        """Move to the previous stage, after catching up what it reads; returns the new stage."""
        return self._move(self.stage - 1)

    def _move(self, to: int) -> int:
        self._check_writable("promote" if to > self.stage else "rollback")
        here = self.stage
        if (here, to) not in CATCH_UP:
            raise ValueError(f"stage {here} has no {'next' if to > here else 'previous'} "
                             f"stage (ADR-072's stages are 0-4); this adapter stays in "
                             f"stage {here}")
        self._control.set_stage(StageRecord(here, to, self._sqlite_file))
        self._open_stores(roles(here).stores | roles(to).stores)
        caught_up = set()
        for data, src, dst in catch_up(here, to):
            SYNCS[data](self._stores[src], self._stores[dst], self._batch_done)
            caught_up.add(dst)
        self._env.failpoints.hit(TRANSITION_FAILPOINTS[1])
        self._control.set_stage(StageRecord(to, sqlite=self._sqlite_file))
        self.stage = to
        # a split stage records the epoch the catch-up left
        self._check_rvf_epoch(self._control.rvf_epoch())
        self._control.forget(d for d in self._control.divergences() if d.behind in caught_up)
        self._close_stores(roles(to).stores)
        self.declaration = self._declare(self)
        return to

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

    def _batch_done(self) -> None:
        self._env.failpoints.hit(TRANSITION_FAILPOINTS[0])

    # -- closing ------------------------------------------------------------------------------

    def _close_all(self, clean: bool = False) -> None:
        """Close every store, then (``clean``, and every store closed) record the clean
        shutdown, then close the control file; raise the first error any step raised."""
        errors: list[Exception] = []

        def attempt(step: Callable[[], None]) -> None:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the others must still be closed
                errors.append(exc)
        for name in sorted(self._stores):
            attempt(self._stores.pop(name).close)
        if clean and not errors:   # a store that failed to close may hold less than it said
            attempt(self._end_writing)
        attempt(self._control.close)
        if errors:
            raise errors[0]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_all(clean=True)


def _nothing() -> None:
    return None
