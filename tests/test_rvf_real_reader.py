"""The reader of files the real @ruvector/rvf runtime writes (reference/rvf_real), on committed
fixtures made by the real package (tests/fixtures/rvf_real/make_fixtures.js; node is not needed
here) and on damaged copies of them."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from crashgate.backends import CorruptStore, os_env
from crashgate.reference.rvf import open_rvf
from crashgate.reference.rvf.cli import main as rvf_main
from crashgate.reference.rvf_real import FILE_FORMAT, is_real_file, read, verify
from crashgate.reference.rvf_real.export import records
from crashgate.reference.rvf_real.layout import content_hash, witness_hash

FIXTURES = Path(__file__).parent / "fixtures" / "rvf_real"
VERSIONS = ("0.2.3", "0.1.8")
NAMES = ("basic", "deletes", "compacted", "parent", "torn_then_appended")


def _expected(version: str, name: str) -> dict:
    return json.loads((FIXTURES / version / f"{name}.json").read_text())


def _copy(version: str, name: str, tmp_path: Path) -> Path:
    dst = tmp_path / f"{name}.rvf"
    shutil.copyfile(FIXTURES / version / f"{name}.rvf", dst)
    return dst


def _fingerprint(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", NAMES)
def test_fixture_reads_back_what_the_script_wrote(version: str, name: str) -> None:
    exp = _expected(version, name)
    assert exp["package_version"] == version
    rf = read(str(FIXTURES / version / f"{name}.rvf"))
    m = rf.manifest
    assert m is not None
    assert list(rf.state.live) == exp["live_ids"]
    for vid in rf.state.live:  # float32 values, compared exactly
        assert list(rf.state.vectors[vid]) == exp["written"][str(vid)], vid
    assert m.epoch == exp["status"]["currentEpoch"]
    assert m.dimension == exp["dimension"]
    assert len(rf.state.live) == exp["status"]["totalVectors"]
    assert m.identity is not None and m.identity.file_id.hex() == exp["file_id"]
    assert m.identity.lineage_depth == exp["lineage_depth"]
    # The runtime's in-memory directory is the manifest's plus the manifest itself, last.
    runtime = [(s["id"], s["offset"], s["payloadLength"]) for s in exp["segments"]]
    assert runtime[-1][1] == m.offset
    assert [(e.seg_id, e.offset, e.payload_length) for e in m.directory] == runtime[:-1]
    report = verify(rf)
    assert report.problems == () and report.tail == ()
    assert report.committed_end == len(rf.data)


def test_deletes_fixture_shows_the_runtime_keeps_a_reingested_deleted_id_deleted() -> None:
    rf = read(str(FIXTURES / "0.2.3" / "deletes.rvf"))
    assert 13 in rf.state.vectors and 13 in rf.state.deleted and 13 not in rf.state.live
    assert rf.state.vectors[13] == (3.0, 3.0, 3.0)  # the re-ingested value is in the file
    assert rf.state.vectors[12] == (70.0, 80.0, 90.0)  # a later batch overwrites an id


@pytest.mark.parametrize("version", VERSIONS)
def test_derived_child_carries_the_parents_lineage(version: str) -> None:
    exp = _expected(version, "parent")["child"]
    child = read(str(FIXTURES / version / "child.rvf"))
    parent = read(str(FIXTURES / version / "parent.rvf"))
    assert child.manifest is not None and parent.manifest is not None
    ci, pi = child.manifest.identity, parent.manifest.identity
    assert ci is not None and pi is not None
    assert ci.file_id.hex() == exp["file_id"] and ci.parent_id == pi.file_id
    assert ci.lineage_depth == exp["lineage_depth"] == 1
    assert ci.parent_hash != bytes(32) and child.state.live == ()  # derive copies no vectors


def test_hashes_match_the_runtimes_bytes() -> None:
    rf = read(str(FIXTURES / "0.2.3" / "basic.rvf"))
    for s in rf.scan.segments:
        assert s.hash_ok is True
        assert content_hash(rf.data[s.payload_start:s.end]) == s.header.content_hash
    assert witness_hash(b"") == bytes(32)
    assert witness_hash(b"\x01") != witness_hash(b"\x02")


def test_layouts_are_told_apart(tmp_path: Path) -> None:
    for version in VERSIONS:
        for name in NAMES:
            assert is_real_file(str(FIXTURES / version / f"{name}.rvf"))
    ref = tmp_path / "ref.rvf"
    with open_rvf(str(ref), os_env(), dimension="2"):
        pass
    assert ref.stat().st_size >= 64 and not is_real_file(str(ref))
    assert rvf_main(["rvf", "status", str(ref)]) == 0  # the reference layout still works
    assert not is_real_file(str(tmp_path / "missing.rvf"))


def test_cli_on_a_real_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _copy("0.2.3", "deletes", tmp_path)
    before = _fingerprint(path)
    assert rvf_main(["rvf", "status", str(path), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["file_format"] == FILE_FORMAT and st["vectors"] == 5 and st["epoch"] == 4
    assert rvf_main(["rvf", "segments", str(path), "--json"]) == 0
    segs = json.loads(capsys.readouterr().out)["segments"]
    assert [s["type"] for s in segs][:3] == ["manifest", "vec", "witness"]
    assert rvf_main(["rvf", "verify", str(path)]) == 0
    assert f"ok ({FILE_FORMAT})" in capsys.readouterr().out
    for out in (tmp_path / "out.json", tmp_path / "out.jsonl"):
        assert rvf_main(["rvf", "export", str(path), "--output", str(out)]) == 0
    doc = json.loads((tmp_path / "out.json").read_text())
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert doc == lines and [r["id"] for r in doc] == [10, 12, 14, 15, 9007199254740991]
    assert doc[1] == {"id": 12, "vector": [70.0, 80.0, 90.0], "metadata": {}}
    assert _fingerprint(path) == before


def test_torn_tail_is_reported_and_the_previous_commit_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _copy("0.2.3", "deletes", tmp_path)
    last = read(str(path)).manifest
    assert last is not None
    with open(path, "r+b") as fh:  # the last manifest's header is cut after 30 bytes
        fh.truncate(last.offset + 30)
    before = _fingerprint(path)
    rf = read(str(path))
    report = verify(rf)
    assert report.problems == ()
    torn = [p for p in report.tail if p.check == "torn tail"]
    assert [(p.segment, p.offset) for p in torn] == [(None, last.offset)]
    assert rf.manifest is not None and rf.manifest.epoch == 3  # the commit before
    assert list(rf.state.live) == [10, 12, 14, 15]
    uncommitted = {(p.offset, p.check) for p in report.tail}
    assert (1891, "uncommitted") in uncommitted  # the vec of the torn commit
    assert rvf_main(["rvf", "verify", str(path)]) == 2
    out = capsys.readouterr().out
    assert f"FAIL offset {last.offset}: torn tail" in out and "epoch 3" in out
    assert _fingerprint(path) == before


def test_manifest_cut_off_is_reported_with_its_segment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _copy("0.1.8", "basic", tmp_path)
    with open(path, "r+b") as fh:  # the second manifest (segment 3 at 435) keeps 21 bytes
        fh.truncate(435 + 64 + 21)
    before = _fingerprint(path)
    report = verify(read(str(path)))
    assert report.problems == ()
    assert ("torn tail", 3, 435) in {(p.check, p.segment, p.offset) for p in report.tail}
    assert "21 of 173 bytes" in str(next(p for p in report.tail if p.check == "torn tail"))
    assert ("uncommitted", 1, 162) in {(p.check, p.segment, p.offset) for p in report.tail}
    assert rvf_main(["rvf", "verify", str(path)]) == 2
    assert "FAIL segment 3 at offset 435: torn tail" in capsys.readouterr().out
    assert _fingerprint(path) == before


def test_flipped_payload_byte_is_reported_and_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _copy("0.2.3", "basic", tmp_path)
    data = bytearray(path.read_bytes())
    data[162 + 64 + 10] ^= 0x01  # inside the vec segment's payload (segment 1 at 162)
    path.write_bytes(bytes(data))
    before = _fingerprint(path)
    rf = read(str(path))
    report = verify(rf)
    assert ("payload checksum", 1, 162) in {(p.check, p.segment, p.offset)
                                            for p in report.problems}
    assert rf.state.load_errors  # the runtime's open fails with InvalidChecksum
    with pytest.raises(CorruptStore, match="offset 162"):
        records(rf)
    assert rvf_main(["rvf", "verify", str(path)]) == 1
    assert "FAIL segment 1 at offset 162: payload checksum" in capsys.readouterr().out
    assert rvf_main(["rvf", "export", str(path), "--output", str(tmp_path / "x.json")]) == 1
    assert not (tmp_path / "x.json").exists()
    assert _fingerprint(path) == before


def test_flipped_byte_in_the_boot_manifest_is_a_problem(tmp_path: Path) -> None:
    path = _copy("0.2.3", "basic", tmp_path)
    data = bytearray(path.read_bytes())
    data[435 + 64 + 30] ^= 0x80  # inside a directory entry of the last manifest
    path.write_bytes(bytes(data))
    report = verify(read(str(path)))
    found = {(p.check, p.segment, p.offset) for p in report.problems}
    assert ("payload checksum", 3, 435) in found


def test_torn_write_the_runtime_appended_after_is_a_note_not_damage() -> None:
    rf = read(str(FIXTURES / "0.2.3" / "torn_then_appended.rvf"))
    report = verify(rf)
    assert report.problems == () and report.tail == ()
    cut = [s for s in rf.scan.segments if s.cut_at is not None]
    assert len(cut) == 1 and cut[0].header.type_name == "manifest"
    assert any(p.offset == cut[0].offset and "cut short" in p.detail for p in report.notes)


def test_reading_never_writes(tmp_path: Path) -> None:
    path = _copy("0.2.3", "compacted", tmp_path)
    before = _fingerprint(path)
    verify(read(str(path)))
    for cmd in ("status", "segments", "verify"):
        assert rvf_main(["rvf", cmd, str(path)]) == 0
    assert _fingerprint(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compacted.rvf"]
