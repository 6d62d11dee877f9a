"""The issue's done-when: ADR-0003's stores over the in-memory backend and over Postgres +
pgvector (and over SQLite) agree on every answer of a seeded workload with filters,
deletions, retention and reindexing.

One seeded list of operations runs against the layers over ``memory`` and over the other
backend, each with its own virtual clock moved identically; every answer (hits with their
provenance and distances, memories, audit events, runs, counts, and the type of every error)
is compared, distances within 1e-9."""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import pytest

from crashgate.backends import resolve
from crashgate.harness.clock import VirtualClock
from crashgate.harness.diskimage import DiskImage
from crashgate.harness.simdisk import SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference.adr0003 import (
    DeterministicEmbedder,
    Document,
    MemoryStore,
    Retrieved,
    RunStore,
    VectorStore,
)

VOCAB = (
    "retrieval", "memory", "tenant", "vector", "index", "postgres", "crash", "audit", "chunk",
    "model", "embed", "query", "filter", "delete", "retention", "provenance", "source", "run",
    "step", "budget")
MODELS = (DeterministicEmbedder("hash-v1", 24), DeterministicEmbedder("hash-v2", 16),
          DeterministicEmbedder("hash-v3", 32))
TENANTS = ("t0", "t1", "t2")
Op = tuple[Any, ...]


def workload(seed: int, n: int = 160) -> list[Op]:
    """``n`` operations drawn from ``seed``; reindexing at a third and two thirds."""
    rng = random.Random(seed)
    docs: list[tuple[str, str]] = []
    runs: list[str] = ["never-started"]
    ops: list[Op] = []

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(lo, hi)))

    def where() -> dict[str, Any] | None:
        return rng.choice([
            None, {"tenant_id": rng.choice(TENANTS)},
            {"tenant_id": rng.choice(TENANTS), "year": {"$gte": rng.randint(2018, 2025)}},
            {"lang": {"$in": rng.sample(["en", "fr", "de"], 2)}},
            {"source": {"$ne": "s1"}}, {"chunk": {"$lte": 1}},
            {"doc_id": rng.choice(docs)[1]} if docs else None])

    for i in range(n):
        if i in (n // 3, 2 * n // 3):
            ops.append(("reindex", 1 if i == n // 3 else 2))
            continue
        kind = rng.choices(["ingest", "reingest", "retrieve", "vector", "baddim", "delete",
                            "count", "remember", "advance", "get", "list", "forget", "purge",
                            "audit", "start", "step", "finish", "runs"],
                           [10, 1, 12, 3, 1, 3, 1, 10, 4, 3, 2, 4, 2, 3, 2, 3, 2, 1])[0]
        tenant = rng.choice(TENANTS)
        if kind == "ingest":
            docs.append((tenant, f"d{i}"))
            ops.append((kind, Document(tenant, f"d{i}", rng.choice(["s0", "s1", "s2"]),
                                       text(1, 14), {"year": rng.randint(2018, 2025),
                                                     "lang": rng.choice(["en", "fr", "de"])})))
        elif kind == "reingest" and docs:
            t, d = rng.choice(docs)
            ops.append(("ingest", Document(t, d, "s0", text(1, 5))))
        elif kind in ("retrieve", "vector", "baddim"):
            ops.append((kind, text(1, 4), rng.randint(1, 8), where()))
        elif kind == "delete" and docs:
            ops.append((kind, *rng.choice(docs)))
        elif kind == "remember":
            ops.append((kind, tenant, f"m{rng.randint(0, 12)}", text(2, 6),
                        rng.choice([None, 5.0, 30.0, 90.0])))
        elif kind == "advance":
            ops.append((kind, float(rng.randint(0, 40))))
        elif kind in ("get", "forget"):
            ops.append((kind, tenant, f"m{rng.randint(0, 12)}"))
        elif kind in ("list", "audit"):
            ops.append((kind, tenant))
        elif kind == "start":
            runs.append(f"r{i}")
            ops.append((kind, tenant, runs[-1]))
        elif kind in ("step", "finish"):
            ops.append((kind, rng.choice(runs), rng.choice(["retrieve", "failed"])))
        elif kind in ("count", "purge", "runs"):
            ops.append((kind,))
    # a final sweep reads back everything: every tenant's memories and audit trail, every run
    ops += [(kind, t) for t in TENANTS for kind in ("list", "audit")]
    return [*ops, ("runs",), ("count",), ("retrieve", "crash audit", 50, None)]


class Layers:
    """The three stores over one backend store, with the clock the workload moves."""

    def __init__(self, backend: str) -> None:
        self.clock = VirtualClock()
        env = sim_env(SimDisk(DiskImage.empty("/data")), self.clock)
        self.store = resolve(backend).open("/data/store", env)
        self.vectors = VectorStore(self.store, MODELS[0], chunk_words=5, slot_dim=32)
        self.memory = MemoryStore(self.store, self.clock)
        self.runs = RunStore(self.store, self.clock)

    def run(self, op: Op) -> Any:
        try:
            return self._run(op)
        except (ValueError, KeyError) as exc:     # the layers' own refusals
            return ("error", type(exc).__name__)

    def _run(self, op: Op) -> Any:
        kind, *args = op
        vs, ms, rs = self.vectors, self.memory, self.runs
        if kind == "reindex":
            return vs.reindex(MODELS[args[0]])
        if kind == "ingest":
            return vs.ingest(args[0])
        if kind == "retrieve":
            return vs.retrieve(*args)
        if kind in ("vector", "baddim"):
            emb = vs.embedder if kind == "vector" else DeterministicEmbedder("x", 8)
            return vs.retrieve(emb.embed(args[0]), *args[1:], embed_model=emb.model)
        if kind == "delete":
            return vs.delete(*args)
        if kind == "count":
            return vs.count()
        if kind == "remember":
            return ms.remember(*args[:3], retention_s=args[3], metadata={"n": len(args[2])})
        if kind == "advance":
            return self.clock.advance(args[0])
        if kind == "get":
            return ms.get(*args)
        if kind == "list":
            return ms.list(*args)
        if kind == "forget":
            return ms.forget(*args, actor="user", reason="asked")
        if kind == "purge":
            return ms.purge_expired()
        if kind == "audit":
            return ms.audit_events(*args)
        if kind == "start":
            return rs.start(*args, metadata={"seed": True})
        if kind == "step":
            return rs.step(args[0], args[1], {"ok": True})
        if kind == "finish":
            return rs.finish(args[0], "failed" if args[1] == "failed" else "succeeded")
        if kind == "runs":
            return rs.list()
        raise AssertionError(f"unknown op {kind!r}")


def same(a: Any, b: Any) -> bool:
    """Equal, with hits' distances compared within 1e-9."""
    if isinstance(a, list) and a and isinstance(a[0], Retrieved):
        return (isinstance(b, list) and len(a) == len(b) and all(
            isinstance(y, Retrieved)
            and dataclasses.replace(x, distance=0.0) == dataclasses.replace(y, distance=0.0)
            and math.isclose(x.distance, y.distance, rel_tol=1e-9, abs_tol=1e-12)
            for x, y in zip(a, b, strict=True)))
    return bool(a == b)


def differential(backend: str, seed: int) -> dict[str, int]:
    reference, other = Layers("memory"), Layers(backend)
    seen = {"hits": 0, "errors": 0, "audit": 0, "reindex": 0}
    try:
        for step, op in enumerate(workload(seed)):
            a, b = reference.run(op), other.run(op)
            assert same(a, b), f"seed {seed}, op {step} {op}:\n memory: {a}\n {backend}: {b}"
            if isinstance(a, list) and a and isinstance(a[0], Retrieved):
                seen["hits"] += len(a)
            seen["errors"] += isinstance(a, tuple) and a[:1] == ("error",)
            seen["audit"] += len(a) if op[0] == "audit" else 0
            seen["reindex"] += op[0] == "reindex"
    finally:
        reference.store.close()
        other.store.close()
    return seen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_memory_and_sqlite_agree_on_every_answer(seed: int) -> None:
    seen = differential("sqlite", seed)
    # the workload reached what it is about: hits, refusals, audit trails, both reindexes
    assert seen["hits"] > 50 and seen["errors"] > 0 and seen["audit"] > 2
    assert seen["reindex"] == 2


@pytest.mark.parametrize("seed", [0, 1])
def test_memory_and_pgvector_agree_on_every_answer(seed: int, postgres_server: Any) -> None:
    seen = differential("pgvector", seed)
    assert seen["hits"] > 50 and seen["errors"] > 0 and seen["audit"] > 2
    assert seen["reindex"] == 2
