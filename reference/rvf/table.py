"""The live vectors of a store in memory: one float64 matrix, ids and metadata by row.

Rows are kept dense (a removed row is filled with the last one), so a query hands the first
``n`` rows straight to ``exact_search`` without copying.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from crashgate.backends import Hit, VectorBlock, VectorRecord
from crashgate.reference.vector_search import check_where, exact_search, matches

__all__ = ["VectorTable"]


class VectorTable:
    def __init__(self, dimension: int | None = None) -> None:
        self.dimension = dimension
        self._ids = np.zeros(0, dtype=np.uint64)
        self._mat = np.zeros((0, dimension or 0), dtype=np.float64)
        self._meta: list[dict[str, Any]] = []
        self._rows: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._meta)

    def __contains__(self, vid: object) -> bool:
        return vid in self._rows

    def fix_dimension(self, dimension: int) -> None:
        """Set the dimension of a table that holds no vectors yet."""
        if len(self._meta):
            raise ValueError(f"the table already holds vectors of dimension {self.dimension}")
        self.dimension = dimension
        self._mat = np.zeros((len(self._ids), dimension), dtype=np.float64)

    def _reserve(self, extra: int) -> None:
        n = len(self._meta)
        if n + extra <= len(self._ids):
            return
        cap = max(16, 2 * len(self._ids), n + extra)
        # rows past the live ones are never read: no need to zero them (a fresh matrix of
        # thousands of 384-d rows costs its page faults once, not twice)
        ids = np.empty(cap, dtype=np.uint64)
        mat = np.empty((cap, self.dimension or 0), dtype=np.float64)
        ids[:n] = self._ids[:n]
        mat[:n] = self._mat[:n]
        self._ids, self._mat = ids, mat

    def upsert(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray,
               metadata: Sequence[Mapping[str, Any]], *, owned: bool = False) -> int:
        """Insert or replace rows; ``vectors`` is (n, dim). Returns how many replaced a live id.
        ``owned``: the metadata dicts are the caller's fresh copies (just decoded), kept as they
        are instead of copied again."""
        if len(ids) == 0:
            return 0
        if self.dimension is None:
            self.fix_dimension(int(vectors.shape[1]))
        if vectors.shape[1] != self.dimension:
            raise ValueError(f"vectors of dimension {vectors.shape[1]} in a table of dimension "
                             f"{self.dimension}")
        self._reserve(len(ids))
        replaced = 0
        rows = []
        table, meta = self._rows, self._meta
        # the bookkeeping per id, the vectors in one assignment (a loop of row copies was most
        # of the cost of opening a store of thousands of vectors)
        mine = metadata if owned else [dict(m) for m in metadata]
        for i, vid in enumerate(ids.tolist() if isinstance(ids, np.ndarray) else map(int, ids)):
            row = table.get(vid)
            if row is None:
                row = table[vid] = len(meta)
                self._ids[row] = vid
                meta.append(mine[i])   # type: ignore[arg-type]
            else:
                replaced += 1
                meta[row] = mine[i]   # type: ignore[call-overload]
            rows.append(row)
        if len(set(rows)) < len(rows):   # an id given twice: its last vector wins
            last = {row: i for i, row in enumerate(rows)}
            self._mat[list(last)] = vectors[list(last.values())]
        else:
            self._mat[rows] = vectors
        return replaced

    def remove(self, ids: Iterable[int]) -> int:
        """Remove the live ones among ``ids``; returns how many were live."""
        removed = 0
        for vid in ids:
            row = self._rows.pop(int(vid), None)
            if row is None:
                continue
            removed += 1
            last = len(self._meta) - 1
            if row != last:
                moved = int(self._ids[last])
                self._ids[row] = moved
                self._mat[row] = self._mat[last]
                self._meta[row] = self._meta[last]
                self._rows[moved] = row
            self._meta.pop()
        return removed

    def ids(self) -> list[int]:
        return sorted(self._rows)

    def _live(self, ids: Iterable[int]) -> tuple[list[int], list[int]]:
        """The live ids among ``ids``, ascending and each once, and their rows."""
        got = [(vid, self._rows.get(vid)) for vid in sorted({int(i) for i in ids})]
        live = [(vid, row) for vid, row in got if row is not None]
        return [vid for vid, _ in live], [row for _, row in live]

    def live_metadata(self) -> dict[int, dict[str, Any]]:
        """id -> metadata (a copy) of every live record, ids ascending."""
        return {vid: dict(self._meta[row]) for vid, row in sorted(self._rows.items())}

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        vids, rows = self._live(ids)
        return [VectorRecord.of(vid, self._mat[row], self._meta[row])
                for vid, row in zip(vids, rows, strict=True)]

    def fetch_block(self, ids: Iterable[int]) -> VectorBlock:
        """``fetch`` as one (n, dimension) float64 matrix (a copy) and metadata by row."""
        vids, rows = self._live(ids)
        return VectorBlock(tuple(vids), self._mat[rows] if rows else self._mat[:0].copy(),
                           tuple(dict(self._meta[row]) for row in rows))

    def search(self, query: Sequence[float], k: int, metric: str,
               where: Mapping[str, Any] | None = None) -> list[Hit]:
        n = len(self._meta)
        if n == 0:
            check_where(where)   # a bad filter is refused on an empty store too
            if k < 0:
                raise ValueError(f"k must be >= 0, got {k}")
            return []
        return exact_search(self._ids[:n], self._mat[:n], self._meta, query, k, metric, where)

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]]:
        """All live rows ordered by id, as ``(ids, vectors, metadata)`` blocks of up to ``size``."""
        n = len(self._meta)
        order = np.argsort(self._ids[:n], kind="stable")
        for at in range(0, n, size):
            rows = order[at:at + size]
            yield self._ids[rows], self._mat[rows], [self._meta[r] for r in rows]

    def candidates(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """The live ones among ``ids`` (in the order given; dead ones left out), as (their ids
        (uint64), their vectors (a float64 (n, dim) copy), their rows): what an index's
        candidates are re-scored from, without a record or a metadata copy per candidate."""
        get = self._rows.get
        rows = [row for row in map(get, ids) if row is not None]
        return self._ids[rows], self._mat[rows], rows

    def hit(self, row: int, distance: float) -> Hit:
        """The hit of the record in ``row`` (its metadata a copy)."""
        return Hit(int(self._ids[row]), distance, dict(self._meta[row]))

    def matching_ids(self, where: Mapping[str, Any] | None) -> set[int]:
        """The live ids whose metadata matches ``where`` (a checked filter): what the HNSW
        path counts and restricts its graph search to (hnsw.py)."""
        n = len(self._meta)
        return {vid for vid, meta in zip(self._ids[:n].tolist(), self._meta, strict=True)
                if matches(meta, where)}
