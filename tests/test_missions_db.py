"""ARCH-001's missions.db: the flattening round trip, key-value and mission operations, the
idempotent import, schema versions (v1 -> v2 migration, newer refused unmodified, readers)
and damage (integrity_check, a changed byte in a flattened row)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sqlite_vfs import NonNativeFS

from crashgate.backends import (
    Capability,
    CorruptStore,
    Env,
    MissionStore,
    VersionTooNew,
    canonical_mission,
    os_env,
)
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference.arch import (
    ImportCounts,
    create_v1,
    flatten,
    open_missions_db,
    unflatten,
)
from crashgate.reference.arch.schema import columns_of

DOC: dict[str, Any] = {
    "mission_id": "genesis", "phase": "PLANNING", "status": "in_progress",
    "created_at": "2025-11-20T00:00:00Z", "completed_at": None, "apiVersion": "agency.os/v1",
    "budget": {"max_cost_usd": 10, "current_cost_usd": 1.5, "alert_threshold": 0.8,
               "cost_breakdown": {"PLANNING": 1.5}},
    "metadata": {"owner": "agent@vibe.agency", "description": "ünïcode ✓", "tags": []},
    "project_memory": {
        "narrative": [{"session": 1, "summary": "UNIQUE-SUMMARY-MARKER", "date": "d1",
                       "phase": "PLANNING"}, {"session": 2.0, "summary": "s2", "x": None}],
        "domain": {"concepts": ["payment", {"concept": "db", "timestamp": "t"}, 7],
                   "concerns": "PCI"},   # not an array: kept whole
        "trajectory": {"current_phase": "CODING", "blockers": ["5 failing tests"]}},
    "artifacts": {"planning": {"architecture": {"ref": "ef1c", "path": "/a.json", "v": 1}},
                  "code": {}, "test": "none yet"},
    "tool_calls": [{"tool_name": "Bash", "args": {"cmd": "ls"}, "success": True,
                    "duration_ms": 12}],
    "decisions": [{"decision_type": "architecture_choice", "rationale": "r", "context": {}}],
    "playbook_runs": [{"playbook_name": "research", "success": False, "metrics": {"n": 1}}],
    "quality_gates": [], "unknown_extra": {"deep": [[], {}, [1, 1.0, True, None]]},
}

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=20)
_keys = ("phase", "status", "budget", "metadata", "project_memory", "artifacts", "tool_calls",
         "quality_gates", "decisions", "playbook_runs", "apiVersion")


def _doc_like(shape: Any) -> st.SearchStrategy[Any]:
    """Values of ``shape``'s shape (dicts with its keys) mixed with arbitrary JSON."""
    if isinstance(shape, dict):
        return st.one_of(_json, st.fixed_dictionaries(
            {}, optional={k: _doc_like(v) for k, v in shape.items()}).flatmap(
                lambda d: st.dictionaries(st.text(max_size=4), _json, max_size=2).map(
                    lambda extra: {**extra, **d})))
    if isinstance(shape, list) and shape:
        return st.one_of(_json, st.lists(st.one_of(_doc_like(shape[0]), _json), max_size=4))
    return _json


_docs = _doc_like({k: DOC[k] for k in _keys}).filter(lambda d: isinstance(d, dict)).flatmap(
    lambda d: st.text(min_size=1, max_size=10).filter(lambda s: "\x00" not in s).map(
        lambda mid: {**d, "mission_id": mid}))


def _open(path: Path, routed: bool = False, **options: str) -> Any:
    env = Env(fs=NonNativeFS()) if routed else os_env()
    return open_missions_db(str(path), env, **{"journal_mode": "DELETE", **options})


# -- flattening ------------------------------------------------------------------------------

def test_flatten_makes_real_rows_and_keeps_the_rest() -> None:
    rows = flatten(DOC)
    assert rows.mission["owner"] == "agent@vibe.agency" and rows.mission["max_cost_usd"] == 10
    assert [r["summary"] for r in rows.children["session_narrative"]] == [
        "UNIQUE-SUMMARY-MARKER", "s2"]
    assert [r["concept"] for r in rows.children["domain_concepts"]] == ["payment", "db", None]
    assert "domain_concerns" not in rows.children   # a string, kept in the rest
    (art,) = rows.children["artifacts"]
    assert (art["artifact_type"], art["artifact_name"], art["ref"]) == (
        "planning", "architecture", "ef1c")
    assert rows.children["tool_calls"][0]["success"] == 1
    assert canonical_mission(unflatten(rows)) == canonical_mission(DOC)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_docs)
def test_flatten_round_trips_any_document(doc: dict[str, Any]) -> None:
    assert canonical_mission(unflatten(flatten(doc))) == canonical_mission(doc)


# -- the database ----------------------------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(docs=st.lists(_docs, min_size=1, max_size=4))
def test_documents_read_back_exactly_from_the_file(tmp_path: Path,
                                                   docs: list[dict[str, Any]]) -> None:
    path = tmp_path / f"m{abs(hash(repr(docs)))}.db"
    db = _open(path)
    try:
        for doc in docs:
            db.mission_put(doc)
    finally:
        db.close()
    db = _open(path, readonly="true")
    try:
        want = {d["mission_id"]: canonical_mission(d) for d in docs}
        assert db.mission_ids() == sorted(want)
        for mission_id, canonical in want.items():
            assert canonical_mission(db.mission_get(mission_id)) == canonical
    finally:
        db.close()


@pytest.mark.parametrize("routed", [False, True])
def test_kv_and_mission_operations(tmp_path: Path, routed: bool) -> None:
    db = _open(tmp_path / "missions.db", routed)
    try:
        assert isinstance(db, MissionStore) and db.schema_version == 2
        decl = db.declaration
        assert decl.file_format == "arch001-missions/sqlite" and {
            Capability.KV, Capability.BATCH, Capability.MISSIONS,
            Capability.SCHEMA_VERSION} == decl.capabilities
        db.put("session_handoff", b'{"from": 1}')
        db.write_batch({"a/1": b"x", "a/2": b"y"}, deletes=["nope"])
        db.delete("a/2")
        assert db.get("session_handoff") == b'{"from": 1}' and db.get("a/2") is None
        assert db.scan("a/") == [("a/1", b"x")]
        with pytest.raises(ValueError, match="lone surrogate"):
            db.put("\ud800", b"")
        db.mission_put(DOC)
        db.mission_put({**DOC, "mission_id": "m2", "status": "completed"})
        assert db.mission_get("genesis") == DOC and db.mission_ids() == ["genesis", "m2"]
        db.mission_put({"mission_id": "genesis"})   # replaces every row of it
        assert db.mission_get("genesis") == {"mission_id": "genesis"}
        counts = {t: db._db.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                  for t in ("session_narrative", "artifacts", "tool_calls")}
        assert counts == {"session_narrative": 2, "artifacts": 1, "tool_calls": 1}   # m2's
        db.mission_delete("m2")
        db.mission_delete("never")
        assert db.mission_get("m2") is None and db.mission_ids() == ["genesis"]
        assert db._db.execute("SELECT count(*) FROM session_narrative").fetchall() == [(0,)]
        with pytest.raises(ValueError, match="mission_id"):
            db.mission_put({"status": "x"})
    finally:
        db.close()


def test_import_is_one_transaction_and_never_overwrites(tmp_path: Path) -> None:
    db = _open(tmp_path / "missions.db")
    try:
        db.mission_put(DOC)
        other = {"mission_id": "m2", "narrative": "x"}
        counts = db.mission_import([DOC, other, {**DOC, "status": "failed"}])
        assert counts == ImportCounts(imported=("m2",), same=("genesis",),
                                      differing=("genesis",))
        assert db.mission_get("genesis") == DOC   # the differing one was not written
        assert db.mission_import([DOC, other]) == ImportCounts(same=("genesis", "m2"))
        with pytest.raises(TypeError):   # checked before anything is written
            db.mission_import([{"mission_id": "m3"}, {"mission_id": "m4", "bad": (1,)}])
        assert db.mission_ids() == ["genesis", "m2"]
    finally:
        db.close()


# -- versions --------------------------------------------------------------------------------

@pytest.mark.parametrize("routed", [False, True])
def test_a_version_1_file_is_migrated_keeping_every_document(tmp_path: Path,
                                                             routed: bool) -> None:
    path = tmp_path / "missions.db"
    env = Env(fs=NonNativeFS()) if routed else os_env()
    docs = [DOC, {"mission_id": "m2", "project_memory": {"narrative": []}},
            {"mission_id": "m3", "phase": 7, "artifacts": {"code": {"r": {"ref": "x"}}}}]
    create_v1(str(path), env, docs, {"session_handoff": b"h"}, journal_mode="DELETE")
    db = apsw.Connection(str(path))
    assert db.execute("PRAGMA user_version").fetchall() == [(1,)]
    db.close()
    store = open_missions_db(str(path), env, journal_mode="DELETE")
    try:
        assert store.schema_version == 2 and store.get("session_handoff") == b"h"
        assert store.mission_ids() == ["genesis", "m2", "m3"]
        for doc in docs:
            assert canonical_mission(store.mission_get(doc["mission_id"])) == \
                canonical_mission(doc)
        rows = store._db.execute("SELECT artifact_name FROM artifacts ORDER BY 1").fetchall()
        assert rows == [("architecture",), ("r",)]   # re-flattened into the v2 tables
    finally:
        store.close()
    db = apsw.Connection(str(path))
    got = {t: tuple((r[1], str(r[2]).upper(), r[3], r[5])
                    for r in db.execute(f"PRAGMA table_info({t})")) for t in columns_of(2)}
    db.close()
    assert got == columns_of(2)   # the same tables as a file created at version 2


def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "missions.db"
    create_v1(str(path), os_env(), [DOC, {"mission_id": "m2"}], journal_mode="DELETE")
    db = apsw.Connection(str(path))
    db.execute("UPDATE missions SET metadata = '{\"mission_id\": 5}' WHERE mission_uuid = 'm2'")
    db.close()
    before = path.read_bytes()
    with pytest.raises(CorruptStore, match="row 2 does not hold a mission document"):
        _open(path)
    assert path.read_bytes() == before   # DOC was migrated first, and rolled back


@pytest.mark.parametrize("routed", [False, True])
def test_a_newer_file_is_refused_byte_for_byte_unmodified(tmp_path: Path,
                                                          routed: bool) -> None:
    path = tmp_path / "missions.db"
    _open(path, journal_mode="WAL").close()
    db = apsw.Connection(str(path))
    db.execute("PRAGMA journal_mode=WAL").fetchall()
    db.execute("PRAGMA wal_autocheckpoint=0").fetchall()
    db.execute("PRAGMA user_version = 3")   # the version bump sits in the -wal
    db.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)   # and stays there
    db.close()
    files = [tmp_path / "missions.db", tmp_path / "missions.db-wal"]
    before = [p.read_bytes() for p in files]
    # no other connection is open: closing the refused one must not checkpoint the WAL
    for options in ({"journal_mode": "WAL"}, {"journal_mode": "DELETE"}, {"readonly": "true"}):
        with pytest.raises(VersionTooNew, match="(?s)schema version 3.*pip install -U crashgate"):
            _open(path, routed, **options)
        assert [p.read_bytes() for p in files] == before


@pytest.mark.parametrize("routed", [False, True])
def test_a_reader_reads_refuses_writes_and_never_migrates(tmp_path: Path, routed: bool) -> None:
    old = tmp_path / "old.db"
    create_v1(str(old), os_env(), [DOC], journal_mode="DELETE")
    before = old.read_bytes()
    with pytest.raises(PermissionError, match="schema version 1, older than 2.*cannot migrate"):
        _open(old, routed, readonly="true")
    assert old.read_bytes() == before
    path = tmp_path / "missions.db"
    w = _open(path, routed)
    w.mission_put(DOC)
    w.close()
    r = _open(path, routed, readonly="true")
    try:
        assert r.mission_get("genesis") == DOC
        for what, call in {"mission_put": lambda: r.mission_put(DOC),
                           "mission_delete": lambda: r.mission_delete("genesis"),
                           "mission_import": lambda: r.mission_import([DOC]),
                           "put": lambda: r.put("k", b"v")}.items():
            with pytest.raises(PermissionError, match=f"^{what}: .*readonly=true"):
                call()
    finally:
        r.close()


# -- damage ----------------------------------------------------------------------------------

def test_a_damaged_page_is_found_by_integrity_check(tmp_path: Path) -> None:
    path = tmp_path / "missions.db"
    db = _open(path)
    db.mission_import([{**DOC, "mission_id": f"m{i:04}"} for i in range(300)])
    db.close()
    conn = apsw.Connection(str(path))
    (root,), = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = "
                            "'session_narrative'").fetchall()
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096 * (int(root) - 1)
    assert data[page] in (0x05, 0x0D)   # an interior or leaf table page
    data[page + 8: page + 400] = b"\xa5" * 392   # its cell pointers
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStore):
        _open(path)


@pytest.mark.parametrize("routed", [False, True])
def test_a_changed_byte_in_a_flattened_row_is_corrupt_not_a_document(tmp_path: Path,
                                                                     routed: bool) -> None:
    path = tmp_path / "missions.db"
    db = _open(path, routed)
    db.mission_put(DOC)
    m2 = {**DOC, "mission_id": "m2", "project_memory": {"trajectory": {"current_phase": "X"}}}
    db.mission_put(m2)
    db.close()
    data = path.read_bytes()
    assert data.count(b"UNIQUE-SUMMARY-MARKER") == 1
    path.write_bytes(data.replace(b"UNIQUE-SUMMARY-MARKER", b"UNIQUE-SUMMARY-MARKEQ"))
    db = _open(path, routed)
    try:
        with pytest.raises(CorruptStore, match="mission 'genesis' does not match its checksum"):
            db.mission_get("genesis")
        assert db.mission_get("m2") == m2
        db._db.execute("UPDATE artifacts SET seq = 9, mission_id = (SELECT id FROM missions WHERE "
                       "mission_uuid = 'm2') WHERE artifact_name = 'architecture' AND "
                       "mission_id = (SELECT id FROM missions WHERE mission_uuid = 'genesis')")
        db._db.execute("UPDATE trajectory SET extra = 'not json' WHERE mission_id = "
                       "(SELECT id FROM missions WHERE mission_uuid = 'm2')")
        with pytest.raises(CorruptStore, match="mission 'm2'"):
            db.mission_get("m2")   # a row moved to another mission, a row that is not JSON
        db._db.execute("UPDATE missions SET mission_uuid = 'm3' WHERE mission_uuid = 'm2'")
        with pytest.raises(CorruptStore, match="the id of mission"):
            db.mission_ids()
    finally:
        db.close()


def test_the_simulated_disk_holds_a_missions_db() -> None:
    env = sim_env(SimDisk(DiskImage.empty("/d")))
    db = open_missions_db("/d/state/missions.db", env)
    db.mission_put(DOC)
    db.put("session_handoff", b"h")
    db.close()
    db = open_missions_db("/d/state/missions.db", env, readonly="true")
    try:
        assert db.mission_get("genesis") == DOC and db.get("session_handoff") == b"h"
    finally:
        db.close()
