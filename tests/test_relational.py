"""ADR-072's relational operations (``Relational``) on the memory, sqlite and rvf stores and on
the dual-write stage adapters: round trips against a dict model, kept apart from key-value data,
atomic updates, exact copies (``q_value_put``, ``q_value_delete``) and listings, bad input,
SQLite's schema migration and damaged rows, RVF's reserved namespace, commits and derive."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crashgate.backends import (
    Capability,
    CorruptStore,
    Env,
    QValue,
    Relational,
    SimulatedCrash,
    os_env,
    resolve,
)
from crashgate.backends.relational import MAX_UPDATES, next_update_count
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference.rvf import FAILPOINTS, open_rvf
from crashgate.reference.rvf.relational import RESERVED_PREFIX
from crashgate.reference.sqlite_store import open_sqlite, record_sum

# the stage adapters whose writes reach both stores (stage 2: SQLite first; 3: RVF first)
STORES = ["memory", "sqlite", "sqlite?journal_mode=DELETE", "rvf", "stage2", "stage3"]
STATES = ["s", "s2", 's",', "ünï"]
ACTIONS = ["a", "b", "a/b", '"']
PLAN_IDS = ["p", "plan/2", "ünï"]
# kv keys that look like relational ids and records: none of them may cross over
KEYS = ["k", "s", "p", "q/", '["s","a"]', "goap/p", "\x00", "\x00crashgate"]


@dataclass
class Model:
    kv: dict[str, bytes] = field(default_factory=dict)
    q: dict[tuple[str, str], QValue] = field(default_factory=dict)
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)

    def update(self, state: str, action: str, value: float) -> QValue:
        updates = next_update_count(state, action, self.q.get((state, action)))
        self.q[state, action] = QValue(value + 0.0, updates)
        return self.q[state, action]

    def put(self, state: str, action: str, q: QValue) -> None:
        self.q[state, action] = QValue(q.value + 0.0, q.updates)

    def check(self, store: Any) -> None:
        assert store.scan("") == sorted(self.kv.items())
        assert store.relational_states() == sorted({s for s, _ in self.q})
        assert store.goap_ids() == sorted(self.plans)
        for s in STATES:
            assert store.q_values(s) == {a: q for (t, a), q in sorted(self.q.items()) if t == s}
            for a in ACTIONS:
                assert store.q_value_get(s, a) == self.q.get((s, a))
        for p in PLAN_IDS:
            assert store.goap_retrieve(p) == self.plans.get(p)


def open_sim(spec: str, disk: SimDisk) -> Any:
    return resolve(spec).open("/data/store", sim_env(disk))


@pytest.fixture(params=STORES)
def spec(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_declared_and_probed(spec: str) -> None:
    store = open_sim(spec, SimDisk(DiskImage.empty("/data")))
    assert store.declaration.has(Capability.RELATIONAL) and isinstance(store, Relational)
    store.close()


def test_round_trips_counts_and_reopen(spec: str) -> None:
    disk, m = SimDisk(DiskImage.empty("/data")), Model()
    store = open_sim(spec, disk)
    assert store.q_value_get("s", "a") is None and store.q_values("s") == {}
    for state, action, value in [("s", "a", 1.5), ("s", "a", -2), ("s", "b", 0.25),
                                 ('s",', "a", 7.0), ("ünï", '"', 1e300), ("s", "a", 3.0)]:
        assert store.q_value_update(state, action, value) == m.update(state, action, value)
    assert store.q_value_get("s", "a") == QValue(3.0, 3)
    m.plans = {"p": {"goal": "eat", "steps": [{"do": "walk", "cost": 1.5}], "done": False},
               "ünï": {}}
    for pid, plan in m.plans.items():
        store.goap_store(pid, plan)
    store.goap_store("plan/2", {"x": (1, 2)})   # replaced next, and a tuple comes back a list
    assert store.goap_retrieve("plan/2") == {"x": [1, 2]}
    store.goap_store("plan/2", {"y": None})
    m.plans["plan/2"] = {"y": None}
    store.goap_delete("ünï")
    store.goap_delete("never")
    del m.plans["ünï"]
    m.check(store)
    store.close()
    store = open_sim(spec, disk)
    m.check(store)
    store.close()


def test_put_and_delete_write_exactly_what_they_are_given(spec: str) -> None:
    disk, m = SimDisk(DiskImage.empty("/data")), Model()
    store = open_sim(spec, disk)
    assert store.relational_states() == [] and store.goap_ids() == []
    store.q_value_update("s", "a", 1.0)
    for state, action, q in [("s", "a", QValue(2.5, 7)), ("ünï", '"', QValue(-1e300, 1)),
                             ('s",', "b", QValue(0.0, MAX_UPDATES)), ("s2", "a", QValue(1, 3)),
                             ("s", "a/b", QValue(-0.0, 2))]:
        store.q_value_put(state, action, q)
        m.put(state, action, q)
    assert store.q_value_get("s", "a") == QValue(2.5, 7)   # the count as given, not 1 + 1
    assert math.copysign(1.0, store.q_value_get("s", "a/b").value) == 1.0   # -0.0 as 0.0
    assert store.q_value_update("s", "a", 4.0) == m.update("s", "a", 4.0) == QValue(4.0, 8)
    store.q_value_put("s", "a", QValue(4.0, 3))   # a copy may set a count back: exact, not max
    m.put("s", "a", QValue(4.0, 3))
    store.q_value_delete("s2", "a")
    store.q_value_delete("s2", "a")
    store.q_value_delete("never", "a")
    del m.q["s2", "a"]
    for pid in ("plan/2", "p", "ünï"):
        store.goap_store(pid, {"id": pid})
        m.plans[pid] = {"id": pid}
    m.check(store)
    assert store.relational_states() == ["s", 's",', "ünï"]
    assert store.goap_ids() == ["p", "plan/2", "ünï"]
    store.close()
    store = open_sim(spec, disk)
    m.check(store)
    assert store.q_value_get('s",', "b") == QValue(0.0, MAX_UPDATES)
    assert store.q_value_update("s2", "a", 1.0) == QValue(1.0, 1)   # deleted: counts from 1
    store.close()


def test_stored_plans_are_copies(spec: str) -> None:
    store = open_sim(spec, SimDisk(DiskImage.empty("/data")))
    plan: dict[str, Any] = {"steps": [1]}
    store.goap_store("p", plan)
    plan["steps"].append(2)
    got = store.goap_retrieve("p")
    assert got == {"steps": [1]}
    got["steps"].append(3)
    assert store.goap_retrieve("p") == {"steps": [1]}
    store.close()


def test_kv_and_relational_never_meet(spec: str) -> None:
    store, m = open_sim(spec, SimDisk(DiskImage.empty("/data"))), Model()
    m.update("s", "a", 1.0)
    store.q_value_update("s", "a", 1.0)
    store.goap_store("p", {"k": 1})
    m.plans["p"] = {"k": 1}
    for key in KEYS:
        store.put(key, b"v")
    m.kv = dict.fromkeys(KEYS, b"v")
    store.write_batch({"goap/p": b"w"}, ["s", "p"])
    m.kv.update({"goap/p": b"w"})
    del m.kv["s"], m.kv["p"]
    store.delete("q/")
    del m.kv["q/"]
    assert store.scan("\x00") == [("\x00", b"v"), ("\x00crashgate", b"v")]
    m.check(store)
    store.close()


BAD_CALLS: list[tuple[str, tuple[Any, ...], type[Exception], str]] = [
    ("q_value_get", (1, "a"), TypeError, "state must be a str"),
    ("q_value_get", ("s", None), TypeError, "action must be a str"),
    ("q_value_update", ("", "a", 1.0), ValueError, "state is empty"),
    ("q_value_update", ("s", "\ud800", 1.0), ValueError, "action .* lone surrogate"),
    ("q_value_update", ("s", "a", True), TypeError, "value must be a real number"),
    ("q_value_update", ("s", "a", "1"), TypeError, "value must be a real number"),
    ("q_value_update", ("s", "a", float("nan")), ValueError, "value nan is not finite"),
    ("q_value_update", ("s", "a", float("-inf")), ValueError, "not finite"),
    ("q_value_update", ("s", "a", 10**400), ValueError, "too large"),
    ("q_values", (b"s",), TypeError, "state must be a str"),
    ("goap_store", ("", {}), ValueError, "plan_id is empty"),
    ("goap_store", ("p", [1]), TypeError, "plan must be a JSON object"),
    ("goap_store", ("p", {1: "a"}), TypeError, "plan key 1 .* use str keys"),
    ("goap_store", ("p", {"a": [{"b": {2: 0}}]}), TypeError, r"plan key 2 at plan\['a'\]"),
    ("goap_store", ("p", {"a": float("nan")}), ValueError, "plan is not JSON"),
    ("goap_store", ("p", {"a": b"x"}), TypeError, "bytes .* JSON cannot hold"),
    ("goap_retrieve", (7,), TypeError, "plan_id must be a str"),
    ("goap_delete", ("",), ValueError, "plan_id is empty"),
    ("q_value_put", ("s", "a", (1.0, 1)), TypeError, "q must be a QValue"),
    ("q_value_put", ("s", "a", QValue(1.0, 0)), ValueError, "q.updates is 0; .* q_value_delete"),
    ("q_value_put", ("s", "a", QValue(1.0, -2)), ValueError, "q.updates is -2"),
    ("q_value_put", ("s", "a", QValue(1.0, MAX_UPDATES + 1)), ValueError,
     f"q.updates is {MAX_UPDATES + 1}; .* 1 to {MAX_UPDATES}"),
    ("q_value_put", ("s", "a", QValue(1.0, True)), TypeError, "q.updates must be an int"),
    ("q_value_put", ("s", "a", QValue(1.0, 1.0)), TypeError, "q.updates must be an int"),
    ("q_value_put", ("s", "a", QValue(float("inf"), 1)), ValueError, "q.value inf is not finite"),
    ("q_value_put", ("s", "a", QValue("1", 1)), TypeError, "q.value must be a real number"),
    ("q_value_put", ("", "a", QValue(1.0, 1)), ValueError, "state is empty"),
    ("q_value_delete", ("s", 1), TypeError, "action must be a str"),
]


@pytest.mark.parametrize(("method", "args", "error", "match"), BAD_CALLS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_CALLS)])
def test_bad_input_is_named_and_writes_nothing(spec: str, method: str, args: tuple[Any, ...],
                                               error: type[Exception], match: str) -> None:
    store = open_sim(spec, SimDisk(DiskImage.empty("/data")))
    with pytest.raises(error, match=match):
        getattr(store, method)(*args)
    assert store.q_values("s") == {} and store.goap_retrieve("p") is None
    store.close()


def _hammer(update: Callable[[int], Any], threads: int, each: int) -> int:
    """Run ``update(i)`` ``each`` times in each thread ``i`` of ``threads``; how many were
    acknowledged (an update refused as busy is retried, and not counted until it returns).
    A thread that dies of anything else fails the test."""
    done = [0] * threads
    died: list[BaseException] = []

    def work(i: int) -> None:
        try:
            while done[i] < each:
                try:
                    update(i)
                except apsw.BusyError:   # another connection holds the write lock
                    continue
                done[i] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            died.append(exc)
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not died, died
    return sum(done)


def test_concurrent_updates_lose_none(spec: str, tmp_path: Path) -> None:
    store = resolve(spec).open(str(tmp_path / "store"), os_env())
    acked = _hammer(lambda _: store.q_value_update("s", "a", 1.0), threads=4, each=25)
    assert store.q_value_get("s", "a") == QValue(1.0, acked) and acked == 100
    store.close()


def test_sqlite_updates_from_two_connections_lose_none(tmp_path: Path) -> None:
    one, two = (open_sqlite(str(tmp_path / "db"), os_env()) for _ in range(2))
    acked = _hammer(lambda i: (one, two)[i].q_value_update("s", "a", 2.0), threads=2, each=20)
    assert acked == 40
    assert one.q_value_get("s", "a") == two.q_value_get("s", "a") == QValue(2.0, acked)
    one.close()
    two.close()


# -- SQLite: schema 3, migration, damage ------------------------------------------------------

_V2_SCHEMA = """
CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, sum BLOB NOT NULL);
CREATE TABLE vectors (
    id INTEGER PRIMARY KEY, vector BLOB NOT NULL, metadata TEXT NOT NULL, sum BLOB NOT NULL);
PRAGMA user_version = 2;
"""


def _user_version(path: Path) -> int:
    db = apsw.Connection(str(path))
    try:
        return int(db.execute("PRAGMA user_version").fetchall()[0][0])  # type: ignore[arg-type]
    finally:
        db.close()


def test_a_version_2_file_migrates_to_3(tmp_path: Path) -> None:
    path = tmp_path / "db"
    db = apsw.Connection(str(path))
    db.execute(_V2_SCHEMA)
    db.execute("INSERT INTO kv VALUES ('k', x'01', ?)", (record_sum(b"k", b"\x01"),))
    db.close()
    store = open_sqlite(str(path), os_env(), journal_mode="DELETE")
    assert _user_version(path) == 3
    assert store.scan() == [("k", b"\x01")] and store.q_values("s") == {}
    assert store.q_value_update("s", "a", 1.0) == QValue(1.0, 1)
    store.goap_store("p", {"a": 1})
    store.close()
    store = open_sqlite(str(path), os_env(), journal_mode="DELETE")
    assert store.q_value_get("s", "a") == QValue(1.0, 1) and store.goap_retrieve("p") == {"a": 1}
    store.close()


def test_a_version_3_file_set_back_to_2_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = open_sqlite(str(path), os_env())
    store.q_value_update("s", "a", 4.0)
    store.goap_store("p", {"a": 1})
    store.close()
    db = apsw.Connection(str(path))
    db.execute("PRAGMA user_version = 2")   # as the version-skew fault makes an older file
    db.close()
    store = open_sqlite(str(path), os_env())
    assert store.q_value_get("s", "a") == QValue(4.0, 1) and store.goap_retrieve("p") == {"a": 1}
    store.close()
    assert _user_version(path) == 3


def _damaged(tmp_path: Path, sql: str) -> Any:
    path = tmp_path / "db"
    store = open_sqlite(str(path), os_env(), journal_mode="DELETE")
    store.q_value_update("s", "a", 1.0)
    store.goap_store("p", {"n": 1})
    store.close()
    db = apsw.Connection(str(path))
    db.execute(sql)
    db.close()
    return open_sqlite(str(path), os_env(), journal_mode="DELETE")


@pytest.mark.parametrize(("sql", "match"), [
    ("UPDATE q_values SET value = 1.5", "does not match its checksum"),
    ("UPDATE q_values SET updates = 2", "does not match its checksum"),
    ("UPDATE q_values SET updates = 'x'", "holds str where int was written"),
    ("UPDATE q_values SET action = CAST(x'ff' AS TEXT)", "does not decode"),
])
def test_a_damaged_q_value_row_is_corrupt(tmp_path: Path, sql: str, match: str) -> None:
    store = _damaged(tmp_path, sql)
    with pytest.raises(CorruptStore, match=match):
        store.q_values("s")
    if "action" not in sql:
        with pytest.raises(CorruptStore, match=match):
            store.q_value_get("s", "a")
        with pytest.raises(CorruptStore, match=match):   # never counted on from damage
            store.q_value_update("s", "a", 9.0)
    store.close()


def test_a_damaged_plan_row_is_corrupt(tmp_path: Path) -> None:
    store = _damaged(tmp_path, "UPDATE goap_plans SET plan = replace(plan, '1', '2')")
    with pytest.raises(CorruptStore, match="GOAP plan 'p' does not match its checksum"):
        store.goap_retrieve("p")
    store.close()


@pytest.mark.parametrize(("sql", "listing"), [
    ("UPDATE q_values SET state = CAST(x'ff' AS TEXT)", "relational_states"),
    ("UPDATE q_values SET state = x'73'", "relational_states"),   # a BLOB where TEXT was
    ("UPDATE goap_plans SET plan_id = CAST(x'ff' AS TEXT)", "goap_ids"),
])
def test_a_damaged_name_fails_its_listing(tmp_path: Path, sql: str, listing: str) -> None:
    store = _damaged(tmp_path, sql)
    with pytest.raises(CorruptStore, match="does not decode|holds blob where text"):
        getattr(store, listing)()
    store.close()


def test_a_damaged_relational_schema_is_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CorruptStore, match="table goap_plans has the columns"):
        _damaged(tmp_path, "DROP TABLE goap_plans; CREATE TABLE goap_plans "
                           "(plan_id TEXT PRIMARY KEY, plan TEXT NOT NULL)")


# -- RVF: the reserved namespace, one commit per update, derive and compact --------------------

def test_rvf_refuses_reserved_keys(tmp_path: Path) -> None:
    store = open_rvf(str(tmp_path / "f.rvf"), os_env())
    store.q_value_update("s", "a", 1.0)
    key = RESERVED_PREFIX + 'q/["s","a"]'
    for call in (lambda: store.put(key, b"x"), lambda: store.get(key),
                 lambda: store.delete(key), lambda: store.write_batch({key: b"x"}),
                 lambda: store.write_batch({}, [key]), lambda: store.commit(puts={key: b"x"})):
        with pytest.raises(ValueError, match="namespace this store keeps for Q-values"):
            call()
    assert store.q_value_get("s", "a") == QValue(1.0, 1) and store.scan() == []
    assert store.status()["keys"] == 0 and store.status()["relational_records"] == 1
    store.close()


def test_rvf_update_is_one_commit_on_the_put_path(tmp_path: Path) -> None:
    fps = ArmedFailpoints()
    store = open_rvf(str(tmp_path / "f.rvf"), Env(failpoints=fps), lock="false")
    store.put("k", b"v")
    put_trace, epoch, witnesses = list(fps.trace), store.epoch, store.status()["witness_entries"]
    fps.trace.clear()
    store.q_value_update("s", "a", 1.0)
    assert fps.trace == put_trace == list(FAILPOINTS[:3])
    assert store.epoch == epoch + 1 and store.status()["witness_entries"] == witnesses + 1
    store.close()


def test_rvf_put_and_delete_are_one_commit_each_on_the_put_path(tmp_path: Path) -> None:
    fps = ArmedFailpoints()
    store = open_rvf(str(tmp_path / "f.rvf"), Env(failpoints=fps), lock="false")
    store.put("k", b"v")
    put_trace = list(fps.trace)
    for write in (lambda: store.q_value_put("s", "a", QValue(1.0, 5)),
                  lambda: store.q_value_delete("s", "a")):
        fps.trace.clear()
        epoch, witnesses = store.epoch, store.status()["witness_entries"]
        write()
        assert fps.trace == put_trace
        assert store.epoch == epoch + 1 and store.status()["witness_entries"] == witnesses + 1
    fps.trace.clear()
    store.q_value_delete("s", "a")   # nothing to delete: no commit
    assert fps.trace == [] and store.status()["relational_records"] == 0
    store.close()


@pytest.mark.parametrize("failpoint", FAILPOINTS[:3])
def test_rvf_update_crashed_at_a_failpoint_is_all_or_nothing(tmp_path: Path,
                                                             failpoint: str) -> None:
    path = str(tmp_path / "f.rvf")
    fps = ArmedFailpoints()
    store = open_rvf(path, Env(failpoints=fps), lock="false")
    store.q_value_update("s", "a", 1.0)
    fps.arm(failpoint)
    with pytest.raises(SimulatedCrash):
        store.q_value_update("s", "a", 2.0)
    with open_rvf(path, os_env(), lock="false") as again:
        visible = failpoint == "rvf.after-manifest-write"   # its bytes are in the page cache
        assert again.q_value_get("s", "a") == (QValue(2.0, 2) if visible else QValue(1.0, 1))


def test_rvf_derive_and_compact_carry_relational_records(tmp_path: Path) -> None:
    parent = open_rvf(str(tmp_path / "parent.rvf"), os_env())
    parent.put("k", b"v")
    parent.q_value_update("s", "a", 1.0)
    parent.goap_store("p", {"n": 1})
    child = parent.derive(str(tmp_path / "child.rvf"))
    assert child.q_value_get("s", "a") == QValue(1.0, 1) and child.goap_retrieve("p") == {"n": 1}
    assert child.q_value_update("s", "a", 5.0) == QValue(5.0, 2)
    child.q_value_update("s", "b", 6.0)
    child.goap_store("p", {"n": 2})
    child.goap_store("p2", {})
    child.put("k2", b"w")
    parent.compact()
    parent.close()
    child.close()
    with open_rvf(str(tmp_path / "parent.rvf"), os_env()) as p:
        assert p.q_values("s") == {"a": QValue(1.0, 1)} and p.goap_retrieve("p") == {"n": 1}
        assert p.goap_retrieve("p2") is None and p.scan() == [("k", b"v")]
    with open_rvf(str(tmp_path / "child.rvf"), os_env()) as c:
        assert c.q_values("s") == {"a": QValue(5.0, 2), "b": QValue(6.0, 1)}
        assert c.goap_retrieve("p") == {"n": 2} and c.goap_retrieve("p2") == {}
        assert c.scan() == [("k", b"v"), ("k2", b"w")] and c.verify() == []


# -- the model-based test ---------------------------------------------------------------------

OPS = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(max_size=8)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS)),
    st.tuples(st.just("update"), st.sampled_from(STATES), st.sampled_from(ACTIONS),
              st.floats(allow_nan=False, allow_infinity=False)),
    st.tuples(st.just("store"), st.sampled_from(PLAN_IDS),
              st.dictionaries(st.sampled_from(["a", "b", "ü"]),
                              st.integers(-3, 3) | st.text(max_size=3) | st.none(), max_size=3)),
    st.tuples(st.just("drop"), st.sampled_from(PLAN_IDS)),
    st.tuples(st.just("qput"), st.sampled_from(STATES), st.sampled_from(ACTIONS),
              st.builds(QValue, st.floats(allow_nan=False, allow_infinity=False),
                        st.integers(1, MAX_UPDATES))),
    st.tuples(st.just("qdelete"), st.sampled_from(STATES), st.sampled_from(ACTIONS)),
    st.just(("reopen",)),
)


@pytest.mark.parametrize("store_spec", STORES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, max_size=25))
def test_random_ops_match_the_model(store_spec: str, ops: list[tuple[Any, ...]]) -> None:
    disk, m = SimDisk(DiskImage.empty("/data")), Model()
    store = open_sim(store_spec, disk)
    try:
        for op in ops:
            if op[0] == "put":
                store.put(op[1], op[2])
                m.kv[op[1]] = op[2]
            elif op[0] == "delete":
                store.delete(op[1])
                m.kv.pop(op[1], None)
            elif op[0] == "update":
                try:
                    want = m.update(*op[1:])
                except ValueError:   # a count at MAX_UPDATES: refused, nothing written
                    with pytest.raises(ValueError, match="the most a store counts"):
                        store.q_value_update(op[1], op[2], op[3])
                else:
                    assert store.q_value_update(op[1], op[2], op[3]) == want
            elif op[0] == "store":
                store.goap_store(op[1], op[2])
                m.plans[op[1]] = dict(op[2])
            elif op[0] == "drop":
                store.goap_delete(op[1])
                m.plans.pop(op[1], None)
            elif op[0] == "qput":
                store.q_value_put(*op[1:])
                m.put(*op[1:])
            elif op[0] == "qdelete":
                store.q_value_delete(*op[1:])
                m.q.pop((op[1], op[2]), None)
            else:
                store.close()
                store = open_sim(store_spec, disk)
            m.check(store)
    finally:
        store.close()


@pytest.mark.parametrize("store_spec", STORES)
def test_an_update_past_the_largest_count_is_refused_and_writes_nothing(store_spec: str) -> None:
    # found by test_random_ops_match_the_model: a Q-value put at MAX_UPDATES, then updated,
    # overflowed in the SQLite store (OverflowError packing its sum) and the RVF store
    store = open_sim(store_spec, SimDisk(DiskImage.empty("/data")))
    try:
        store.q_value_put("s", "a", QValue(1.5, MAX_UPDATES))
        with pytest.raises(ValueError, match=f"has had {MAX_UPDATES} updates"):
            store.q_value_update("s", "a", 2.0)
        assert store.q_value_get("s", "a") == QValue(1.5, MAX_UPDATES)
        assert store.q_value_update("s", "b", 2.0) == QValue(2.0, 1)   # others still count
    finally:
        store.close()

