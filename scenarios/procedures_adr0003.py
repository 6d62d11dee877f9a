"""ADR-0003's acceptance criteria as procedures: ADR-0003's own stores (``VectorStore``,
``MemoryStore``: ``reference/adr0003``) run over the backend under certification, and every
answer is judged.

- ``end_to_end``: "ingest -> embed -> upsert -> retrieve with metadata filters". A seeded corpus
  (two tenants, three sources, numeric and text metadata) is ingested; seeded queries, each
  with a filter (tenant, equality, ``$in``, a range) or none, are judged against the same
  layer over crashgate's ``memory`` store, whose exact search the vector oracle certifies:
  ``min(k, matching)`` hits, each a matching chunk at its exact distance (1e-6), the true
  nearest for an exact store (ties interchangeable), recall@k for an approximate one.
- ``provenance``: "Evidence manifest includes provenance for retrieved chunks": each hit's
  manifest entry (``Retrieved.evidence()``) names the tenant, source, document and chunk index,
  and they are true: the text is that chunk of that document. The manifest is attached.
- ``memory_tables``: "Long-term memory tables support tenant_id, retention fields, and deletion
  audit events": a seeded workload of remembers, forgets, purges and clock moves, judged
  against a plain model after every step.

The layers are resolved by name (``backends.registry.import_target``), as a backend name is:
they are the code ADR-0003 asks for, run over the store; the harness never imports them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crashgate.backends import BackendMissing, Capability, Declaration, Durability, resolve
from crashgate.backends.registry import import_target
from crashgate.harness.powerloss import DATA_DIR
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.vector_oracle import TOLERANCE, RecallTally
from crashgate.harness.verdict import Evidence, Verdict, first_line
from crashgate.scenarios.table import RowContext

__all__ = ["CORPUS_MODEL", "Corpus", "adr0003", "corpus", "end_to_end", "judge_retrieval",
           "layer_reason", "memory_tables", "needs_memory_layer", "needs_vector_layer",
           "open_on_disk", "provenance"]

PATH = f"{DATA_DIR}/store"
CORPUS_MODEL = ("det-minilm", 16)
"""The deterministic embedder the rows ingest with: (model, dimension)."""
_WORDS = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ri", "su", "ta") for b in
          ("bel", "cor", "dun", "fex", "gar", "hol", "jin", "kep", "lum", "mor")]
_NEEDS = {"vector": (Capability.KV, Capability.VECTOR, Capability.BATCH,
                     Capability.METADATA_FILTER),
          "memory": (Capability.KV, Capability.BATCH)}


def adr0003(name: str) -> Any:
    """ADR-0003's layer ``name`` (``VectorStore``, ``MemoryStore``, ``Document`` ..., or
    ``module:name`` inside the package), imported when a row runs."""
    def missing(exc: ImportError) -> Exception:
        return BackendMissing("adr0003", "pip install crashgate", f"{exc}")

    def unknown(_module: Any) -> Exception:
        return BackendMissing("adr0003", "pip install crashgate",
                              f"crashgate.reference.adr0003 has no {name}")
    module, _, attr = name.rpartition(":")
    return import_target(f"crashgate.reference.adr0003{'.' + module if module else ''}:{attr}",
                         missing=missing, unknown=unknown)


def layer_reason(decl: Declaration, layer: str) -> str | None:
    """Why ADR-0003's ``layer`` store cannot run over a store declaring ``decl`` (None: it
    can)."""
    missing = [c.value for c in _NEEDS[layer] if not decl.has(c)]
    if not missing:
        return None
    return (f"ADR-0003's {layer} store needs a store with "
            f"{', '.join(c.value for c in _NEEDS[layer])} (declares no {', '.join(missing)})")


def needs_vector_layer(decl: Declaration) -> str | None:
    return layer_reason(decl, "vector")


def needs_memory_layer(decl: Declaration) -> str | None:
    return layer_reason(decl, "memory")


def open_on_disk(ctx_spec: Any) -> tuple[Any, Any, SimDisk]:
    """A fresh store of the backend at ``PATH`` on a fresh simulated disk: (store, env, disk)."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    env = sim_env(disk)
    return ctx_spec.open(PATH, env), env, disk


@dataclass(frozen=True)
class Corpus:
    """Seeded documents and queries: ``queries`` as (text, k, where or None)."""

    documents: tuple[Any, ...]
    queries: tuple[tuple[str, int, Mapping[str, Any] | None], ...]


def corpus(seed: int, docs: int = 24, queries: int = 24) -> Corpus:
    """``docs`` documents of 20-90 words (two tenants, three sources, ``lang`` and ``year``
    metadata; each chunk carries a word of its own, so no two chunks embed alike) and
    ``queries`` queries: k 1, 5 or more than the chunks, every filter kind in turn."""
    rng = random.Random(seed)
    document = adr0003("Document")
    made = []
    for n in range(docs):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(20, 90))]
        for at in range(0, len(words), 8):   # a word of its own per 8: chunks never coincide
            words[at] = f"u{seed}x{n}x{at}"
        made.append(document(tenant_id=("acme", "globex")[n % 2], doc_id=f"doc-{n}",
                             source=f"{('wiki', 'tickets', 'docs')[n % 3]}/{n}.md",
                             text=" ".join(words),
                             metadata={"lang": rng.choice(("en", "de")),
                                       "year": rng.randint(2015, 2025)}))
    filters: list[Mapping[str, Any] | None] = [
        None, {"tenant_id": "acme"}, {"tenant_id": "globex", "lang": "de"},
        {"source": {"$in": ["wiki/0.md", "docs/2.md", "tickets/7.md"]}},
        {"year": {"$gte": 2018, "$lt": 2022}}, {"tenant_id": "acme", "year": {"$lte": 2019}},
        {"lang": {"$ne": "en"}}, {"doc_id": "doc-3"}]
    asked = tuple((" ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 6))),
                   (1, 5, 1000)[i % 3], filters[i % len(filters)]) for i in range(queries))
    return Corpus(tuple(made), asked)


def _key(hit: Any) -> tuple[str, str, int]:
    return hit.tenant_id, hit.provenance.doc_id, hit.provenance.chunk


def judge_retrieval(got: Sequence[Any], truth: Sequence[Any], k: int, approximate: bool
                    ) -> tuple[str | None, int, int]:
    """``got`` (``Retrieved`` hits) against ``truth``, every matching chunk ordered by exact
    distance: ``(problem or None, found, possible)`` as ``vector_oracle.check_hits`` counts.
    A chunk is known by (tenant, document, chunk); its text, source, model and dimension must
    be the truth's."""
    want = {_key(t): t for t in truth}
    possible = min(k, len(truth))
    if len(got) != possible:
        return f"{len(got)} hits, but {possible} chunks match (k={k})", 0, possible
    seen: set[tuple[str, str, int]] = set()
    last = float("-inf")
    for rank, hit in enumerate(got):
        key, t = _key(hit), want.get(_key(hit))
        if t is None:
            return f"hit {rank} {key} is no live chunk matching the filter", 0, possible
        if key in seen:
            return f"hit {rank} {key} comes twice", 0, possible
        seen.add(key)
        if abs(hit.distance - t.distance) > TOLERANCE * max(1.0, abs(t.distance)):
            return f"hit {rank} {key} at {hit.distance}, its exact distance is {t.distance}", \
                0, possible
        if (hit.text, hit.provenance, hit.embed_model, hit.embed_dim) != (
                t.text, t.provenance, t.embed_model, t.embed_dim):
            return f"hit {rank} {key} carries {hit!r:.160}, ingested as {t!r:.160}", 0, possible
        if hit.distance < last - TOLERANCE:
            return f"hit {rank} {key} at {hit.distance} comes after one at {last}", 0, possible
        last = hit.distance
    if not possible:
        return None, 0, 0
    kth = truth[possible - 1].distance
    found = sum(1 for h in got if h.distance <= kth + TOLERANCE * max(1.0, abs(kth)))
    if not approximate and found != possible:
        return (f"{possible - found} of the {possible} hits are not among the true nearest "
                f"(k-th distance {kth})"), found, possible
    return None, found, possible


def _ingest(spec: Any, seed: int) -> tuple[Any, Any, Any, Corpus, Any]:
    """The corpus ingested over the backend and over ``memory`` (the truth): (store, its
    VectorStore, the truth's VectorStore, the corpus, the truth's store)."""
    vector_store, embedder = adr0003("VectorStore"), adr0003("DeterministicEmbedder")
    data = corpus(seed)
    store, _env, _disk = open_on_disk(spec)
    truth_store = resolve("memory").open(PATH, sim_env(SimDisk(DiskImage.empty(DATA_DIR))))
    try:
        layer = vector_store(store, embedder(*CORPUS_MODEL))
        truth = vector_store(truth_store, embedder(*CORPUS_MODEL))
        for doc in data.documents:
            layer.ingest(doc)
            truth.ingest(doc)
    except BaseException:
        store.close()
        truth_store.close()
        raise
    return store, layer, truth, data, truth_store


def check_end_to_end(spec: Any, *, seed: int, manifest: bool = False) -> Evidence:
    """Ingest the corpus, then every query judged (module docstring); ``manifest``: also check
    and attach each hit's evidence-manifest entry (the provenance row)."""
    store, layer, truth, data, truth_store = _ingest(spec, seed)
    problems: list[str] = []
    tally = RecallTally()
    entries: list[dict[str, Any]] = []
    recall = store.declaration.recall
    texts = {(d.tenant_id, d.doc_id): d for d in data.documents}
    chunks = 0
    try:
        chunks = truth.count()
        for text, k, where in data.queries:
            try:
                got = layer.retrieve(text, k, where)
            except Exception as exc:  # noqa: BLE001 - a failed retrieval is the finding
                problems.append(f"retrieve({text!r}, k={k}, where={where}) raised "
                                f"{first_line(exc)}")
                continue
            everything = truth.retrieve(text, 100_000, where)
            problem, found, possible = judge_retrieval(got, everything, k, recall is not None)
            if problem:
                problems.append(f"retrieve({text!r}, k={k}, where={where}): {problem}")
            elif possible:
                tally.add(found, possible)
            if manifest:
                entries += _manifest(text, where, got, texts, layer.chunk_words, problems)
    finally:
        store.close()
        truth_store.close()
    measured = {"documents": len(data.documents), "chunks": chunks,
                "queries": len(data.queries), "seed": seed}
    attachments = {"evidence-manifest.json": json.dumps(entries, indent=1)} if manifest else {}
    if problems:
        return Evidence(Verdict.FAIL, problems[0], measured, tuple(problems[1:6]),
                        attachments=attachments, conclusive=True)
    if recall is not None:
        verdict, why = tally.verdict(recall)
        return Evidence(verdict, f"every retrieval filtered right, exact distances; {why}",
                        measured, attachments=attachments)
    if not tally.queries:
        return Evidence(Verdict.UNKNOWN, "no query had a matching chunk", measured)
    what = "each hit's manifest entry names its true source, document and chunk" if manifest \
        else "each the true nearest matching chunks at their exact distances"
    return Evidence(Verdict.PASS, f"{len(data.documents)} documents ingested, "
                    f"{len(data.queries)} filtered retrievals answered right: {what}",
                    measured, attachments=attachments)


def _manifest(text: str, where: Any, got: Sequence[Any], docs: Mapping[tuple[str, str], Any],
              chunk_words: int, problems: list[str]) -> list[dict[str, Any]]:
    """Each hit's evidence entry, checked: JSON-able, naming tenant, source, document and chunk
    as the hit does, and true (the text is that chunk of that document)."""
    chunk_text = adr0003("vector_store:chunk_text")
    out = []
    for hit in got:
        entry = hit.evidence()
        try:
            json.dumps(entry)
        except (TypeError, ValueError) as exc:
            problems.append(f"the manifest entry of {_key(hit)} is not JSON: {exc}")
            continue
        named = tuple(entry.get(k) for k in ("tenant_id", "source", "doc_id", "chunk"))
        doc = docs.get((str(entry.get("tenant_id")), str(entry.get("doc_id"))))
        chunks = chunk_text(doc.text, chunk_words) if doc is not None else []
        if named != (hit.tenant_id, hit.provenance.source, hit.provenance.doc_id,
                     hit.provenance.chunk) or doc is None:
            problems.append(f"the manifest entry {entry!r:.160} does not name the chunk's "
                            "tenant, source, document and chunk index")
        elif entry["source"] != doc.source or not 0 <= int(entry["chunk"]) < len(chunks) \
                or chunks[int(entry["chunk"])] != entry.get("text"):
            problems.append(f"the manifest entry {entry!r:.160} names a source or chunk its "
                            "text did not come from")
        out.append({"query": text, "where": where, **entry})
    return out


def end_to_end(ctx: RowContext) -> Evidence:
    return _with_repro(ctx, "reproduce_adr0003_e2e.py", {"seed": ctx.seed})


def provenance(ctx: RowContext) -> Evidence:
    return _with_repro(ctx, "reproduce_adr0003_provenance.py",
                       {"seed": ctx.seed, "manifest": True})


def _with_repro(ctx: RowContext, name: str, kwargs: dict[str, Any]) -> Evidence:
    from crashgate.harness.faults.repro import on_failure
    ev = check_end_to_end(ctx.spec, **kwargs)
    return on_failure(ev, workdir=ctx.workdir, name=name, spec=ctx.spec,
                      check=check_end_to_end, kwargs=kwargs)


def memory_tables(ctx: RowContext) -> Evidence:
    from crashgate.harness.faults.repro import on_failure
    from crashgate.scenarios.procedures_adr0003_memory import check_memory_tables
    kwargs = {"seed": ctx.seed, "steps": max(40, ctx.budget.workload_ops)}
    return on_failure(check_memory_tables(ctx.spec, **kwargs), workdir=ctx.workdir,
                      name="reproduce_adr0003_memory.py", spec=ctx.spec,
                      check=check_memory_tables, kwargs=kwargs)


def durable_enough(decl: Declaration) -> str | None:
    """A crash row needs acknowledged writes to outlive a process crash."""
    if not decl.durability.covers(Durability.PROCESS_CRASH):
        return ("keeps nothing across a crash (durability none): there is nothing to recover "
                "after one")
    return None
