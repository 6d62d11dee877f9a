"""Generated test patterns shaped like the pattern migration guide's ("What Gets Migrated"):
for the AgentDB store's tests, the migrator's rows and the benchmark.

Each pattern is a ``VectorRecord``: a random u64 id (the whole range: ids past 2**63 are
common, so a store that keeps ids as signed integers must map them), a unit-norm float64
embedding, and metadata with the guide's fields (name, description, category, framework,
language, template, examples, confidence, usage_count, success_rate, quality_score,
created_at, updated_at) and a free ``metadata`` dict.

The embeddings have cluster structure (points scattered around a few hundred random centres,
then normalised), as embeddings of similar patterns have: on uniform random vectors in 384
dimensions every distance is nearly the same, and recall@k of an approximate index says
little. Everything is drawn from ``numpy.random.default_rng(seed)``: one seed, one list.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from crashgate.backends import VectorRecord

__all__ = ["CATEGORIES", "FRAMEWORKS", "LANGUAGES", "generate_pattern_arrays",
           "generate_patterns"]

CATEGORIES = ("unit", "integration", "e2e", "performance", "security")
FRAMEWORKS = ("jest", "vitest", "mocha", "pytest", "playwright")
LANGUAGES = ("typescript", "javascript", "python")
_SPREAD = 0.6
"""Scatter around a centre, as a share of a unit vector's length (before normalising)."""
_CHUNK = 8192
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def _ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct u64 ids, in draw order."""
    ids = rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)
    while len(np.unique(ids)) < n:   # a repeat among 2**64 values: redraw the later copies
        _, first = np.unique(ids, return_index=True)
        repeat = np.setdiff1d(np.arange(n), first)
        ids[repeat] = rng.integers(0, np.iinfo(np.uint64).max, size=len(repeat),
                                   dtype=np.uint64, endpoint=True)
    return ids


def _embeddings(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """(n, dim) unit-norm float64 rows around ``clusters`` random centres."""
    clusters = max(1, min(n, int(round(np.sqrt(n) / 2))))
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, size=n)
    out = np.empty((n, dim), dtype=np.float64)
    for start in range(0, n, _CHUNK):   # bounded scratch memory at 100,000 x 384
        stop = min(n, start + _CHUNK)
        block = centres[labels[start:stop]] + rng.standard_normal((stop - start, dim)) * (
            _SPREAD / np.sqrt(dim))
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def _metadata(rng: np.random.Generator, n: int, seed: int) -> list[dict[str, Any]]:
    """The guide's fields for ``n`` patterns, drawn as columns, then one dict per pattern."""
    cat = rng.integers(0, len(CATEGORIES), size=n)
    fw = rng.integers(0, len(FRAMEWORKS), size=n)
    lang = rng.integers(0, len(LANGUAGES), size=n)
    confidence = rng.random(n).tolist()
    success = rng.random(n).tolist()
    quality = rng.random(n).tolist()
    usage = rng.integers(0, 10_000, size=n).tolist()
    n_examples = rng.integers(1, 4, size=n).tolist()
    created = rng.integers(0, 300 * 86_400, size=n).tolist()
    age = rng.integers(0, 30 * 86_400, size=n).tolist()
    out = []
    for i in range(n):
        c, f, g = CATEGORIES[cat[i]], FRAMEWORKS[fw[i]], LANGUAGES[lang[i]]
        made = _EPOCH + timedelta(seconds=created[i])
        out.append({
            "name": f"{c}-{f}-pattern-{i}",
            "description": f"A {c} test pattern for {f} in {g} (#{i})",
            "category": c,
            "framework": f,
            "language": g,
            "template": f"describe('{c} {i}', () => {{ it('works', () => {{ /* {f} */ }}) }})",
            "examples": [f"example {j} of pattern {i}" for j in range(n_examples[i])],
            "confidence": confidence[i],
            "usage_count": usage[i],
            "success_rate": success[i],
            "quality_score": quality[i],
            "created_at": made.isoformat(),
            "updated_at": (made + timedelta(seconds=age[i])).isoformat(),
            "metadata": {"source": "crashgate.generate_patterns", "seed": seed,
                         "tags": [c, f]},
        })
    return out


def generate_pattern_arrays(n: int, dim: int, seed: int
                            ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """``n`` patterns as arrays: ids (n,) uint64, distinct; embeddings (n, dim) float64, unit
    norm; metadata, one dict per pattern (module docstring). For a benchmark that feeds a
    store in blocks; ``generate_patterns`` makes the same patterns as records."""
    if n < 0 or dim < 1:
        raise ValueError(f"generate_patterns(n={n!r}, dim={dim!r}): n must be >= 0 and dim >= 1")
    rng = np.random.default_rng(seed)
    ids = _ids(rng, n)
    return ids, _embeddings(rng, n, dim), _metadata(rng, n, seed)


def generate_patterns(n: int, dim: int, seed: int) -> list[VectorRecord]:
    """``n`` guide-shaped patterns of dimension ``dim`` drawn from ``seed``, as records (ids
    distinct u64s, embeddings unit-norm float64 with cluster structure)."""
    ids, vectors, metadata = generate_pattern_arrays(n, dim, seed)
    return [VectorRecord(i, v, m) for i, v, m in zip(ids.tolist(), map(tuple, vectors.tolist()),
                                                    metadata, strict=True)]
