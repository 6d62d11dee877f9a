"""Metadata filters (``backends.search``): the grammar's semantics, malformed filters refused
with the key named, and every reference vector store's filtered queries equal to the oracle's
(``harness.vector_oracle``) on generated data and queries, on real files."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crashgate.backends import VectorRecord, check_where, matches, os_env, resolve
from crashgate.harness.vector_oracle import check_exact, expected

# the stage adapters read vectors from SQLite (stage 1) and from RVF (stage 3)
STORES = ["memory", "sqlite", "rvf", "rvlite", "stage1", "stage3"]
DIM = 3
TAGS = st.sampled_from(["x", "y", "z"])
NUMBERS = st.one_of(st.integers(-3, 3), st.sampled_from([-0.5, 0.5, 1.0, 2.5]))
VALUES = st.one_of(NUMBERS, st.booleans(), TAGS, st.none(), st.lists(NUMBERS, max_size=2))
METADATA = st.fixed_dictionaries({}, optional={"tag": TAGS, "n": VALUES, "m": NUMBERS})
# coarse coordinates: equal distances (ties) are common
VECTORS = st.lists(st.integers(-2, 2).map(float), min_size=DIM, max_size=DIM)


@st.composite
def _ranges(draw: st.DrawFn) -> dict[str, Any]:
    ops = draw(st.lists(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), min_size=1,
                        max_size=4, unique=True))
    return {op: draw(NUMBERS) for op in ops}


CONDITIONS = st.one_of(
    VALUES, _ranges(), st.fixed_dictionaries({"$in": st.lists(VALUES, max_size=3)}),
    st.fixed_dictionaries({"$eq": VALUES}), st.fixed_dictionaries({"$ne": VALUES}))
WHERES = st.none() | st.dictionaries(st.sampled_from(["tag", "n", "m", "absent"]), CONDITIONS,
                                     max_size=2)
RECORDS = st.lists(st.builds(VectorRecord, id=st.integers(0, 30), vector=VECTORS.map(tuple),
                             metadata=METADATA), max_size=14, unique_by=lambda r: r.id)
QUERIES = st.lists(st.tuples(VECTORS, st.integers(0, 16), WHERES), min_size=1, max_size=4)

_DIRS = itertools.count()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Any]:
    path = tmp_path_factory.mktemp(f"filters-{next(_DIRS)}") / "store"
    s = resolve(str(request.param)).open(str(path), os_env())
    yield s
    s.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(records=RECORDS, queries=QUERIES)
def test_filtered_queries_equal_the_oracle(store: Any, records: list[VectorRecord],
                                           queries: list[tuple[list[float], int, Any]]) -> None:
    # one store across examples: clear what the last example left, then load this one
    store.remove(list(range(31)))
    if records:
        store.upsert(records)
    metric = store.declaration.metric or "l2"
    assert store.declaration.recall is None   # every reference store searches exactly
    for vector, k, where in queries:
        hits = store.query(vector, k, where)
        problem = check_exact(hits, records, vector, k, metric, where)
        assert problem is None, f"query({vector}, k={k}, where={where}): {problem}"
        # the reference stores compute distances as the oracle does and break ties by id
        # as it does: the very same ids
        want = expected(records, vector, k, metric, where)
        assert [h.id for h in hits] == [h.id for h in want]


def test_k_larger_than_the_matching_count_returns_every_match(store: Any) -> None:
    records = [VectorRecord.of(i, [float(i), 0.0, 0.0], {"tag": "xy"[i % 2], "n": i})
               for i in range(10)]
    store.upsert(records)
    hits = store.query([0.0, 0.0, 0.0], 50, {"tag": "x", "n": {"$gte": 3}})
    assert [h.id for h in hits] == [4, 6, 8]
    assert [h.id for h in store.query([0.0, 0.0, 0.0], 50, {"n": {"$in": [1, 2.0, True]}})
            ] == [1, 2]


BAD = [
    ({"n": {"$regex": "1"}}, "n", "$regex"),
    ({"tag": {"$in": "x"}}, "tag", "$in"),
    ({"n": {"$gt": "1"}}, "n", "$gt"),
    ({"n": {"$lte": True}}, "n", "$lte"),
    ({"n": {"$gte": math.nan}}, "n", "$gte"),
    ({"n": {}}, "n", "empty"),
    ({"tag": "x", "m": {"$gte": 0, "$between": [0, 1]}}, "m", "$between"),
]


@pytest.mark.parametrize(("where", "key", "what"), BAD)
def test_a_malformed_filter_is_refused_naming_the_key(store: Any, where: dict[str, Any],
                                                      key: str, what: str) -> None:
    # refused on an empty store (nothing to search) and on a filled one
    for _ in range(2):
        with pytest.raises(ValueError, match=f"where\\[{key!r}\\]") as caught:
            store.query([0.0, 0.0, 0.0], 3, where)
        assert what in str(caught.value)
        store.upsert([VectorRecord.of(1, [1.0, 0.0, 0.0], {"tag": "x", "n": 1, "m": 0})])


def test_a_where_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ValueError, match="not a mapping"):
        check_where([("tag", "x")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a str"):
        check_where({1: "x"})  # type: ignore[dict-item]


@pytest.mark.parametrize(("value", "condition", "want"), [
    (1, 1.0, True), (1, True, False), (True, 1, False), (True, True, True),
    (0, False, False), (None, None, True), ("1", 1, False), ([1, 2], [1.0, 2], True),
    ([True], [1], False), ({"a": 1}, {"a": 1.0}, True),
    (2, {"$in": [1, 2.0]}, True), (True, {"$in": [1]}, False),
    (2, {"$gt": 1, "$lte": 2}, True), (2, {"$gt": 2}, False), (True, {"$gte": 0}, False),
    ("b", {"$gt": 0}, False), (2.5, {"$gte": 2.5, "$lt": 3}, True),
    (1, {"$ne": 2}, True), (1, {"$ne": 1.0}, False), (1, {"$eq": True}, False),
    ({"$x": 1}, {"$eq": {"$x": 1}}, True),
])
def test_conditions_compare_as_json_values(value: Any, condition: Any, want: bool) -> None:
    where = {"k": condition}
    check_where(where)
    assert matches({"k": value}, where) is want


def test_an_absent_key_never_matches() -> None:
    for condition in (None, {"$ne": 1}, {"$in": [None]}, {"$lt": 10}):
        assert not matches({"other": 1}, {"k": condition})
    assert matches({}, None) and matches({}, {})
