"""Rows about the shared file format: ADR-032 row 5 (write with one implementation, read with
another, write, read back). Row 4, the migration tool, is in ``procedures_migration``."""

from __future__ import annotations

import numpy as np

from crashgate.backends import (
    BUILTIN_NAMES,
    Hit,
    VectorRecord,
    os_env,
    resolve,
)
from crashgate.harness.certify import probe_declaration
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.scenarios.table import RowContext

__all__ = ["TOLERANCE", "cross_store_round_trip", "random_records"]

TOLERANCE = 1e-6



def random_records(rng: np.random.Generator, ids: range, dim: int) -> list[VectorRecord]:
    return [VectorRecord.of(i, rng.standard_normal(dim), {"i": i, "tag": "xyz"[i % 3]})
            for i in ids]


# -- ADR-032 row 5: one file, two implementations -------------------------------------------


def _partners(ctx: RowContext) -> list[str]:
    """Built-in backends that write the same file format as the one under test."""
    fmt = ctx.declaration.file_format
    if fmt is None:
        return []
    out = []
    for name in BUILTIN_NAMES:
        if name == ctx.spec.name:
            continue
        try:
            if probe_declaration(resolve(name)).file_format == fmt:
                out.append(name)
        except Exception:  # noqa: BLE001, S112 - an unavailable partner is simply not a partner
            continue
    return out


def _top10(store: object, queries: np.ndarray) -> list[list[Hit]]:
    return [store.query(q, 10) for q in queries]  # type: ignore[attr-defined]


def _compare(a: list[list[Hit]], b: list[list[Hit]], what: str) -> list[str]:
    problems = []
    for qi, (ha, hb) in enumerate(zip(a, b, strict=True)):
        if [h.id for h in ha] != [h.id for h in hb]:
            problems.append(f"{what}: query {qi}: ids {[h.id for h in ha]} vs {[h.id for h in hb]}")
        elif any(abs(x.distance - y.distance) > TOLERANCE for x, y in zip(ha, hb, strict=True)):
            problems.append(f"{what}: query {qi}: distances differ by more than {TOLERANCE}")
    return problems


def _oracle(live: dict[int, VectorRecord], queries: np.ndarray, metric: str) -> list[list[Hit]]:
    from crashgate.reference.vector_search import exact_search
    recs = sorted(live.values(), key=lambda r: r.id)
    m = np.array([r.vector for r in recs])
    return [exact_search([r.id for r in recs], m, [r.metadata for r in recs], q, 10, metric)
            for q in queries]


def _round_trip(ctx: RowContext, partner: str) -> tuple[list[str], int]:
    rng = np.random.default_rng(ctx.seed)
    dim = 32
    path = str(ctx.workdir / f"shared-{partner}.rvf")
    env = os_env()
    other = resolve(partner)
    metric = ctx.declaration.metric or "l2"
    live = {r.id: r for r in random_records(rng, range(200), dim)}
    queries = rng.standard_normal((8, dim))
    problems: list[str] = []
    # 1. write with the backend under test ("Node")
    a = ctx.spec.open(path, env)
    a.upsert(list(live.values()))
    written_by_a = _top10(a, queries)
    a.close()
    # 2. read with the partner ("browser"): the same neighbours
    b = other.open(path, env)
    problems += _compare(_top10(b, queries), written_by_a, f"{partner} reading")
    # 3. write with the partner
    extra = random_records(rng, range(200, 300), dim)
    b.upsert(extra)
    gone = [int(i) for i in rng.choice(200, 20, replace=False)]
    b.remove(gone)
    live.update({r.id: r for r in extra})
    for i in gone:
        live.pop(i, None)
    after_b = _top10(b, queries)
    b.close()
    # 4. read back with the backend under test
    a = ctx.spec.open(path, env)
    back = _top10(a, queries)
    count = a.count()
    a.close()
    problems += _compare(back, after_b, f"{ctx.spec.label} reading back")
    problems += _compare(back, _oracle(live, queries, metric), "against exact search")
    if count != len(live):
        problems.append(f"count after the round trip is {count}, expected {len(live)}")
    return problems, len(queries) * 4


def cross_store_round_trip(ctx: RowContext) -> Evidence:
    partners = _partners(ctx)
    if not partners:
        fmt = ctx.declaration.file_format
        return Evidence.na(
            f"no other store shares its file format ({fmt})" if fmt
            else "declares no shared file format, so no other store reads its files")
    problems: list[str] = []
    queries = 0
    for partner in partners:
        p, q = _round_trip(ctx, partner)
        problems += p
        queries += q
    measured = {"partners": len(partners), "queries_compared": queries, "seed": ctx.seed}
    if problems:
        return Evidence(Verdict.FAIL, problems[0], measured, tuple(problems),
                        replay=lambda: cross_store_round_trip(ctx))
    return Evidence(
        Verdict.PASS, f"{ctx.spec.label} -> {', '.join(partners)} -> {ctx.spec.label} on one "
        f".rvf file: top-10 neighbours equal (ids, distances within {TOLERANCE}) at every step "
        "and equal to exact search", measured)
