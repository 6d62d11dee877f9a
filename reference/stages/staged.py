"""The one mechanism every migration's stage adapter runs on: two stores composed by the roles
of a ``roles.StagePlan`` (ADR-072's stages 0-4, ARCH-001's phases 1-4), a durable stage,
promotion and rollback, dual writes with the divergence queue, reads with a fallback, and the
reconcile of a writer's open (``reconcile.py``).

Files, in the directory ``path``: ``control.db`` (the stage and the divergence queue,
``control.py``) and the stores' own files (the subclass opens them: ``_open_store``).

A write reaches the source of truth first; in a dual-write stage it then hits the failpoint
``<prefix><n>.after-<truth>-write`` and reaches the other store. A failure there does not fail
the call (the truth has it): it is recorded as a divergence, which ``repair()`` replays. A
crash there is not recorded (the process is gone): the writer's next open finds the adapter
was not closed cleanly and reconciles the other store from the truth; a failure nothing could
record puts the adapter in doubt until it is reopened (``reconcile.py``). The next promotion or
rollback also catches the whole store up (``StagePlan.catch_up``), so no stage ever relies on
the two having stayed in step.

Reads come from the truth. A ``fallback`` mirror (ADR-072's stage 3) serves a read the truth
fails, counted, unless a queued divergence says it is behind on it. A ``verified`` mirror
(ARCH-001's phase 2) serves reads itself, each checked against the truth: when it fails,
misses or differs, the truth's answer is served and the discrepancy recorded with the key.

Promotion and rollback (``_move``): record ``moving_to``, catch up what the next stage reads,
hit ``<prefix>.before-switch``, then write the new stage: one SQLite transaction, so after any
crash the adapter opens in exactly one of the two stages. The catch-up writes only what
differs, so a crash half-way is resumed, not redone, by the next call.

Readers (``readonly=true``): nothing is created or written; the stage record is read once, at
open; every write, ``repair``, ``promote`` and ``rollback`` raise ``PermissionError`` naming the
option.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crashgate.backends import CorruptStore, Declaration, Env, StoreClosed
from crashgate.reference.sqlite_store import open_sqlite
from crashgate.reference.stages.control import Divergence, StageControl, StageRecord
from crashgate.reference.stages.reconcile import REFUSALS, StageReconcile
from crashgate.reference.stages.roles import SQLITE, Data, StagePlan
from crashgate.reference.stages.sync import sync_kv

__all__ = ["FALLBACK_ERRORS", "Discrepancy", "StagedStores"]

FALLBACK_ERRORS = (CorruptStore, OSError)
"""What a failed read on the store read first may be: damage or an I/O error. Bad input, a
closed store, a file too new: those are answers, not failures, and are not served from the
other store."""
_EXAMPLES = 20
_KEPT = 1000
_log = logging.getLogger("crashgate.stages")
_log.addHandler(logging.NullHandler())   # a library logs; the application decides where to


@dataclass(frozen=True)
class Discrepancy:
    """One read a ``verified`` mirror could not serve: ``kind`` is ``fallback`` (it failed or
    had nothing) or ``mismatch`` (it answered otherwise than the truth); ``what`` the read and
    ``key`` what it read (a key, a mission id); ``detail`` the mirror's error or answer."""

    kind: str
    what: str
    key: str
    detail: str


class StagedStores(StageReconcile):
    """An open stage adapter over the stores of ``plan`` (a class attribute of the subclass).
    ``store_options`` are passed to the stores by name (``sqlite`` also to ``control.db``);
    ``declare`` makes the declaration of the stage the adapter is in. Subclasses open the
    stores (``_open_store``) and may hook the open, a truth's write and a switch."""

    plan: StagePlan

    def __init__(self, path: str, env: Env, initial: int,
                 store_options: Mapping[str, dict[str, str]],
                 declare: Callable[[Any], Declaration],
                 options: Mapping[str, object]) -> None:
        self.path = path
        self.options = dict(options)
        """The adapter's own options, checked (the factory's ``OPTIONS``)."""
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
        self.stage_range = self.plan.stage_range
        self.transition_failpoints: tuple[str, ...] = (
            self.plan.failpoint("backfill-batch"), self.plan.failpoint("before-switch"))
        """What ``promote`` and ``rollback`` hit (``Staged``)."""
        self.fallbacks: Counter[str] = Counter()
        """Reads served from the other store, by operation."""
        self.fallback_examples: list[tuple[str, str]] = []
        """(what was read, the error or answer the store read first gave), the first few."""
        self.mismatches: Counter[str] = Counter()
        """Reads a ``verified`` mirror answered otherwise than the truth, by operation."""
        self.discrepancies: list[Discrepancy] = []
        """A ``verified`` mirror's fallbacks and mismatches, each with its key (the first
        ``_KEPT``; ``fallbacks`` and ``mismatches`` count them all)."""
        fs = env.fs
        control = self._file("control.db")
        self.plan.roles(initial)   # a bad stage is refused before anything is made or written
        if self.readonly:
            self._check_exists(control)
        else:
            fs.makedirs(path)
            fs.sync_dir(os.path.dirname(os.path.normpath(path)) or ".")
        self._control = StageControl(open_sqlite(control, env, **store_options[SQLITE]),
                                     control)
        try:
            record = self._control.stage()
            if record is None:
                if self.readonly:
                    raise FileNotFoundError(errno.ENOENT, "no stage adapter here: its control "
                                            "file holds no stage record (readonly=true never "
                                            "writes one); open it once without readonly=true",
                                            control)
                record = StageRecord(initial)
                self._control.set_stage(record)
            if record.stage not in self.plan.stages:
                raise CorruptStore(control, f"the stage record holds stage {record.stage}, "
                                   f"which is not an {self.plan.document} stage")
            self._sqlite_file = record.sqlite
            self.stage = record.stage
            self._prepare(record)
            self._open_stores(self.plan.roles(self.stage).stores)
            self._opened()
            if not self.readonly:
                self._start_writing()   # after the stores open: a refused open writes nothing
                self._settle()
        except Exception:   # not on a SimulatedCrash: a dead process cleans nothing up
            with contextlib.suppress(Exception):   # the open's own error is the one to see
                self._close_all()
            raise
        self.declaration = declare(self)

    # -- hooks --------------------------------------------------------------------------------

    def _open_store(self, name: str) -> Any:
        """Open the store ``name`` of the plan's roles."""
        raise NotImplementedError

    def _prepare(self, record: StageRecord) -> None:
        """At open, the stage known, before the stores open."""

    def _opened(self) -> None:
        """At open, the stores open, before a writer marks itself open."""

    def _settle(self) -> None:
        """A writer's open, and the end of a move: what the stage does once, idempotently,
        whenever it starts (ARCH-001's phase 3 imports legacy files)."""

    def _after_truth_write(self, truth: str) -> None:
        """After a write reached the source of truth ``truth``, before the mirror."""

    def _after_switch(self) -> None:
        """Right after a move wrote the new stage."""

    def _repair_records(self, d: Divergence, target: Any) -> None:
        """Copy what ``d`` names beyond key-value keys (vector ids, relational records,
        missions) from the source of truth into ``target``, the store behind."""

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
                                  "takes the writer lock where a store has one) to change it")
        if doubt:
            self._check_doubt(what)

    def _open(self, name: str) -> Any:
        if name not in self._stores:
            self._stores[name] = self._open_store(name)
        return self._stores[name]

    def _open_stores(self, names: Iterable[str]) -> None:
        for name in sorted(names):
            self._open(name)

    def _close_stores(self, keep: Iterable[str]) -> None:
        for name in sorted(set(self._stores) - set(keep)):
            self._stores.pop(name).close()

    def store(self, name: str) -> Any:
        """An open store by name (for tests and tools; writes go through the adapter)."""
        self._check_open()
        return self._stores[name]

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(self.path)

    # -- writes -------------------------------------------------------------------------------

    def _dual_write(self, op: str, data: Data, keys: Sequence[str], ids: Sequence[int],
                    refs: Sequence[str], call: Callable[[Any], Any],
                    mirror: Callable[[Any, Any], Any] | None = None) -> Any:
        """``call`` on the source of truth of ``data``, then (dual-write stages) on the other
        store, where a failure is recorded instead of raised; ``mirror(store, result)``, when
        given, is what the other store gets instead (``result``: what the truth returned).
        What nothing could record puts the adapter in doubt (``reconcile.py``)."""
        self._check_writable(op)
        r = self.plan.roles(self.stage)
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
            self._after_truth_write(truth)
            if r.mirror is not None:
                self._env.failpoints.hit(f"{self.plan.prefix}{self.stage}.after-{truth}-write")
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
        self._dual_write("put", "kv", [key], [], (), lambda s: s.put(key, value))

    def delete(self, key: str) -> None:
        self._dual_write("delete", "kv", [key], [], (), lambda s: s.delete(key))

    # -- reads --------------------------------------------------------------------------------

    def _truth_read(self, what: str, data: Data, keys: Sequence[str], ids: Sequence[int],
                    refs: Sequence[str], call: Callable[[Any], Any]) -> Any:
        """``call`` on the source of truth of ``data``, or, with a ``verified`` mirror, on the
        mirror checked against the truth (``_verified_read``). With a ``fallback`` mirror a
        failure of the truth is served from the mirror, counted, unless the mirror is known
        to be behind on what is read (``keys``, ``ids``, records named from ``refs`` on; all
        of it when all are empty)."""
        self._check_open()
        r = self.plan.roles(self.stage)
        if r.mirror_as == "verified" and r.mirror is not None:
            return self._verified_read(what, r.truth(data), r.mirror,
                                       [*keys, *map(str, ids), *refs], call)
        truth = r.truth(data)
        try:
            return call(self._stores[truth])
        except FALLBACK_ERRORS as exc:
            if r.mirror_as != "fallback" or r.mirror is None:
                raise
            named, other = self.plan.label(truth), self.plan.label(r.mirror)
            if self.in_doubt is not None:
                raise CorruptStore(self.path, f"{what} failed on {named} ({exc}) and {other} "
                                   f"may be behind on anything: the adapter is in doubt since "
                                   f"{self.in_doubt}; reopen it (the open reconciles {other})"
                                   ) from exc
            behind = self._behind(r.mirror, keys, ids,
                                  whole=not keys and not ids and not refs, refs=refs)
            if behind:
                first = behind[0]
                touched: list[object] = [*first.keys, *first.ids, *first.relational]
                raise CorruptStore(self.path, f"{what} failed on {named} ({exc}) and {other} "
                                   f"is behind on it ({first.op} of {touched} failed there: "
                                   f"{first.error}); run repair() once {named} reads again"
                                   ) from exc
            self._count_fallback(what, f"{list(keys) or list(ids) or list(refs)}", exc)
            return call(self._stores[r.mirror])

    def _verified_read(self, what: str, truth: str, mirror: str, names: Sequence[str],
                       call: Callable[[Any], Any]) -> Any:
        """Read ``mirror`` and ``truth``; serve the mirror's answer when it is the truth's,
        else the truth's, recording a fallback (the mirror failed, or had nothing the truth
        has) or a mismatch (it answered otherwise), with ``names``: what was read."""
        key = ", ".join(names) or "(all)"
        try:
            got: Any = call(self._stores[mirror])
            failed: BaseException | None = None
        except FALLBACK_ERRORS as exc:
            got, failed = None, exc
        want = call(self._stores[truth])   # the truth's failure is the read's
        if failed is None and got == want:
            return got
        if failed is not None or got is None or got == [] or got == {}:
            why = (f"{type(failed).__name__}: {failed}" if failed
                   else f"{self.plan.label(mirror)} had nothing")
            self._count_fallback(what, key, why)
            self._discrepancy("fallback", what, key, why)
        else:
            self.mismatches[what] += 1
            self._discrepancy("mismatch", what, key,
                              f"{self.plan.label(mirror)} answered {got!r:.200}")
        return want

    def _count_fallback(self, what: str, key: str, why: object) -> None:
        self.fallbacks[what] += 1
        if len(self.fallback_examples) < _EXAMPLES:
            detail = f"{type(why).__name__}: {why}" if isinstance(why, BaseException) else why
            self.fallback_examples.append((f"{what} {key}", str(detail)))

    def _discrepancy(self, kind: str, what: str, key: str, detail: str) -> None:
        _log.warning("%s: %s %s of %s: %s", self.path, kind, what, key, detail)
        if len(self.discrepancies) < _KEPT:
            self.discrepancies.append(Discrepancy(kind, what, key, detail))

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
        value: bytes | None = self._truth_read("get", "kv", [key], [], (),
                                               lambda s: s.get(key))
        return value

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = self._truth_read("scan", "kv", [], [], (),
                                                        lambda s: s.scan(prefix))
        return got

    # -- divergences --------------------------------------------------------------------------

    def divergences(self) -> list[Divergence]:
        """The writes one store took and the other did not, not yet repaired, oldest first."""
        self._check_open()
        return self._control.divergences()

    def repair(self) -> int:
        """Replay the queue: copy what the source of truth holds now for each entry's keys, ids
        and named records into the store that is behind, then drop the entry. Entries for a
        store this stage does not write wait for the move that catches it up. Returns how
        many entries were repaired. Runs in doubt too (it only copies the truth into the
        other store), though only the reopen's reconcile mends what was never queued."""
        self._check_writable("repair", doubt=False)
        r = self.plan.roles(self.stage)
        done = []
        for d in self._control.divergences():
            if d.behind != r.mirror:
                continue
            target = self._stores[d.behind]
            sync_kv(self._stores[r.kv], target, _nothing, d.keys)
            self._repair_records(d, target)
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
        if (here, to) not in self.plan.catch_up:
            first, last = self.stage_range
            raise ValueError(f"stage {here} has no {'next' if to > here else 'previous'} "
                             f"stage ({self.plan.document}'s stages are {first}-{last}); "
                             f"this adapter stays in stage {here}")
        steps = self.plan.steps(here, to)
        self._control.set_stage(StageRecord(here, to, self._sqlite_file))
        self._open_stores(self.plan.roles(here).stores | self.plan.roles(to).stores
                          | {name for _, src, dst in steps for name in (src, dst)})
        caught_up = set()
        for data, src, dst in steps:
            self.plan.syncs[data](self._stores[src], self._stores[dst], self._batch_done)
            caught_up.add(dst)
        for name in sorted(caught_up):   # what the next stage reads outlives the switch
            flush = getattr(self._stores[name], "flush", None)
            if flush is not None:
                flush()
        self._env.failpoints.hit(self.plan.failpoint("before-switch"))
        self._control.set_stage(StageRecord(to, sqlite=self._sqlite_file))
        self.stage = to
        self._after_switch()
        self._control.forget(d for d in self._control.divergences() if d.behind in caught_up)
        self._close_stores(self.plan.roles(to).stores)
        self._settle()
        self.declaration = self._declare(self)
        return to

    def _batch_done(self) -> None:
        self._env.failpoints.hit(self.plan.failpoint("backfill-batch"))

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
