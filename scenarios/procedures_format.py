"""Rows about the shared file format: ADR-032 row 5 (write with one implementation, read with
another, write, read back). Row 4, the migration tool, is in ``procedures_migration``.

Every reading is checked by the oracle (``harness.vector_oracle``) against exact search over
what the file holds: an exact store's top 10 must be the true one (ties interchangeable), and
two exact stores must give the same ids; a store that declares a recall (``Declaration.recall``)
has its neighbour slots tallied and its recall@10 judged with an interval instead."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from crashgate.backends import (
    BUILTIN_NAMES,
    Declaration,
    Hit,
    Recall,
    VectorRecord,
    os_env,
    resolve,
)
from crashgate.harness.certify import probe_declaration
from crashgate.harness.ops import records_for
from crashgate.harness.vector_oracle import RecallTally, check_hits
from crashgate.harness.verdict import Evidence, Verdict, first_line
from crashgate.scenarios.table import RowContext

__all__ = ["TOLERANCE", "Probed", "cross_store_round_trip", "probe_builtin", "random_records"]

TOLERANCE = 1e-6



def random_records(rng: np.random.Generator, ids: range, dim: int) -> list[VectorRecord]:
    return [VectorRecord.of(i, rng.standard_normal(dim), {"i": i, "tag": "xyz"[i % 3]})
            for i in ids]


# -- ADR-032 row 5: one file, two implementations -------------------------------------------


@dataclass(frozen=True)
class Probed:
    """A built-in backend as a possible partner: what it declares, or why it could not be
    probed (``error``, ``Type: first line``; then it is no partner)."""

    declaration: Declaration | None
    error: str | None = None


@functools.cache
def probe_builtin(name: str) -> Probed:
    """``probe_declaration`` of the built-in backend ``name`` (no options), once per process:
    the built-in names and what they declare do not change within one, and a probe is costly
    (a store behind a process driver starts node, pgvector a Postgres server)."""
    try:
        return Probed(probe_declaration(resolve(name)))
    except Exception as exc:  # noqa: BLE001 - an unavailable partner is simply not a partner
        return Probed(None, first_line(exc))


def _partners(ctx: RowContext) -> list[str]:
    """Built-in backends that write the same file format as the one under test."""
    fmt = ctx.declaration.file_format
    if fmt is None:
        return []
    return [name for name in BUILTIN_NAMES if name != ctx.spec.name
            and (decl := probe_builtin(name).declaration) is not None
            and decl.file_format == fmt]


K = 10
"""Neighbours asked per query."""
QUERIES = {False: 8, True: 40}
"""Queries per reading: 8 when both stores search exactly, 40 when one promises a recall (its
recall@10 is judged with an interval: 8 queries are too few slots to decide it)."""


def _top10(store: object, queries: np.ndarray) -> list[list[Hit]]:
    return [store.query(q, K) for q in queries]  # type: ignore[attr-defined]


def _compare(a: list[list[Hit]], b: list[list[Hit]], what: str) -> list[str]:
    """Two exact stores on one file: the same ids, distances within ``TOLERANCE``."""
    problems = []
    for qi, (ha, hb) in enumerate(zip(a, b, strict=True)):
        if [h.id for h in ha] != [h.id for h in hb]:
            problems.append(f"{what}: query {qi}: ids {[h.id for h in ha]} vs {[h.id for h in hb]}")
        elif any(abs(x.distance - y.distance) > TOLERANCE for x, y in zip(ha, hb, strict=True)):
            problems.append(f"{what}: query {qi}: distances differ by more than {TOLERANCE}")
    return problems


@dataclass
class _Reader:
    """One store's readings, judged against exact search over what the file holds; an
    approximate store's neighbour slots tallied against its promise."""

    label: str
    recall: Recall | None
    tally: RecallTally = field(default_factory=RecallTally)

    def judge(self, answers: list[list[Hit]], live: dict[int, VectorRecord],
              queries: np.ndarray, metric: str, what: str) -> list[str]:
        records = list(live.values())
        problems = []
        for qi, (hits, q) in enumerate(zip(answers, queries, strict=True)):
            problem, found, possible = check_hits(hits, records, q, K, metric, None,
                                                  self.recall, TOLERANCE)
            if self.recall is not None and possible:
                self.tally.add(found, possible)
            if problem is not None:
                problems.append(f"{what}: query {qi}: {problem}")
        return problems


def _round_trip(ctx: RowContext, partner: str
                ) -> tuple[list[str], int, list[_Reader], str | None]:
    """Problems, queries asked, the two readers, and which of the two keeps no metadata (the
    round trip then writes records without metadata; None: both keep it)."""
    rng = np.random.default_rng(ctx.seed)
    dim = 32
    path = str(ctx.workdir / f"shared-{partner}.rvf")
    env = os_env()
    other = resolve(partner)
    metric = ctx.declaration.metric or "l2"
    other_decl = probe_builtin(partner).declaration
    assert other_decl is not None, partner   # a partner is one whose probe answered
    ours = _Reader(ctx.spec.label, ctx.declaration.recall)
    theirs = _Reader(other.label, other_decl.recall)
    exact = ours.recall is None and theirs.recall is None
    bare = next((label for label, d in ((ctx.spec.label, ctx.declaration),
                                        (other.label, other_decl)) if not d.metadata), None)

    def written(records: list[VectorRecord]) -> list[VectorRecord]:
        # what either partner cannot keep is not written: both must read back what was
        return list(records_for(other_decl, records_for(ctx.declaration, records)))

    live = {r.id: r for r in written(random_records(rng, range(200), dim))}
    queries = rng.standard_normal((QUERIES[not exact], dim))
    problems: list[str] = []
    # 1. write with the backend under test ("Node")
    a = ctx.spec.open(path, env)
    a.upsert(list(live.values()))
    written_by_a = _top10(a, queries)
    a.close()
    problems += ours.judge(written_by_a, live, queries, metric, f"{ctx.spec.label} writing")
    # 2. read with the partner ("browser"): the same neighbours
    b = other.open(path, env)
    read_by_b = _top10(b, queries)
    problems += theirs.judge(read_by_b, live, queries, metric, f"{partner} reading")
    if exact:
        problems += _compare(read_by_b, written_by_a, f"{partner} reading")
    # 3. write with the partner
    extra = written(random_records(rng, range(200, 300), dim))
    b.upsert(extra)
    gone = [int(i) for i in rng.choice(200, 20, replace=False)]
    b.remove(gone)
    live.update({r.id: r for r in extra})
    for i in gone:
        live.pop(i, None)
    after_b = _top10(b, queries)
    b.close()
    problems += theirs.judge(after_b, live, queries, metric, f"{partner} writing")
    # 4. read back with the backend under test
    a = ctx.spec.open(path, env)
    back = _top10(a, queries)
    count = a.count()
    a.close()
    problems += ours.judge(back, live, queries, metric, f"{ctx.spec.label} reading back")
    if exact:
        problems += _compare(back, after_b, f"{ctx.spec.label} reading back")
    if count != len(live):
        problems.append(f"count after the round trip is {count}, expected {len(live)}")
    return problems, len(queries) * 4, [ours, theirs], bare


def cross_store_round_trip(ctx: RowContext) -> Evidence:
    partners = _partners(ctx)
    if not partners:
        fmt = ctx.declaration.file_format
        return Evidence.na(
            f"no other store shares its file format ({fmt})" if fmt
            else "declares no shared file format, so no other store reads its files")
    problems: list[str] = []
    queries = 0
    recalls: list[tuple[Verdict, str]] = []
    found = possible = 0   # every approximate reading's neighbour slots, for the figures
    bare: list[str] = []   # partners whose round trip wrote no metadata, and why
    for partner in partners:
        p, q, readers, without = _round_trip(ctx, partner)
        if without is not None:
            bare.append(f"with {partner}: records written without metadata ({without} "
                        "declares it keeps none)")
        problems += p
        queries += q
        recalls += [(v, f"{r.label}: {text}") for r in readers if r.recall is not None
                    for v, text in [r.tally.verdict(r.recall)]]
        found += sum(r.tally.found for r in readers)
        possible += sum(r.tally.possible for r in readers)
    measured = {"partners": len(partners), "queries_compared": queries, "seed": ctx.seed}
    if possible:
        measured.update(recall_found=found, recall_possible=possible)
    problems += [text for v, text in recalls if v is Verdict.FAIL]
    if problems:
        return Evidence(Verdict.FAIL, problems[0], measured, (*problems, *bare),
                        replay=lambda: cross_store_round_trip(ctx))
    undecided = [text for v, text in recalls if v is not Verdict.PASS]
    if undecided:
        return Evidence(Verdict.UNKNOWN, undecided[0], measured, (*undecided, *bare))
    how = ("the promised recall@10 held (" + "; ".join(t for _, t in recalls) + ")" if recalls
           else "equal ids between the two")
    return Evidence(
        Verdict.PASS, f"{ctx.spec.label} -> {', '.join(partners)} -> {ctx.spec.label} on one "
        f".rvf file: top-10 neighbours checked against exact search at every step (distances "
        f"within {TOLERANCE}), {how}" + "".join(f"; {b}" for b in bare), measured,
        tuple(bare))
