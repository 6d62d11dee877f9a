"""The AgentDB pattern store (``agentdb``): conformance, the round trip of guide-shaped patterns
(u64 ids, metadata of every odd type), brute-force search against the oracle, filters, readers,
damage; and the pattern generator it is tested with."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import apsw
import numpy as np
import pytest
from conformance import conformance_test
from test_sqlite_vfs import NonNativeFS

from crashgate.backends import (
    BulkFetch,
    Capability,
    CorruptStore,
    Durability,
    Env,
    VectorRecord,
    VectorStore,
    os_env,
    resolve,
)
from crashgate.harness.patterns import (
    CATEGORIES,
    generate_pattern_arrays,
    generate_patterns,
)
from crashgate.reference.patterns.agentdb import AgentDB, open_agentdb
from crashgate.reference.patterns.schema import TABLE
from crashgate.reference.vector_search import exact_search


def _routed_env(_tmp: str) -> Env:
    return Env(fs=NonNativeFS())


TestAgentDBConformance = conformance_test("agentdb", max_examples=25)
TestAgentDBRoutedConformance = conformance_test("agentdb?journal_mode=DELETE&metric=l2",
                                                make_env=_routed_env, max_examples=20)

_ODD: list[dict[str, Any]] = [
    {},
    {"confidence": 1, "usage_count": 2**70, "name": 5, "success_rate": -0.0,
     "quality_score": True, "created_at": None, "examples": None, "metadata": "a string"},
    {"description": "lone \ud800 surrogate", "template": "nul\0inside", "language": "",
     "ünï": "✓", "extra": {"nested": [1, 2.0, None]}, "confidence": float("inf"),
     "usage_count": -(2**63), "quality_score": 1e308, "examples": [], "metadata": {}},
    {"success_rate": 0.25, "usage_count": True, "framework": ["jest"], "category": {"a": 1},
     "updated_at": "2025-11-30T12:00:00Z", "id": "not the id", "sum": b"x".hex()},
]
_U64_IDS = (0, 1, 2**63 - 1, 2**63, 2**64 - 1)


def _odd_records() -> list[VectorRecord]:
    return [VectorRecord(i, (float(n), 0.5, -1.0, 2.0), meta)
            for n, (i, meta) in enumerate(zip(_U64_IDS, _ODD + [{"k": 1}], strict=True))]


def _same(got: list[VectorRecord], want: list[VectorRecord]) -> None:
    """Equal record for record, and each value of the same type (1 is not 1.0, -0.0 keeps its
    sign): ``==`` alone would let an int come back a float."""
    assert [r.id for r in got] == [r.id for r in want]
    for g, w in zip(got, want, strict=True):
        assert g.vector == w.vector
        assert _typed(g.metadata) == _typed(w.metadata), g.id


def _typed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, float):
        return ("float", math.copysign(1.0, value), value)
    return (type(value).__name__, value)


# -- the round trip ------------------------------------------------------------------------


@pytest.mark.parametrize("env_kind", ["os", "routed"])
def test_patterns_round_trip_with_u64_ids_and_odd_metadata(tmp_path: Path, env_kind: str) -> None:
    env = os_env() if env_kind == "os" else Env(fs=NonNativeFS())
    path = str(tmp_path / "agentic-qe.db")
    records = generate_patterns(40, 4, seed=7) + _odd_records()
    want = sorted(records, key=lambda r: r.id)
    store = open_agentdb(path, env)
    store.upsert(records)
    _same(store.fetch([r.id for r in records]), want)
    store.close()
    again = open_agentdb(path, env)
    try:
        _same(again.fetch([r.id for r in records] + [2**64, -1, 12345]), want)
        assert again.ids() == [r.id for r in want]
        block = again.fetch_block([r.id for r in records])
        assert block.ids == tuple(r.id for r in want)
        assert np.array_equal(block.vectors, np.array([r.vector for r in want]))
        assert [_typed(m) for m in block.metadata] == [_typed(r.metadata) for r in want]
    finally:
        again.close()


def test_guide_fields_land_in_their_columns_and_the_rest_in_extra(tmp_path: Path) -> None:
    path = str(tmp_path / "p.db")
    pattern = generate_patterns(1, 4, seed=1)[0]
    store = open_agentdb(path, os_env(), journal_mode="DELETE")
    store.upsert([pattern, _odd_records()[1]])
    store.close()
    db = apsw.Connection(path)
    try:
        cols = [c[1] for c in db.execute(f"PRAGMA table_info({TABLE})")]
        row = dict(zip(cols, db.execute(f"SELECT * FROM {TABLE} WHERE id = ?",
                                        (str(pattern.id),)).fetchall()[0], strict=True))
        odd = dict(zip(cols, db.execute(f"SELECT * FROM {TABLE} WHERE id = '1'").fetchall()[0],
                       strict=True))
    finally:
        db.close()
    assert row["id"] == str(pattern.id)   # the u64's decimal, as the guide's string ids
    for field in ("name", "category", "framework", "confidence", "usage_count",
                  "success_rate", "quality_score", "created_at"):
        assert row[field] == pattern.metadata[field], field
    assert row["extra"] is None and isinstance(row["embedding"], bytes)
    assert len(row["embedding"]) == 4 * 8
    # an int confidence, a bool quality score, -0.0: not their columns' types; kept in extra
    assert odd["confidence"] is None and odd["quality_score"] is None
    assert odd["success_rate"] is None and odd["usage_count"] is None
    assert '"confidence": 1' in odd["extra"] and '"quality_score": true' in odd["extra"]
    assert odd["examples"] == "null" and odd["created_at"] is None


def test_bad_ids_and_dimensions_are_refused_naming_them(tmp_path: Path) -> None:
    store = open_agentdb(str(tmp_path / "p.db"), os_env())
    try:
        for bad in (-1, 2**64, True):
            with pytest.raises(ValueError, match=r"pattern id .* is not a u64"):
                store.upsert([VectorRecord(bad, (1.0, 2.0))])
        store.upsert([VectorRecord(3, (1.0, 2.0))])
        with pytest.raises(ValueError, match="different dimensions"):
            store.upsert([VectorRecord(4, (1.0, 2.0, 3.0))])
        assert store.ids() == [3] and store.remove([3, 2**64, -5]) == 1
    finally:
        store.close()


# -- search --------------------------------------------------------------------------------


def _oracle(records: list[VectorRecord], q: np.ndarray, k: int, metric: str,
            where: Any = None) -> list[Any]:
    rs = sorted(records, key=lambda r: r.id)
    return exact_search([r.id for r in rs], np.array([r.vector for r in rs]),
                        [r.metadata for r in rs], q, k, metric, where)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_search_equals_exact_search(tmp_path: Path, metric: str) -> None:
    records = generate_patterns(300, 16, seed=3)
    store = open_agentdb(str(tmp_path / "p.db"), os_env(), metric=metric)
    try:
        assert store.declaration.metric == metric
        store.upsert(records)
        store.remove([records[0].id, records[1].id])
        live = records[2:]
        rng = np.random.default_rng(1)
        for k in (1, 10, 400):
            q = rng.standard_normal(16)
            assert store.query(q, k) == _oracle(live, q, k, metric)
        # a stored vector as the query: its own record first, at distance 0
        hits = store.query(np.array(live[5].vector), 3)
        assert hits[0].id == live[5].id and hits[0].distance == pytest.approx(0.0, abs=1e-12)
    finally:
        store.close()


@pytest.mark.parametrize("where", [
    {"category": "unit"},
    {"framework": {"$in": ["jest", "pytest"]}, "language": "python"},
    {"usage_count": {"$gte": 2000, "$lt": 6000}},
    {"confidence": {"$gt": 0.5}, "category": {"$in": list(CATEGORIES[:2])}},
    {"metadata": {"source": "crashgate.generate_patterns", "seed": 3,
                  "tags": ["unit", "jest"]}},
    {"no_such_key": 1},
])
def test_filters_equal_the_oracle(tmp_path: Path, where: dict[str, Any]) -> None:
    records = generate_patterns(200, 8, seed=3)
    store = open_agentdb(str(tmp_path / "p.db"), os_env())
    try:
        store.upsert(records)
        q = np.random.default_rng(2).standard_normal(8)
        for k in (5, 300):
            assert store.query(q, k, where=where) == _oracle(records, q, k, "cosine", where)
    finally:
        store.close()


def test_malformed_filter_is_refused_naming_the_key(tmp_path: Path) -> None:
    store = open_agentdb(str(tmp_path / "p.db"), os_env())
    try:
        store.upsert(generate_patterns(3, 4, seed=1))
        with pytest.raises(ValueError, match="usage_count"):
            store.query([1.0, 0.0, 0.0, 0.0], 3, where={"usage_count": {"$gt": "many"}})
    finally:
        store.close()


# -- readers and damage --------------------------------------------------------------------


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_readonly_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    records = generate_patterns(20, 4, seed=2)
    writer = open_agentdb(str(path), os_env())
    writer.upsert(records)
    writer.close()
    before = _files(tmp_path)
    reader = open_agentdb(str(path), os_env(), readonly="true")
    try:
        assert reader.count() == 20 and len(reader.query(records[0].vector, 5)) == 5
        with pytest.raises(PermissionError, match="readonly=true"):
            reader.upsert(records[:1])
        with pytest.raises(PermissionError, match="readonly=true"):
            reader.remove([records[0].id])
    finally:
        reader.close()
    after = _files(tmp_path)
    assert after["p.db"] == before["p.db"]
    # a reader of a WAL file on the OS's file system gets SQLite's own -shm and an empty -wal
    # when no writer has them open (sqlite.org/wal.html, "Read-Only Databases"): no data
    assert set(after) - set(before) <= {"p.db-shm", "p.db-wal"} and not after.get("p.db-wal")
    with pytest.raises(FileNotFoundError):
        open_agentdb(str(tmp_path / "none.db"), os_env(), readonly="true")
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("target", ["MARKER-TEMPLATE", "embedding"])
def test_damage_inside_a_pattern_is_corrupt_store(tmp_path: Path, target: str) -> None:
    path = tmp_path / "p.db"
    vector = (1.0, 2.0, 3.0, 4.0)
    records = [VectorRecord(7, vector, {"template": "MARKER-TEMPLATE", "name": "seven"}),
               VectorRecord(8, (0.5, 0.5, 0.5, 0.5), {"name": "eight"})]
    store = open_agentdb(str(path), os_env(), journal_mode="DELETE")
    store.upsert(records)
    store.close()
    raw = bytearray(path.read_bytes())
    needle = b"MARKER-TEMPLATE" if target != "embedding" else np.array(vector, "<f8").tobytes()
    at = raw.find(needle)
    assert at > 0 and raw.count(needle) == 1
    raw[at + 3] ^= 0x01
    path.write_bytes(bytes(raw))
    damaged = open_agentdb(str(path), os_env())   # the pages are sound: integrity_check passes
    try:
        with pytest.raises(CorruptStore, match="id '7'.*checksum"):
            damaged.fetch([7])
        with pytest.raises(CorruptStore):   # a query whose hit is the damaged pattern
            damaged.query(vector, 1)
        if target == "embedding":   # every query ranks every embedding: each one meets it
            with pytest.raises(CorruptStore, match="id '7'.*vector checksum"):
                damaged.query([0.5, 0.5, 0.5, 0.5], 1)
        else:   # the damaged template is in no answer: the answer is the acknowledged one
            assert [h.id for h in damaged.query([0.5, 0.5, 0.5, 0.5], 1)] == [8]
        assert [r.id for r in damaged.fetch([8])] == [8]
    finally:
        damaged.close()


def test_registered_as_agentdb(tmp_path: Path) -> None:
    assert resolve("agentdb").factory() is open_agentdb
    store = resolve("agentdb?metric=l2").open(str(tmp_path / "p.db"), os_env())
    try:
        assert isinstance(store, AgentDB) and store.declaration.metric == "l2"
    finally:
        store.close()


def test_declares_what_sqlite_promises(tmp_path: Path) -> None:
    for (jm, sync), want in {("WAL", "FULL"): Durability.POWER_LOSS,
                             ("WAL", "NORMAL"): Durability.PROCESS_CRASH,
                             ("MEMORY", "FULL"): Durability.NONE}.items():
        store = open_agentdb(str(tmp_path / f"{jm}{sync}.db"), os_env(), journal_mode=jm,
                             synchronous=sync)
        try:
            assert store.declaration.durability is want
            assert store.declaration.has(Capability.BATCH)
            assert store.declaration.metric == "cosine"
            assert isinstance(store, VectorStore) and isinstance(store, BulkFetch)
        finally:
            store.close()


# -- the generator -------------------------------------------------------------------------


def test_generate_patterns_is_guide_shaped_and_reproducible() -> None:
    a, b = generate_patterns(500, 32, seed=11), generate_patterns(500, 32, seed=11)
    assert a == b and a != generate_patterns(500, 32, seed=12)
    ids = [r.id for r in a]
    assert len(set(ids)) == 500 and all(0 <= i < 2**64 for i in ids)
    assert any(i >= 2**63 for i in ids)   # the top half of the u64 range is exercised
    vectors = np.array([r.vector for r in a])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    for field, kind in (("name", str), ("description", str), ("template", str),
                        ("examples", list), ("confidence", float), ("usage_count", int),
                        ("success_rate", float), ("quality_score", float),
                        ("created_at", str), ("updated_at", str), ("metadata", dict)):
        assert all(type(r.metadata[field]) is kind for r in a), field
    assert {r.metadata["category"] for r in a} == set(CATEGORIES)
    # cluster structure: a pattern's nearest other pattern is far closer than a typical one
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1)
    assert np.median(sims.max(axis=1)) > 0.5 > np.median(np.abs(sims))


def test_generate_pattern_arrays_matches_the_records() -> None:
    ids, vectors, metadata = generate_pattern_arrays(50, 8, seed=4)
    records = generate_patterns(50, 8, seed=4)
    assert ids.dtype == np.uint64 and vectors.shape == (50, 8)
    assert [r.id for r in records] == ids.tolist()
    assert [r.metadata for r in records] == metadata
