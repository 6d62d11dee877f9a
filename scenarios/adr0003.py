"""ADR-0003's promises, as rows. The texts are the ADR's own words: its Acceptance Criteria
("End-to-end local: ingest -> embed -> upsert -> retrieve with metadata filters.", "Evidence
manifest includes provenance for retrieved chunks.", "Long-term memory tables support tenant_id,
retention fields, and deletion audit events.") and its Consequences ("Embedding model changes
require reindex; store embed_model + embed_dim metadata.", "We must implement migrations ...").

The rows run ADR-0003's own stores (``reference/adr0003``: ``VectorStore``, ``MemoryStore``)
over the backend under certification, so they apply to any store with what those layers need
(kv, vectors, batches and metadata filters; kv and batches for memory), n/a with the reason
otherwise; the migration row applies to ADR-0003's SQLite -> Postgres stage adapters.
"""

from __future__ import annotations

from crashgate.backends import Declaration
from crashgate.scenarios.adr032 import _proc
from crashgate.scenarios.table import Row

__all__ = ["ADR0003_ROWS", "CONSEQUENCES", "TABLE"]

TABLE = "ADR-0003 Acceptance Criteria"
CONSEQUENCES = "ADR-0003 Consequences"
P = "crashgate.scenarios.procedures_adr0003"


def _vector(decl: Declaration) -> str | None:
    from crashgate.scenarios.procedures_adr0003 import needs_vector_layer
    return needs_vector_layer(decl)


def _memory(decl: Declaration) -> str | None:
    from crashgate.scenarios.procedures_adr0003 import needs_memory_layer
    return needs_memory_layer(decl)


def _memory_crash(decl: Declaration) -> str | None:
    from crashgate.scenarios.procedures_adr0003 import durable_enough, needs_memory_layer
    return needs_memory_layer(decl) or durable_enough(decl)


def _stages(decl: Declaration) -> str | None:
    from crashgate.scenarios.procedures_adr0003_stages import needs_adr0003_stages
    return needs_adr0003_stages(decl)


ADR0003_ROWS = [
    Row(TABLE, "adr0003-e2e", "AC1", "A seeded corpus (two tenants, three sources) chunked, "
        "embedded by the deterministic embedder and upserted through ADR-0003's VectorStore, "
        "then retrieved with metadata filters (tenant, equality, $in, ranges, $ne)",
        "End-to-end local: ingest -> embed -> upsert -> retrieve with metadata filters. (Each "
        "retrieval returns min(k, matching) chunks matching its filter at their exact "
        "distances: the true nearest, or the declared recall@k.)",
        _vector, _proc(P + ":end_to_end")),
    Row(TABLE, "adr0003-provenance", "AC2", "Every retrieved chunk's evidence-manifest entry "
        "(Retrieved.evidence()), attached to the certificate",
        "Evidence manifest includes provenance for retrieved chunks. (Each entry names the "
        "tenant, source, document and chunk index, and they are true: the text is that chunk "
        "of that document.)",
        _vector, _proc(P + ":provenance")),
    Row(TABLE, "adr0003-memory", "AC3", "Two tenants' long-term memories through ADR-0003's "
        "MemoryStore: remembered with and without retention, forgotten, purged, the clock "
        "moved; every answer and view against a model",
        "Long-term memory tables support tenant_id, retention fields, and deletion audit "
        "events. (Tenants kept apart, an expired memory never returned, each deletion audited "
        "with who, what, why and when.)",
        _memory, _proc(P + ":memory_tables")),
    Row(TABLE, "adr0003-retention", "AC3-R", "The memory workload crashed inside every op: "
        "crash states at each disk operation (a disk store), or SIGKILL of the server or of "
        "the session before each write (a server-backed store), then reopened and purged",
        "Long-term memory tables support tenant_id, retention fields, and deletion audit "
        "events. (Expired memories never returned, each deletion audited, and the audit "
        "trail survives crashes: every acknowledged deletion's event is there, the op in "
        "flight all there or not at all.)",
        _memory_crash, _proc(P + "_crash:retention_crash")),
    Row(CONSEQUENCES, "adr0003-reindex", "C2", "A store indexed by one embedding model queried "
        "with another dimension or model, then reindexed to a new model with a crash "
        "anywhere in the reindex",
        "Embedding model changes require reindex; store embed_model + embed_dim metadata. "
        "(The wrong model or dimension is refused naming both; a crash anywhere in the "
        "reindex leaves the old index or the new one, never a mix.)",
        _vector, _proc(P + "_reindex:reindex")),
    Row(CONSEQUENCES, "adr0003-migration", "C1", "SQLite -> Postgres stage adapter: promoted "
        "from its first stage to its last and rolled back, with a client crash at each "
        "failpoint of each move; stage 1's shadow reads compared and counted",
        "We must implement migrations, backup/restore assumptions, and a reindex workflow. "
        "(Every move reopens in one of its two stages with every acknowledged record; no "
        "shadow read disagrees with the source of truth.)",
        _stages, _proc(P + "_stages:migration")),
]
