"""The HNSW path of the RVF store (``rvf?index=hnsw``): an hnswlib graph over the live vectors,
derived from the table and never trusted over it.

- **Derived.** The graph is built from the store's ``VectorTable`` and follows every commit
  (new ids, replaced vectors, removes as ``mark_deleted``, re-inserts of a removed id). Exact
  NumPy search stays the oracle: the graph only proposes candidates, which are re-scored from the
  table in float64 with the store's metric and ordered by (distance, id), so every distance a
  caller sees is exact. When the graph cannot answer (it lost ids, a tie reaches past what it
  returned, few records match a filter), the query is answered by exact search instead.
- **Filters** return the k nearest *that match*: hnswlib's ``filter=`` callable keeps the graph
  search to matching ids, and a filter matching few records (``exact_below``) is searched
  exactly over those records; either way ``min(k, matching)`` hits come back.
- **Saved beside the file** as ``<path>.hnsw`` (``index_file.py``), at the close of a writable
  store and after compaction, never per commit: the file is hnswlib's whole state (about 1.1x
  the float32 vectors), so writing it per commit would turn every small commit into a rewrite
  of the whole index, while losing it costs only a rebuild. At open it is loaded only if it was
  built from this very file and commit, with these parameters, over exactly the live ids, and
  its checksum holds; otherwise the graph is rebuilt from the table (``status`` says which).

hnswlib 0.8 facts this relies on (``hnswalg.h``, ``bindings.cpp``): with
``allow_replace_deleted=True``, ``add_items(..., replace_deleted=True)`` puts a *new* label in a
slot freed by ``mark_deleted`` (so removals do not grow the graph), but must never be given a
label the graph already holds (it would hold it twice); ``add_items`` of a live label updates
its vector; a deleted label must be ``unmark_deleted`` before it is updated (``add_items``
refuses it otherwise); ``unmark_deleted`` of a label whose slot was reused raises "Label not
found". ``knn_query`` raises ``RuntimeError`` when it finds fewer than ``k``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hnswlib
import numpy as np

from crashgate.backends import (
    BadOption,
    FileSystem,
    Hit,
    backup_temp_path,
    check_where,
    remove_if_present,
)
from crashgate.reference.rvf.index_file import (
    IndexRejected,
    Stamp,
    decode_index,
    encode_index,
    index_path,
)
from crashgate.reference.rvf.table import VectorTable
from crashgate.reference.vector_search import distances, exact_search

__all__ = ["HnswParams", "HnswPath", "hnsw_params"]

SPACES = {"l2": "l2", "cosine": "cosine"}
"""The store's metric -> hnswlib's space (hnswlib's ``l2`` is squared: only the order is used)."""
RANGES = {"m": (2, 128), "ef_construction": (1, 10_000), "ef_search": (1, 10_000)}
TIE = 1e-12
"""Distances this close (relative) may be equal rows' distances computed apart."""
SEED = 100
"""hnswlib's default seed, fixed: a rebuild of the same table gives the same graph."""


@dataclass(frozen=True)
class HnswParams:
    m: int = 16
    ef_construction: int = 200
    ef_search: int = 64
    exact_below: int = 2048
    """A filter matching at most this many records (or under 1/20 of them) is searched
    exactly over those records: the graph search with a filter visits about ``ef / share``
    nodes, calling back into Python for each, and past this point costs more than NumPy."""


def hnsw_params(options: Mapping[str, object], given: Mapping[str, object]
                ) -> HnswParams | None:
    """The checked HNSW options (``None`` for ``index=exact``); ``BadOption`` naming the option,
    its value and the allowed range for a value out of range, or for an HNSW option given with
    ``index=exact``."""
    if options["index"] != "hnsw":
        for name in RANGES:
            if name in given:
                raise BadOption("rvf", name, given[name], [
                    f"give {name} with index=hnsw, or leave it out (it applies only with "
                    "index=hnsw)"])
        return None
    values = {}
    for name, (low, high) in RANGES.items():
        value = int(options[name])  # type: ignore[call-overload]
        if not low <= value <= high:
            raise BadOption("rvf", name, value, [f"an integer from {low} to {high}"])
        values[name] = value
    return HnswParams(**values)


class HnswPath:
    """The graph of one open store. ``attach`` at open (and after a restore), ``apply`` after
    each acknowledged commit, ``search`` for queries, ``save`` at close and after compaction.
    ``status`` is ``loaded`` or ``rebuilt: <reason>``; ``rebuilds`` counts rebuilds and
    ``fallbacks`` the queries the graph could not answer (exact search did)."""

    def __init__(self, fs: FileSystem, store_path: str, params: HnswParams, metric: str,
                 observe: Callable[[str, dict[str, object]], None]) -> None:
        self._fs = fs
        self.path = index_path(store_path)
        self.params = params
        self.metric = metric
        self._space = SPACES[metric]
        self._observe = observe
        self._lock = threading.RLock()   # hnswlib's resize and state copy race with queries
        self._table = VectorTable()
        self._index: hnswlib.Index | None = None
        self._live: set[int] = set()     # labels live in the graph: the table's ids
        self._saved: Stamp | None = None  # what the file on disk was built from, if known
        self.status = "not attached"
        self.rebuilds = 0
        self.fallbacks = 0   # queries the graph could not answer, answered by exact search

    # -- building and loading ----------------------------------------------------------------

    def attach(self, table: VectorTable, stamp: Stamp, *, writable: bool) -> None:
        """Take ``table`` (the store's live vectors at commit ``stamp``): load the saved graph if
        it is this table's, else rebuild it in memory. A reader only reads the file."""
        with self._lock:
            self._table = table
            if writable:   # a save cut by a crash before its rename
                remove_if_present(self._fs, backup_temp_path(self.path))
            try:
                loaded = decode_index(self._fs, self.path, stamp, self._expect(table))
            except IndexRejected as exc:
                self._rebuild(str(exc))
                return
            self._index, self._live, self._saved = loaded, set(table.ids()), stamp
            self._index.set_ef(self.params.ef_search)
            self.status = "loaded"

    def _expect(self, table: VectorTable) -> dict[str, object]:
        return {"metric": self.metric, "dimension": table.dimension or 0, "m": self.params.m,
                "ef_construction": self.params.ef_construction, "ids": table.ids()}

    def _rebuild(self, reason: str) -> None:
        self.status = f"rebuilt: {reason}"
        self.rebuilds += 1
        self._observe("rvf.index-rebuilt", {"path": self.path, "reason": reason})
        self._build()

    def _build(self) -> None:
        """The graph of the whole table, in memory (none while the table has no dimension)."""
        self._index, self._live, self._saved = None, set(), None
        table = self._table
        if table.dimension is None:
            return   # no vector yet: the graph is made by the first upsert
        self._index = self._new_index(table.dimension, len(table))
        for ids, vectors, _ in table.chunks(max(len(table), 1)):
            self._index.add_items(vectors, ids)
            self._live = set(ids.tolist())

    def _new_index(self, dimension: int, count: int) -> hnswlib.Index:
        index = hnswlib.Index(space=self._space, dim=dimension)
        index.init_index(max_elements=max(16, count + count // 4), M=self.params.m,
                         ef_construction=self.params.ef_construction, random_seed=SEED,
                         allow_replace_deleted=True)
        index.set_ef(self.params.ef_search)
        return index

    # -- following commits -------------------------------------------------------------------

    def apply(self, removed: Iterable[int], ids: Sequence[int], vectors: np.ndarray) -> None:
        """Follow one acknowledged commit: ``removed`` first, then ``ids`` upserted with
        ``vectors`` (n, dim), as the table applied them. Any failure rebuilds the graph from
        the table, which is the truth."""
        with self._lock:
            try:
                self._apply(removed, ids, vectors)
            except Exception as exc:  # noqa: BLE001 - derived data: rebuild rather than fail
                self._rebuild(f"after an error following a commit ({exc})")

    def _apply(self, removed: Iterable[int], ids: Sequence[int], vectors: np.ndarray) -> None:
        if self._index is None:
            if len(ids):
                self._build()   # the first vectors: the table already holds them
            return
        index, live = self._index, self._live
        for vid in removed:
            if vid in live:
                index.mark_deleted(vid)
                live.discard(vid)
        if not len(ids):
            return
        update, fresh = [], []
        for row, vid in enumerate(ids):
            if vid in live:
                update.append(row)
                continue
            try:
                index.unmark_deleted(vid)   # a removed id back: its old slot, updated below
                update.append(row)
            except RuntimeError:            # never held, or its slot went to another id
                fresh.append(row)
        if index.element_count + len(fresh) > index.max_elements:
            index.resize_index(max(2 * index.max_elements, index.element_count + len(fresh)))
        labels = np.asarray(ids, dtype=np.uint64)
        if update:
            index.add_items(vectors[update], labels[update])
        if fresh:
            index.add_items(vectors[fresh], labels[fresh], replace_deleted=True)
        live.update(labels.tolist())

    def rekey(self, table: VectorTable) -> None:
        """After compaction: the same live records in a new table (rows reordered); the graph,
        keyed by id, still holds. Rebuilt if the ids differ."""
        with self._lock:
            self._table = table
            if self._index is not None and self._live != set(table.ids()):
                self._rebuild("compaction changed the live ids")

    # -- queries -----------------------------------------------------------------------------

    def search(self, query: Sequence[float], k: int,
               where: Mapping[str, Any] | None = None) -> list[Hit]:
        """The ``min(k, matching)`` nearest live records matching ``where``, ordered by (exact
        distance, id)."""
        check_where(where)
        table = self._table
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        q = np.asarray(query, dtype=np.float64)
        if k == 0 or len(table) == 0 or q.shape != (table.dimension,):
            return table.search(query, k, self.metric, where)   # its answer, or its error
        allowed: set[int] | None = None
        matching = len(table)
        if where:
            allowed = table.matching_ids(where)
            matching = len(allowed)
            if matching <= max(self.params.exact_below, len(table) // 20):
                return self._exact_among(allowed, query, k)
        want = min(k, matching)
        fetch = min(matching, max(2 * want, want + 10))
        with self._lock:
            hits = self._graph_search(q, want, fetch, matching, allowed)
        if hits is not None:
            return hits
        self.fallbacks += 1
        return self._exact_among(allowed, query, k)

    def _graph_search(self, q: np.ndarray, want: int, fetch: int, matching: int,
                      allowed: set[int] | None) -> list[Hit] | None:
        """``want`` hits from the graph's candidates re-scored exactly, or ``None`` when the
        graph cannot be sure of them (exact search answers instead)."""
        if self._index is None:
            return None
        for _ in range(2):   # once, and once more with 4x the candidates if a tie needs it
            try:
                labels, _ = self._index.knn_query(
                    q, k=fetch, num_threads=1,
                    filter=None if allowed is None else allowed.__contains__)
            except RuntimeError:   # fewer than ``fetch`` reachable
                return None
            ids, vectors, rows = self._table.candidates(labels[0].tolist())
            if len(rows) < want:
                return None
            d = distances(vectors, q, self.metric)
            order = np.lexsort((ids, d))
            # a record beyond the candidates may tie the last hit (one with a smaller id, which
            # exact search would return): only when the last hit ties the farthest candidate
            # (within rounding: equal rows may differ in the last bit) can one be missing
            last, far = d[order[want - 1]], d[order[-1]]
            if fetch < matching and last >= far - TIE * max(1.0, abs(far)):
                fetch = min(matching, 4 * fetch)
                continue
            return [self._table.hit(rows[i], float(d[i])) for i in order[:want]]
        return None

    def _exact_among(self, allowed: set[int] | None, query: Sequence[float], k: int
                     ) -> list[Hit]:
        """Exact search over the records ``allowed`` (all if ``None``)."""
        if allowed is None:
            return self._table.search(query, k, self.metric)
        block = self._table.fetch_block(allowed)
        return exact_search(block.ids, block.vectors, block.metadata, query, k, self.metric)

    # -- saving --------------------------------------------------------------------------------

    def save(self, stamp: Stamp) -> None:
        """Write the graph to ``<path>.hnsw`` atomically (index_file.py), stamped with the commit
        it reflects; nothing if the file already holds it or there is no graph yet."""
        with self._lock:
            if self._index is None or self._saved == stamp:
                return
            encode_index(self._fs, self.path, stamp, self._index, {
                "metric": self.metric, "dimension": self._table.dimension or 0,
                "m": self.params.m, "ef_construction": self.params.ef_construction,
                "ids": sorted(self._live)})
            self._saved = stamp

    def describe(self) -> dict[str, object]:
        """What ``status()`` reports about the index."""
        return {"kind": "hnsw", "status": self.status, "rebuilds": self.rebuilds,
                "fallbacks": self.fallbacks,
                "file": self.path, "m": self.params.m,
                "ef_construction": self.params.ef_construction,
                "ef_search": self.params.ef_search}
