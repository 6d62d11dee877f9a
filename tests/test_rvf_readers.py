"""One writer process, readers beside it (ADR-032): a reader opening an RVF store with
``readonly=true`` while the writer commits never reports a healthy store corrupt, and every
open shows a committed state that is no older than what was acknowledged before it began.

The writer runs like the soak's (``harness/soak/server.py``): agents as threads sharing one
open store. One thread commits; one calls what changes nothing (deleting a missing key,
removing an id that is not live, an empty upsert or batch), whose path truncates a failed
commit attempt's tail; one compacts now and then (a rewrite and a rename, under the readers'
feet). Each commit ``i`` writes ``seq = i`` and ``k{i % 7} = i`` in one batch, so a snapshot is
torn exactly when ``k{seq % 7} != seq`` or some ``k`` is newer than ``seq``.

Before the fix in ``RvfStore._discard_failed_attempt`` (it now takes the write lock), the
no-change thread truncated the commit thread's append between its data and its manifest: the
file really held zeros where a commit's data was, then that commit's manifest, and every
reader (and the next writer) said ``CorruptStore``. This test failed then; the file was never
healthy, so the fix is in the writer, and a reader still reports such damage.

Child processes are given their program as ``-c`` text; they log one JSON object a line, with
``time.monotonic()`` (one clock for every process on the machine) to order a reader's open
against the writer's acknowledgements. No assertion is timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from crashgate.backends import os_env
from crashgate.reference.rvf import open_rvf

OPENS = 400
"""Reader opens per run, all while the writer commits (it stops only when the reader is done)."""
KEYS = 7
COMPACT_EVERY = 40

WRITER = r"""
import json, os, sys, threading, time
from crashgate.backends import VectorRecord, os_env
from crashgate.reference.rvf import open_rvf

path, sync, stop_file, log_path, keys, compact_every = sys.argv[1:7]
keys, compact_every = int(keys), int(compact_every)
store = open_rvf(path, os_env(), sync=sync)
log = open(log_path, "w", buffering=1)
done = threading.Event()
due = threading.Semaphore(0)
errors = []

def committer():
    i = store.epoch
    try:
        while not os.path.exists(stop_file):
            i += 1
            log.write(json.dumps({"b": i, "t": time.monotonic()}) + "\n")
            store.write_batch({"seq": str(i).encode(), f"k{i % keys}": str(i).encode()})
            log.write(json.dumps({"a": i, "t": time.monotonic()}) + "\n")
            if i % compact_every == 0:
                due.release()
    except BaseException as exc:
        errors.append(f"commit {i}: {type(exc).__name__}: {exc}")
    finally:
        done.set()
        due.release()

def no_change():
    try:
        while not done.is_set():
            store.delete("missing")
            store.remove([10**12])
            store.upsert([])
            store.write_batch({}, ["missing"])
    except BaseException as exc:
        errors.append(f"no-change call: {type(exc).__name__}: {exc}")

def compactor():
    try:
        while True:
            due.acquire()
            if done.is_set():
                return
            store.compact()
            log.write(json.dumps({"compacted": store.epoch, "t": time.monotonic()}) + "\n")
    except BaseException as exc:
        errors.append(f"compact: {type(exc).__name__}: {exc}")

threads = [threading.Thread(target=f) for f in (committer, no_change, compactor)]
for t in threads:
    t.start()
for t in threads:
    t.join()
store.close()
log.write(json.dumps({"errors": errors}) + "\n")
"""

READER = r"""
import json, sys, time
from crashgate.backends import os_env
from crashgate.reference.rvf import open_rvf

path, opens, keys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(opens):
    t0 = time.monotonic()
    try:
        store = open_rvf(path, os_env(), readonly="true")
    except Exception as exc:
        print(json.dumps({"t0": t0, "t1": time.monotonic(),
                          "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        continue
    try:
        seq = store.get("seq")
        ks = {k: store.get(f"k{k}") for k in range(keys)}
    finally:
        store.close()
    print(json.dumps({"t0": t0, "t1": time.monotonic(), "seq": int(seq) if seq else 0,
                      "ks": {k: int(v) for k, v in ks.items() if v is not None}}), flush=True)
"""


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _soak(tmp_path: Path, sync: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Path]:
    """Run the writer and one reader of ``OPENS`` opens beside it; (reader lines, writer log
    lines, store path)."""
    path, stop, log = tmp_path / "store", tmp_path / "stop", tmp_path / "writer.jsonl"
    open_rvf(str(path), os_env(), sync=sync).close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), sync, str(stop),
                               str(log), str(KEYS), str(COMPACT_EVERY)],
                              stderr=subprocess.PIPE, text=True)
    try:
        # the reader starts once the writer has acknowledged its first commit
        while not log.exists() or '"a"' not in log.read_text():
            assert writer.poll() is None, f"the writer exited early: {writer.stderr.read()}"
            time.sleep(0.01)
        reader = subprocess.run([sys.executable, "-c", READER, str(path), str(OPENS),
                                 str(KEYS)], capture_output=True, text=True, timeout=600,
                                check=False)
    finally:
        stop.touch()
        _, err = writer.communicate(timeout=600)
    assert reader.returncode == 0, reader.stderr
    assert writer.returncode == 0, err
    return _lines(reader.stdout), _lines(log.read_text()), path


@pytest.mark.parametrize("sync", ["two", "one"])
def test_readers_beside_a_writer_see_committed_states_only(tmp_path: Path, sync: str) -> None:
    opens, wlog, path = _soak(tmp_path, sync)
    assert wlog[-1] == {"errors": []}, wlog[-1]
    assert len(opens) == OPENS

    failed = [o["error"] for o in opens if "error" in o]
    assert failed == [], f"{len(failed)} of {OPENS} reader opens failed, first: {failed[0]}"

    acked = sorted((e["t"], e["a"]) for e in wlog if "a" in e)
    begun = {e["b"]: e["t"] for e in wlog if "b" in e}
    torn, stale, unborn = [], [], []
    for o in opens:
        seq, ks = o["seq"], {int(k): v for k, v in o["ks"].items()}
        # one commit writes seq and k{seq % KEYS} together: a snapshot shows both or neither
        if ks.get(seq % KEYS) != seq or any(v > seq for v in ks.values()):
            torn.append(o)
        # everything acknowledged before this open began is in what it shows
        floor = max((i for t, i in acked if t < o["t0"]), default=0)
        if seq < floor:
            stale.append((o, floor))
        # and nothing the writer had not begun to commit when the open ended
        if seq not in begun or begun[seq] > o["t1"]:
            unborn.append(o)
    assert torn == [], f"torn snapshots: {torn[:3]}"
    assert stale == [], f"opens older than an acknowledged commit: {stale[:3]}"
    assert unborn == [], f"opens showing a commit not yet begun: {unborn[:3]}"
    # the reader ran beside the writer, not after it: it saw the store move
    assert len({o["seq"] for o in opens}) > 1
    assert any("compacted" in e for e in wlog), "no compaction ran while the reader opened"

    # and the file the writer left is whole: a new writer opens it at the last acknowledgement
    last = max(i for _, i in acked)
    with open_rvf(str(path), os_env()) as store:
        assert store.get("seq") == str(last).encode()
        assert store.verify() == []
