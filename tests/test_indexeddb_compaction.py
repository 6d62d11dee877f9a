"""The IndexedDB model's log stays in proportion to its live data, so opening it costs O(live
data) whatever the history; a log written before that rule (never compacted) still opens; and a
compaction that fails half-way never costs a later commit its durability."""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from crashgate.backends import Env, os_env
from crashgate.harness.clock import VirtualClock
from crashgate.harness.faults.faultyfs import FaultyFS, FsOp
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference import indexeddb
from crashgate.reference.indexeddb import IndexedDB

STORES = ("meta", "state")


def env() -> Env:
    return replace(os_env(), clock=VirtualClock())


def open_db(path: Path, **kw: bool) -> IndexedDB:
    return IndexedDB(str(path), env(), stores=STORES, **kw)


def compacted_size(path: Path, tmp: Path) -> int:
    """The size of ``path`` once compacted (a copy is compacted): its live data, framed."""
    copy = tmp / "copy.idb"
    shutil.copyfile(path, copy)
    db = IndexedDB(str(copy), env())
    db.compact()
    return copy.stat().st_size


def old_log(path: Path, commits: int) -> list[tuple[str, int]]:
    """Write, frame by frame as the module docstring lays the format out, the log a writer of
    the never-compacting kind leaves: ``commits`` overwrites of a few keys. Returns the items."""
    frames = [{"seq": 1, "ops": [["create", s] for s in STORES]}]
    for n in range(commits):
        frames.append({"seq": n + 2, "ops": [["put", "meta", f"k{n % 5}", n],
                                             ["put", "state", "epoch", n]]})
    body = b"".join(indexeddb._frame(json.dumps(f, separators=(",", ":")).encode())
                    for f in frames)
    path.write_bytes(indexeddb._HEADER.pack(indexeddb.MAGIC, 1, 0) + body)
    return sorted((f"k{n % 5}", n) for n in range(commits - 5, commits))


def test_a_log_from_before_the_rule_opens_and_the_first_write_compacts_it(tmp_path) -> None:
    path = tmp_path / "meta.idb"
    want = old_log(path, 2_000)
    before = path.read_bytes()
    assert len(before) > 40 * indexeddb._COMPACT_MIN
    reader = open_db(path, readonly=True)
    assert reader.items("meta") == want and reader.seq == 2_001
    assert path.read_bytes() == before          # a reader never rewrites it
    writer = open_db(path)
    assert writer.items("meta") == want and writer.generation == 0
    with writer.transaction("state", "readwrite") as t:
        t.put("state", "epoch", -1)
    assert writer.generation == 1               # that commit compacted the log
    assert path.stat().st_size <= indexeddb._COMPACT_MIN
    assert reader.items("meta") == want         # the other connection follows the new file
    again = open_db(path)
    assert again.items("meta") == want and again.get("state", "epoch") == -1
    assert again.seq == 2_003   # numbering carries on: the snapshot is 2002, the write 2003


def test_the_file_stays_within_its_ratio_of_the_live_data(tmp_path) -> None:
    path = tmp_path / "meta.idb"
    db = open_db(path)
    for n in range(1_500):
        with db.transaction(["meta", "state"], "readwrite") as t:
            t.put("meta", n % 7, {"op": f"h{n}", "tags": ["a", n]})
            if n % 3:
                t.delete("meta", (n + 3) % 7)
            t.put("state", "epoch", n)
        if n % 100 == 99:
            size, live = path.stat().st_size, compacted_size(path, tmp_path)
            assert size <= max(indexeddb._COMPACT_MIN, indexeddb._COMPACT_RATIO * live), n
    assert 5 <= db.generation <= 100   # it compacted, and not at every commit


def test_a_long_value_leaves_the_file_at_the_first_commit_after_it_dies(tmp_path) -> None:
    path = tmp_path / "meta.idb"
    db = open_db(path)
    with db.transaction("meta", "readwrite") as t:
        t.put("meta", 1, {"blob": "x" * 200_000})
    for n in range(5):   # it is live: nothing to drop
        with db.transaction("state", "readwrite") as t:
            t.put("state", "epoch", n)
    assert path.stat().st_size > 200_000 and db.generation == 0
    with db.transaction("meta", "readwrite") as t:
        t.put("meta", 1, {"blob": "short"})
    assert path.stat().st_size < indexeddb._COMPACT_MIN and db.generation == 1
    assert open_db(path).get("meta", 1) == {"blob": "short"}


def test_escaped_values_are_counted_at_their_size_on_disk(tmp_path) -> None:
    """JSON escapes make a value longer on disk than its ``len``: what dies is counted at its
    encoded size, so the file keeps to its ratio and a compacted file is not compacted again."""
    path = tmp_path / "meta.idb"
    db = open_db(path)
    with db.transaction("meta", "readwrite") as t:
        t.put("meta", "big", "\u00e9\"\\" * 3_000)   # 30,000 bytes as JSON, len 9,000
    for n in range(400):
        with db.transaction("meta", "readwrite") as t:
            t.put("meta", n % 2, "\u00e9" * 300 + str(n))
        if n % 50 == 49:
            size, live = path.stat().st_size, compacted_size(path, tmp_path)
            assert size <= max(indexeddb._COMPACT_MIN, indexeddb._COMPACT_RATIO * live), n
    assert 2 <= db.generation <= 20


def _sim_db(disk: SimDisk, fail: Callable[[FsOp], bool]) -> IndexedDB:
    """A writer on ``disk`` whose file system raises EIO in place of each op ``fail`` picks."""
    def trigger(op: FsOp) -> OSError | None:
        return OSError(errno.EIO, "injected", op.path) if fail(op) else None

    base = sim_env(disk)
    return IndexedDB("/data/db.idb", replace(base, fs=FaultyFS(base.fs, trigger)),
                     stores=STORES)


def _durable_items(disk: SimDisk) -> list[tuple[str, object]]:
    """What a reader finds after power loss now."""
    reader = IndexedDB("/data/db.idb", sim_env(SimDisk(disk.durable_image())), readonly=True)
    return reader.items("meta")


def test_a_commit_after_a_compaction_whose_directory_sync_failed_survives_power_loss() -> None:
    # A compaction renames the new generation over the old file, then syncs the directory. When
    # that sync fails (EIO), the rename is in the page cache only: commits fsynced into the new
    # file afterwards were acknowledged, then lost at power loss with the new file's name
    # (found by the io-errors row on the lease store once compaction ran at small sizes).
    disk = SimDisk(DiskImage.empty("/data"))
    armed = {"fail": False}

    def fail(op: FsOp) -> bool:
        if armed["fail"] and op.kind == "sync_dir":
            armed["fail"] = False
            return True
        return False

    db = _sim_db(disk, fail)
    with db.transaction("meta", "readwrite") as t:
        t.put("meta", "before", 1)
    armed["fail"] = True
    with pytest.raises(OSError):
        db.compact()
    with db.transaction("meta", "readwrite") as t:   # acknowledged: must survive power loss
        t.put("meta", "after", 2)
    assert _durable_items(disk) == [("after", 2), ("before", 1)]


def test_a_writer_makes_the_files_name_durable_before_its_first_commit() -> None:
    # Its open created the file, and the directory sync raised: the file exists in the page
    # cache only. Opened again, the writer's first commit must not be acknowledged on a file
    # whose name power loss would take.
    disk = SimDisk(DiskImage.empty("/data"))
    with pytest.raises(OSError):
        _sim_db(disk, lambda op: op.kind == "sync_dir")
    db = _sim_db(disk, lambda op: False)
    with db.transaction("meta", "readwrite") as t:
        t.put("meta", "k", 1)
    assert _durable_items(disk) == [("k", 1)]
