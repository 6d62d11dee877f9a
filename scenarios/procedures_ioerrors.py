"""crashgate's I/O-error row: ``EIO`` or ``ENOSPC`` at the n-th mutating file-system operation,
transient or persistent, swept over every n of a short workload (as SQLite tests itself).

One case: a fresh simulated disk; the store is opened through ``IOErrors`` and the workload
runs op by op. An op that returns is acknowledged; one that raises reported the error and is
indeterminate. After a transient error the workload goes on (a store may also refuse every
later op: then it stops there); after a persistent one it stops, as the application would.
The store is closed, and recovered twice on a clean file system: from the page cache (every
acknowledged op must be there when the store promises process-crash durability, or when its
``close`` returned) and, for a power-loss-durable store, from the durable image (so a store
that acknowledges a write whose fsync failed is caught). The state recovered must be the
model's state after the acknowledged ops plus any subset of the indeterminate ones.

A store in a child process whose driver injects I/O errors itself (``injects_io_errors``,
``backends/PROTOCOL.md``) gets the same cases through the driver: the child is opened with the
option ``io_error`` (the same ``IOErrors`` fault, on the real disk), and a new child without it
is the recovery. Its files are on the real disk, which keeps no durable image apart from the
page cache, so only the first recovery is checked, and the evidence says so.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from crashgate.backends import (
    BackendSpec,
    Capability,
    CrashgateError,
    Declaration,
    Durability,
    LockHeld,
)
from crashgate.backends.proc_protocol import DriverError
from crashgate.harness.crashcheck import allowed_range, judge
from crashgate.harness.driver.client import ProcStore
from crashgate.harness.faults.ioerrors import IOErrors, count_mutating_ops
from crashgate.harness.faults.probe import accepts_readonly
from crashgate.harness.faults.repro import write_reproduction
from crashgate.harness.model import StoreState, prefix_states, read_state
from crashgate.harness.ops import Op, Upsert, describe_op
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.harness.workload import PROFILES, random_workload
from crashgate.scenarios.table import RowContext

__all__ = ["check_io_error", "io_errors"]

DATA_DIR = "/data"
PATH = f"{DATA_DIR}/store"
Kind = Literal["EIO", "ENOSPC"]
KINDS: tuple[Kind, ...] = ("EIO", "ENOSPC")


@dataclass
class _Case:
    kind: Kind
    at: int
    persistent: bool
    outcomes: list[str] = field(default_factory=list)     # "ok" / "info" per op run
    reported: list[str] = field(default_factory=list)     # exception type names seen
    fired: int = 0
    read_only_recoveries: int = 0
    problem: str | None = None

    @property
    def option(self) -> str:
        """The case as a driver's ``io_error`` option (``proc_protocol.io_error_from_option``)."""
        return f"{self.kind}@{self.at}{'+' if self.persistent else ''}"

    @property
    def label(self) -> str:
        return f"{self.kind} at op {self.at} ({'persistent' if self.persistent else 'transient'})"


def _name(exc: BaseException) -> str:
    """The exception's class name; module-qualified (and marked) when it is neither an
    ``OSError`` nor a ``CrashgateError``, the two kinds the contract expects here."""
    if isinstance(exc, OSError | CrashgateError):
        return type(exc).__name__
    return f"*{type(exc).__module__}.{type(exc).__qualname__}"


def _through_driver(decl: Declaration) -> bool:
    """True for a store in a child process that injects the errors itself."""
    return decl.server is not None and decl.injects_io_errors


def _workload(spec: BackendSpec, ops: int, seed: int, driver: bool = False
              ) -> tuple[list[Op], int]:
    """The ops (from the declaration a store on a simulated disk gives) and how many mutating
    fs operations a clean run of open, ops, close makes (counted by the driver's child when
    ``driver``)."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    if driver:   # its child counts (and the simulated disk holds only the marker)
        store = spec.open(PATH, sim_env(disk), io_error="count")
    else:
        env, counter = count_mutating_ops(sim_env(disk))
        store = spec.open(PATH, env)
    workload = random_workload(store.declaration, ops, seed, PROFILES["small"])
    for op in workload:
        op.run(store)
    store.close()
    if not driver:
        return workload, counter.count
    if not isinstance(store, ProcStore) or store.fs_ops_at_close is None:
        raise DriverError(f"{spec.label}: its close answered no fs_ops report although it "
                          "declares io_errors", fix="answer close with the fs_ops result "
                          "when opened with io_error (backends/PROTOCOL.md)")
    return workload, store.fs_ops_at_close.mutating_ops


def _recover(spec: BackendSpec, image: DiskImage, ids: set[int], readonly: bool,
             case: _Case) -> StoreState | BaseException:
    """Reopen a copy of ``image`` as a writer; when a writer lock left behind by this (live)
    process refuses that, and the backend can, as a reader (a reader of a store that was
    never created sees an empty one)."""
    disk = SimDisk(image)
    try:
        store = spec.open(PATH, sim_env(disk))
    except LockHeld as exc:
        if not readonly:
            return exc
        case.read_only_recoveries += 1
        try:
            store = spec.open(PATH, sim_env(disk), readonly="true")
        except FileNotFoundError:
            return StoreState()
        except Exception as exc2:  # noqa: BLE001 - failing to reopen is the finding
            return exc2
    except Exception as exc:  # noqa: BLE001 - failing to reopen is the finding
        return exc
    try:
        return read_state(store, ids)
    except Exception as exc:  # noqa: BLE001
        return exc
    finally:
        with contextlib.suppress(Exception):  # closing the recovered copy decides nothing
            store.close()


def _judge(seen: StoreState | BaseException, ops: Sequence[Op], outcomes: Sequence[str],
           durability: Durability, power_loss: bool) -> str | None:
    """None when ``seen`` is the state after the acknowledged ops plus some subset of the
    indeterminate ones (each candidate judged by crashcheck), else what is wrong."""
    unsure = [i for i, o in enumerate(outcomes) if o == "info"]
    first: str | None = None
    for r in range(len(unsure) + 1):
        for chosen in itertools.combinations(unsure, r):
            seq = [op for i, op in enumerate(ops[: len(outcomes)])
                   if outcomes[i] == "ok" or i in chosen]
            states = prefix_states(seq)
            index: dict[str, list[int]] = {}
            for j, s in enumerate(states):
                index.setdefault(s.digest, []).append(j)
            verdict = judge(seen, states, index, seq,
                            allowed_range(len(seq), False, durability, power_loss))
            if verdict.violation is None:
                return None
            if first is None:
                first = f"{verdict.violation.value}: {verdict.detail}"
    return first


def _run_case(spec: BackendSpec, ops: Sequence[Op], case: _Case, durability: Durability,
              readonly: bool, driver: bool = False) -> _Case:
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    # in process the fault wraps the simulated disk; through a driver its child injects it
    fault = None if driver else IOErrors(case.kind, at=case.at, persistent=case.persistent)
    closed = False
    try:
        store = (spec.open(PATH, sim_env(disk), io_error=case.option) if fault is None
                 else spec.open(PATH, fault.install(sim_env(disk))))
    except Exception as exc:  # noqa: BLE001 - the open reported the error
        case.reported.append(_name(exc))
        store = None
    if store is not None:
        for op in ops:
            try:
                op.run(store)
            except Exception as exc:  # noqa: BLE001 - reported: indeterminate
                case.reported.append(_name(exc))
                case.outcomes.append("info")
                if case.persistent or case.outcomes.count("info") > 1:
                    break  # the application stops (or the store refuses to go on)
            else:
                case.outcomes.append("ok")
        try:
            store.close()
            closed = True
        except Exception as exc:  # noqa: BLE001
            case.reported.append(_name(exc))
    if fault is not None:
        fault.heal()
        case.fired = len(fault.fired)
    elif isinstance(store, ProcStore) and store.fs_ops_at_close is not None:
        case.fired = len(store.fs_ops_at_close.fired)
    ids = {r.id for op in ops if isinstance(op, Upsert) for r in op.records}
    # a clean close keeps everything acknowledged in the page cache, whatever the durability
    cache_durability = Durability.POWER_LOSS if closed else durability
    where = "real disk, by a new child" if driver else "page cache"
    checks = [(where, disk.cache_image(), cache_durability, False)]
    if durability is Durability.POWER_LOSS and not driver:
        checks.append(("durable image", disk.durable_image(), durability, True))
    for where, image, dur, power in checks:
        seen = _recover(spec, image, ids, readonly, case)
        problem = _judge(seen, ops, case.outcomes, dur, power)
        if problem is not None:
            acked = case.outcomes.count("ok")
            case.problem = (f"{case.label}: reopened from the {where} after {acked} acknowledged "
                            f"ops, the store shows {problem}")
            break
    return case


def check_io_error(spec: BackendSpec, *, kind: Kind, at: int, persistent: bool, seed: int,
                   ops: int) -> Evidence:
    """Re-run one case (the replay and the reproduction script call this)."""
    store = spec.open(f"{PATH}", sim_env(SimDisk(DiskImage.empty(DATA_DIR))))
    decl = store.declaration
    store.close()
    driver = _through_driver(decl)
    workload, _ = _workload(spec, ops, seed, driver)
    lockish = decl.has(Capability.WRITER_LOCK) or decl.has(Capability.LEASE)
    readonly = lockish and accepts_readonly(spec)
    case = _run_case(spec, workload, _Case(kind, at, persistent), decl.durability, readonly,
                     driver)
    measured = {"cases": 1, "ops": len(workload), "seed": seed, "errors_injected": case.fired}
    if case.problem:
        return Evidence(Verdict.FAIL, case.problem, measured, details=_ops_lines(workload, case))
    return Evidence(Verdict.PASS, f"{case.label}: nothing acknowledged was lost", measured)


def _ops_lines(ops: Sequence[Op], case: _Case) -> tuple[str, ...]:
    lines = [f"{i + 1:>3}. {describe_op(op)}: "
             + {"ok": "acknowledged", "info": "raised (indeterminate)"}[o]
             for i, (op, o) in enumerate(zip(ops, case.outcomes, strict=False))]
    return tuple(lines[-8:])


def _cases(count: int, limit: int, seed: int) -> tuple[list[tuple[Kind, int, bool]], bool]:
    """Every (kind, n, persistent) when the budget allows; else every n at least once (kinds
    and persistence rotating), then a seeded sample of the rest up to ``limit``."""
    combos = [(k, p) for k in KINDS for p in (False, True)]
    every = [(k, n, p) for n in range(1, count + 1) for k, p in combos]
    if len(every) <= limit:
        return every, True
    first = [(combos[(n + seed) % 4][0], n, combos[(n + seed) % 4][1])
             for n in range(1, count + 1)][:limit]
    rest = sorted(set(every) - set(first))
    more = random.Random(seed).sample(rest, max(0, limit - len(first)))
    return sorted(first + more, key=lambda c: (c[1], c[0], c[2])), False


def io_errors(ctx: RowContext) -> Evidence:
    t0 = time.perf_counter()
    n_ops = max(6, min(20, ctx.budget.workload_ops // 10))
    driver = _through_driver(ctx.declaration)
    workload, count = _workload(ctx.spec, n_ops, ctx.seed, driver)
    durability = ctx.declaration.durability
    lockish = ctx.declaration.has(Capability.WRITER_LOCK) or ctx.declaration.has(
        Capability.LEASE)
    # A recovered copy is opened in this same process, where a lock naming this (live) pid
    # could never be recovered: a store with a writer lock is read back read-only if it can be.
    readonly = lockish and accepts_readonly(ctx.spec)
    chosen, complete = _cases(count, ctx.budget.crash_states, ctx.seed)
    failures: list[_Case] = []
    reported: dict[str, int] = {}
    absorbed = 0
    read_only = 0
    for kind, at, persistent in chosen:
        case = _run_case(ctx.spec, workload, _Case(kind, at, persistent), durability, readonly,
                         driver)
        for name in case.reported:
            reported[name] = reported.get(name, 0) + 1
        read_only += case.read_only_recoveries
        if case.fired and not case.reported:
            absorbed += 1
        if case.problem:
            failures.append(case)
    swept = sorted({at for _, at, _ in chosen})
    measured = {"cases": len(chosen), "mutating_ops": count, "n_values": len(swept),
                "ops": len(workload), "seed": ctx.seed, "errors_absorbed": absorbed,
                "seconds": round(time.perf_counter() - t0, 3)}
    how = "every case of" if complete else (
        f"{len(chosen)} cases (budget), every n at least once, of")
    details = [f"swept {how} (EIO|ENOSPC) x (transient|persistent) x n in 1..{count}",
               "reported as: " + (", ".join(f"{k} x{v}" for k, v in sorted(reported.items()))
                                  or "nothing raised"),
               f"{absorbed} cases where the store absorbed the error (no op raised) and lost "
               "nothing"]
    if driver:
        details.append("injected by the store's driver in its child process (it declares "
                       "io_errors), on the real disk; each case recovered by a new child. The "
                       "real disk keeps no durable image apart from the page cache: a "
                       "write acknowledged after a failed fsync is not checked here")
    other = sorted(k for k in reported if k.startswith("*"))
    if other:
        details.append("* reported, so accepted, but neither an OSError nor a CrashgateError "
                       f"(no typed error naming the fix): {', '.join(k[1:] for k in other)}")
    if read_only:
        details.append(f"{read_only} recovered copies refused as a writer (a lock naming this "
                       "live process) were read with readonly=true")
    if not failures:
        return Evidence(Verdict.PASS, f"{len(chosen)} I/O-error cases over {count} mutating "
                        f"ops: every error was reported or absorbed, nothing acknowledged lost",
                        measured, details=tuple(details))
    first = failures[0]
    kwargs = {"kind": first.kind, "at": first.at, "persistent": first.persistent,
              "seed": ctx.seed, "ops": n_ops}
    script = write_reproduction(
        ctx.workdir, "reproduce_io_errors.py", title=first.problem or first.label,
        module="crashgate.scenarios.procedures_ioerrors", function="check_io_error",
        spec=ctx.spec.label, kwargs=kwargs)
    return Evidence(
        Verdict.FAIL, f"{len(failures)} of {len(chosen)} I/O-error cases left a store that "
        f"lost acknowledged data or could not be reopened; first: {first.problem}", measured,
        details=(*details, *_ops_lines(workload, first),
                 *(f.problem or "" for f in failures[1:4])),
        reproduce=f"python {script}",
        replay=lambda: check_io_error(ctx.spec, kind=first.kind, at=first.at,
                                      persistent=first.persistent, seed=ctx.seed, ops=n_ops))
