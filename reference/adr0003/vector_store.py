"""ADR-0003's ``VectorStore``: ingest -> chunk -> embed -> upsert, and retrieve with metadata
filters and provenance, over any crashgate store with kv, vectors, batch and metadata filters.

Layout in the underlying store:

- kv ``adr0003/vector/active``: the active-model pointer, JSON ``{model, dim, generation,
  slot_dim}``;
- one vector record per chunk, id ``chunk_id(generation, tenant, doc, chunk)`` (a hash of the
  chunk above the generation's parity), metadata ``tenant_id, source, doc_id, chunk, chunks,
  text, embed_model, embed_dim`` + the document's own keys + ``_gen`` (the generation it
  belongs to; -1: deleted). A reindex to g+1 first removes every record not of g, so the ids
  it writes (parity of g+1) are free.

Every vector is zero-padded to ``slot_dim`` (fixed when the store is first used): a store holds
one dimension, and padding with zeros changes neither l2 nor cosine distances, so one store can
hold the old and the new model's index side by side during a reindex.

A query filters on ``_gen == active generation``: records of any other generation (a reindex
under way or crashed, deleted chunks not yet removed) are never visible. See the package
docstring for why every operation is atomic.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from crashgate.backends import Hit, VectorRecord
from crashgate.backends.search import check_where
from crashgate.reference.adr0003.embedder import DeterministicEmbedder
from crashgate.reference.adr0003.records import (
    PREFIX,
    Document,
    DocumentExists,
    EmbeddingMismatch,
    IndexInfo,
    Provenance,
    ReindexReport,
    Retrieved,
    check_id,
    dumps,
    require,
)

__all__ = ["ACTIVE_KEY", "GEN", "RESERVED", "VectorStore", "chunk_id", "chunk_text"]

ACTIVE_KEY = PREFIX + "vector/active"
GEN = "_gen"
RETIRED = -1
RESERVED = ("tenant_id", "source", "doc_id", "chunk", "chunks", "text", "embed_model",
            "embed_dim")
_RETRIES = 16


def chunk_id(generation: int, tenant_id: str, doc_id: str, chunk: int) -> int:
    """The record id of a chunk in one generation: 63 bits (fits every store's signed ints),
    the chunk's hash above the generation's parity. Two adjacent generations (the old and the
    new index of a reindex) never share an id, and ties at equal distance, broken by id, fall
    the same way in every generation: a reindexed store answers as one built by the new model."""
    raw = hashlib.blake2b(f"{tenant_id}\x1f{doc_id}\x1f{chunk}".encode(),
                          digest_size=8).digest()
    return (int.from_bytes(raw, "big") >> 2) << 1 | (generation & 1)


def chunk_text(text: str, chunk_words: int) -> list[str]:
    """``text`` split at whitespace into chunks of ``chunk_words`` words, each re-joined by one
    space."""
    tokens = text.split()
    return [" ".join(tokens[i:i + chunk_words]) for i in range(0, len(tokens), chunk_words)]


class VectorStore:
    """Chunks of documents, embedded by one model at a time, in ``store``.

    Writes (ingest, delete, reindex) come from one writer at a time (a lock serialises them in
    this process); queries may run at any time, also during a reindex."""

    def __init__(self, store: Any, embedder: DeterministicEmbedder, *, chunk_words: int = 32,
                 slot_dim: int | None = None) -> None:
        require(store, "vector")
        if isinstance(chunk_words, bool) or not isinstance(chunk_words, int) or chunk_words < 1:
            raise ValueError(f"chunk_words={chunk_words!r}: give an int >= 1, e.g. 32")
        self.store = store
        self.embedder = embedder
        self.chunk_words = chunk_words
        self._embedders = {(embedder.model, embedder.dim): embedder}
        self._lock = threading.RLock()
        found = self._read_pointer()
        if found is None:
            slot = embedder.dim if slot_dim is None else slot_dim
            if isinstance(slot, bool) or not isinstance(slot, int) or slot < embedder.dim:
                raise ValueError(f"slot_dim={slot_dim!r}: give an int >= the embedder's dim "
                                 f"({embedder.dim}); it bounds the dimension of every later "
                                 "model")
            self._slot = slot
            self._write_pointer(IndexInfo(embedder.model, embedder.dim, 0))
        else:
            self._slot = found[1]
            if slot_dim is not None and slot_dim != self._slot:
                raise ValueError(f"slot_dim={slot_dim!r}: this store was created with slot_dim "
                                 f"{self._slot}, which cannot change; pass slot_dim=None")

    # -- the active-model pointer ---------------------------------------------------------

    def _read_pointer(self) -> tuple[IndexInfo, int] | None:
        raw = self.store.get(ACTIVE_KEY)
        if raw is None:
            return None
        doc = json.loads(raw)
        return IndexInfo(str(doc["model"]), int(doc["dim"]), int(doc["generation"])), int(
            doc["slot_dim"])

    def _write_pointer(self, info: IndexInfo) -> None:
        self.store.put(ACTIVE_KEY, dumps({"model": info.model, "dim": info.dim,
                                          "generation": info.generation,
                                          "slot_dim": self._slot}))

    def active(self) -> IndexInfo:
        """The index queries read now."""
        found = self._read_pointer()
        if found is None:
            raise RuntimeError(f"{ACTIVE_KEY} vanished from the store: something else deleted "
                               "ADR-0003's keys; reopen the VectorStore to recreate it")
        return found[0]

    @property
    def slot_dim(self) -> int:
        return self._slot

    def _embedder_for(self, info: IndexInfo) -> DeterministicEmbedder:
        known = self._embedders.get((info.model, info.dim))
        if known is None:
            raise EmbeddingMismatch(
                f"the store's index was built by embedding model {info.model!r} (dim "
                f"{info.dim}); this VectorStore embeds with {self.embedder.model!r} (dim "
                f"{self.embedder.dim}). Fix: open it with DeterministicEmbedder("
                f"{info.model!r}, {info.dim}), or reindex(DeterministicEmbedder("
                f"{self.embedder.model!r}, {self.embedder.dim})) first")
        return known

    def _pad(self, vector: Sequence[float]) -> list[float]:
        return [*map(float, vector), *([0.0] * (self._slot - len(vector)))]

    # -- writes ---------------------------------------------------------------------------

    def ingest(self, doc: Document) -> list[int]:
        """Chunk, embed and upsert ``doc`` in one atomic upsert; returns the chunk ids in
        chunk order. A document whose (tenant, doc id) is live is refused (``DocumentExists``):
        delete it first."""
        check_id("tenant_id", doc.tenant_id)
        check_id("doc_id", doc.doc_id)
        if not isinstance(doc.source, str) or not doc.source:
            raise ValueError(f"Document.source={doc.source!r}: give where it came from (a path "
                             "or URL), it is the chunks' provenance")
        clash = [k for k in doc.metadata if k in RESERVED or str(k).startswith("_")]
        if clash:
            raise ValueError(f"Document.metadata keys {clash} are reserved (provenance and "
                             f"model fields {RESERVED}, and keys starting with '_'); rename them")
        chunks = chunk_text(doc.text, self.chunk_words)
        if not chunks:
            raise ValueError(f"Document {doc.doc_id!r} has no words to embed; give it text")
        with self._lock:
            info = self.active()
            embedder = self._embedder_for(info)
            ids = [chunk_id(info.generation, doc.tenant_id, doc.doc_id, i)
                   for i in range(len(chunks))]
            first = self.store.fetch(ids[:1])
            if first and first[0].metadata.get(GEN) == info.generation:
                raise DocumentExists(f"document {doc.doc_id!r} of tenant {doc.tenant_id!r} is "
                                     "already ingested; delete(tenant_id, doc_id) it first")
            records = [VectorRecord.of(cid, self._pad(embedder.embed(text)), {
                **dict(doc.metadata), "tenant_id": doc.tenant_id, "source": doc.source,
                "doc_id": doc.doc_id, "chunk": i, "chunks": len(chunks), "text": text,
                "embed_model": info.model, "embed_dim": info.dim, GEN: info.generation,
            }) for i, (cid, text) in enumerate(zip(ids, chunks, strict=True))]
            self.store.upsert(records)
            return ids

    def delete(self, tenant_id: str, doc_id: str) -> int:
        """Delete every chunk of a document; returns how many (0: it was not live). The chunks
        leave the index together: one upsert retires them all (``_gen`` -1), then they are
        removed."""
        check_id("tenant_id", tenant_id)
        check_id("doc_id", doc_id)
        with self._lock:
            gen = self.active().generation
            first = self.store.fetch([chunk_id(gen, tenant_id, doc_id, 0)])
            if not first or first[0].metadata.get(GEN) != gen:
                return 0
            ids = [chunk_id(gen, tenant_id, doc_id, i)
                   for i in range(int(first[0].metadata["chunks"]))]
            records = self.store.fetch(ids)
            self.store.upsert([VectorRecord(r.id, r.vector, {**r.metadata, GEN: RETIRED})
                               for r in records])
            self.store.remove(ids)
            return len(records)

    def reindex(self, embedder: DeterministicEmbedder) -> ReindexReport:
        """Move the store to ``embedder``'s model: embed every live chunk into a new generation
        beside the old one, switch the pointer (one kv put: queries see all-old, then all-new),
        then remove the old generation."""
        with self._lock:
            old = self.active()
            if (embedder.model, embedder.dim) == (old.model, old.dim):
                raise ValueError(f"reindex({embedder!r}): the store is already indexed by this "
                                 "model and dimension; give another model")
            if embedder.dim > self._slot:
                raise EmbeddingMismatch(
                    f"reindex({embedder!r}): dim {embedder.dim} exceeds this store's slot_dim "
                    f"{self._slot} (model {old.model!r}, dim {old.dim}); create the store with "
                    f"VectorStore(..., slot_dim={embedder.dim}) or more")
            self._collect(old.generation)       # what a crashed reindex or delete left
            live = self._select({GEN: old.generation})
            new = IndexInfo(embedder.model, embedder.dim, old.generation + 1)
            records = [VectorRecord.of(
                chunk_id(new.generation, h.metadata["tenant_id"], h.metadata["doc_id"],
                         int(h.metadata["chunk"])),
                self._pad(embedder.embed(h.metadata["text"])),
                {**h.metadata, "embed_model": new.model, "embed_dim": new.dim,
                 GEN: new.generation}) for h in live]
            if records:
                self.store.upsert(records)
            self._embedders[(embedder.model, embedder.dim)] = embedder
            self._write_pointer(new)            # the switch
            self.embedder = embedder
            self._collect(new.generation)
            return ReindexReport(old, new, len(records))

    def _select(self, where: Mapping[str, Any]) -> list[Hit]:
        """Every record matching ``where``, through the store's filtered query (which
        returns ``min(k, matching)`` hits, exact store or not)."""
        n = self.store.count()
        return self.store.query([0.0] * self._slot, n, dict(where)) if n else []

    def _collect(self, generation: int) -> int:
        """Remove every record not of ``generation``; returns how many."""
        ids = [h.id for h in self._select({GEN: {"$ne": generation}})]
        return self.store.remove(ids) if ids else 0

    # -- reads ----------------------------------------------------------------------------

    def count(self) -> int:
        """Live chunks in the active index."""
        return len(self._select({GEN: self.active().generation}))

    def retrieve(self, query: str | Sequence[float], k: int,
                 where: Mapping[str, Any] | None = None, *,
                 embed_model: str | None = None) -> list[Retrieved]:
        """The ``k`` nearest live chunks matching ``where`` (a ``backends.search`` filter over
        ``tenant_id``, ``source``, ``doc_id``, ``chunk`` and the documents' own keys), ordered
        by (distance, id). ``query`` is a text (embedded by the active model) or a vector of
        the active model's dimension (``embed_model``, if given, must be the active model)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"k={k!r}: give an int >= 0")
        check_where(where)
        if where and any(str(key).startswith("_") for key in where):
            raise ValueError(f"where={dict(where)!r}: keys starting with '_' are internal; "
                             "filter on tenant_id, source, doc_id, chunk or your metadata")
        for _ in range(_RETRIES):
            info = self.active()
            vector = self._query_vector(query, info, embed_model)
            hits = self.store.query(self._pad(vector), k, {**(where or {}),
                                                           GEN: info.generation})
            # a reindex that switched meanwhile may have removed part of what we read:
            # answer only from a generation that was active before and after the query
            if self.active() == info:
                return [_retrieved(h) for h in hits]
        raise RuntimeError(f"the index switched generation {_RETRIES} times during one query; "
                           "retry when the reindexing settles")

    def _query_vector(self, query: str | Sequence[float], info: IndexInfo,
                      embed_model: str | None) -> Sequence[float]:
        if isinstance(query, str):
            if embed_model is not None and embed_model != info.model:
                raise EmbeddingMismatch(f"embed_model={embed_model!r}, but the store's index "
                                        f"is built by {info.model!r} (dim {info.dim})")
            return self._embedder_for(info).embed(query)
        if embed_model is not None and embed_model != info.model:
            raise EmbeddingMismatch(
                f"a query vector of embedding model {embed_model!r} against an index built by "
                f"{info.model!r} (dim {info.dim}); embed the query with {info.model!r} or "
                "reindex the store")
        if len(query) != info.dim:
            raise EmbeddingMismatch(
                f"a query vector of dimension {len(query)} against an index of dimension "
                f"{info.dim} (model {info.model!r}); embed the query with {info.model!r}")
        return query


def _retrieved(hit: Hit) -> Retrieved:
    m = hit.metadata
    return Retrieved(
        id=hit.id, distance=hit.distance, text=str(m["text"]), tenant_id=str(m["tenant_id"]),
        provenance=Provenance(str(m["source"]), str(m["doc_id"]), int(m["chunk"])),
        embed_model=str(m["embed_model"]), embed_dim=int(m["embed_dim"]),
        metadata={k: v for k, v in m.items() if k not in RESERVED and not k.startswith("_")})
