"""The HNSW path of the RVF store (``rvf?index=hnsw``, reference/rvf/hnsw.py, index_file.py):
answers held to exact search, the graph following deletes, re-inserts, replaced vectors and
compaction, filters returning min(k, matching), and the index file trusted only when it is this
commit's."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conformance import conformance_test

from crashgate.backends import BadOption, Recall, VectorRecord, os_env
from crashgate.harness.vector_oracle import RecallTally, check_approximate, check_exact
from crashgate.reference.rvf import RvfStore, open_rvf
from crashgate.reference.vector_search import exact_search

TestRvfHnswConformance = conformance_test("rvf?index=hnsw", max_examples=25)


def _open(path: Path, **options: str) -> RvfStore:
    return open_rvf(str(path), os_env(), **{"index": "hnsw", **options})


def _records(store: RvfStore) -> list[VectorRecord]:
    return store.fetch(store.ids())


def _check_graph(store: RvfStore) -> None:
    """The graph holds exactly the live ids, each with its current vector (l2 stores: hnswlib
    keeps the vectors as given, in float32), and every other label it holds is deleted."""
    path = store._hnsw
    assert path is not None and path._index is not None
    ids = store.ids()
    assert path._live == set(ids)
    got = np.asarray(path._index.get_items(ids))
    want = store.fetch_block(ids).vectors.astype(np.float32)
    np.testing.assert_array_equal(got, want)
    labels = path._index.get_ids_list()
    assert len(labels) == len(set(labels)) == path._index.element_count
    for label in set(labels) - set(ids):
        with pytest.raises(RuntimeError, match="Label not found"):   # marked deleted
            path._index.get_items([label])


def test_declares_recall_and_a_derived_index(tmp_path: Path) -> None:
    with _open(tmp_path / "a.rvf") as s:
        assert s.declaration.recall == Recall(10, 0.95)
        assert "derived" in s.declaration.notes["index"]
        assert s.index_status == "rebuilt: missing"
        assert s._hnsw is not None and s.status()["index"] == s._hnsw.describe()
    with open_rvf(str(tmp_path / "b.rvf"), os_env()) as s:
        assert s.declaration.recall is None and s.index_status == "exact"


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_small_store_answers_as_exact_search(tmp_path: Path, metric: str) -> None:
    # 60 records < ef_search (64): the graph search holds every node, so the answer is exact
    rng = np.random.default_rng(3)
    with _open(tmp_path / "a.rvf", metric=metric) as s:
        # a few duplicated vectors: ties at equal distance
        vectors = rng.normal(size=(60, 8))
        vectors[20:50] = vectors[3]
        s.upsert([VectorRecord.of(i, vectors[i], {"g": i % 4}) for i in range(60)])
        recs = _records(s)
        block = s.fetch_block(s.ids())
        for _ in range(40):
            q = rng.normal(size=8) if rng.random() < 0.8 else vectors[3]
            for k in (1, 5, 10, 60, 100):
                for where in (None, {"g": 1}, {"g": {"$in": [0, 2]}}):
                    hits = s.query(q, k, where)
                    assert check_exact(hits, recs, q, k, metric, where) is None
                    if metric == "l2":   # equal rows, equal distances: ties broken by id alike
                        exact = exact_search(block.ids, block.vectors, block.metadata, q, k,
                                             metric, where)
                        assert [h.id for h in hits] == [h.id for h in exact]
        assert s._hnsw is not None and s._hnsw.fallbacks == 0


def test_recall_at_10_on_clustered_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    centres = rng.normal(scale=4.0, size=(30, 64))
    n = 3000
    vectors = centres[rng.integers(0, 30, n)] + rng.normal(size=(n, 64))
    tally = RecallTally()
    with _open(tmp_path / "a.rvf") as s:
        for at in range(0, n, 500):
            s.upsert([VectorRecord.of(i, vectors[i]) for i in range(at, at + 500)])
        recs = _records(s)
        for _ in range(100):
            q = centres[rng.integers(0, 30)] + rng.normal(size=64)
            problem, found, possible = check_approximate(s.query(q, 10), recs, q, 10, "l2")
            assert problem is None
            tally.add(found, possible)
    assert tally.recall is not None and tally.recall >= 0.95, tally


def test_random_ops_against_exact_search(tmp_path: Path) -> None:
    """Upserts of new ids, replaced vectors, removes, re-inserts of removed ids, compaction and
    reopen, interleaved; after each step the graph holds exactly the live vectors and queries
    (ef_search above the record count: exact) equal exact search's."""
    rng = random.Random(5)
    nrng = np.random.default_rng(5)
    path = tmp_path / "a.rvf"
    s = _open(path, ef_search="400")
    removed: set[int] = set()
    try:
        for step in range(160):
            live = s.ids()
            op = rng.random()
            if op < 0.35 or not live:
                ids = rng.sample(range(300), rng.randint(1, 12))
                s.upsert([VectorRecord.of(i, nrng.normal(size=6), {"p": i % 3}) for i in ids])
            elif op < 0.55:
                gone = rng.sample(live, min(len(live), rng.randint(1, 8)))
                s.remove(gone)
                removed.update(gone)
            elif op < 0.7 and removed:
                back = rng.sample(sorted(removed), min(len(removed), 4))
                s.upsert([VectorRecord.of(i, nrng.normal(size=6), {"p": 9}) for i in back])
                removed.difference_update(back)
            elif op < 0.8:
                # one commit that removes an id and upserts it again: the new vector is live
                vid = rng.choice(live)
                s.commit(removes=[vid], upserts=[VectorRecord.of(vid, nrng.normal(size=6))])
            elif op < 0.9:
                s.compact()
            else:
                s.close()
                s = _open(path, ef_search="400")
                assert s.index_status == "loaded", (step, s.index_status)
            _check_graph(s)
            recs = _records(s)
            for where in (None, {"p": 9}, {"p": {"$gte": 1}}):
                q = nrng.normal(size=6)
                hits = s.query(q, 7, where)
                assert check_exact(hits, recs, q, 7, "l2", where) is None, step
            assert s._hnsw is not None and s._hnsw.fallbacks == 0, step   # the graph answered
    finally:
        s.close()


def test_reinserted_id_is_found_at_its_new_vector(tmp_path: Path) -> None:
    with _open(tmp_path / "a.rvf") as s:
        s.upsert([VectorRecord.of(i, [float(i), 0.0]) for i in range(50)])
        s.remove([7])
        assert 7 not in [h.id for h in s.query([7.0, 0.0], 3)]
        s.upsert([VectorRecord.of(7, [100.0, 0.0], {"back": True})])
        (hit,) = s.query([100.0, 0.0], 1)
        assert (hit.id, hit.distance, dict(hit.metadata)) == (7, 0.0, {"back": True})
        s.upsert([VectorRecord.of(8, [200.0, 0.0])])   # a replaced vector
        assert s.query([200.0, 0.0], 1)[0].id == 8
        _check_graph(s)


def _clustered_store(path: Path, n: int, **options: str) -> tuple[RvfStore, np.ndarray]:
    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(n, 16))
    s = _open(path, **options)
    s.upsert([VectorRecord.of(i, vectors[i], {"half": i % 2, "n": i}) for i in range(n)])
    return s, vectors


def test_filter_returns_min_k_matching_nearest(tmp_path: Path) -> None:
    s, vectors = _clustered_store(tmp_path / "a.rvf", 5000)
    rng = np.random.default_rng(2)
    tally = RecallTally()
    try:
        recs = _records(s)
        # half the records match: the graph searches with hnswlib's filter callable
        for _ in range(30):
            q = rng.normal(size=16)
            hits = s.query(q, 10, {"half": 1})
            problem, found, possible = check_approximate(hits, recs, q, 10, "l2", {"half": 1})
            assert problem is None
            tally.add(found, possible)
        assert tally.recall is not None and tally.recall >= 0.95, tally
        # few match: exact over those records, min(k, matching) of them
        for where, matching in (({"n": {"$lt": 4}}, 4), ({"n": {"$gte": 4990}}, 10),
                                ({"n": -1}, 0)):
            q = rng.normal(size=16)
            hits = s.query(q, 10, where)
            assert len(hits) == min(10, matching)
            assert check_exact(hits, recs, q, 10, "l2", where) is None
        # forced onto the graph with a filter matching three: hnswlib finds fewer or raises,
        # and exact search answers
        assert s._hnsw is not None
        s._hnsw.params = dataclasses.replace(s._hnsw.params, exact_below=0)
        for _ in range(5):
            q = rng.normal(size=16)
            three = {"n": {"$in": [5, 1234, 4321]}}
            hits = s.query(q, 10, three)
            assert check_exact(hits, recs, q, 10, "l2", three) is None
    finally:
        s.close()


def test_bad_filter_is_refused(tmp_path: Path) -> None:
    s, _ = _clustered_store(tmp_path / "a.rvf", 50)
    with s, pytest.raises(ValueError, match="n"):
        s.query([0.0] * 16, 3, {"n": {"$between": [1, 2]}})


# -- the index file ----------------------------------------------------------------------------


def _saved_store(path: Path) -> list[tuple[int, float]]:
    """A store of 300 vectors closed with its index saved; the answer to one query."""
    s, _ = _clustered_store(path, 300)
    with s:
        return [(h.id, h.distance) for h in s.query([0.5] * 16, 10)]


def _reopened(path: Path, **options: str) -> tuple[str, list[tuple[int, float]]]:
    with _open(path, **options) as s:
        hits = s.query([0.5] * 16, 10)
        assert check_exact(hits, _records(s), [0.5] * 16, 10, "l2") is None
        return s.index_status, [(h.id, h.distance) for h in hits]


def test_index_file_is_reused_when_valid(tmp_path: Path) -> None:
    path = tmp_path / "a.rvf"
    before = _saved_store(path)
    assert (tmp_path / "a.rvf.hnsw").exists()
    assert _reopened(path) == ("loaded", before)
    assert _reopened(path, ef_search="100")[0] == "loaded"   # a query-time parameter


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda p: p.unlink(), "rebuilt: missing"),
    (lambda p: _flip(p, p.stat().st_size // 2), "rebuilt: damaged: checksum mismatch"),
    (lambda p: _flip(p, 20), "rebuilt: damaged: checksum mismatch"),     # the header
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "rebuilt: damaged: checksum mismatch"),
    (lambda p: p.write_bytes(p.read_bytes()[:10]), "rebuilt: damaged: truncated to 10 bytes"),
    (lambda p: p.write_bytes(b""), "rebuilt: damaged: truncated to 0 bytes"),
])
def test_damaged_or_missing_index_is_rebuilt(tmp_path: Path, damage: Any, reason: str) -> None:
    path = tmp_path / "a.rvf"
    before = _saved_store(path)
    damage(tmp_path / "a.rvf.hnsw")
    assert _reopened(path) == (reason, before)
    assert _reopened(path) == ("loaded", before)   # the rebuilt graph was saved at close


def test_stale_index_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "a.rvf"
    _saved_store(path)
    with open_rvf(str(path), os_env()) as plain:   # a write the index never saw
        plain.upsert([VectorRecord.of(1000, [0.5] * 16)])
    status, hits = _reopened(path)
    assert status.startswith("rebuilt: stale: built at epoch 1"), status
    assert hits[0] == (1000, 0.0)


def test_status_of_an_exact_open_says_what_an_hnsw_open_would_do_with_the_file(
        tmp_path: Path) -> None:
    path = tmp_path / "a.rvf"
    _saved_store(path)
    with open_rvf(str(path), os_env(), readonly="true") as plain:
        assert plain.status()["index"]["file_status"].startswith(
            "usable by an open with index=hnsw&m=16&ef_construction=200 (300 ids")
    with open_rvf(str(path), os_env()) as plain:
        plain.upsert([VectorRecord.of(1000, [0.5] * 16)])
    _flip(tmp_path / "a.rvf.hnsw", 20)
    before = (tmp_path / "a.rvf.hnsw").read_bytes()
    with open_rvf(str(path), os_env(), readonly="true") as plain:
        said = plain.status()["index"]["file_status"]
    assert said == "rebuilt at an open with index=hnsw: damaged: checksum mismatch", said
    assert (tmp_path / "a.rvf.hnsw").read_bytes() == before


def test_index_of_another_commit_at_the_same_epoch_is_rebuilt(tmp_path: Path) -> None:
    # a backup restored and written again reaches the epoch of the index saved meanwhile, with
    # other data: the commit digest tells them apart
    path = tmp_path / "a.rvf"
    _saved_store(path)
    with _open(path) as s:
        s.backup(str(tmp_path / "b.bak"))
        s.upsert([VectorRecord.of(2000, [9.0] * 16)])   # epoch 2; its index saved at close
    with open_rvf(str(path), os_env()) as plain:
        plain.restore(str(tmp_path / "b.bak"))
        plain.upsert([VectorRecord.of(3000, [9.0] * 16)])   # epoch 2 again, other data
    with _open(path) as s:
        assert s.index_status == "rebuilt: stale: built from another commit at epoch 2"
        assert [h.id for h in s.query([9.0] * 16, 2)][0] == 3000
        assert 2000 not in s.ids()
        s.restore(str(tmp_path / "b.bak"))   # a restore re-derives the graph too
        assert s.index_status.startswith("rebuilt: stale: built at epoch 2"), s.index_status
        assert 3000 not in [h.id for h in s.query([9.0] * 16, 300)]


def test_foreign_index_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "a.rvf"
    before = _saved_store(path)
    _saved_store(tmp_path / "b.rvf")   # same records, another file
    (tmp_path / "a.rvf.hnsw").write_bytes((tmp_path / "b.rvf.hnsw").read_bytes())
    status, hits = _reopened(path)
    assert status.startswith("rebuilt: foreign: built from RVF file"), status
    assert hits == before


@pytest.mark.parametrize(("options", "reason"), [
    ({"m": "8"}, "rebuilt: parameters: built with m=16, the store has m=8"),
    ({"ef_construction": "100"}, "rebuilt: parameters: built with ef_construction=200, "
                                 "the store has ef_construction=100"),
])
def test_index_with_other_parameters_is_rebuilt(tmp_path: Path, options: dict[str, str],
                                                reason: str) -> None:
    path = tmp_path / "a.rvf"
    _saved_store(path)
    assert _reopened(path, **options)[0] == reason


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("index_file", ["valid", "missing", "stale"])
def test_readonly_open_writes_nothing(tmp_path: Path, index_file: str) -> None:
    path = tmp_path / "a.rvf"
    _saved_store(path)
    if index_file == "missing":
        (tmp_path / "a.rvf.hnsw").unlink()
    if index_file == "stale":
        with open_rvf(str(path), os_env()) as plain:
            plain.upsert([VectorRecord.of(1000, [0.5] * 16)])
    before = _snapshot(tmp_path)
    status, _ = _reopened(path, readonly="true")
    assert status.startswith("loaded" if index_file == "valid" else "rebuilt")
    assert _snapshot(tmp_path) == before


def test_compaction_saves_the_index_for_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "a.rvf"
    s, _ = _clustered_store(path, 200)
    with s:
        s.remove(range(0, 200, 3))
        s.compact()
        saved = (tmp_path / "a.rvf.hnsw").read_bytes()
    assert (tmp_path / "a.rvf.hnsw").read_bytes() == saved   # nothing changed since: no rewrite
    assert _reopened(path)[0] == "loaded"


@pytest.mark.parametrize(("options", "message"), [
    ({"m": "1"}, "m=1 is not accepted.*an integer from 2 to 128"),
    ({"m": "500"}, "m=500 is not accepted.*an integer from 2 to 128"),
    ({"ef_construction": "0"}, "ef_construction=0 .*an integer from 1 to 10000"),
    ({"ef_search": "x"}, "ef_search='x' is not accepted"),
    ({"index": "ivf"}, "index='ivf' is not accepted.*exact, hnsw"),
    ({"index": "exact", "m": "8"}, "m='8' is not accepted.*only with index=hnsw"),
])
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, str], message: str) -> None:
    opts = {"index": "hnsw", **options}
    with pytest.raises(BadOption, match=f"(?s){message}"):
        open_rvf(str(tmp_path / "a.rvf"), os_env(), **opts)
