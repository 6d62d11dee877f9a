"""The rvlite hybrid under threads sharing one open store, and readers in other processes
opening it beside a writer (ADR-032): no answer is torn, none is stale, no open calls a healthy
store damaged. Found by the soak (issue 12).

Every upsert of id ``i`` carries the token ``"{writer}.{n}"`` in its metadata and a vector built
from that token, so an answer is torn exactly when its vector (or, for a query hit, its
distance) is not the one its metadata's token builds. Each id has one writing thread, which
upserts it with increasing ``n``, so an answer is stale exactly when its ``n`` is below the last
one acknowledged for that id before the read began. No assertion is timed: ``time.monotonic()``
(one clock for every process on the machine) only orders reads against acknowledgements.

Before the fix: in one process a fetch took RVF's new vector beside the cache's old metadata (a
mutation between its RVF commit and its metadata write), two mutations interleaved their steps
(the second RVF commit refused, or step 3's epoch check failing), and two threads appended
IndexedDB frames at one offset or shared a compaction's ``.tmp`` file; a reader process called
the cache damaged (``frame n follows frame m``, a bad header), and its cache connection, which
follows the writer's appends, served metadata newer than the RVF commit it opened (torn).

Child processes are given their program as ``-c`` text and log one JSON object a line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from crashgate.backends import os_env
from crashgate.reference.indexeddb import IndexedDB, TransactionConflict
from crashgate.reference.rvlite import cache_path, open_rvlite

WRITERS = 3
IDS = 12          # id i is written by thread i % WRITERS only
ROUNDS = 40       # upserts per writing thread (in-process test)
OPENS = 300       # reader opens at least, all while the writer commits
MOST_OPENS = 20_000  # at most, waiting for the writer's first compaction
READS_PER_OPEN = 3

COMMON = r"""
import hashlib, math

def vector_for(token):
    # DIM multiples of 1/128: exact in float32 and float64
    return [(b - 128) / 128.0 for b in hashlib.blake2b(token.encode(), digest_size=8).digest()]

def record_of(i, w, n):
    token = f"{w}.{n}"
    return VectorRecord.of(i, vector_for(token), {"token": token, "w": w, "n": n})

def seen(vector, metadata):
    # (n, whether the vector is the one the metadata's token builds)
    return [metadata["n"], [float(x) for x in vector] == vector_for(metadata["token"])]

def hit_seen(hit, query):
    want = math.dist(vector_for(hit.metadata["token"]), query)
    return [hit.metadata["n"], math.isclose(hit.distance, want, rel_tol=1e-9, abs_tol=1e-12)]
"""

WRITER = COMMON + r"""
import json, os, sys, threading, time
from crashgate.backends import VectorRecord, os_env
from crashgate.reference.rvlite import open_rvlite

path, stop_file, log_path, writers, ids = sys.argv[1:6]
writers, ids = int(writers), int(ids)
store = open_rvlite(path, os_env())
log = open(log_path, "w", buffering=1)
lock = threading.Lock()
errors = []

def note(doc):
    with lock:
        log.write(json.dumps(doc) + "\n")

def writer(w):
    n = 0
    mine = [i for i in range(ids) if i % writers == w]
    try:
        while not os.path.exists(stop_file):
            n += 1
            batch = [i for k, i in enumerate(mine) if (n + k) % 2 == 0] or mine[:1]
            note({"b": [w, n], "ids": batch, "t": time.monotonic()})
            store.upsert([record_of(i, w, n) for i in batch])
            note({"a": [w, n], "ids": batch, "t": time.monotonic()})
            if w == 0 and n % 25 == 0:
                store.compact()
                note({"compacted": n, "t": time.monotonic()})
                open(stop_file + ".compacted", "w").close()
    except BaseException as exc:
        errors.append(f"writer {w} at {n}: {type(exc).__name__}: {exc}")

threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
store.close()
note({"errors": errors})
"""

READER = COMMON + r"""
import json, os, sys, time
from crashgate.backends import VectorRecord, os_env
from crashgate.reference.rvlite import open_rvlite

path, opens, ids, reads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
compacted, most = sys.argv[5], int(sys.argv[6])
# at least `opens` opens, and on until some opens began after the writer's first compaction
# (on a loaded machine its thread 0 may not reach one within `opens`)
done, after = 0, 0
while done < opens or (after < opens // 10 and done < most):
    done += 1
    after += os.path.exists(compacted)
    t0 = time.monotonic()
    try:
        store = open_rvlite(path, os_env(), readonly="true")
        try:
            got = []
            for _ in range(reads):
                got.append({r.id: seen(r.vector, r.metadata) for r in store.fetch(range(ids))})
        finally:
            store.close()
    except Exception as exc:
        print(json.dumps({"t0": t0, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        continue
    print(json.dumps({"t0": t0, "t1": time.monotonic(), "reads": got}), flush=True)
"""

_NS: dict[str, Any] = {}
exec(compile("from crashgate.backends import VectorRecord\n" + COMMON, "COMMON", "exec"), _NS)


class Acks:
    """The acknowledged upserts of each id, in time order: ``floor(i, t)`` is the ``n`` of the
    last one acknowledged before ``t`` (0 when none)."""

    def __init__(self) -> None:
        self.by_id: dict[int, list[tuple[float, int]]] = {i: [] for i in range(IDS)}

    def add(self, t: float, n: int, ids: list[int]) -> None:
        for i in ids:
            self.by_id[i].append((t, n))

    def floor(self, i: int, t: float) -> int:
        return max((n for at, n in self.by_id[i] if at < t), default=0)


def _check(reads: list[tuple[float, dict[int, list[Any]]]], acks: Acks) -> tuple[list, list]:
    """(torn answers, stale answers) of ``reads``: (start time, {id: [n, vector matches]})."""
    torn, stale = [], []
    for t0, got in reads:
        for i, (n, whole) in got.items():
            if not whole:
                torn.append((t0, i, n))
            if n < acks.floor(int(i), t0):
                stale.append((t0, i, n, acks.floor(int(i), t0)))
    return torn, stale


def test_threads_sharing_one_store_get_neither_torn_nor_stale_answers(tmp_path: Path) -> None:
    path = str(tmp_path / "store.rvf")
    store = open_rvlite(path, os_env())
    acks, lock, errors = Acks(), threading.Lock(), []
    reads: list[tuple[float, dict[int, list[Any]]]] = []
    done = threading.Event()
    query = [0.25] * 8

    def writer(w: int) -> None:
        mine = [i for i in range(IDS) if i % WRITERS == w]
        try:
            for n in range(1, ROUNDS + 1):
                batch = [i for k, i in enumerate(mine) if (n + k) % 2 == 0] or mine[:1]
                store.upsert([_NS["record_of"](i, w, n) for i in batch])
                t = time.monotonic()
                with lock:
                    acks.add(t, n, batch)
        except BaseException as exc:
            errors.append(f"writer {w}: {type(exc).__name__}: {exc}")

    def reader(kind: str) -> None:
        try:
            while not done.is_set():
                t0 = time.monotonic()
                if kind == "fetch":
                    got = {r.id: _NS["seen"](r.vector, r.metadata) for r in store.fetch(range(IDS))}
                else:
                    got = {h.id: _NS["hit_seen"](h, query) for h in store.query(query, 5)}
                with lock:
                    reads.append((t0, got))
        except BaseException as exc:
            errors.append(f"{kind}: {type(exc).__name__}: {exc}")

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    readers = [threading.Thread(target=reader, args=(k,)) for k in ("fetch", "fetch", "query")]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in readers:
        t.join()
    store.close()

    assert errors == [], errors[:3]
    torn, stale = _check(reads, acks)
    assert torn == [], f"{len(torn)} torn answers (vector of one upsert, metadata of another): " \
                       f"{torn[:3]}"
    assert stale == [], f"{len(stale)} stale answers (older than an acknowledged upsert): " \
                        f"{stale[:3]}"
    assert sum(len(got) for _, got in reads) > 0

    # what the threads left is whole: the cache opens, and stands for the last commit
    IndexedDB(cache_path(path), os_env(), readonly=True).close()
    again = open_rvlite(path, os_env())
    try:
        assert again.epoch == again.metadata_epoch() == WRITERS * ROUNDS
        last = {r.id: r.metadata["n"] for r in again.fetch(range(IDS))}
        assert last == {i: acks.by_id[i][-1][1] for i in range(IDS)}
    finally:
        again.close()


def test_threads_sharing_indexeddb_connections_lose_and_damage_nothing(tmp_path: Path) -> None:
    """The cache's model alone: threads committing through two connections to one database
    (each thread's own keys, and one key each overwritten, so compactions run), one thread also
    compacting, others reading. Every commit must be in the file, in order, once."""
    path, rounds = str(tmp_path / "db.idb"), 60
    conns = [IndexedDB(path, os_env(), stores=["t"]) for _ in range(2)]
    errors: list[str] = []
    done = threading.Event()

    def writer(w: int) -> None:
        conn = conns[w % 2]
        try:
            for n in range(rounds):
                while True:   # the model's contract: a conflict is retried
                    try:
                        with conn.transaction("t", "readwrite") as txn:
                            txn.put("t", f"{w}.{n}", [w, n, "x" * 200])
                            txn.put("t", f"last.{w}", [w, n, "y" * 200])
                        break
                    except TransactionConflict:
                        continue
                if w == 0 and n % 15 == 0:
                    conn.compact()
        except BaseException as exc:
            errors.append(f"writer {w}: {type(exc).__name__}: {exc}")

    def reader(r: int) -> None:
        try:
            while not done.is_set():
                for key, value in conns[r % 2].items("t"):
                    if key != (f"last.{value[0]}" if key.startswith("last.")
                               else f"{value[0]}.{value[1]}"):
                        errors.append(f"reader {r}: {key!r} holds {value[:2]}")
        except BaseException as exc:
            errors.append(f"reader {r}: {type(exc).__name__}: {exc}")

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    readers = [threading.Thread(target=reader, args=(r,)) for r in range(2)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in readers:
        t.join()
    for conn in conns:
        conn.close()
    assert errors == [], errors[:3]
    again = IndexedDB(path, os_env(), readonly=True)
    try:
        got = {k: v[:2] for k, v in again.items("t")}
        assert again.generation > 0
    finally:
        again.close()
    want = {f"{w}.{n}": [w, n] for w in range(4) for n in range(rounds)}
    want.update({f"last.{w}": [w, rounds - 1] for w in range(4)})
    assert got == want


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_reader_process_beside_a_threaded_writer_sees_whole_committed_states(
        tmp_path: Path) -> None:
    path, stop, log = str(tmp_path / "store.rvf"), tmp_path / "stop", tmp_path / "writer.jsonl"
    open_rvlite(path, os_env()).close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path, str(stop), str(log),
                               str(WRITERS), str(IDS)], stderr=subprocess.PIPE, text=True)
    try:
        # the reader starts once every writing thread has had an upsert acknowledged
        while not log.exists() or sum('"a"' in line for line in log.read_text().splitlines()) \
                < WRITERS:
            assert writer.poll() is None, f"the writer exited early: {writer.stderr.read()}"
            time.sleep(0.01)
        reader = subprocess.run([sys.executable, "-c", READER, path, str(OPENS), str(IDS),
                                 str(READS_PER_OPEN), f"{stop}.compacted", str(MOST_OPENS)],
                                capture_output=True, text=True,
                                timeout=900, check=False)
    finally:
        stop.touch()
        _, err = writer.communicate(timeout=600)
    assert reader.returncode == 0, reader.stderr
    assert writer.returncode == 0, err
    wlog = _lines(log.read_text())
    assert wlog[-1] == {"errors": []}, wlog[-1]
    opens = _lines(reader.stdout)
    assert OPENS <= len(opens) <= MOST_OPENS

    failed = [o["error"] for o in opens if "error" in o]
    assert failed == [], f"{len(failed)} of {len(opens)} reader opens failed, first: {failed[0]}"

    acks = Acks()
    for e in wlog:
        if "a" in e:
            acks.add(e["t"], e["a"][1], e["ids"])
    reads = [(o["t0"], {int(i): v for i, v in got.items()}) for o in opens for got in o["reads"]]
    torn, stale = _check(reads, acks)
    assert torn == [], f"{len(torn)} torn records (vector of one upsert, metadata of another): " \
                       f"{torn[:3]}"
    assert stale == [], f"{len(stale)} reads older than an acknowledged upsert: {stale[:3]}"
    # the reader ran beside the writer, not after it: it saw the store move, compactions too
    assert len({json.dumps(o["reads"][0], sort_keys=True) for o in opens}) > 1
    compactions = [e["t"] for e in wlog if "compacted" in e]
    assert compactions, f"no RVF compaction ran in the writer's {len(wlog)} log lines"
    assert any(o["t0"] > compactions[0] for o in opens), \
        "the reader stopped before the writer's first compaction"
    db = IndexedDB(cache_path(path), os_env(), readonly=True)
    try:
        assert db.generation > 0, "the cache was never compacted while the reader opened"
    finally:
        db.close()
