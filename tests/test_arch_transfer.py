"""ARCH-001's legacy importer and exporter (``reference/arch/importer.py``, ``transfer.py``):
counts and renames, reruns, a crash at every disk operation of an import and of an export."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from crashgate.backends import CorruptStore, Env, canonical_mission
from crashgate.harness.clock import VirtualClock
from crashgate.harness.crashenum import enumerate_crash_states
from crashgate.harness.crashstates import CrashModel
from crashgate.harness.missions import generate_missions
from crashgate.harness.powerloss import POWER_MODELS
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference.arch.importer import ImportReport, import_legacy
from crashgate.reference.arch.json_state import JsonState, is_backup
from crashgate.reference.arch.missions_db import MissionDB, open_missions_db
from crashgate.reference.arch.transfer import export_memory, export_missions
from crashgate.reference.json_store import file_name_for

LEGACY = "/data/state"
DB = "/data/missions.db"
JSON = "/data/json"
MODELS = [CrashModel.PROCESS, *POWER_MODELS]
T0 = 1796062260.0   # 2026-11-30T18:11:00Z
STAMP = "20261130T181100Z"

A = {"mission_id": "genesis", "phase": "PLANNING", "budget": {"max_cost_usd": 10},
     "project_memory": {"narrative": [{"session": 1, "summary": "ünïcode 🚀"}]}}
B = {"mission_id": "m-2", "status": "in_progress", "tool_calls": [], "owner": None}
NEWER = {"mission_id": "m-3", "phase": "CODING"}
OLDER = {"mission_id": "m-3", "phase": "PLANNING"}   # a legacy copy the database outgrew
DAMAGED = b'{"mission_id": "m-4", "phase": '


def _legacy_image() -> DiskImage:
    """Legacy files as old sessions left them: two missions, one the database holds in a
    newer version, one damaged, and files that are not legacy state."""
    return DiskImage({
        f"{LEGACY}/active_mission.json": json.dumps(A, indent=2).encode(),
        f"{LEGACY}/b.json": json.dumps(B).encode(),
        f"{LEGACY}/c_older.json": json.dumps(OLDER).encode(),
        f"{LEGACY}/d_damaged.json": DAMAGED,
        f"{LEGACY}/notes.txt": b"not state",
    }, frozenset({"/data"}))


LEGACY_FILES = {"active_mission.json": A, "b.json": B, "c_older.json": OLDER}


@contextmanager
def _db(env: Env) -> Iterator[MissionDB]:
    db = open_missions_db(DB, env)
    try:
        yield db
    finally:
        db.close()


def _env(disk: SimDisk, t: float = T0) -> Env:
    return sim_env(disk, VirtualClock(t))


def _files(disk: SimDisk, directory: str = LEGACY) -> dict[str, bytes]:
    fs = disk.fs()
    out = {}
    for name in fs.listdir(directory):
        f = fs.open(f"{directory}/{name}")
        try:
            out[name] = f.read(0, f.size())
        finally:
            f.close()
    return out


def _run(db: MissionDB, env: Env, calls: list[int] | None = None) -> ImportReport:
    def checkpoint() -> None:
        if calls is not None:
            calls.append(1)
    return import_legacy(db, env.fs, LEGACY, env.clock, checkpoint)


def test_import_counts_renames_and_keeps_what_it_does_not_import() -> None:
    disk = SimDisk(_legacy_image())
    env = _env(disk)
    calls: list[int] = []
    with _db(env) as db:
        db.mission_put(NEWER)
        report = _run(db, env, calls)
        assert report.imported == ("genesis", "m-2")
        assert report.already == ()
        assert report.conflicts == ((f"{LEGACY}/c_older.json", "m-3"),)
        assert [f for f, _ in report.damaged] == [f"{LEGACY}/d_damaged.json"]
        assert "not a mission document" in report.damaged[0][1]
        assert dict(report.renamed) == {
            f"{LEGACY}/{n}": f"{LEGACY}/{n[:-5]}_migrated_{STAMP}.json" for n in LEGACY_FILES}
        assert len(calls) == report.files == 4   # after each file handled
        assert db.mission_get("genesis") == A and db.mission_get("m-2") == B
        assert db.mission_get("m-3") == NEWER   # the database is the newer state
        assert db.mission_ids() == ["genesis", "m-2", "m-3"]
    files = _files(disk)
    assert files["d_damaged.json"] == DAMAGED and files["notes.txt"] == b"not state"
    for name, doc in LEGACY_FILES.items():   # each backup holds its file's bytes, unchanged
        assert name not in files
        assert json.loads(files[f"{name[:-5]}_migrated_{STAMP}.json"]) == doc


def test_a_rerun_imports_nothing_twice_and_a_new_legacy_file_gets_a_backup_of_its_own() -> None:
    disk = SimDisk(_legacy_image())
    env = _env(disk)
    with _db(env) as db:
        db.mission_put(NEWER)
        _run(db, env)
        again = _run(db, env)
        assert (again.imported, again.already, again.conflicts, again.renamed) == \
            ((), (), (), ())
        assert [f for f, _ in again.damaged] == [f"{LEGACY}/d_damaged.json"]
        # a later session wrote active_mission.json again, in the same second
        changed = {**A, "status": "completed"}
        fs = env.fs
        f = fs.open(f"{LEGACY}/active_mission.json", "x")
        f.write(0, json.dumps(changed).encode())
        f.close()
        third = _run(db, env)
        assert third.conflicts == ((f"{LEGACY}/active_mission.json", "genesis"),)
        assert third.renamed == ((f"{LEGACY}/active_mission.json",
                                  f"{LEGACY}/active_mission_migrated_{STAMP}-2.json"),)
        assert db.mission_get("genesis") == A
    assert json.loads(_files(disk)[f"active_mission_migrated_{STAMP}-2.json"]) == changed


def test_two_legacy_files_of_one_mission_never_share_a_transaction() -> None:
    other = {**A, "phase": "TESTING"}
    disk = SimDisk(DiskImage({f"{LEGACY}/1.json": json.dumps(A).encode(),
                              f"{LEGACY}/2.json": json.dumps(other).encode(),
                              f"{LEGACY}/3.json": json.dumps(A).encode()}))
    env = _env(disk)
    with _db(env) as db:
        report = _run(db, env)
        assert report.imported == ("genesis",) and report.already == ("genesis",)
        assert report.conflicts == ((f"{LEGACY}/2.json", "genesis"),)
        assert db.mission_get("genesis") == A


def test_batches_change_nothing_but_the_transactions() -> None:
    docs = generate_missions(7, seed=5)
    image = DiskImage({f"{LEGACY}/{i}.json": json.dumps(d).encode()
                       for i, d in enumerate(docs)})
    results = []
    for batch in (1, 3, 256):
        disk = SimDisk(image)
        env = _env(disk)
        with _db(env) as db:
            report = import_legacy(db, env.fs, LEGACY, env.clock, lambda: None, batch=batch)
            results.append((report, [db.mission_get(d["mission_id"]) for d in docs]))
    assert results[0] == results[1] == results[2]
    assert results[0][1] == docs
    with pytest.raises(ValueError, match="batch"):
        import_legacy(None, SimDisk().fs(), LEGACY, VirtualClock(), lambda: None, batch=0)


def _recovered(image: DiskImage) -> tuple[SimDisk, Env]:
    disk = SimDisk(image)
    return disk, _env(disk, T0 + 60)   # a later session: its backups get another name


def _check_import_recovery(image: DiskImage) -> str | None:
    """Why the import crashed into ``image`` lost something after recovery and a rerun."""
    disk, env = _recovered(image)
    before = _files(disk)
    # nothing lost at the crash itself: every legacy document is in a file still
    for name, doc in LEGACY_FILES.items():
        if not any(_parses_as(raw, doc) for raw in before.values()):
            return f"{name}'s document is in no file after the crash"
    with _db(env) as db:
        _run(db, env)
        got = {i: db.mission_get(i) for i in ("genesis", "m-2", "m-3")}
    after = _files(disk)
    if got != {"genesis": A, "m-2": B, "m-3": NEWER}:
        return f"after recovery and a rerun the database holds {got}"
    left = sorted(n for n in after if n.endswith(".json") and not is_backup(n))
    if left != ["d_damaged.json"] or after["d_damaged.json"] != DAMAGED:
        return f"after the rerun the legacy files left are {left}"
    for name, doc in LEGACY_FILES.items():
        if not any(is_backup(n) and _parses_as(raw, doc) for n, raw in after.items()):
            return f"{name} has no backup holding its document"
    return None


def _parses_as(raw: bytes, doc: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(raw) == doc)
    except ValueError:
        return False


def test_a_crash_at_every_disk_operation_of_an_import_never_loses_a_legacy_mission() -> None:
    disk = SimDisk(_legacy_image())
    env = _env(disk)
    with _db(env) as db:
        db.mission_put(NEWER)
        start = disk.position
        _run(db, env)
        end = disk.position
    inside = list(range(start + 1, end))
    assert len(inside) > 10   # three commits, three renames, a directory fsync
    checked = 0
    for crash, image in enumerate_crash_states(disk.base, disk.trace,
                                               {m: inside for m in MODELS}, MODELS, 120, 7):
        checked += 1
        why = _check_import_recovery(image)
        assert why is None, f"{crash.describe(disk.trace)}: {why}"
    assert checked >= 60


# -- the exporter -----------------------------------------------------------------------------

SAME = generate_missions(3, seed=1)
CHANGED_OLD = {"mission_id": "changed", "n": 1}
CHANGED_NEW = {"mission_id": "changed", "n": 1.0}   # 1 and 1.0 differ in JSON
GONE = {"mission_id": "gone", "status": "completed"}
NEW = {"mission_id": "ñew/ミッション", "big": 2**70, "deep": [[{"": []}]]}


def _exported() -> tuple[SimDisk, int, int]:
    """A database and a JSON side that differ in a few missions and keys, and the span of
    the export that evens them out."""
    disk = SimDisk(DiskImage.empty("/data"))
    env = _env(disk)
    with _db(env) as db:
        js = JsonState(JSON, env)
        for doc in [*SAME, CHANGED_NEW, NEW]:
            db.mission_put(doc)
        for doc in [*SAME, CHANGED_OLD, GONE]:
            js.mission_put(doc)
        db.write_batch({"session_handoff": b"new", "same": b"s"}, [])
        js.put("session_handoff", b"old")
        js.put("same", b"s")
        js.put("stale", b"x")
        start = disk.position
        assert export_missions(db, js, lambda: None) == 3
        assert export_memory(db, js, lambda: None) == 2
        end = disk.position
        js.close()
    return disk, start, end


def _want(js: JsonState) -> None:
    assert js.mission_ids() == sorted(d["mission_id"] for d in [*SAME, CHANGED_NEW, NEW])
    for doc in [*SAME, CHANGED_NEW, NEW]:
        got = js.mission_get(doc["mission_id"])
        assert got is not None and canonical_mission(got) == canonical_mission(doc)
    assert js.scan() == [("same", b"s"), ("session_handoff", b"new")]


def test_the_exporter_writes_only_what_differs() -> None:
    disk, start, end = _exported()
    touched = {os.path.basename(p) for op in disk.trace[start:end]
               for p in (op.path, op.dst) if p is not None}
    for doc in SAME:
        assert not any(file_name_for(doc["mission_id"]) in name for name in touched)
    assert not any(file_name_for("same") in name for name in touched)
    for key in ("changed", NEW["mission_id"], "session_handoff"):
        assert file_name_for(key) in touched
    env = _env(disk)
    with _db(env) as db:
        js = JsonState(JSON, env)
        _want(js)
        assert export_missions(db, js, lambda: None) == 0   # a second run writes nothing
        assert export_memory(db, js, lambda: None) == 0
        js.close()


def test_a_crash_at_every_disk_operation_of_an_export_leaves_every_document_whole() -> None:
    disk, start, end = _exported()
    old = {d["mission_id"]: canonical_mission(d) for d in [*SAME, CHANGED_OLD, GONE]}
    new = {d["mission_id"]: canonical_mission(d) for d in [*SAME, CHANGED_NEW, NEW]}
    inside = list(range(start + 1, end))
    checked = 0
    for crash, image in enumerate_crash_states(disk.base, disk.trace,
                                               {m: inside for m in MODELS}, MODELS, 150, 3):
        checked += 1
        where = crash.describe(disk.trace)
        rec, env = _recovered(image)
        js = JsonState(JSON, env)
        try:
            for mission_id in js.mission_ids():   # CorruptStore here is a torn document
                got = js.mission_get(mission_id)
                assert got is not None
                assert canonical_mission(got) in (old.get(mission_id), new.get(mission_id)), \
                    f"{where}: mission {mission_id!r} is neither its old nor its new document"
            assert dict(js.scan()).get("session_handoff") in (b"old", b"new"), where
            with _db(env) as db:   # the rerun finishes the export
                export_missions(db, js, lambda: None)
                export_memory(db, js, lambda: None)
            _want(js)
        except CorruptStore as exc:
            raise AssertionError(f"{where}: {exc}") from exc
        finally:
            js.close()
    assert checked >= 60


def test_export_checkpoints_after_each_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from crashgate.reference.stages import sync
    monkeypatch.setattr(sync, "BATCH", 2)
    disk = SimDisk(DiskImage.empty("/data"))
    env = _env(disk)
    calls: list[int] = []

    def checkpoint() -> None:
        calls.append(1)

    with _db(env) as db:
        for doc in generate_missions(5, seed=2):
            db.mission_put(doc)
        db.write_batch({f"k{i}": b"v" for i in range(3)}, [])
        js = JsonState(JSON, env)
        assert export_missions(db, js, checkpoint) == 5
        assert len(calls) == 3
        assert export_memory(db, js, checkpoint) == 3
        assert len(calls) == 5
        js.close()
