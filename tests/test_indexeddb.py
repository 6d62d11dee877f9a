"""The IndexedDB model (atomic transactions on an append-only log, refresh, connections) and the
writer lease kept in it (heartbeat, stale takeover, fencing)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from crashgate.backends import Env, LeaseExpired, LockHeld, SimulatedCrash, os_env
from crashgate.harness.clock import VirtualClock
from crashgate.reference import indexeddb
from crashgate.reference.indexeddb import IndexedDB, TransactionAborted, TransactionConflict
from crashgate.reference.lease import LEASE_STORE, Lease, read_lease


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def env(clock: VirtualClock) -> Env:
    return replace(os_env(), clock=clock)


def open_db(tmp_path, env: Env, **kw) -> IndexedDB:
    return IndexedDB(str(tmp_path / "meta.idb"), env, stores=("meta", LEASE_STORE), **kw)


def test_transactions_commit_all_or_nothing_and_persist(tmp_path, env: Env) -> None:
    db = open_db(tmp_path, env)
    with db.transaction("meta", "readwrite") as t:
        t.put("meta", "b", {"x": 1})
        t.put("meta", 2, [1, 2])
        t.put("meta", 1, "one")
        assert t.get("meta", "b") == {"x": 1}        # reads see the transaction's own writes
    with pytest.raises(RuntimeError), db.transaction("meta", "readwrite") as t:
        t.put("meta", "c", 3)
        t.delete("meta", "b")
        raise RuntimeError("the page's code failed mid-transaction")
    t2 = db.transaction("meta", "readwrite")
    t2.clear("meta")
    assert t2.items("meta") == []
    t2.abort()
    with pytest.raises(TransactionAborted):
        t2.put("meta", "d", 4)
    expected = [(1, "one"), (2, [1, 2]), ("b", {"x": 1})]   # numbers sort before strings
    assert db.items("meta") == expected
    db.close()
    again = open_db(tmp_path, env)
    assert again.items("meta") == expected
    assert again.get("meta", "c") is None


def test_values_are_copied_and_checked(tmp_path, env: Env) -> None:
    db = open_db(tmp_path, env)
    value = {"tags": ["a"]}
    with db.transaction("meta", "readwrite") as t:
        t.put("meta", "k", value)
        with pytest.raises(TypeError, match="not JSON-able"):
            t.put("meta", "bad", {1, 2})
        with pytest.raises(TypeError, match="keys are int or str"):
            t.put("meta", 1.5, "x")
        with pytest.raises(ValueError, match="not in this transaction's scope"):
            t.put(LEASE_STORE, "k", 1)
    value["tags"].append("b")
    got = db.get("meta", "k")
    got["tags"].append("c")
    assert db.get("meta", "k") == {"tags": ["a"]}
    with pytest.raises(PermissionError), db.transaction("meta") as t:
        t.put("meta", "k", 1)
    with pytest.raises(ValueError, match="do not exist"):
        db.transaction("nope")


def test_put_many_puts_in_order_or_names_the_bad_value_and_puts_none(tmp_path, env: Env) -> None:
    db = open_db(tmp_path, env)
    value = {"tags": ["a"]}
    with db.transaction("meta", "readwrite") as t:
        t.put_many("meta", [(1, value), ("k", 2), (1, {"last": True})])
        with pytest.raises(TypeError, match="value for key 'bad' is not JSON-able"):
            t.put_many("meta", [(2, "fine"), ("bad", {1, 2})])
        with pytest.raises(ValueError, match="value for key 3 is None"):
            t.put_many("meta", [(3, None)])
    value["tags"].append("b")   # copied when put
    assert db.items("meta") == [(1, {"last": True}), ("k", 2)]


def test_refresh_aborts_in_flight_and_keeps_committed(tmp_path, env: Env) -> None:
    db = open_db(tmp_path, env)
    with db.transaction("meta", "readwrite") as t:
        t.put("meta", "committed", 1)
    in_flight = db.transaction("meta", "readwrite")
    in_flight.put("meta", "lost", 2)
    db.refresh()
    assert in_flight.state == "aborted"
    with pytest.raises(TransactionAborted, match="refreshed"):
        in_flight.commit()
    assert db.items("meta") == [("committed", 1)]
    assert open_db(tmp_path, env).items("meta") == [("committed", 1)]


def test_a_crash_inside_a_transaction_writes_nothing(tmp_path, env: Env) -> None:
    db = open_db(tmp_path, env)
    with db.transaction("meta", "readwrite") as t:
        t.put("meta", "a", 1)
    with pytest.raises(SimulatedCrash), db.transaction("meta", "readwrite") as t:
        t.put("meta", "b", 2)
        raise SimulatedCrash("test")
    assert open_db(tmp_path, env).items("meta") == [("a", 1)]


def test_torn_tail_is_ignored_then_truncated_before_the_next_append(tmp_path, env: Env) -> None:
    db = open_db(tmp_path, env)
    with db.transaction("meta", "readwrite") as t:
        t.put("meta", "a", 1)
    with db.transaction("meta", "readwrite") as t:
        t.put("meta", "b", "x" * 100)
    path = tmp_path / "meta.idb"
    whole = path.read_bytes()
    db.close()
    for cut in (1, 9, 40):   # a power loss kept only part of the last frame
        path.write_bytes(whole[:-cut])
        assert open_db(tmp_path, env).items("meta") == [("a", 1)]
    path.write_bytes(whole[:-40] + b"\xff" * 40)   # ... or garbage in its place
    torn = open_db(tmp_path, env, readonly=True)
    assert torn.items("meta") == [("a", 1)]
    writer = open_db(tmp_path, env)
    with writer.transaction("meta", "readwrite") as t:
        t.put("meta", "c", 3)
    assert open_db(tmp_path, env).items("meta") == [("a", 1), ("c", 3)]
    assert len(path.read_bytes()) < len(whole)   # the torn bytes are gone, not skipped over


def test_readonly_never_creates_and_a_foreign_file_is_corrupt(tmp_path, env: Env) -> None:
    with pytest.raises(FileNotFoundError):
        open_db(tmp_path, env, readonly=True)
    assert not (tmp_path / "meta.idb").exists()
    (tmp_path / "meta.idb").write_bytes(b"[1, 2, 3]")
    with pytest.raises(indexeddb.CorruptStore):
        open_db(tmp_path, env)



@pytest.mark.parametrize("payload", [
    b'{"seq": SEQ, "ops": [], "written": [1]}',          # was an untyped AttributeError
    b'{"seq": Infinity, "ops": []}',                     # was an untyped OverflowError
    b'{"seq": SEQ, "ops": [[' + b"[" * 100_000 + b"]]}", # was an untyped RecursionError
    b'{"seq": SEQ, "ops": [5]}',
])
def test_a_checksummed_frame_of_the_wrong_shape_is_corrupt_store(tmp_path, env: Env,
                                                                 payload: bytes) -> None:
    db = open_db(tmp_path, env)
    with db.transaction("meta", "readwrite") as t:
        t.put("meta", "a", 1)
    payload = payload.replace(b"SEQ", str(db.seq + 1).encode())   # the next frame's number
    db.close()
    path = tmp_path / "meta.idb"
    path.write_bytes(path.read_bytes() + indexeddb._frame(payload))
    with pytest.raises(indexeddb.CorruptStore, match="frame is invalid"):
        open_db(tmp_path, env)


def test_connections_see_each_other_and_conflicts_abort(tmp_path, env: Env) -> None:
    a, b = open_db(tmp_path, env), open_db(tmp_path, env)
    with a.transaction("meta", "readwrite") as t:
        t.put("meta", "x", 1)
    assert b.get("meta", "x") == 1
    ta = a.transaction("meta", "readwrite")
    ta.put("meta", "x", ta.get("meta", "x") + 1)
    with b.transaction("meta", "readwrite") as t:   # another tab writes in between
        t.put("meta", "x", 10)
    with pytest.raises(TransactionConflict):
        ta.commit()
    assert a.get("meta", "x") == 10
    with a.transaction(LEASE_STORE, "readwrite") as t:   # a disjoint scope does not conflict
        t.put(LEASE_STORE, "other", 1)


def test_compaction_keeps_data_and_other_connections_follow(tmp_path, env: Env,
                                                           monkeypatch) -> None:
    monkeypatch.setattr(indexeddb, "_COMPACT_MIN", 2_000)
    a, b = open_db(tmp_path, env), open_db(tmp_path, env)
    for i in range(200):
        with a.transaction("meta", "readwrite") as t:
            t.put("meta", "counter", i)
            t.put("meta", i % 3, i)
    assert a.generation > 0   # it compacted on its own
    size = (tmp_path / "meta.idb").stat().st_size
    assert size < 2_000
    want = [(0, 198), (1, 199), (2, 197), ("counter", 199)]
    assert b.items("meta") == want
    assert open_db(tmp_path, env).items("meta") == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.idb"]


# -- the writer lease ------------------------------------------------------------------------

def test_second_tab_gets_lock_held_naming_the_holder(tmp_path, env: Env) -> None:
    lease = Lease.acquire(open_db(tmp_path, env), tab="tab-A")
    with pytest.raises(LockHeld, match="tab tab-A holds the writer lease") as err:
        Lease.acquire(open_db(tmp_path, env), tab="tab-B")
    assert not isinstance(err.value, LeaseExpired)
    assert lease.token == 1


def test_heartbeat_every_10s_keeps_the_lease(tmp_path, env: Env, clock: VirtualClock) -> None:
    db = open_db(tmp_path, env)
    lease = Lease.acquire(db, tab="tab-A")
    start = clock.time()
    for _ in range(10):   # 100 s of a holder beating every 10 s
        clock.advance(10)
        lease.heartbeat()
    with db.transaction(LEASE_STORE) as t:
        rec = read_lease(t)
    assert rec is not None and rec.heartbeat == start + 100 and rec.token == 1
    clock.advance(29)
    with pytest.raises(LockHeld):
        Lease.acquire(open_db(tmp_path, env), tab="tab-B")
    clock.advance(0.5)
    lease.heartbeat()   # 29.5 s after the last beat: late, but not stale yet
    seq = db.seq
    clock.advance(5)
    lease.heartbeat()   # not due: nothing is written
    assert db.seq == seq


def test_stale_takeover_only_after_30s_and_the_old_tab_is_fenced(tmp_path, env: Env,
                                                                 clock: VirtualClock) -> None:
    a_db, b_db = open_db(tmp_path, env), open_db(tmp_path, env)
    a = Lease.acquire(a_db, tab="tab-A")
    clock.advance(30)   # exactly 30 s: not older than 30 s yet
    with pytest.raises(LockHeld, match="tab-A"):
        Lease.acquire(b_db, tab="tab-B")
    clock.advance(0.001)
    b = Lease.acquire(b_db, tab="tab-B")
    assert b.token == a.token + 1
    with pytest.raises(LeaseExpired, match="tab tab-B took it over") as err, \
            a_db.transaction(["meta", LEASE_STORE], "readwrite") as t:
        a.guard(t)
        t.put("meta", "late", "write from the fenced tab")
    assert err.value.token == a.token
    with pytest.raises(LeaseExpired):   # lost stays lost
        a.heartbeat()
    with b_db.transaction(["meta", LEASE_STORE], "readwrite") as t:
        b.guard(t)
        t.put("meta", "fresh", 1)
    assert b_db.items("meta") == [("fresh", 1)]


def test_an_expired_holder_is_fenced_even_if_nobody_took_over(tmp_path, env: Env,
                                                               clock: VirtualClock) -> None:
    db = open_db(tmp_path, env)
    lease = Lease.acquire(db, tab="tab-A")
    clock.advance(31)
    with pytest.raises(LeaseExpired, match="stale after 30 s"), \
            db.transaction(["meta", LEASE_STORE], "readwrite") as t:
        lease.guard(t)
        t.put("meta", "late", 1)
    assert db.items("meta") == []
    again = Lease.acquire(db, tab="tab-A")   # a new lease takes a new token
    assert again.token == lease.token + 1


def test_a_guard_that_raced_a_takeover_cannot_commit(tmp_path, env: Env,
                                                     clock: VirtualClock) -> None:
    a_db, b_db = open_db(tmp_path, env), open_db(tmp_path, env)
    a = Lease.acquire(a_db, tab="tab-A")
    clock.advance(29)
    t = a_db.transaction(["meta", LEASE_STORE], "readwrite")
    a.guard(t)   # passes: 29 s old
    t.put("meta", "late", 1)
    clock.advance(2)
    Lease.acquire(b_db, tab="tab-B")   # the takeover lands before tab A commits
    with pytest.raises(TransactionConflict):
        t.commit()
    assert b_db.items("meta") == []


def test_refresh_kills_the_lease_and_the_next_open_waits_for_stale(tmp_path, env: Env,
                                                                  clock: VirtualClock) -> None:
    db = open_db(tmp_path, env)
    lease = Lease.acquire(db, tab="tab-A")
    t = db.transaction(["meta", LEASE_STORE], "readwrite")
    lease.guard(t)
    t.put("meta", "mid-write", 1)
    db.refresh()   # the browser reloads mid-write
    with pytest.raises(LeaseExpired, match="refreshed"), \
            db.transaction(["meta", LEASE_STORE], "readwrite") as t2:
        lease.guard(t2)
    with pytest.raises(LockHeld):
        Lease.acquire(db, tab="tab-A2")
    start = clock.time()
    fresh = Lease.acquire(db, tab="tab-A2", wait=60)   # sleeps on the clock until stale
    assert 30 < clock.time() - start <= 31 and fresh.token == 2
    assert db.items("meta") == []


def test_release_lets_the_next_tab_in_at_once_and_tokens_keep_rising(tmp_path, env: Env) -> None:
    a = Lease.acquire(open_db(tmp_path, env), tab="tab-A")
    a.release()
    b = Lease.acquire(open_db(tmp_path, env), tab="tab-B")
    assert b.token == 2
    a.release()   # releasing a lost lease is a no-op: it must not free tab B's
    with pytest.raises(LockHeld, match="tab-B"):
        Lease.acquire(open_db(tmp_path, env), tab="tab-C")


def test_recover_dead_takes_over_only_from_a_holder_not_alive_here(tmp_path, env: Env) -> None:
    seen: list[tuple[str, dict[str, object]]] = []
    watched = replace(env, observe=lambda e, d: seen.append((e, d)))
    a_db = open_db(tmp_path, env)
    a = Lease.acquire(a_db, tab="tab-A")
    with pytest.raises(LockHeld, match="tab-A"):   # alive in this process: refused
        Lease.acquire(open_db(tmp_path, watched), tab="tab-B", recover_dead="test")
    a_db.refresh()   # the holder's page is gone: its lease with it
    b = Lease.acquire(open_db(tmp_path, watched), tab="tab-B", recover_dead="test")
    assert b.token == a.token + 1
    assert [e for e, _ in seen] == ["lease.recovered"] and seen[0][1]["holder"] == "tab-A"
