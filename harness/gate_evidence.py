"""Gathering gate evidence from a migration stage adapter, in one bounded run on real files: a
seeded workload through the adapter, every key, vector and relational record compared between
its two stores (the shadow reads), fallbacks and corruption counted, RVF's witness chain
verified, one backup/restore cycle, one copy-on-write check on RVF, and the read and write
latency of the candidate it declares against its baseline (``store_latency.compare``, with an
A/A ratio), as the certificate's latency rows measure it. The result is the
evidence document ``scenarios.gates`` judges (its docstring has the format).

In stage 2, one shadow write in ten fails with an injected I/O error (a fault through the
adapter): each must be recorded as a divergence and mended by ``repair()`` before the shadow
reads are compared, so a queue that loses entries shows as mismatches. The run covers seconds:
criteria over days come out ``unknown`` from it, as they must; a soak writes evidence over
longer spans in the same format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from crashgate.backends import (
    BackendSpec,
    Capability,
    CorruptStore,
    Staged,
    os_env,
    resolve,
)
from crashgate.harness.divergence import DivergenceLedger
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.latency import summarise
from crashgate.harness.model import read_state
from crashgate.harness.ops import Upsert, is_mutation
from crashgate.harness.store_latency import READ, WRITE, compare
from crashgate.harness.workload import PROFILES, random_workload

__all__ = ["DUAL_WRITE", "FORMAT", "compare_shadow", "gather", "has_store"]

FORMAT = "crashgate-evidence/1"
DUAL_WRITE = (2, 3)
"""ADR-072's stages whose two stores both hold everything: only there are they compared."""


def _move_to(store: Any, stage: int) -> None:
    while store.stage < stage:
        store.promote()
    while store.stage > stage:
        store.rollback()


def compare_shadow(ledger: DivergenceLedger, corruption: dict[str, int], sqlite: Any, rvf: Any,
             ids: set[int]) -> None:
    """Every key and vector id, read from both stores and compared (the shadow reads)."""
    def read(call: Callable[[Any], Any]) -> tuple[Any, Any] | None:
        ledger.call()
        corruption["checks"] += 1
        try:
            return call(sqlite), call(rvf)
        except CorruptStore:
            corruption["incidents"] += 1
            return None

    keys = sorted({k for k, _ in sqlite.scan("")} | {k for k, _ in rvf.scan("")})
    for key in keys:
        got = read(functools.partial(_get, key))
        if got is not None:
            ledger.compare("get", key, *got)
    for vid in sorted(ids):
        got = read(functools.partial(_fetch, vid))
        if got is not None:
            ledger.compare("fetch", str(vid), *got)


def _get(key: str, store: Any) -> Any:
    return store.get(key)


def _fetch(vid: int, store: Any) -> Any:
    return store.fetch([vid])


def _backup_cycle(spec: BackendSpec, store: Any, directory: str, env: Any) -> dict[str, int]:
    if not store.declaration.has(Capability.BACKUP):
        return {"cycles": 0, "failures": 0}
    dest = os.path.join(directory, "backup.cgb")
    ids = set(store.ids())
    want = read_state(store, ids)
    store.backup(dest)
    other = spec.open(os.path.join(directory, "restored"), env)
    try:
        _move_to(other, store.stage)
        other.restore(dest)
        ok = read_state(other, ids) == want
    finally:
        other.close()
    return {"cycles": 1, "failures": 0 if ok else 1}


def _cow(rvf: Any, directory: str) -> dict[str, int]:
    """A derived child sees the parent's key-value data and relational records, and a write to
    the child never shows in the parent (ADR-072: COW branching for non-vector data)."""
    child = rvf.derive(os.path.join(directory, "child.rvf"))
    failures = 0
    try:
        if child.scan("") != rvf.scan(""):
            failures += 1
        if rvf.declaration.has(Capability.RELATIONAL):
            if {s: child.q_values(s) for s in child.relational_states()} != \
                    {s: rvf.q_values(s) for s in rvf.relational_states()}:
                failures += 1
            child.goap_store("cow-probe", {"steps": ["child only"]})
            child.q_value_update("cow-probe", "a", 1.0)
            if rvf.goap_retrieve("cow-probe") is not None or \
                    rvf.q_value_get("cow-probe", "a") is not None:
                failures += 1
        child.put("cow-probe", b"child only")
        if rvf.get("cow-probe") is not None:
            failures += 1
    finally:
        child.close()
    return {"checks": 1, "failures": failures}


def _latency(store: Any, directory: str, samples: int, seed: int) -> dict[str, Any]:
    """Read and write latency of the candidate the adapter declares against its baseline
    (``store_latency.compare``, as the certificate's latency rows measure): per operation type,
    the ratio, its interval, the samples and the A/A ratio."""
    decl = store.declaration
    if not decl.baseline:
        return {}
    candidate, baseline = resolve(decl.candidate or decl.label), resolve(decl.baseline)
    out: dict[str, Any] = {}
    for gate in (READ, WRITE):
        ev = compare(candidate, baseline, gate, samples, seed=seed, directory=directory)
        out[gate.kind] = {op: {k: fig[k] for k in ("point", "low", "high", "n", "aa")}
                          for op, fig in ev.measured.items()
                          if isinstance(fig, Mapping) and "point" in fig}
    return out


def _shadow_faults(failpoints: ArmedFailpoints, stage: int, every: int) -> list[int]:
    """In stage 2, an I/O error in every ``every``-th RVF shadow write (at RVF's own first
    failpoint, inside its commit): the adapter must record each as a divergence and ``repair``
    must mend it before the shadow reads are compared. The count, as a one-item list."""
    count = [0]
    if stage != 2 or every <= 0:
        return count
    hits = [0]

    def fail(name: str) -> None:
        hits[0] += 1
        if hits[0] % every == 0:
            count[0] += 1
            raise OSError(errno.EIO, f"crashgate gate: injected I/O error at {name}")
    failpoints.arm("rvf.after-data-write", action=fail, times=None)
    return count


def gather(spec: BackendSpec, stage: int, directory: str, *, ops: int = 200, seed: int = 1,
           samples: int = 200, fault_every: int = 10) -> dict[str, Any]:
    """The evidence of one run of ``spec`` (a stage adapter) moved to ``stage``, in
    ``directory`` (real files); see the module docstring. ``fault_every``: in stage 2, one
    shadow write in that many fails with an I/O error (0: none)."""
    failpoints = ArmedFailpoints()
    env = dataclasses.replace(os_env(), failpoints=failpoints)
    started = time.time()
    store: Any = spec.open(os.path.join(directory, "adapter"), env)
    staged = isinstance(store, Staged)   # (a name of its own: store stays Any to mypy)
    if not staged:
        store.close()
        raise TypeError(f"{spec.label!r} is not a migration stage adapter (no promote/"
                        "rollback): gates judge stage adapters, e.g. stage2")
    try:
        _move_to(store, stage)
        work = random_workload(store.declaration, ops, seed, PROFILES["small"])
        injected = _shadow_faults(failpoints, store.stage, fault_every)
        reads = 0
        missions = store.declaration.has(Capability.MISSIONS)
        for op in work:
            op.run(store)
            with contextlib.suppress(Exception):
                store.scan("")
                reads += 1
            if missions:
                with contextlib.suppress(Exception):
                    reads += len([store.mission_get(m) for m in store.mission_ids()])
        failpoints.disarm()
        queued = len(store.divergences()) if hasattr(store, "divergences") else 0
        repaired = store.repair() if queued else 0
        mutations = sum(1 for op in work if is_mutation(op))
        ids = {r.id for op in work if isinstance(op, Upsert) for r in op.records}
        evidence: dict[str, Any] = {"format": FORMAT, "adapter": spec.label, "stage": stage,
                                    "seed": seed, "ops": ops,
                                    "faults": {"shadow_write_errors": injected[0],
                                               "divergences_queued": queued,
                                               "divergences_repaired": repaired}}
        if store.declaration.failpoints:   # a dual-write stage: its writes reach two stores
            # ARCH-001's "no errors in dual-write mode": the writes the second store failed,
            # beyond the ones injected here
            evidence["dual_write"] = {"writes": mutations, "errors": queued - injected[0]}
        stores: Mapping[str, Any] = {n: store.store(n) for n in ("sqlite", "rvf")
                                     if has_store(store, n)}
        if len(stores) == 2 and stage in DUAL_WRITE:
            ledger = DivergenceLedger()   # records compare as values
            corruption = {"checks": 0, "incidents": 0}
            compare_shadow(ledger, corruption, stores["sqlite"], stores["rvf"], ids)
            evidence["divergence"] = {"compared": ledger.compared,
                                      "mismatches": ledger.mismatches,
                                      "examples": [f"{m.key}" for t in ledger.tallies.values()
                                                   for m in t.examples]}
            evidence["corruption"] = corruption
        evidence["latency"] = _latency(store, directory, samples, seed)
        evidence["fallbacks"] = {"reads": reads,
                                 "fallbacks": sum(getattr(store, "fallbacks", {}).values())}
        if "rvf" in stores:
            problems = stores["rvf"].verify()
            entries = int(stores["rvf"].status().get("witness_entries", 0))
            evidence["witness"] = {"verified": entries, "invalid": len(problems)}
            evidence["cow"] = _cow(stores["rvf"], directory)
        what, query = _query(store, work)
        timed = []
        for _ in range(50):
            t = time.perf_counter()
            query()
            timed.append(time.perf_counter() - t)
        evidence.setdefault("latency", {})["query_p99_ms"] = summarise(timed).p99 * 1e3
        evidence["latency"]["query_n"] = len(timed)
        evidence["latency"]["query"] = what
        evidence["backup"] = _backup_cycle(spec, store, directory, env)
    finally:
        store.close()
    evidence["started"], evidence["ended"] = started, time.time()
    return evidence


def has_store(store: Any, name: str) -> bool:
    try:
        store.store(name)
    except KeyError:
        return False
    return True


def _query(store: Any, work: list[Any]) -> tuple[str, Callable[[], object]]:
    """What a query of ``store`` is, and a call that makes one: a vector query (k=10) for a
    vector store; for ARCH-001's mission store, reading a mission document (its SQLite
    queries); else a scan of every key."""
    decl = store.declaration
    if decl.has(Capability.VECTOR):
        vector = [0.5] * _dimension(work)
        return "vector query k=10", lambda: store.query(vector, 10)
    if decl.has(Capability.MISSIONS):
        ids = store.mission_ids()
        if ids:
            return "mission_get", lambda: store.mission_get(ids[len(ids) // 2])
    return "scan of every key", lambda: store.scan("")


def _dimension(work: list[Any]) -> int:
    for op in work:
        if isinstance(op, Upsert) and op.records:
            return len(op.records[0].vector)
    return 8
