"""ADR-0003's stores as layers over crashgate stores: embedder, VectorStore (provenance, filters,
model/dimension checks, delete, reindex with no mixed window, also across crashes), MemoryStore
(retention, audit events), RunStore."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from crashgate.backends import SimulatedCrash, resolve
from crashgate.harness.clock import VirtualClock
from crashgate.harness.diskimage import DiskImage
from crashgate.harness.simdisk import SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference.adr0003 import (
    DeterministicEmbedder,
    Document,
    DocumentExists,
    EmbeddingMismatch,
    LayerUnsupported,
    MemoryStore,
    RunStore,
    UnknownRun,
    VectorStore,
    unsupported_reason,
)

OLD = DeterministicEmbedder("hash-a", 24)
NEW = DeterministicEmbedder("hash-b", 16)
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
         "lambda", "mu")


def open_store(kind: str = "memory") -> Any:
    disk = SimDisk(DiskImage.empty("/data"))
    return resolve(kind).open("/data/store", sim_env(disk))


def docs() -> list[Document]:
    out = []
    for i in range(6):
        text = " ".join(WORDS[(i * 5 + j * 3) % len(WORDS)] for j in range(7 + i))
        out.append(Document(f"t{i % 2}", f"d{i}", f"file://doc{i}.md", text,
                            {"year": 2020 + i, "lang": "en" if i % 3 else "fr"}))
    return out


def loaded(kind: str = "memory", embedder: DeterministicEmbedder = OLD) -> VectorStore:
    vs = VectorStore(open_store(kind), embedder, chunk_words=4, slot_dim=32)
    for d in docs():
        vs.ingest(d)
    return vs


def answer(vs: VectorStore, query: str = "beta delta kappa", k: int = 5,
           where: dict[str, Any] | None = None) -> list[tuple[str, str, int, float]]:
    return [(h.embed_model, h.provenance.doc_id, h.provenance.chunk, h.distance)
            for h in vs.retrieve(query, k, where)]


# -- embedder ---------------------------------------------------------------------------------


def test_embedder_is_deterministic_unit_length_and_model_specific() -> None:
    v = OLD.embed("Alpha beta, gamma!")
    assert v == DeterministicEmbedder("hash-a", 24).embed("alpha BETA gamma")
    assert len(v) == 24 and math.isclose(math.fsum(x * x for x in v), 1.0)
    assert v != DeterministicEmbedder("hash-c", 24).embed("alpha beta gamma")
    assert DeterministicEmbedder("hash-a", 24).embed("") == (0.0,) * 24
    with pytest.raises(ValueError, match="dim"):
        DeterministicEmbedder("m", 0)


# -- vector store -----------------------------------------------------------------------------


def test_retrieve_carries_provenance_and_model_and_honours_filters() -> None:
    vs = loaded()
    hits = vs.retrieve("beta delta", 50)
    assert len(hits) == vs.count() == sum(-(-len(d.text.split()) // 4) for d in docs())
    assert [(h.distance, h.id) for h in hits] == sorted((h.distance, h.id) for h in hits)
    by_doc = {d.doc_id: d for d in docs()}
    for h in hits:
        doc = by_doc[h.provenance.doc_id]
        assert h.provenance.source == doc.source and h.tenant_id == doc.tenant_id
        assert h.text == " ".join(doc.text.split()[4 * h.provenance.chunk:][:4])
        assert (h.embed_model, h.embed_dim) == ("hash-a", 24)
        assert h.metadata == doc.metadata
        assert h.evidence()["source"] == doc.source
    t1 = vs.retrieve("beta", 50, {"tenant_id": "t1", "year": {"$gte": 2022}})
    assert t1 and {h.provenance.doc_id for h in t1} == {"d3", "d5"}
    assert {h.provenance.doc_id for h in vs.retrieve("beta", 50, {"lang": {"$in": ["fr"]}})} \
        == {"d0", "d3"}
    with pytest.raises(ValueError, match="internal"):
        vs.retrieve("beta", 3, {"_gen": 0})


def test_ingest_refuses_a_live_document_and_delete_removes_it_whole() -> None:
    vs = loaded()
    with pytest.raises(DocumentExists, match="d2"):
        vs.ingest(docs()[2])
    before = vs.count()
    assert vs.delete("t0", "d2") == 3
    assert vs.delete("t0", "d2") == 0
    assert vs.count() == before - 3 == vs.store.count()
    assert not vs.retrieve("beta", 50, {"doc_id": "d2"})
    vs.ingest(docs()[2])          # deleted: may come back
    assert len(vs.retrieve("beta", 50, {"doc_id": "d2"})) == 3


def test_wrong_dimension_or_model_is_refused_naming_both() -> None:
    vs = loaded()
    with pytest.raises(EmbeddingMismatch, match="dimension 16.*dimension 24"):
        vs.retrieve(NEW.embed("beta"), 3)
    with pytest.raises(EmbeddingMismatch, match="'hash-b'.*'hash-a'"):
        vs.retrieve(OLD.embed("beta"), 3, embed_model="hash-b")
    assert vs.retrieve(OLD.embed("beta"), 3, embed_model="hash-a")
    other = VectorStore(vs.store, NEW)     # the same store, opened with another model
    with pytest.raises(EmbeddingMismatch, match="'hash-a' \\(dim 24\\).*'hash-b' \\(dim 16\\)"):
        other.retrieve("beta", 3)
    with pytest.raises(EmbeddingMismatch, match="hash-a"):
        other.ingest(Document("t9", "x", "s", "beta"))


def test_reindex_answers_as_a_store_built_by_the_new_model() -> None:
    vs = loaded()
    report = vs.reindex(NEW)
    assert (report.old.model, report.new.model, report.chunks) == ("hash-a", "hash-b",
                                                                   vs.count())
    assert vs.store.count() == vs.count()          # the old generation is gone
    fresh = loaded(embedder=NEW)
    for where in (None, {"tenant_id": "t0"}, {"year": {"$lt": 2023}}):
        assert answer(vs, where=where) == answer(fresh, where=where)
    with pytest.raises(EmbeddingMismatch, match="dimension 24"):
        vs.retrieve(OLD.embed("beta"), 3)
    with pytest.raises(EmbeddingMismatch, match="slot_dim 32"):
        vs.reindex(DeterministicEmbedder("big", 64))
    with pytest.raises(ValueError, match="already indexed"):
        vs.reindex(NEW)


def test_queries_during_a_reindex_see_all_old_or_all_new() -> None:
    vs = loaded()
    expected = {answer(vs)[0][0]: answer(vs), "hash-b": answer(loaded(embedder=NEW))}
    seen: list[list[tuple[str, str, int, float]]] = []
    stop = threading.Event()

    def query() -> None:
        while not stop.is_set():
            seen.append(answer(vs))

    thread = threading.Thread(target=query)
    thread.start()
    try:
        for model in ("hash-b", "hash-a", "hash-b"):
            vs.reindex(NEW if model == "hash-b" else OLD)
    finally:
        stop.set()
        thread.join()
    assert seen
    for got in seen:
        assert got in (expected["hash-a"], expected["hash-b"]), got


class CrashAt:
    """Wraps a store: the ``n``-th mutating call raises ``SimulatedCrash`` (before it runs)."""

    def __init__(self, store: Any, n: int) -> None:
        self._store, self._n, self.calls = store, n, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in ("put", "write_batch", "upsert", "remove", "delete"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self._n:
                raise SimulatedCrash(f"{name} #{self.calls}")
            return attr(*args, **kwargs)
        return call


def test_a_crash_anywhere_in_reindex_or_delete_leaves_one_whole_index() -> None:
    old, new = answer(loaded("sqlite"), k=50), answer(loaded("sqlite", NEW), k=50)
    allowed = {"hash-a": [old], "hash-b": [new, [a for a in new if a[1] != "d1"]]}
    crashed, outcomes = 0, set()
    for n in range(1, 20):
        disk = SimDisk(DiskImage.empty("/data"))
        store = resolve("sqlite").open("/data/store", sim_env(disk))
        vs = VectorStore(store, OLD, chunk_words=4, slot_dim=32)
        for d in docs():
            vs.ingest(d)
        store.close()
        try:
            vs = VectorStore(CrashAt(resolve("sqlite").open("/data/store", sim_env(disk)), n),
                             OLD, chunk_words=4)
            vs.reindex(NEW)
            vs.delete("t1", "d1")
        except SimulatedCrash:
            crashed += 1
        disk.crash()                                   # the process dies here
        reopened = resolve("sqlite").open("/data/store", sim_env(disk))
        model = VectorStore(reopened, OLD).active().model
        got = answer(VectorStore(reopened, OLD if model == "hash-a" else NEW), k=50)
        assert got in allowed[model], (n, model)
        outcomes.add((model, len(got)))
        reopened.close()
    assert crashed >= 5       # the crashes really hit reindex's and delete's calls
    assert outcomes == {("hash-a", len(old)), ("hash-b", len(new)),
                        ("hash-b", len(allowed["hash-b"][1]))}


# -- memory store -----------------------------------------------------------------------------


def test_memory_retention_is_never_returned_and_every_deletion_is_audited() -> None:
    clock = VirtualClock()
    ms = MemoryStore(open_store(), clock)
    ms.remember("t1", "m1", "likes tea", retention_s=60)
    ms.remember("t1", "m2", "lives in Oslo")
    ms.remember("t2", "m1", "other tenant", retention_s=10)
    assert [r.memory_id for r in ms.list("t1")] == ["m1", "m2"]
    clock.advance(30)
    assert ms.get("t2", "m1") is None and ms.list("t2") == []     # expired, not yet purged
    assert ms.get("t1", "m1") is not None
    event = ms.forget("t1", "m2", actor="user:42", reason="GDPR request")
    assert event is not None and (event.action, event.actor, event.memory_id) == (
        "delete", "user:42", "m2")
    assert ms.forget("t1", "m2", actor="user:42", reason="again") is None
    clock.advance(60)
    purged = ms.purge_expired()
    assert [(e.tenant_id, e.memory_id, e.action) for e in purged] == [
        ("t1", "m1", "expire"), ("t2", "m1", "expire")]
    assert [(e.event_id, e.memory_id, e.action) for e in ms.audit_events("t1")] == [
        ("000000000001", "m2", "delete"), ("000000000002", "m1", "expire")]
    assert ms.store.scan("adr0003/memory/") == [] and ms.purge_expired() == []
    ms.remember("t2", "m3", "short", retention_s=1)
    clock.advance(5)
    ms.remember("t2", "m3", "replaced after expiry")
    assert [e.reason for e in ms.audit_events("t2")][-1] == "retention expired; replaced"
    with pytest.raises(ValueError, match="tenant_id"):
        ms.remember("a/b", "m", "x")


# -- run store --------------------------------------------------------------------------------


def test_run_state_start_steps_finish_and_listing() -> None:
    clock = VirtualClock()
    rs = RunStore(open_store(), clock)
    rs.start("t1", "r1", {"agent": "a"})
    rs.start("t2", "r2")
    clock.advance(2)
    rs.step("r1", "retrieve", {"k": 5})
    run = rs.finish("r1", "succeeded")
    assert [s.name for s in run.steps] == ["retrieve"] and run.finished_at == clock.time()
    assert rs.get("r1") == run
    assert [r.run_id for r in rs.list(status="running")] == ["r2"]
    assert [r.run_id for r in rs.list(tenant_id="t1")] == ["r1"]
    with pytest.raises(ValueError, match="already finished"):
        rs.step("r1", "late")
    with pytest.raises(UnknownRun, match="never started"):
        rs.finish("nope")
    with pytest.raises(ValueError, match="already used"):
        rs.start("t1", "r1")


def test_a_store_without_vectors_is_refused_with_the_reason() -> None:
    store = open_store("json")
    reason = unsupported_reason(store, "vector")
    assert reason is not None and "vector" in reason
    assert unsupported_reason(open_store(), "vector") is None
    with pytest.raises(LayerUnsupported, match="vector"):
        VectorStore(store, OLD)
