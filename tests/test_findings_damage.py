"""Issue 8's three findings about damage at rest, each as its exact steps.

1. Bytes changed in a SQLite or a JSON store file: the store returned an altered value (or an
   untyped decode error) instead of a typed ``CorruptStore``.
2. rvlite over an RVF file restored from a backup and then written once through
   ``crashgate rvf ingest``: equal epochs over different commits, and rvlite trusted its cache.
3. One flipped bit in the last manifest of an RVF file: ``crashgate rvf verify`` said ``ok``.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import struct
from pathlib import Path

import pytest

from crashgate.backends import CorruptStore, VectorRecord, os_env, resolve
from crashgate.reference.json_store import file_name_for, open_json
from crashgate.reference.rvf.cli import main as rvf_main
from crashgate.reference.rvf.scan import ChunkReader, walk
from crashgate.reference.rvf.segments import HEADER_SIZE, SegType
from crashgate.reference.rvlite import open_rvlite
from crashgate.reference.sqlite_store import open_sqlite


def _replace_once(path: Path, old: bytes, new: bytes) -> None:
    """Overwrite the one occurrence of ``old`` in the file with ``new`` (same length): damage
    inside a record, where SQLite's own structure checks do not look."""
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1, (old, data.count(old))
    path.write_bytes(data.replace(old, new))


# -- finding 1: SQLite and JSON stores returned altered values ------------------------------

def test_sqlite_a_float_changed_in_the_file_is_corrupt_not_data(tmp_path: Path) -> None:
    """The open refuses it: it checks every vector record against its sum (reads check each
    record too: ``test_sqlite_store``'s records changed under an open store)."""
    db = tmp_path / "s.db"
    s = open_sqlite(str(db), os_env(), journal_mode="DELETE")
    s.upsert([VectorRecord.of(7, [1.25, -3.5], {"owner": "ann"})])
    s.close()
    # one digit of the float changed: 1.25 -> 1.375 (bytes of a little-endian float64)
    _replace_once(db, struct.pack("<d", 1.25), struct.pack("<d", 1.375))
    with pytest.raises(CorruptStore) as info:
        open_sqlite(str(db), os_env(), journal_mode="DELETE")
    assert "id 7" in str(info.value) and str(db) in str(info.value)


@pytest.mark.parametrize("old, new", [(b"metadata TEXT", b"metadatq TEXT"),
                                      (b"id INTEGER", b"\xa0d INTEGER")])
def test_sqlite_a_damaged_column_name_is_corrupt_not_a_query_error(
        tmp_path: Path, old: bytes, new: bytes) -> None:
    """Found by a certification (seed 1286860987): a flipped bit in the schema text renamed a
    column; integrity_check passed and every read raised ``SQLError: no such column``."""
    db = tmp_path / "s.db"
    s = open_sqlite(str(db), os_env(), journal_mode="DELETE")
    s.upsert([VectorRecord.of(7, [1.25, -3.5], {"owner": "ann"})])
    s.close()
    _replace_once(db, old, new)
    with pytest.raises(CorruptStore, match="vectors"):
        open_sqlite(str(db), os_env(), journal_mode="DELETE")


def _flip_rowid_bit(db: Path, table: str, rowid: int) -> None:
    """Flip bit 0 of ``rowid`` where the leaf cell of ``table`` (one leaf page: a small
    table) keeps it: the cell is the payload size, then the rowid, as varints (one byte each
    below 128; sqlite.org/fileformat2.html, "B-tree Pages")."""
    assert rowid < 128
    with sqlite3.connect(db) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = ?",
                            (table,)).fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(db.read_bytes())
    page = (root - 1) * page_size
    assert data[page] == 0x0D, "not a leaf table page"
    cells = struct.unpack(">H", data[page + 3:page + 5])[0]
    for i in range(cells):
        cell = page + struct.unpack(">H", data[page + 8 + 2 * i:page + 10 + 2 * i])[0]
        assert data[cell] < 0x80 and data[cell + 1] < 0x80
        if data[cell + 1] == rowid:
            data[cell + 1] ^= 1
            db.write_bytes(bytes(data))
            return
    raise AssertionError(f"no cell of rowid {rowid}")


def test_sqlite_a_flipped_bit_in_a_vector_id_is_corrupt_not_a_lost_record(
        tmp_path: Path) -> None:
    """Found by a certification (seed 3037027365): bit 0 of a vector record's id (its rowid,
    which no index repeats) flipped 37 to 36. ``integrity_check`` passed, ``fetch([37])``
    answered absent and id 36 appeared, unwritten. Every open now checks the vector records'
    sums, which cover the id."""
    db = tmp_path / "s.db"
    s = open_sqlite(str(db), os_env(), journal_mode="DELETE")
    s.upsert([VectorRecord.of(29, [1.0], {}), VectorRecord.of(37, [2.0], {"op": 6})])
    s.close()
    _flip_rowid_bit(db, "vectors", 37)
    with sqlite3.connect(db) as conn:   # the damage is one SQLite cannot see
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert [r[0] for r in conn.execute("SELECT id FROM vectors")] == [29, 36]
    conn.close()
    with pytest.raises(CorruptStore, match="id 36"):
        open_sqlite(str(db), os_env(), journal_mode="DELETE")
    with pytest.raises(CorruptStore, match="id 36"):
        open_sqlite(str(db), os_env(), journal_mode="DELETE", readonly="true")


def test_sqlite_a_kv_value_changed_in_the_file_is_corrupt_not_data(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    s = open_sqlite(str(db), os_env(), journal_mode="DELETE")
    s.put("balance", b"amount=1000;currency=EUR")
    s.close()
    _replace_once(db, b"amount=1000", b"amount=9000")
    s = open_sqlite(str(db), os_env(), journal_mode="DELETE")
    try:
        with pytest.raises(CorruptStore) as info:
            s.get("balance")
        assert "'balance'" in str(info.value) and str(db) in str(info.value)
        with pytest.raises(CorruptStore):
            s.scan("")
    finally:
        s.close()


def test_sqlite_metadata_that_no_longer_decodes_is_corrupt_not_an_untyped_error(
        tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    s = open_sqlite(str(db), os_env(), journal_mode="DELETE")
    s.upsert([VectorRecord.of(3, [0.5], {"owner": "ann"})])
    s.close()
    _replace_once(db, b'"ann"', b'"\xff\xfe\xfd"')   # invalid UTF-8 where JSON text was
    with pytest.raises(CorruptStore, match="id 3"):
        open_sqlite(str(db), os_env(), journal_mode="DELETE")


def test_json_store_a_value_changed_in_its_document_is_corrupt_not_data(
        tmp_path: Path) -> None:
    root = tmp_path / "state"
    s = open_json(str(root), os_env())
    s.put("limit", b"max=1000")
    s.close()
    _replace_once(root / file_name_for("limit"), b"max=1000", b"max=9000")
    s = open_json(str(root), os_env())
    with pytest.raises(CorruptStore) as info:
        s.get("limit")
    assert "'limit'" in str(info.value) and file_name_for("limit") in str(info.value)
    with pytest.raises(CorruptStore):
        s.scan("")


# -- finding 2: rvlite trusted its cache at equal epochs over different commits -------------

def test_rvlite_rebuilds_its_cache_after_a_restore_and_one_ingest(tmp_path: Path) -> None:
    path = tmp_path / "store.rvf"
    backup = tmp_path / "backup.rvf"
    store = open_rvlite(str(path), os_env())
    store.upsert([VectorRecord.of(1, [1.0, 0.0], {"owner": "ann"}),
                  VectorRecord.of(2, [0.0, 1.0], {"owner": "ann"})])
    store.close()
    shutil.copyfile(path, backup)                       # a backup at epoch 1
    store = open_rvlite(str(path), os_env())
    store.upsert([VectorRecord.of(3, [1.0, 1.0], {"owner": "ann"})])   # epoch 2
    store.close()
    shutil.copyfile(backup, path)                       # restored: RVF at epoch 1 again
    (tmp_path / "new.json").write_text(json.dumps(
        [{"id": 2, "vector": [5.0, 5.0], "metadata": {"owner": "bob"}}]))
    assert rvf_main(["rvf", "ingest", str(path), "--input", str(tmp_path / "new.json")]) == 0
    store = open_rvlite(str(path), os_env())            # epochs equal (2 and 2) again
    try:
        assert store.epoch == store.metadata_epoch() == 2
        assert store.fetch([2]) == [VectorRecord.of(2, [5.0, 5.0], {"owner": "bob"})]
        assert [h.id for h in store.query([5.0, 5.0], 5, {"owner": "bob"})] == [2]
        assert store.fetch([3]) == []
    finally:
        store.close()


# -- finding 3: `rvf verify` said ok over a rolled-back commit --------------------------------

def test_rvf_verify_reports_bytes_past_the_last_good_commit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.rvf"
    (tmp_path / "a.json").write_text(json.dumps([{"id": 1, "vector": [1.0, 2.0]}]))
    (tmp_path / "b.json").write_text(json.dumps([{"id": 2, "vector": [3.0, 4.0]}]))
    assert rvf_main(["rvf", "create", str(path), "--dimension", "2"]) == 0
    assert rvf_main(["rvf", "ingest", str(path), "--input", str(tmp_path / "a.json")]) == 0
    assert rvf_main(["rvf", "ingest", str(path), "--input", str(tmp_path / "b.json")]) == 0
    capsys.readouterr()
    f = os_env().fs.open(str(path), "r")
    try:
        segs = walk(ChunkReader(f, f.size()), 1).segments
    finally:
        f.close()
    last = [s for s in segs if s.seg_type == SegType.MANIFEST][-1]
    data = bytearray(path.read_bytes())
    data[last.offset + HEADER_SIZE + 3] ^= 0x04          # one bit of the last manifest's payload
    path.write_bytes(bytes(data))
    code = rvf_main(["rvf", "verify", str(path)])
    out = capsys.readouterr().out
    assert code == 2, out
    assert not out.startswith("ok") and len(out.splitlines()) == 1
    assert "bytes past the last good commit, from offset" in out
    assert f"at {last.offset} an intact MANIFEST segment" in out and "content hash" in out
    assert "a torn last commit or damage: the last good commit is epoch 1" in out.lower()



def test_a_record_claiming_too_big_a_length_is_corrupt_not_an_untyped_error() -> None:
    """Found by a certification of ``pattern-proxy`` (README's main command): sector 12 of its
    AgentDB secondary overwritten with random bytes made ``PRAGMA integrity_check`` itself raise
    ``apsw.TooBigError`` at open, where ``CorruptStore`` is the promise."""
    from crashgate.backends import resolve
    from crashgate.scenarios.procedures_damage import check_damage

    evidence = check_damage(resolve("pattern-proxy"), seed=3231960766, ops=12, damage={
        "kind": "overwritten-sector", "path": "/data/store/patterns-backup.db", "sector": 12,
        "seed": 12})
    assert evidence.verdict.value == "pass", evidence.summary
    assert "answered CorruptStore" in evidence.summary, evidence.summary


def test_a_bit_flip_that_makes_a_blob_text_is_corrupt_not_a_decode_error() -> None:
    """Found by the README's main command (run seed 2677514855): in stage2's SQLite file, bit 7
    of byte 16279 turned a record's BLOB into TEXT that is not UTF-8, and the open's check of
    every vector record raised UnicodeDecodeError."""
    from crashgate.scenarios.procedures_damage import check_damage
    ev = check_damage(resolve("stage2"), seed=3187078991, ops=12, damage={
        "kind": "bit-flip", "path": "/data/store/sqlite.db", "offset": 16279, "bit": 7})
    assert ev.verdict.value == "pass" and "CorruptStore" in ev.summary, ev.summary


def test_a_negative_schema_version_is_corrupt_not_a_failed_migration() -> None:
    """Found by the same run: bit 7 of byte 60 (the top bit of SQLite's user_version, read as
    signed) made ARCH-001's missions.db say version -2147483646, and the open migrated from it
    and failed an assertion."""
    from crashgate.scenarios.procedures_damage import check_damage
    for name in ("arch-phase1", "sqlite"):
        path = "/data/store/missions.db" if name == "arch-phase1" else "/data/store"
        ev = check_damage(resolve(name), seed=3187078991, ops=12, damage={
            "kind": "bit-flip", "path": path, "offset": 60, "bit": 7})
        assert ev.verdict.value == "pass" and "CorruptStore" in ev.summary, (name, ev.summary)
