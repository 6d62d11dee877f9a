"""The reference store writing the real ``@ruvector/rvf`` layout (``rvf-ruvector``): round trip,
reopen, metadata, byte-exact segments against the real runtime's fixtures, crash states through
the harness, and (with node) files read across the reference and the real runtime."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from node import requires_node

from crashgate.backends import (
    BackendMissing,
    BadOption,
    CorruptStore,
    LockHeld,
    VectorRecord,
    VersionTooNew,
    os_env,
)
from crashgate.backends.registry import resolve
from crashgate.harness.cli import main
from crashgate.harness.driver.npm_cache import install
from crashgate.harness.driver.rvf_node import node_target
from crashgate.reference.rvf_real import read, verify
from crashgate.reference.rvf_real.export import records
from crashgate.reference.rvf_real.layout import FILE_FORMAT, is_real_file
from crashgate.reference.rvf_real.payloads import parse_vec, parse_witness
from crashgate.reference.rvf_real.writer import encode_segment, encode_vec, encode_witness

FIXTURES = Path(__file__).parent / "fixtures" / "rvf_real" / "0.2.3"


def _open(path: Path, **options: str) -> Any:
    return resolve("rvf-ruvector").open(str(path), os_env(), **options)


def _records(ids: range, dim: int = 4, seed: int = 0) -> list[VectorRecord]:
    rng = np.random.default_rng(seed)
    return [VectorRecord.of(i, rng.uniform(-1, 1, dim).astype(np.float32).tolist(),
                            {"tag": "even" if i % 2 == 0 else "odd", "i": i} if i % 3 else {})
            for i in ids]


def test_segments_are_byte_for_byte_what_the_runtime_writes() -> None:
    rf = read(str(FIXTURES / "basic.rvf"))
    for seg in rf.scan.segments:
        raw = rf.data[seg.offset:seg.end]
        assert encode_segment(seg.header.seg_type, seg.header.seg_id, raw[64:]) == raw
        payload = raw[64:]
        if seg.header.type_name == "vec":
            parsed = parse_vec(payload)
            assert parsed is not None
            ids = [i for i, _ in parsed[1]]
            assert encode_vec(parsed[0], ids, np.array([v for _, v in parsed[1]])) == payload
        if seg.header.type_name == "witness":
            w = parse_witness(payload)
            assert w is not None
            assert encode_witness(w.witness_type, w.timestamp_ns, w.action, w.prev_hash) == payload


def test_round_trip_reopen_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "s.rvf"
    recs = _records(range(1, 13))
    with _open(path) as s:
        assert s.declaration.file_format == FILE_FORMAT == "rvf-ruvector/1"
        s.upsert(recs)
        assert s.remove([2, 3, 99]) == 2
        s.upsert([VectorRecord.of(4, [0.5, 0.5, 0.5, 0.5])])   # rewritten without metadata
        before = s.query([0.1, 0.2, 0.3, 0.4], 5)
        filtered = s.query([0.1, 0.2, 0.3, 0.4], 3, {"tag": "odd"})
    with _open(path) as s:
        assert s.count() == 10
        assert s.query([0.1, 0.2, 0.3, 0.4], 5) == before
        assert s.query([0.1, 0.2, 0.3, 0.4], 3, {"tag": "odd"}) == filtered
        assert all(h.metadata["tag"] == "odd" for h in filtered)
        [r4] = s.fetch([4])
        assert r4.metadata == {} and r4.vector == (0.5, 0.5, 0.5, 0.5)
        [r5] = s.fetch([5])
        assert r5.metadata == {"tag": "odd", "i": 5}
        assert r5.vector == recs[4].vector
        assert s.fetch([2, 3]) == []
    report = verify(read(str(path)))
    assert report.problems == () and report.tail == ()


def test_second_writer_gets_lock_held(tmp_path: Path) -> None:
    path = tmp_path / "s.rvf"
    with _open(path, dimension="4"):
        with pytest.raises(LockHeld):
            _open(path)
        with _open(path, readonly="true") as r:
            assert r.count() == 0


def test_a_torn_last_commit_rolls_back_to_the_commit_before(tmp_path: Path) -> None:
    path = tmp_path / "s.rvf"
    with _open(path) as s:
        s.upsert(_records(range(1, 4)))
        size = path.stat().st_size
        s.upsert(_records(range(4, 8), seed=1))
    data = path.read_bytes()
    path.write_bytes(data[:-10] + b"\xff" * 10)    # the last manifest's payload is garbage
    with _open(path) as s:
        assert s.ids() == [1, 2, 3]
    assert path.stat().st_size == size   # the torn commit was cut away


def _certify(out: Path, *scenarios: str) -> dict[str, dict[str, Any]]:
    args = ["certify", "rvf-ruvector", "--budget", "quick", "--seed", "7", "--out", str(out),
            "--quiet"]
    for s in scenarios:
        args += ["--scenario", s]
    main(args)
    [cert] = out.glob("*/*/certificate.json")
    return {r["key"]: r for r in json.loads(cert.read_text())["rows"]}


def test_crash_states_through_the_model(tmp_path: Path) -> None:
    rows = _certify(tmp_path, "model")
    assert rows["model"]["verdict"] == "pass", rows["model"]["summary"]


@pytest.mark.parametrize("row", ["adr032-1", "damage"])
def test_power_loss_and_damage_rows(tmp_path: Path, row: str) -> None:
    rows = _certify(tmp_path, row)
    assert rows[row]["verdict"] == "pass", rows[row]["summary"]


# -- across implementations: the real runtime (needs node and npm) ------------------------------

_JS = """
const { RvfDatabase } = require('@ruvector/rvf-node');
const [mode, path, argsJson] = process.argv.slice(2);
const args = JSON.parse(argsJson);
const db = mode === 'write'
  ? RvfDatabase.create(path, { dimension: args.dim, metric: 'l2' })
  : RvfDatabase.open(path);
const vectors = (vs) => Float32Array.from(vs.flat());
if (mode === 'write') db.ingestBatch(vectors(args.vectors), args.ids);
if (args.ingest) db.ingestBatch(vectors(args.ingest.vectors), args.ingest.ids);
if (args.remove) db.delete(args.remove);
// the runtime reports squared l2: the square root is the distance the contract speaks of
const hits = db.query(Float32Array.from(args.query), 10, {})
  .map((h) => ({ id: Number(h.id), distance: Math.sqrt(h.distance) }));
db.close();
process.stdout.write(JSON.stringify(hits));
"""


def _node(tmp_path: Path, mode: str, path: Path, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Run ``_JS`` with the real runtime (crashgate's npm cache): ``write`` creates ``path``,
    ``read`` opens it; either may ingest or delete, then the top 10 of ``args["query"]``."""
    try:
        prefix = install(node_target("0.2.3"), backend="test")
    except BackendMissing as exc:   # offline, or the registry refused: not this code's fault
        pytest.skip(f"npm could not install @ruvector/rvf-node: {exc}")
    script = tmp_path / "runtime.js"
    script.write_text(_JS)
    done = subprocess.run(["node", str(script), mode, str(path), json.dumps(args)],
                          env={**os.environ, "NODE_PATH": str(prefix / "node_modules")},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    hits: list[dict[str, Any]] = json.loads(done.stdout)
    return hits


def _same_top10(ours: list[Any], theirs: list[dict[str, Any]]) -> None:
    """The same ten ids, in order, at distances within 1e-6."""
    assert [h.id for h in ours] == [h["id"] for h in theirs]
    for mine, real in zip(ours, theirs, strict=True):
        assert abs(mine.distance - real["distance"]) <= 1e-6, (mine, real)


@requires_node
def test_reference_file_read_by_the_real_runtime(tmp_path: Path) -> None:
    path = tmp_path / "ref.rvf"
    recs = _records(range(1, 41), dim=8, seed=2)
    query = [0.3] * 8
    with _open(path) as s:
        s.upsert(recs)
        assert s.remove([1, 2]) == 2
        ours = s.query(query, 10)
    _same_top10(ours, _node(tmp_path, "read", path, {"query": query}))
    # the runtime appends (id 7 again, without metadata), and the reference reads it back
    new = [0.0] * 8
    _node(tmp_path, "read", path, {"query": query, "ingest": {"ids": [7, 77],
                                                              "vectors": [new, new]}})
    with _open(path) as s:
        assert s.count() == 39
        [r7] = s.fetch([7])
        assert r7.metadata == {} and r7.vector == tuple(new)
        [r8] = s.fetch([8])
        assert r8.metadata == dict(recs[7].metadata) and r8.metadata
        again = s.query(query, 10)
    _same_top10(again, _node(tmp_path, "read", path, {"query": query}))


@requires_node
def test_real_runtime_file_read_by_the_reference(tmp_path: Path) -> None:
    path = tmp_path / "real.rvf"
    recs = _records(range(1, 41), dim=8, seed=3)
    query = [-0.2] * 8
    real = _node(tmp_path, "write", path, {"dim": 8, "ids": [r.id for r in recs],
                                           "vectors": [list(r.vector) for r in recs],
                                           "remove": [3, 4], "query": query})
    with _open(path) as s:
        assert s.count() == 38
        _same_top10(s.query(query, 10), real)
        s.upsert([VectorRecord.of(3, [0.0] * 8, {"back": True})])   # deleted, then written again
    hits = _node(tmp_path, "read", path, {"query": [0.0] * 8})
    assert hits[0]["id"] == 3 and hits[0]["distance"] == 0.0


# -- the version gate (reference/rvf_real/versions.py) -------------------------------------------


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_a_writer_at_version_2_writes_2_and_a_version_1_reader_refuses_it(tmp_path: Path) -> None:
    path = tmp_path / "v2.rvf"
    with _open(path, wire_version="2") as s:
        assert s.declaration.wire_version == 2
        s.upsert(_records(range(1, 9)))
        assert s.remove([1]) == 1
    assert {seg.header.version for seg in read(str(path)).scan.segments} == {2}
    before = _files(tmp_path)
    for extra in ({}, {"readonly": "true"}):
        with pytest.raises(VersionTooNew) as info:
            _open(path, **extra)
        text = str(info.value)
        assert "requires RVF segment version (rvf-ruvector layout) 2" in text
        assert "supports version 1" in text and "Run: npm update @ruvector/rvf" in text
        assert "rvf-ruvector?wire_version=2" in text
        assert _files(tmp_path) == before   # no byte changed, no lock file left
    with _open(path, wire_version="3", readonly="true") as s:   # a newer reader reads it
        assert s.count() == 7


def test_a_newer_reader_reads_an_older_file_and_appends_at_its_own_version(
        tmp_path: Path) -> None:
    path = tmp_path / "v0.rvf"
    with _open(path, wire_version="0") as s:
        s.upsert(_records(range(1, 5)))
    with _open(path) as s:   # version 1: forward-compatible
        assert s.ids() == [1, 2, 3, 4]
        s.upsert(_records(range(5, 7)))
    versions = [seg.header.version for seg in read(str(path)).scan.segments]
    assert versions[0] == 0 and versions[-1] == 1 and set(versions) == {0, 1}
    with pytest.raises(VersionTooNew):   # the v0 reader now finds v1 commits
        _open(path, wire_version="0")


def test_one_damaged_version_byte_is_damage_not_a_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "s.rvf"
    with _open(path) as s:
        s.upsert(_records(range(1, 9)))
        s.upsert(_records(range(9, 12)))
    rf = read(str(path))
    vec = next(seg for seg in rf.scan.segments if seg.header.type_name == "vec")
    data = bytearray(path.read_bytes())
    data[vec.offset + 4] ^= 0xFF   # 1 -> 254, the header has no check of its own
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStore, match="version byte 254.*a damaged header"):
        _open(path, readonly="true")
    report = verify(read(str(path)))
    assert [(p.check, p.offset) for p in report.problems] == [("version", vec.offset)]
    assert "no other header declares a newer version" in report.problems[0].detail


def test_a_runtime_file_of_version_2_is_recognised_and_reported_newer(tmp_path: Path) -> None:
    """The real runtime's fixture with every header's version byte set to 2: still this layout
    (not the reference's), reported as newer than the reader, exported by no one."""
    data = bytearray((FIXTURES / "basic.rvf").read_bytes())
    for seg in read(str(FIXTURES / "basic.rvf")).scan.segments:
        data[seg.offset + 4] = 2
    path = tmp_path / "v2.rvf"
    path.write_bytes(bytes(data))
    assert is_real_file(str(path))
    [problem] = verify(read(str(path))).problems
    assert problem.check == "version" and problem.offset == 0
    assert problem.detail.startswith("version 2: newer than this reader (1)")
    with pytest.raises(VersionTooNew):
        _open(path)
    with pytest.raises(VersionTooNew):
        records(read(str(path)))
    assert main(["rvf", "verify", str(path)]) == 1
    assert main(["rvf", "export", str(path), "--output", str(tmp_path / "out.json")]) == 1
    assert path.read_bytes() == bytes(data)


def test_wire_version_must_fit_the_version_byte(tmp_path: Path) -> None:
    with pytest.raises(BadOption, match="wire_version"):
        _open(tmp_path / "s.rvf", wire_version="256")
