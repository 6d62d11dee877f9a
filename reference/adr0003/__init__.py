"""ADR-0003's stores — ``VectorStore``, ``MemoryStore``, ``RunStore`` — as layers over any
crashgate contract store, plus the deterministic embedder for CI.

ADR-0003 asks for each store "in memory" (deterministic CI) and "Postgres + pgvector". Here each
is one layer over a crashgate store: over the ``memory`` backend it is the in-memory store, over
``pgvector`` the Postgres one, over ``sqlite`` or any other backend with the capabilities it
needs (``unsupported_reason(store, layer)`` says which are missing). One code path, so the two
implementations can only differ where their backends do, and the certificate's rows about the
backend carry over.

API (the layers never open a backend: pass an open store, and ``env.clock`` for time)::

    emb = DeterministicEmbedder("hash-v1", 64)           # .embed(text) -> tuple of 64 floats
    vs = VectorStore(store, emb, chunk_words=32, slot_dim=None)
    ids = vs.ingest(Document(tenant_id, doc_id, source, text, metadata))   # DocumentExists
    hits = vs.retrieve("query text" | vector, k, where={"tenant_id": "t1", ...},
                       embed_model=None)                  # -> [Retrieved]; EmbeddingMismatch
    hits[0].provenance  # Provenance(source, doc_id, chunk); .evidence() -> JSON-able dict
    vs.delete(tenant_id, doc_id) -> int; vs.count(); vs.active() -> IndexInfo(model, dim, gen)
    vs.reindex(DeterministicEmbedder("hash-v2", 32)) -> ReindexReport(old, new, chunks)

    ms = MemoryStore(store, env.clock)
    ms.remember(tenant_id, memory_id, content, retention_s=None, metadata=None) -> MemoryRecord
    ms.get(tenant_id, memory_id); ms.list(tenant_id)      # never an expired record
    ms.forget(tenant_id, memory_id, actor=..., reason=...) -> AuditEvent | None
    ms.purge_expired(actor="retention") -> [AuditEvent]; ms.audit_events(tenant_id)

    rs = RunStore(store, env.clock)
    rs.start(tenant_id, run_id, metadata) / rs.step(run_id, name, detail) /
    rs.finish(run_id, "succeeded" | "failed" | "cancelled", error) -> Run
    rs.get(run_id) -> Run | None; rs.list(tenant_id=None, status=None)

Why every operation is atomic, from the contract alone (a store declaring ``batch`` applies an
``upsert`` and a ``write_batch`` all-or-nothing, a ``put`` is one write, and after a crash a
store holds its acknowledged calls plus a prefix of the indeterminate ones, in order: the
crash checkers hold every backend to exactly this):

- ingest is one ``upsert`` of all a document's chunks: all of them, or none.
- delete is one ``upsert`` that retires every chunk (``_gen`` -1), then a ``remove``; queries
  see only the active generation, so the document leaves at the upsert, whole. A crash before
  the remove leaves retired records, invisible and removed by the next reindex.
- reindex writes the new model's chunks as generation g+1 (invisible: queries filter on the
  active generation g), then switches the kv pointer ``adr0003/vector/active`` with one ``put``,
  then removes generation g. A crash before the put leaves g active and whole (g+1 is garbage,
  removed by the next reindex); after it, g+1 active and whole (the put comes after the
  upsert, and a store keeps a prefix of its calls). A query reads the pointer before and after
  it searches and answers only if it did not change, so even a query concurrent with the switch
  sees all-old or all-new, never a mix.
- a memory's deletion (forget, purge, replacing an expired one) is one ``write_batch``: the
  record's delete, its audit event and the tenant's event counter together.
- a run's every change is one ``put`` of the whole run.

Writes come from one writer at a time (each layer holds a lock for this process); queries may
run at any time.
"""

from __future__ import annotations

from crashgate.reference.adr0003.embedder import DeterministicEmbedder
from crashgate.reference.adr0003.memory_store import MemoryStore
from crashgate.reference.adr0003.records import (
    AuditEvent,
    Document,
    DocumentExists,
    EmbeddingMismatch,
    IndexInfo,
    LayerUnsupported,
    MemoryRecord,
    Provenance,
    ReindexReport,
    Retrieved,
    Run,
    RunStep,
    UnknownRun,
    unsupported_reason,
)
from crashgate.reference.adr0003.run_store import RunStore
from crashgate.reference.adr0003.vector_store import VectorStore

__all__ = [
    "AuditEvent",
    "DeterministicEmbedder",
    "Document",
    "DocumentExists",
    "EmbeddingMismatch",
    "IndexInfo",
    "LayerUnsupported",
    "MemoryRecord",
    "MemoryStore",
    "Provenance",
    "ReindexReport",
    "Retrieved",
    "Run",
    "RunStep",
    "RunStore",
    "UnknownRun",
    "VectorStore",
    "unsupported_reason",
]
