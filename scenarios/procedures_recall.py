"""The recall row ("Native HNSW indexing for optimal similarity search"): a vector store's
queries held to what it declares (``Declaration.recall``). An exact store must answer every
query exactly (tie-aware, ``vector_oracle.check_exact``); an approximate one must still return
live, matching hits with their exact distances, in order, ``min(k, matching)`` of them, and
its recall@k over all queries is judged against its promise with a Wilson interval
(``vector_oracle.RecallTally``): pass when the interval's low end reaches the promise, fail
when its high end falls short, unknown in between.

The data: a seeded set of clustered vectors (float32-representable, so a float32 store is
not blamed for rounding), upserted in batches on real files; some deleted and a few of those
re-inserted with new vectors (an index must forget the old ones); then queries near the
clusters, a third of them with a metadata filter (equality, ``$in``, a numeric range).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crashgate.backends import BackendSpec, Capability, VectorRecord, os_env
from crashgate.harness.certify import probe_declaration
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.vector_oracle import Probe, RecallTally, check_hits
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.scenarios.table import Budget, RowContext

__all__ = ["SIZES", "check_recall", "dataset", "recall"]

DIM = 48
CLUSTERS = 24
BATCH = 500
SIZES = {"quick": (2000, 120), "standard": (4000, 240), "thorough": (8000, 500)}
"""(records, queries) by budget name."""
EXACT_K = 10
"""``k`` of an exact store's queries (an approximate one is asked at its promise's k)."""


def _sizes(budget: Budget) -> tuple[int, int]:
    if budget.name in SIZES:
        return SIZES[budget.name]
    records = min(8000, max(1000, 30 * budget.workload_ops))
    return records, records // 16


@dataclass(frozen=True)
class Dataset:
    """What the row writes and asks: ``batches`` upserted in order, then ``removed`` deleted,
    then ``reinserted`` upserted; ``live`` is what the store then holds; ``probes`` the
    queries."""

    batches: tuple[tuple[VectorRecord, ...], ...]
    removed: tuple[int, ...]
    reinserted: tuple[VectorRecord, ...]
    live: dict[int, VectorRecord]
    probes: tuple[Probe, ...]


def _vectors(rng: np.random.Generator, centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    noisy = centers[labels] + rng.standard_normal((len(labels), centers.shape[1]))
    # float32-representable: a store keeping float32 holds exactly these values
    return noisy.astype(np.float32).astype(np.float64)


def dataset(seed: int, records: int, queries: int, k: int, *, metadata: bool = True
            ) -> Dataset:
    """The seeded data: ``records`` clustered vectors of dimension ``DIM`` with metadata
    ``{"cluster": int, "group": "a".."d", "rank": 0..99}``, about a tenth removed and a fifth
    of those re-inserted with new vectors, and ``queries`` probes asking ``k`` neighbours.
    ``metadata=False`` (a store that keeps none): the same ids, vectors and queries, with
    metadata ``{}`` and no filters."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((CLUSTERS, DIM)) * 3.0
    labels = rng.integers(0, CLUSTERS, records)
    vecs = _vectors(rng, centers, labels)
    ranks = rng.integers(0, 100, records)

    def record(i: int, vector: np.ndarray, label: int) -> VectorRecord:
        return VectorRecord.of(i, vector, {"cluster": int(label), "group": "abcd"[i % 4],
                                           "rank": int(ranks[i])} if metadata else {})

    recs = [record(i, vecs[i], labels[i]) for i in range(records)]
    removed = sorted(int(i) for i in rng.choice(records, records // 10, replace=False))
    back = removed[: len(removed) // 5]
    back_labels = rng.integers(0, CLUSTERS, len(back))
    new = _vectors(rng, centers, back_labels)
    reinserted = tuple(record(i, new[j], back_labels[j]) for j, i in enumerate(back))
    live = {r.id: r for r in recs}
    for i in removed:
        del live[i]
    live.update({r.id: r for r in reinserted})
    qlabels = rng.integers(0, CLUSTERS, queries)
    qvecs = _vectors(rng, centers, qlabels)
    probes = []
    for j in range(queries):
        where: dict[str, object] | None = None
        if metadata and j % 3 == 1:
            filters: list[dict[str, object]] = [
                {"group": "abcd"[j % 4]}, {"rank": {"$gte": 20, "$lt": 60}},
                {"cluster": {"$in": [int(qlabels[j]), int((qlabels[j] + 1) % CLUSTERS)]}}]
            where = filters[(j // 3) % 3]
        probes.append(Probe(tuple(float(x) for x in qvecs[j]), k, where))
    batches = tuple(tuple(recs[at:at + BATCH]) for at in range(0, records, BATCH))
    return Dataset(batches, tuple(removed), reinserted, live, tuple(probes))


def check_recall(spec: BackendSpec, *, seed: int, records: int, queries: int, directory: str,
                 only: int | None = None) -> Evidence:
    """Write ``dataset(seed, records, queries, k)`` to a fresh store under ``directory`` and
    ask its probes (only probe ``only`` when given: a reproduction of one query), judged as
    the store declares. Measured: records live, queries asked (filtered), neighbour slots."""
    decl = probe_declaration(spec)
    promise = decl.recall
    k = promise.k if promise is not None else EXACT_K
    data = dataset(seed, records, queries, k, metadata=decl.metadata)
    metric = decl.metric or "l2"
    scratch = tempfile.mkdtemp(prefix="recall-", dir=directory)
    store = spec.open(str(Path(scratch) / "store"), os_env())
    tally = RecallTally()
    asked = [(j, p) for j, p in enumerate(data.probes) if only is None or j == only]
    records_live = list(data.live.values())
    try:
        for batch in data.batches:
            store.upsert(list(batch))
        store.remove(list(data.removed))
        store.upsert(list(data.reinserted))
        for n, (j, probe) in enumerate(asked, 1):
            hits = store.query(list(probe.vector), probe.k, probe.where)
            problem, found, possible = check_hits(hits, records_live, probe.vector, probe.k,
                                                  metric, probe.where, promise)
            if problem is not None:
                return Evidence(
                    Verdict.FAIL, f"query {j} (seed {seed}): {probe.describe()}: {problem}",
                    {"records": len(data.live), "queries": n, "first_bad_query": j,
                     "seed": seed}, conclusive=True)
            if possible:
                tally.add(found, possible)
    finally:
        store.close()
        shutil.rmtree(scratch, ignore_errors=True)
    filtered = sum(1 for _, p in asked if p.where)
    # why none is filtered, when the store keeps no metadata to filter on
    unfiltered = "" if decl.metadata else "; no filters: the store declares it keeps no metadata"
    measured: dict[str, object] = {
        "records": len(data.live), "removed": len(data.removed),
        "reinserted": len(data.reinserted), "queries": len(asked), "filtered_queries": filtered,
        "neighbour_slots": tally.possible, "found": tally.found, "seed": seed}
    if promise is None:
        if not tally.possible:
            return Evidence(Verdict.UNKNOWN, "no query had a neighbour to return", measured)
        return Evidence(Verdict.PASS, f"{len(asked)} queries ({filtered} filtered) over "
                        f"{len(data.live)} records: every answer the exact top {k} "
                        f"(ties interchangeable){unfiltered}", measured)
    interval = tally.interval()
    if interval is not None:
        measured.update(recall=tally.recall, recall_low=interval[0], recall_high=interval[1])
    verdict, text = tally.verdict(promise)
    return Evidence(verdict, f"{text} ({filtered} of the queries filtered, over "
                    f"{len(data.live)} records{unfiltered})", measured,
                    conclusive=verdict is Verdict.FAIL)


def recall(ctx: RowContext) -> Evidence:
    """The row: ``check_recall`` at the budget's size; a failure comes with a script that
    reruns it (the failing query alone when one query was wrong)."""
    if not ctx.declaration.has(Capability.VECTOR):
        return Evidence.na("not a vector store (declares no vector capability): no query to "
                           "hold to a recall")
    records, queries = _sizes(ctx.budget)
    ctx.progress(f"recall: {records} records, {queries} queries")
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    ev = check_recall(ctx.spec, seed=ctx.seed, records=records, queries=queries,
                      directory=str(ctx.workdir))
    kwargs: dict[str, object] = {"seed": ctx.seed, "records": records, "queries": queries,
                                 "directory": str(ctx.workdir)}
    bad = ev.measured.get("first_bad_query")
    if bad is not None:
        kwargs["only"] = bad
    return on_failure(ev, workdir=ctx.workdir, name="reproduce_recall.py", spec=ctx.spec,
                      check=check_recall, kwargs=kwargs)
