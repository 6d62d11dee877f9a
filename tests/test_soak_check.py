"""The soak's checker on hand-built histories: each rule on its minimal counter-example, the
histories it must accept (overlaps, info writes either way, late arrival), a Hypothesis model
of a linearizable register, and a 300k-op size check that prints its time."""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from crashgate.harness.soak.check import Checker, Violation
from crashgate.harness.soak.record import SoakOp

_index = itertools.count()


def op(name: str, start: float, end: float, outcome: str = "ok", *, key: str = "k",
       value: Any = None, result: Any = None, args: dict[str, Any] | None = None,
       run: int = 0) -> SoakOp:
    if args is None:
        args = {"key": key}
    return SoakOp(index=next(_index), process="writer#1", agent=0, op=name, args=args,
                  start=start, end=end, outcome=outcome, value=value, result=result,
                  run=run)


def put(tok: str, start: float, end: float, outcome: str = "ok", key: str = "k") -> SoakOp:
    return op("put", start, end, outcome, key=key, value=tok)


def delete(start: float, end: float, outcome: str = "ok", key: str = "k") -> SoakOp:
    return op("delete", start, end, outcome, key=key)


def get(result: str | None, start: float, end: float, key: str = "k") -> SoakOp:
    return op("get", start, end, key=key, result=result)


def qupd(value: float, count: int | None, start: float, end: float,
         outcome: str = "ok") -> SoakOp:
    result = None if count is None else {"value": value, "updates": count}
    return op("q_update", start, end, outcome, args={"state": "s1", "action": "a2"},
              value=value, result=result)


def qget(value: float | None, count: int, start: float, end: float) -> SoakOp:
    result = None if value is None else {"value": value, "updates": count}
    return op("q_get", start, end, args={"state": "s1", "action": "a2"}, result=result)


def check(*ops: SoakOp, settle: float = 60.0) -> list[Violation]:
    checker = Checker(settle=settle)
    for o in ops:
        checker.add(o)
    return checker.finish()


def only(violations: list[Violation], kind: str) -> Violation:
    assert [v.kind for v in violations] == [kind], [v.to_json() for v in violations]
    return violations[0]


# -- histories that must pass -------------------------------------------------------------
def test_a_correct_concurrent_history_passes() -> None:
    a, b, c = put("a", 0, 2), put("b", 1, 3), delete(2.5, 4)
    reads = [get("a", 1.5, 1.6), get("b", 1.7, 1.8),     # both overlap a and b: either
             get("a", 2.1, 2.2),                         # b may linearize before a
             get(None, 3.5, 5), get("b", 3.1, 3.2),      # delete in flight: either
             get(None, 4.5, 5)]
    checker = Checker()
    for o in [a, b, c, *reads]:
        checker.add(o)
    assert checker.finish() == []
    assert checker.reads_checked == 6 and checker.writes_seen == 3


@pytest.mark.parametrize("seen", ["old", "new"])
def test_an_info_write_may_or_may_not_be_visible(seen: str) -> None:
    # the writer was killed during the second put: known lost at 3, so it happened or not
    history = [put("old", 0, 1), put("new", 2, 3, "info"), get(seen, 4, 5), get(seen, 6, 7)]
    assert check(*history) == []


def test_a_failed_read_carries_nothing() -> None:
    assert check(put("a", 0, 1), op("get", 2, 3, "fail", result="zzz")) == []


def test_scan_absence_and_listing_pass_when_consistent() -> None:
    scan_ok = op("scan", 3, 4, args={"prefix": "k"}, result={"k1": "a"})
    assert check(put("a", 0, 1, key="k1"), put("b", 0, 1, key="k2"), delete(1.5, 2, key="k2"),
                 put("c", 0, 1, key="other"), scan_ok) == []


def test_late_arrival_within_the_margin_is_judged_with_it() -> None:
    w1, w2, r = put("a", 0, 1), put("b", 2, 3), get("b", 2.5, 2.9)
    checker = Checker(settle=10)
    checker.add(w1)
    checker.add(r)                                  # the read arrives before the write it saw
    assert checker.check_until(2.95) == []          # "b" unknown yet: held, not reported
    checker.add(w2)
    stale = get("a", 4, 5)
    checker.add(stale)
    found = checker.check_until(6)                  # judged with w2 present: stale
    assert [(v.kind, v.read) for v in found] == [("stale", stale)]
    assert checker.check_until(20) == []            # the held read of "b" is cleared by w2
    assert checker.finish() == [] and checker.reads_checked == 2


def test_a_read_of_a_value_whose_write_never_arrives_is_reported_after_settle() -> None:
    checker = Checker(settle=5)
    checker.add(get("ghost", 1, 2))
    assert checker.check_until(3) == []
    found = checker.check_until(8)
    assert only(found, "never-written").read.result == "ghost"


def test_an_absence_is_held_until_a_delete_in_flight_can_arrive() -> None:
    checker = Checker(settle=10)
    for o in (put("a", 0, 1), get(None, 4, 5)):
        checker.add(o)
    assert checker.check_until(6) == []             # a delete begun before 5 may still land
    checker.add(delete(3, 12))                      # ... and it does, ending at 12
    assert checker.check_until(30) == [] and checker.finish() == []
    lone = Checker(settle=10)
    for o in (put("a", 0, 1), get(None, 4, 5)):
        lone.add(o)
    assert lone.check_until(6) == []
    assert only(lone.check_until(16), "stale").writes[0].value == "a"


# -- each rule's minimal counter-example ----------------------------------------------------
def test_never_written() -> None:
    v = only(check(put("a", 0, 1), get("zz", 2, 3)), "never-written")
    assert v.read.result == "zz" and v.writes == () and "never written" in v.message
    assert v.register == "key 'k'"


def test_failed_write_visible() -> None:
    w = put("a", 0, 1, "fail")
    v = only(check(w, get("a", 2, 3)), "failed-write-visible")
    assert v.writes == (w,) and "failed is visible" in v.message


def test_value_read_before_its_write_began() -> None:
    w = put("a", 5, 6)
    r = get("a", 1, 2)
    v = only(check(r, w), "read-before-write")
    assert v.read == r and v.writes == (w,)


def test_stale_value() -> None:
    a, b, r = put("a", 0, 1), put("b", 2, 3), get("a", 4, 5)
    v = only(check(a, b, r), "stale")
    assert v.read == r and v.writes == (a, b)
    doc = v.to_json()
    assert doc["read"] == r.describe() and doc["writes"] == [a.describe(), b.describe()]


def test_stale_absence_after_acknowledged_put() -> None:
    d, p, r = delete(0, 1), put("b", 2, 3), get(None, 4, 5)
    v = only(check(d, p, r), "stale")
    assert v.writes == (d, p)
    assert only(check(put("b", 2, 3), r), "stale").writes[-1].value == "b"


def test_stale_value_after_acknowledged_delete() -> None:
    a, d, r = put("a", 0, 1), delete(2, 3), get("a", 4, 5)
    assert only(check(a, d, r), "stale").writes == (a, d)


def test_scan_absence_is_a_read_of_none() -> None:
    p = put("a", 0, 1, key="k1")
    scan = op("scan", 2, 3, args={"prefix": "k"}, result={})
    v = only(check(p, scan), "stale")
    assert v.register == "key 'k1'" and v.read == scan


def test_registers_are_separate_per_run() -> None:
    p = op("put", 0, 1, key="k", value="a", run=1)
    assert check(p, get(None, 2, 3)) == []          # run 0's key was never written


def test_vectors_fetch_and_query() -> None:
    up = op("upsert", 0, 1, args={"ids": [4, 5]}, value={"4": "x", "5": "y"})
    rm = op("remove", 2, 3, args={"ids": [5]})
    fine = [op("fetch", 4, 5, args={"ids": [4, 5]}, result={"4": "x", "5": None}),
            op("query", 4, 5, args={"k": 3}, result={"4": "x"})]     # 5 absent: not a read
    assert check(up, rm, *fine) == []
    bad = op("query", 4, 5, args={"k": 3}, result={"5": "y"})
    v = only(check(up, rm, bad), "stale")
    assert v.register == "vector 5" and v.writes == (up, rm)


def test_plans() -> None:
    s, d = (op("goap_store", 0, 1, args={"plan": "p3"}, value="t1"),
            op("goap_delete", 2, 3, args={"plan": "p3"}))
    r = op("goap_get", 4, 5, args={"plan": "p3"}, result="t1")
    assert only(check(s, d, r), "stale").register == "plan 'p3'"


def test_lost_update_on_read() -> None:
    u1, u2 = qupd(1.0, 1, 0, 1), qupd(2.0, 2, 2, 3)
    r = qget(1.0, 1, 4, 5)
    v = only(check(u1, u2, r), "lost-update")
    assert v.read == r and v.writes == (u1, u2) and v.register == "q-value ('s1','a2')"
    assert "2 updates were acknowledged" in v.message and "lost" in v.message


def test_lost_update_in_an_updates_own_result() -> None:
    # the second update began after the first was acknowledged, yet returned count 1
    u1, u2 = qupd(1.0, 1, 0, 1), qupd(2.0, 1, 2, 3)
    kinds = sorted(v.kind for v in check(u1, u2))
    assert kinds == ["duplicate-count", "lost-update"]


def test_duplicate_count_names_both_updates() -> None:
    u1, u2 = qupd(1.0, 1, 0, 2), qupd(2.0, 1, 1, 3)     # concurrent: no lost-update by time
    v = only(check(u1, u2), "duplicate-count")
    assert v.writes == (u1, u2) and v.read == u2 and "overwrote" in v.message


def test_overcount() -> None:
    v = only(check(qupd(1.0, 1, 0, 1), qget(1.0, 2, 2, 3)), "overcount")
    assert "more updates counted than were made" in v.message


def test_q_value_never_written_and_failed_update_visible() -> None:
    assert only(check(qupd(1.0, 1, 0, 1), qget(9.0, 1, 2, 3)), "never-written")
    u = qupd(1.0, None, 0, 1, "fail")
    v = only(check(u, qget(1.0, 0, 2, 3)), "failed-write-visible")
    assert v.writes == (u,)


def test_concurrent_q_updates_pass() -> None:
    u1, u2, u3 = qupd(1.0, 2, 0, 2), qupd(2.0, 1, 1, 3), qupd(3.0, 3, 2.5, 4, "info")
    assert check(u1, u2, u3, qget(None, 0, 0, 0.5), qget(1.0, 2, 1.5, 5),
                 qget(3.0, 3, 3.5, 5)) == []


def test_a_malformed_op_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="q_update.*record.py's table"):
        Checker().add(qupd(1.0, None, 0, 1))        # ok, yet no result
    with pytest.raises(ValueError, match="upsert"):
        Checker().add(op("upsert", 0, 1, args={"ids": [4]}, value={"5": "x"}))


def test_flooding_is_capped_and_counted() -> None:
    ops = [put("a", 0, 1), put("b", 2, 3)] + [get("a", 4 + i, 5 + i) for i in range(50)]
    checker = Checker(cap=20)
    for o in ops:
        checker.add(o)
    assert len(checker.finish()) == 1                # one per (kind, register)
    assert checker.found["stale"] == 50
    many = [o for i in range(30) for o in (put(f"a{i}", 0, 1, key=f"k{i}"),
                                            put(f"b{i}", 2, 3, key=f"k{i}"),
                                            get(f"a{i}", 4, 5, key=f"k{i}"))]
    assert len(check(*many)) == 20                   # at most cap per kind


# -- a linearizable register, generated ---------------------------------------------------
@st.composite
def linearizable(draw: st.DrawFn) -> list[SoakOp]:
    """Ops on two keys with random overlapping intervals; each takes effect at a point inside
    its interval (an info write maybe never), reads return the value at their point."""
    n = draw(st.integers(4, 40))
    rng = random.Random(draw(st.integers(0, 2**32)))
    planned: list[tuple[float | None, int, str, str, float, float, str]] = []
    for i in range(n):
        start = rng.uniform(0, 100)
        end = start + rng.choice([0.01, rng.uniform(0, 10)])
        kind = rng.choice(["put", "put", "delete", "get", "get", "scan"])
        outcome = rng.choice(["ok"] * 8 + ["info", "fail"]) if kind in ("put", "delete") else "ok"
        point: float | None = rng.uniform(start, end)
        if outcome == "info" and rng.random() < 0.5:
            point = None                            # killed before it took effect
        planned.append((point, i, kind, rng.choice(["k1", "k2"]), start, end, outcome))
    state: dict[str, str | None] = {}
    out = []
    for point, i, kind, key, start, end, outcome in sorted(
            planned, key=lambda p: float("inf") if p[0] is None else p[0]):
        happens = outcome == "ok" or (outcome == "info" and point is not None)
        if kind == "put":
            if happens:
                state[key] = f"t{i}"
            out.append(op("put", start, end, outcome, key=key, value=f"t{i}"))
        elif kind == "delete":
            if happens:
                state[key] = None
            out.append(op("delete", start, end, outcome, key=key))
        elif kind == "get":
            out.append(op("get", start, end, key=key, result=state.get(key)))
        else:
            listed = {k: v for k, v in state.items() if v is not None}
            out.append(op("scan", start, end, args={"prefix": "k"}, result=listed))
    return sorted(out, key=lambda o: o.end)


@settings(max_examples=200, deadline=None)
@given(linearizable())
def test_linearizable_histories_pass(history: list[SoakOp]) -> None:
    assert [v.to_json() for v in check(*history)] == []


@settings(max_examples=200, deadline=None)
@given(linearizable(), st.data())
def test_a_read_mutated_to_an_older_acked_value_is_stale(history: list[SoakOp],
                                                         data: st.DataObject) -> None:
    acked = [o for o in history if o.op == "put" and o.outcome == "ok"]
    # (read, older write C) pairs where an ok W' began after C ended and ended before R began
    pairs = [(r, c) for r in history if r.op == "get" for c in acked
             if c.args == r.args and c.start < r.end and any(
                 w.outcome == "ok" and w.op in ("put", "delete") and w.args == r.args
                 and w.end < r.start and w.start > c.end for w in history)]
    assume(pairs)
    read, older = data.draw(st.sampled_from(pairs))
    mutated = SoakOp(**{**read.__dict__, "result": older.value})
    violations = check(*[mutated if o is read else o for o in history])
    assert any(v.kind == "stale" and v.read == mutated and older in v.writes
               for v in violations), [v.to_json() for v in violations]


# -- size ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_300k_ops_check_in_reasonable_time() -> None:
    """A realistic mix over 48 keys, 24 Q-values, 96 vectors, sequential per agent with
    overlap across 15 agents; prints the time (no timed assertion)."""
    rng = random.Random(7)
    ops: list[SoakOp] = []
    store: dict[str, str | None] = {}
    q: dict[tuple[str, str], tuple[float, int]] = {}
    t = 0.0
    for i in range(300_000):
        t += 0.002
        start, end = t, t + rng.uniform(0.0001, 0.01)
        key = f"k{rng.randrange(48):03d}"
        r = rng.random()
        # applied at start: a later-starting op always follows an earlier one (linearizable)
        if r < 0.3:
            store[key] = f"t{i}"
            ops.append(op("put", start, end, key=key, value=f"t{i}"))
        elif r < 0.6:
            ops.append(op("get", start, end, key=key, result=store.get(key)))
        elif r < 0.62:
            listed = {k: v for k, v in store.items() if v is not None and k.startswith("k0")}
            ops.append(op("scan", start, end, args={"prefix": "k0"}, result=listed))
        elif r < 0.8:
            sa = (f"s{rng.randrange(6)}", f"a{rng.randrange(4)}")
            count = q.get(sa, (0.0, 0))[1] + 1
            q[sa] = (float(i), count)
            ops.append(op("q_update", start, end, args={"state": sa[0], "action": sa[1]},
                          value=float(i), result={"value": float(i), "updates": count}))
        else:
            sa = (f"s{rng.randrange(6)}", f"a{rng.randrange(4)}")
            got = q.get(sa)
            ops.append(op("q_get", start, end, args={"state": sa[0], "action": sa[1]},
                          result=None if got is None else {"value": got[0], "updates": got[1]}))
    ops.sort(key=lambda o: o.end)
    checker = Checker()
    began = time.perf_counter()
    for n, o in enumerate(ops):
        checker.add(o)
        if n % 1000 == 0:
            checker.check_until(o.end - 0.5)
    violations = checker.finish()
    took = time.perf_counter() - began
    print(f"\n300k ops checked in {took:.1f} s ({len(ops) / took:,.0f} ops/s): "
          f"{checker.counts()}")
    assert violations == []
    assert checker.reads_checked + checker.q_reads_checked > 100_000
