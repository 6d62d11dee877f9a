"""The vector oracle (``harness.vector_oracle``): tie-aware exact checks, the checks every answer
owes, recall@k counting, the recall tally's verdicts with their interval, and the recall row
(``scenarios.procedures_recall``) on stores that keep and break their promise."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from crashgate.backends import Env, Hit, Recall, VectorRecord, resolve
from crashgate.harness.certify import probe_declaration
from crashgate.harness.vector_oracle import (
    RecallTally,
    check_approximate,
    check_exact,
    expected,
)
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.scenarios.procedures_recall import recall
from crashgate.scenarios.table import BUDGETS, RowContext

# ids 0 and 3 sit at the query (distance 0), 1 and 4 at distance 1, 2 and 5 at distance 2
RECORDS = [VectorRecord.of(i, [float(i % 3), 0.0], {"n": i, "tag": "xy"[i % 2]})
           for i in range(6)]
Q = [0.0, 0.0]


def hit(i: int, distance: float | None = None, metadata: dict[str, object] | None = None
        ) -> Hit:
    return Hit(i, float(i % 3) if distance is None else distance,
               {"n": i, "tag": "xy"[i % 2]} if metadata is None else metadata)


def test_expected_is_ordered_by_distance_then_id() -> None:
    assert [(h.id, h.distance) for h in expected(RECORDS, Q, 3, "l2")] == [
        (0, 0.0), (3, 0.0), (1, 1.0)]
    assert [h.id for h in expected(RECORDS, Q, 10, "l2", {"tag": "y"})] == [3, 1, 5]


def test_another_id_at_the_same_distance_passes() -> None:
    # the true top 3 is 0, 3, 1; id 4 is tied with 1 at the k-th distance
    assert check_exact([hit(0), hit(3), hit(1)], RECORDS, Q, 3, "l2") is None
    assert check_exact([hit(0), hit(3), hit(4)], RECORDS, Q, 3, "l2") is None
    # a distance off by less than the tolerance is the same distance, and a store's own
    # rounding may then order the two either way
    assert check_exact([hit(0, 1e-9), hit(3), hit(4)], RECORDS, Q, 3, "l2") is None
    assert check_exact([hit(3), hit(0, 1e-9), hit(1)], RECORDS, Q, 3, "l2") is None


def test_a_missing_true_neighbour_fails_in_exact_mode() -> None:
    problem = check_exact([hit(0), hit(1), hit(4)], RECORDS, Q, 3, "l2")
    assert problem is not None and "id 3" in problem and "missing" in problem
    # approximate mode counts it instead: 1 and 4 are tied at the k-th distance, both true
    assert check_approximate([hit(0), hit(1), hit(4)], RECORDS, Q, 3, "l2") == (None, 3, 3)
    assert check_approximate([hit(0), hit(1), hit(2)], RECORDS, Q, 3, "l2") == (None, 2, 3)


def test_a_wrong_distance_fails() -> None:
    problem = check_exact([hit(0), hit(3), hit(1, 1.001)], RECORDS, Q, 3, "l2")
    assert problem is not None and "id 1 has distance 1.001" in problem
    problem, _, _ = check_approximate([hit(0), hit(3), hit(1, 0.5)], RECORDS, Q, 3, "l2")
    assert problem is not None and "exact search says 1.0" in problem


def test_a_non_matching_hit_fails() -> None:
    problem = check_exact([hit(3), hit(0)], RECORDS, Q, 2, "l2", {"tag": "y"})
    assert problem is not None and "id 0 does not match the filter" in problem
    problem, _, _ = check_approximate([hit(3), hit(0)], RECORDS, Q, 2, "l2", {"tag": "y"})
    assert problem is not None and "does not match" in problem


def test_a_dead_id_fails() -> None:
    live = [r for r in RECORDS if r.id != 3]
    problem = check_exact([hit(0), hit(3), hit(1)], live, Q, 3, "l2")
    assert problem is not None and "id 3 is not live" in problem
    problem, _, _ = check_approximate([hit(0), hit(3), hit(1)], live, Q, 3, "l2")
    assert problem is not None and "not live" in problem


@pytest.mark.parametrize(("hits", "words"), [
    ([hit(0), hit(3)], "returned 2 hits"),                         # fewer than min(k, matching)
    ([hit(0), hit(0), hit(3)], "twice"),
    ([hit(3), hit(0), hit(1)], "out of (distance, id) order"),     # a tie not ordered by id
    ([hit(0), hit(1), hit(3)], "out of (distance, id) order"),     # a nearer one after
    ([hit(0), hit(3), hit(1, metadata={"n": 1})], "carries metadata"),
])
def test_what_every_answer_owes(hits: list[Hit], words: str) -> None:
    for problem in (check_exact(hits, RECORDS, Q, 3, "l2"),
                    check_approximate(hits, RECORDS, Q, 3, "l2")[0]):
        assert problem is not None and words in problem


def test_k_beyond_the_matching_count_wants_every_match() -> None:
    hits = [hit(3), hit(1), hit(5)]
    assert check_exact(hits, RECORDS, Q, 50, "l2", {"tag": "y"}) is None
    assert check_exact(hits[:2], RECORDS, Q, 50, "l2", {"tag": "y"}) is not None
    assert check_exact([], RECORDS, Q, 5, "l2", {"tag": "z"}) is None
    assert check_approximate([], RECORDS, Q, 5, "l2", {"tag": "z"}) == (None, 0, 0)


def test_a_bad_filter_is_refused_by_the_oracle_too() -> None:
    with pytest.raises(ValueError, match="tag"):
        check_exact([], RECORDS, Q, 3, "l2", {"tag": {"$in": "y"}})


def test_the_tally_passes_fails_and_is_unknown_with_its_interval() -> None:
    promise = Recall(k=10, at_least=0.95)
    none = RecallTally()
    assert none.interval() is None
    status, text = none.verdict(promise)
    assert status is Verdict.UNKNOWN and "no neighbour slot" in text

    good = RecallTally()
    for _ in range(100):
        good.add(10, 10)
    low, high = good.interval() or (0.0, 0.0)
    assert 0.95 < low < high <= 1.0
    assert good.verdict(promise)[0] is Verdict.PASS

    bad = RecallTally()
    for _ in range(100):
        bad.add(8, 10)
    assert bad.recall == pytest.approx(0.8)
    status, text = bad.verdict(promise)
    assert status is Verdict.FAIL and "0.8000" in text

    # 0.95 exactly on a few slots: the interval straddles the promise
    close = RecallTally()
    close.add(19, 20)
    assert close.verdict(promise)[0] is Verdict.UNKNOWN
    with pytest.raises(ValueError, match="found=3, possible=2"):
        close.add(3, 2)


def test_a_recall_promise_checks_its_arguments() -> None:
    assert str(Recall()) == "recall@10 >= 0.95"
    with pytest.raises(ValueError, match="k must be"):
        Recall(k=0)
    with pytest.raises(ValueError, match="at_least"):
        Recall(at_least=1.5)


# -- the recall row, on stores that break their promise --------------------------------------


class _Wrapped:
    """The memory store, with another query and declaration (see the two factories)."""

    def __init__(self, path: str, env: Env, recall: Recall | None) -> None:
        self._inner = resolve("memory").open(path, env)
        self.declaration = replace(self._inner.declaration, recall=recall)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Lossy(_Wrapped):
    """Promises recall@10 >= 0.95, returns 7 of the true 10 and 3 farther ones."""

    def query(self, vector: Any, k: int, where: Any = None) -> list[Hit]:
        hits: list[Hit] = self._inner.query(vector, k + 5, where)
        return hits[: k - 3] + hits[k + 2:] if len(hits) == k + 5 else hits[:k]


class Unfiltered(_Wrapped):
    """Promises exact search, ignores a range filter."""

    def query(self, vector: Any, k: int, where: Any = None) -> list[Hit]:
        if where and isinstance(where.get("rank"), dict):
            where = None
        got: list[Hit] = self._inner.query(vector, k, where)
        return got


def open_lossy(path: str, env: Env, **options: str) -> Lossy:
    return Lossy(path, env, Recall(10, 0.95))


def open_unfiltered(path: str, env: Env, **options: str) -> Unfiltered:
    return Unfiltered(path, env, None)


def _recall_row(spec: str, tmp_path: Path) -> Evidence:
    backend = resolve(spec)
    return recall(RowContext(backend, probe_declaration(backend), BUDGETS["quick"], 7, tmp_path))


def test_the_recall_row_fails_a_store_short_of_its_promise(tmp_path: Path) -> None:
    ev = _recall_row("test_vector_oracle:open_lossy", tmp_path)
    assert ev.verdict is Verdict.FAIL, ev.summary
    assert "below the promised recall@10 >= 0.95" in ev.summary
    assert ev.measured["recall_high"] < 0.95
    assert ev.measured["filtered_queries"] > 0


def test_the_recall_row_fails_an_exact_store_naming_the_query(tmp_path: Path) -> None:
    ev = _recall_row("test_vector_oracle:open_unfiltered", tmp_path)
    assert ev.verdict is Verdict.FAIL, ev.summary
    assert "'rank'" in ev.summary and "does not match the filter" in ev.summary
    assert ev.reproduce is not None and ev.replay is not None
    again = ev.replay()   # the one failing query, alone
    assert again.verdict is Verdict.FAIL and again.measured["queries"] == 1


@pytest.mark.parametrize("spec", ["memory", "rvf"])
def test_the_recall_row_passes_exact_stores(spec: str, tmp_path: Path) -> None:
    ev = _recall_row(spec, tmp_path)
    assert ev.verdict is Verdict.PASS, ev.summary
    assert ev.measured["found"] == ev.measured["neighbour_slots"] > 0


def test_the_recall_row_is_na_for_a_store_without_vectors(tmp_path: Path) -> None:
    assert _recall_row("json", tmp_path).verdict is Verdict.NA
