"""The values and errors of ADR-0003's stores, and the checks they share.

Every value is a small frozen dataclass; every error names the argument, its value and the fix.
Ids (tenant, document, memory, run) are kept in kv keys, so they are restricted to a safe
alphabet (``check_id``) rather than escaped: a key is then readable in a store's dump as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crashgate.backends import Capability, CrashgateError

__all__ = [
    "AuditEvent",
    "Document",
    "DocumentExists",
    "EmbeddingMismatch",
    "IndexInfo",
    "LayerUnsupported",
    "MemoryRecord",
    "Provenance",
    "ReindexReport",
    "Retrieved",
    "Run",
    "RunStep",
    "UnknownRun",
    "check_id",
    "dumps",
    "require",
    "unsupported_reason",
]

PREFIX = "adr0003/"
"""Every kv key the layers write starts with this, apart from the store's other data."""

_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")

NEEDS = {
    "vector": (Capability.KV, Capability.VECTOR, Capability.BATCH, Capability.METADATA_FILTER),
    "memory": (Capability.KV, Capability.BATCH),
    "run": (Capability.KV,),       # every change is one put of the whole run
}


class EmbeddingMismatch(ValueError):
    """A query or write by one embedding model (or dimension) against an index of another."""


class DocumentExists(ValueError):
    """``ingest`` of a (tenant, doc id) that is already live."""


class UnknownRun(KeyError):
    """A step or finish for a run id that was never started."""


class LayerUnsupported(CrashgateError):
    """The store lacks a capability a layer needs (the row is n/a with this reason)."""


def unsupported_reason(store: Any, layer: str = "vector") -> str | None:
    """None if ``store`` can hold the layer ``vector``, ``memory`` or ``run``; otherwise the
    reason it cannot (the capabilities it does not declare)."""
    if layer not in NEEDS:
        raise ValueError(f"layer={layer!r} is not one of {sorted(NEEDS)}")
    declaration = getattr(store, "declaration", None)
    if declaration is None:
        return f"{type(store).__name__} has no declaration: it is not a crashgate store"
    missing = [c.value for c in NEEDS[layer] if not declaration.has(c)]
    if missing:
        return (f"ADR-0003's {layer} store needs a store with "
                f"{', '.join(c.value for c in NEEDS[layer])}; this one does not declare "
                f"{', '.join(missing)}")
    return None


def require(store: Any, layer: str) -> None:
    reason = unsupported_reason(store, layer)
    if reason is not None:
        raise LayerUnsupported(reason + "; pick a backend that declares them (memory, sqlite, "
                               "pgvector)")


def check_id(name: str, value: object) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError(f"{name}={value!r}: give 1-128 characters of A-Z a-z 0-9 _ . : @ - "
                         f"(it is part of a storage key), e.g. {name}='t1'")
    return value


def dumps(value: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces): the same value, the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


# -- vector store values -------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """One document to ingest: its text is split into chunks of words."""

    tenant_id: str
    doc_id: str
    source: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Provenance:
    """Where a chunk came from: the document's source (a path, a URL), its id and the chunk's
    index in it (0-based)."""

    source: str
    doc_id: str
    chunk: int


@dataclass(frozen=True)
class IndexInfo:
    """The active index: the embedding model and dimension it was built by, and its generation
    (bumped by every reindex)."""

    model: str
    dim: int
    generation: int


@dataclass(frozen=True)
class Retrieved:
    """One retrieved chunk, ordered by (distance, id) like the store's hits."""

    id: int
    distance: float
    text: str
    tenant_id: str
    provenance: Provenance
    embed_model: str
    embed_dim: int
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def evidence(self) -> dict[str, Any]:
        """The chunk as one JSON-able entry of an evidence manifest."""
        return {"id": self.id, "distance": self.distance, "tenant_id": self.tenant_id,
                "source": self.provenance.source, "doc_id": self.provenance.doc_id,
                "chunk": self.provenance.chunk, "embed_model": self.embed_model,
                "embed_dim": self.embed_dim, "text": self.text,
                "metadata": dict(self.metadata)}


@dataclass(frozen=True)
class ReindexReport:
    old: IndexInfo
    new: IndexInfo
    chunks: int
    """How many chunks the new index holds (the live chunks of the old one)."""


# -- memory store values -------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryRecord:
    """A long-term memory; ``expires_at`` None keeps it until it is forgotten. Times are the
    store's clock (``env.clock.time()``), seconds since the epoch."""

    tenant_id: str
    memory_id: str
    content: str
    created_at: float
    expires_at: float | None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True)
class AuditEvent:
    """One deletion of one memory: ``action`` is ``delete`` (forgotten on request) or ``expire``
    (removed by retention); ``event_id`` orders a tenant's events."""

    tenant_id: str
    event_id: str
    memory_id: str
    action: str
    actor: str
    reason: str
    at: float


# -- run store values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStep:
    name: str
    at: float
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """A run: ``status`` is ``running`` until ``finish`` makes it ``succeeded``, ``failed`` or
    ``cancelled``; ``steps`` in the order they were recorded."""

    run_id: str
    tenant_id: str
    status: str
    started_at: float
    finished_at: float | None
    steps: tuple[RunStep, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
