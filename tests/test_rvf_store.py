"""The reference RVF store: conformance, torn tails at every byte, crashes at every failpoint,
delete and re-insert, compaction, unknown segments, derive, epochs and the witness chain."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest
from conformance import conformance_test

from crashgate.backends import (
    Capability,
    CorruptStore,
    Durability,
    Env,
    SimulatedCrash,
    VectorRecord,
    os_env,
)
from crashgate.reference.rvf import FAILPOINTS, RvfStore, open_rvf
from crashgate.reference.rvf.manifest import Manifest, SegRef
from crashgate.reference.rvf.segments import HEADER_SIZE, SegType, encode_segment, hash256
from crashgate.reference.rvf.witness import WitnessEntry, WitnessType, decode_entries

TestRvfConformance = conformance_test("rvf", max_examples=40)
TestRvfCosineConformance = conformance_test("rvf?metric=cosine", max_examples=15)


class CrashAt:
    """Failpoints that record every hit and crash at one name."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.hits: list[str] = []

    def hit(self, name: str) -> None:
        self.hits.append(name)
        if name == self.name:
            raise SimulatedCrash(name)


class MemFile:
    def __init__(self, fs: MemFS, path: str) -> None:
        self.fs, self.path = fs, path

    @property
    def _data(self) -> bytearray:
        return self.fs.files[self.path]

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self._data[offset:offset + size])

    def write(self, offset: int, data: bytes) -> None:
        buf = self._data
        if len(buf) < offset:
            buf.extend(b"\0" * (offset - len(buf)))
        buf[offset:offset + len(data)] = data

    def size(self) -> int:
        return len(self._data)

    def truncate(self, size: int) -> None:
        del self._data[size:]

    def sync(self) -> None:
        self.fs.syncs += 1

    def close(self) -> None:
        pass


class MemFS:
    """A file system in a dict (no durability model): fast, and it proves the store does all
    its I/O through ``env.fs``."""

    def __init__(self) -> None:
        self.files: dict[str, bytearray] = {}
        self.syncs = 0

    def open(self, path: str, mode: str = "r") -> MemFile:
        if mode in ("r", "r+") and path not in self.files:
            raise FileNotFoundError(path)
        if mode == "x" and path in self.files:
            raise FileExistsError(path)
        if mode in ("w", "x") or path not in self.files:
            self.files[path] = bytearray()
        return MemFile(self, path)

    def exists(self, path: str) -> bool:
        return path in self.files

    def listdir(self, path: str) -> list[str]:
        return sorted(p.rsplit("/", 1)[-1] for p in self.files if p.startswith(path + "/"))

    def makedirs(self, path: str) -> None:
        pass

    def remove(self, path: str) -> None:
        del self.files[path]

    def rename(self, src: str, dst: str) -> None:
        self.files[dst] = self.files.pop(src)

    def sync_dir(self, path: str) -> None:
        self.syncs += 1

    def native_path(self, path: str) -> str | None:
        return None


def state(s: RvfStore) -> tuple[Any, ...]:
    return s.epoch, s.scan(), s.fetch(s.ids()), s.count()


def rec(i: int, *v: float, **meta: Any) -> VectorRecord:
    return VectorRecord.of(i, v, meta)


def populated(path: Path, **options: str) -> RvfStore:
    s = open_rvf(str(path), os_env(), lock="false", **options)
    s.put("a", b"1")
    s.write_batch({"b": b"2", "c": b"x" * 300}, ["a"])
    s.upsert([rec(1, 1, 2, 3, tag="x"), rec(2, 0, 0, 1), rec(2**64 - 1, 3, 3, 3, n=2)])
    s.remove([1])
    return s


def test_declaration() -> None:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp, open_rvf(f"{tmp}/d.rvf", os_env()) as s:
        d = s.declaration
        assert d.durability == Durability.POWER_LOSS
        assert d.file_format == "rvf" and d.wire_version == 1 and d.metric == "l2"
        for cap in ("KV", "VECTOR", "BATCH", "COMPACT", "DERIVE", "WITNESS", "WRITER_LOCK",
                    "WIRE_VERSION", "METADATA_FILTER", "EPOCH"):
            assert d.has(Capability[cap])
        assert d.failpoints == FAILPOINTS
        assert s.epoch == 0 and s.dimension is None


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    s = populated(tmp_path / "r.rvf")
    want = state(s)
    s.close()
    with open_rvf(str(tmp_path / "r.rvf"), os_env()) as s2:
        assert state(s2) == want
        assert s2.scan() == [("b", b"2"), ("c", b"x" * 300)]
        assert [r.id for r in s2.fetch([1, 2, 2**64 - 1])] == [2, 2**64 - 1]
        assert s2.query([3, 3, 3], 1, {"n": 2})[0].id == 2**64 - 1
        assert s2.verify() == []


@pytest.mark.parametrize("sync", ["two", "one"])
def test_torn_tail_at_every_byte_of_the_last_commit(tmp_path: Path, sync: str) -> None:
    path = tmp_path / "t.rvf"
    s = populated(path, sync=sync)
    before, committed = state(s), path.stat().st_size
    s.commit(puts={"d": b"4"}, deletes=["b"], upserts=[rec(7, 7, 7, 7, tag="y")], removes=[2])
    after = state(s)
    s.close()
    full = path.read_bytes()
    fs = MemFS()
    env = Env(fs=fs)
    rng = random.Random(7)
    for cut in range(committed, len(full) + 1):
        garbage = bytes(rng.randrange(256) for _ in range(len(full) - cut))
        for tail in (b"", garbage, b"\0" * (len(full) - cut)):
            torn = full[:cut] + tail
            expected = after if torn == full else before  # zeros can rebuild the padding
            fs.files["t.rvf"] = bytearray(torn)
            with open_rvf("t.rvf", env, readonly="true") as r:
                assert state(r) == expected, (cut, len(tail))
            assert fs.files["t.rvf"] == torn  # a reader never writes
            with open_rvf("t.rvf", env, lock="false") as w:
                assert state(w) == expected, (cut, len(tail))
            assert len(fs.files["t.rvf"]) == (len(full) if expected is after else committed)


def test_commit_after_a_torn_tail_lands_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "t.rvf"
    s = populated(path)
    committed = path.stat().st_size
    s.put("gone", b"torn")
    s.close()
    full = path.read_bytes()
    path.write_bytes(full[:committed + 100] + b"\xff" * 5000)
    with open_rvf(str(path), os_env()) as w:
        assert w.get("gone") is None
        w.put("kept", b"yes")
    with open_rvf(str(path), os_env()) as r:
        assert r.get("kept") == b"yes" and r.get("gone") is None and r.verify() == []


@pytest.mark.parametrize("failpoint", FAILPOINTS[:3])
def test_process_crash_at_each_commit_failpoint(tmp_path: Path, failpoint: str) -> None:
    path = str(tmp_path / "f.rvf")
    fps = CrashAt()
    s = open_rvf(path, Env(failpoints=fps), lock="false")
    s.put("a", b"1")
    fps.name = failpoint
    with pytest.raises(SimulatedCrash):
        s.commit(puts={"b": b"2"}, upserts=[rec(1, 1.0, 2.0)])
    assert fps.hits[:3] == list(FAILPOINTS[:3])  # the first commit hit them in declared order
    with open_rvf(path, os_env(), lock="false") as r:
        visible = failpoint == "rvf.after-manifest-write"  # its bytes are in the page cache
        assert r.get("b") == (b"2" if visible else None)
        assert r.count() == (1 if visible else 0)
        assert r.get("a") == b"1" and r.epoch == (2 if visible else 1)
        assert r.verify() == []


def test_delete_and_reinsert_before_and_after_compaction(tmp_path: Path) -> None:
    path = str(tmp_path / "d.rvf")
    s = open_rvf(path, os_env())
    s.put("k", b"old")
    s.upsert([rec(5, 1, 1)])
    s.delete("k")
    s.remove([5])
    s.put("k", b"new")
    s.upsert([rec(5, 2, 2, m="new")])
    s.commit(removes=[5], upserts=[rec(5, 3, 3, m="same-commit")])
    s.commit(deletes=["k"], puts={"k": b"same-commit"})
    want = (s.get("k"), s.fetch([5]))
    assert want == (b"same-commit", [rec(5, 3, 3, m="same-commit")])
    s.close()
    s = open_rvf(path, os_env())
    assert (s.get("k"), s.fetch([5])) == want
    s.compact()
    assert (s.get("k"), s.fetch([5])) == want and s.status()["deleted"] == 0
    s.delete("k")
    s.remove([5])
    s.put("k", b"again")
    s.upsert([rec(5, 4, 4)])
    s.close()
    with open_rvf(path, os_env()) as r:
        assert r.get("k") == b"again" and r.fetch([5]) == [rec(5, 4, 4)]


def test_compaction_frees_dead_records_and_keeps_epoch(tmp_path: Path) -> None:
    path = tmp_path / "c.rvf"
    s = open_rvf(str(path), os_env())
    for i in range(30):
        s.put(f"k{i % 3}", bytes([i]) * 100)
        s.upsert([rec(i % 4, i, i)])
    want, size = state(s), path.stat().st_size
    assert s.status()["deleted"] == 27 + 26
    s.compact()
    assert state(s) == want and path.stat().st_size < size / 5
    s.put("after", b"1")
    assert s.epoch == want[0] + 1
    s.close()
    with open_rvf(str(path), os_env()) as r:
        assert r.get("after") == b"1" and r.verify() == []
        assert r.status()["witness_entries"] == 1 + 60 + 1 + 1


@pytest.mark.parametrize("failpoint", FAILPOINTS[3:])
def test_compaction_crash_loses_nothing(tmp_path: Path, failpoint: str) -> None:
    path = tmp_path / "c.rvf"
    s = populated(path)
    want = state(s)
    s.close()
    s = open_rvf(str(path), Env(failpoints=CrashAt(failpoint)), lock="false")
    with pytest.raises(SimulatedCrash):
        s.compact()
    with open_rvf(str(path), os_env(), lock="false") as r:
        assert state(r) == want and r.verify() == []
        assert r.segments()[0].type_name == ("META" if "rename" in failpoint else "WITNESS")
    assert not (tmp_path / "c.rvf.tmp-rvf").exists()


def append_foreign(path: Path, seg_type: int, payload: bytes) -> None:
    """Append what a same-version writer that knows ``seg_type`` would: its segment, a witness
    entry and a manifest committing them."""
    data = path.read_bytes()
    with open_rvf(str(path), os_env(), readonly="true") as s:
        segs = s.segments()
    last = [x for x in segs if x.type_name == "MANIFEST"][-1]
    m = Manifest.decode(data[last.offset + HEADER_SIZE:last.offset + HEADER_SIZE + last.length])
    wit = [x for x in segs if x.type_name == "WITNESS"][-1]
    head = decode_entries(data[wit.offset + HEADER_SIZE:wit.offset + HEADER_SIZE + wit.length])
    entry = WitnessEntry.after(head[-1].digest(), hash256(b""), 1, WitnessType.COMMIT)
    sid = max(x.seg_id for x in segs) + 1
    seg = encode_segment(version=1, seg_type=seg_type, seg_id=sid, payload=payload,
                         timestamp_ns=1)
    wseg = encode_segment(version=1, seg_type=SegType.WITNESS, seg_id=sid + 1,
                          payload=entry.encode(), timestamp_ns=1)
    m2 = dataclasses.replace(
        m, kind="commit", epoch=m.epoch + 1, prev=last.offset, segments=(),
        witness=SegRef(len(data) + len(seg), sid + 1, SegType.WITNESS),
        witness_count=m.witness_count + 1, witness_head=entry.digest())
    mseg = encode_segment(version=1, seg_type=SegType.MANIFEST, seg_id=sid + 2,
                          payload=m2.encode(), timestamp_ns=1)
    path.write_bytes(data + seg + wseg + mseg)


def test_unknown_segments_are_skipped_and_preserved_by_compaction(tmp_path: Path) -> None:
    path = tmp_path / "u.rvf"
    s = populated(path)
    want = state(s)
    s.close()
    append_foreign(path, 0x40, b"future payload \x00\x01" * 10)
    append_foreign(path, SegType.INDEX, b"an index this reader does not use")
    with open_rvf(str(path), os_env()) as s:
        assert state(s)[1:] == want[1:] and s.epoch == want[0] + 2
        assert s.verify() == []
        s.put("z", b"after")
        s.compact()
        segs = s.segments()
        assert s.verify() == []
    names = [x.type_name for x in segs]
    assert names[:2] == ["UNKNOWN(0x40)", "INDEX"]
    data = path.read_bytes()
    assert data[HEADER_SIZE:HEADER_SIZE + segs[0].length] == b"future payload \x00\x01" * 10
    with open_rvf(str(path), os_env()) as s:
        assert s.get("z") == b"after" and state(s)[2:] == want[2:]


def test_damage_in_the_committed_region_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "x.rvf"
    populated(path).close()
    good = path.read_bytes()
    with open_rvf(str(path), os_env(), readonly="true") as s:
        segs = s.segments()
    meta = next(x for x in segs if x.type_name == "META")
    for at, what in ((meta.offset, "magic"), (meta.offset + 20, "header check"),
                     (meta.offset + HEADER_SIZE + 3, "content hash")):
        bad = bytearray(good)
        bad[at] ^= 0x40
        path.write_bytes(bytes(bad))
        with pytest.raises(CorruptStore):
            open_rvf(str(path), os_env(), readonly="true")
        assert path.read_bytes() == bytes(bad), what
    path.write_bytes(b"not an rvf file at all" * 10)
    with pytest.raises(CorruptStore, match="no committed manifest"):
        open_rvf(str(path), os_env())


def test_manifest_naming_a_missing_segment_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "m.rvf"
    populated(path).close()
    data = path.read_bytes()
    with open_rvf(str(path), os_env(), readonly="true") as s:
        last = [x for x in s.segments() if x.type_name == "MANIFEST"][-1]
    m = Manifest.decode(data[last.offset + HEADER_SIZE:last.offset + HEADER_SIZE + last.length])
    ghost = dataclasses.replace(m, epoch=m.epoch + 1, prev=last.offset,
                                segments=(SegRef(64, 999, SegType.VEC),))
    path.write_bytes(data + encode_segment(version=1, seg_type=SegType.MANIFEST, seg_id=1000,
                                           payload=ghost.encode(), timestamp_ns=0))
    with pytest.raises(CorruptStore, match="missing"):
        open_rvf(str(path), os_env(), readonly="true")


def test_epochs(tmp_path: Path) -> None:
    path = str(tmp_path / "e.rvf")
    with open_rvf(path, os_env()) as s:
        assert s.epoch == 0
        s.commit(epoch=1, puts={"a": b"1"})
        s.commit()
        with pytest.raises(ValueError, match=r"epoch=5.*is 2.*exactly 3"):
            s.commit(epoch=5)
        s.upsert([rec(1, 1.0)])
        assert s.epoch == 3
    with open_rvf(path, os_env()) as s:
        assert s.epoch == 3
        s.compact()
        assert s.epoch == 3
        s.commit(epoch=4)


def test_dimension_and_metric_are_checked(tmp_path: Path) -> None:
    path = str(tmp_path / "v.rvf")
    with open_rvf(path, os_env(), metric="cosine") as s:
        s.upsert([rec(1, 1, 0)])
        with pytest.raises(ValueError, match="dimension 3.*dimension 2"):
            s.upsert([rec(2, 1, 2, 3)])
        with pytest.raises(ValueError, match="u64"):
            s.upsert([rec(-1, 1, 2)])
    with open_rvf(path, os_env()) as s:
        assert s.metric == "cosine" and s.dimension == 2  # the file's metric, not the default
    from crashgate.backends import BadOption
    with pytest.raises(BadOption, match="metric"):
        open_rvf(path, os_env(), metric="l2")
    with pytest.raises(BadOption, match="dimension"):
        open_rvf(path, os_env(), dimension="3")
    with pytest.raises(BadOption, match="dimension"):
        open_rvf(str(tmp_path / "neg.rvf"), os_env(), dimension="-1")
    with open_rvf(str(tmp_path / "empty.rvf"), os_env()):
        pass
    with open_rvf(str(tmp_path / "empty.rvf"), os_env(), dimension="3") as s, \
            pytest.raises(ValueError, match="dimension 2.*dimension 3"):
        s.upsert([rec(1, 1, 2)])


def test_derive_copies_with_lineage_and_writes_only_to_the_child(tmp_path: Path) -> None:
    parent_path = tmp_path / "p.rvf"
    parent = populated(parent_path)
    want = state(parent)
    child = parent.derive(str(tmp_path / "child.rvf"))
    assert state(child)[1:] == want[1:]
    assert child.parent_id == parent.file_id and child.file_id != parent.file_id
    assert child.lineage_depth == 1 and child.parent_hash != b"\0" * 32
    child.put("only-child", b"1")
    child.remove([2])
    grandchild = child.derive(str(tmp_path / "grand.rvf"))
    assert grandchild.lineage_depth == 2 and grandchild.parent_id == child.file_id
    assert grandchild.get("only-child") == b"1" and grandchild.verify() == []
    for s in (grandchild, child, parent):
        s.close()
    with open_rvf(str(parent_path), os_env()) as p:
        assert state(p) == want and p.get("only-child") is None
    with open_rvf(str(tmp_path / "child.rvf"), os_env()) as c:
        assert c.lineage_depth == 1 and c.get("only-child") == b"1" and c.verify() == []
        lineage = c.status()["lineage"]
        assert isinstance(lineage, dict) and lineage["parent_path"] == str(parent_path)
    with pytest.raises(FileExistsError):
        open_rvf(str(parent_path), os_env()).derive(str(tmp_path / "child.rvf"))


def witness_offsets(s: RvfStore) -> list[int]:
    return [x.offset for x in s.segments() if x.type_name == "WITNESS"]


def test_witness_chain_continues_across_sessions(tmp_path: Path) -> None:
    path = str(tmp_path / "w.rvf")
    with open_rvf(path, os_env()) as s:
        s.put("a", b"1")
        s.upsert([rec(1, 1.0)])
    with open_rvf(path, os_env()) as s:
        s.remove([1])
        assert s.verify() == [] and s.status()["witness_entries"] == 4
        s.compact()
        s.put("b", b"2")
        assert s.verify() == [] and s.status()["witness_entries"] == 6


@pytest.mark.parametrize("within", [5, 40, 66, 72])  # prev_hash, action_hash, timestamp, type
def test_a_flipped_witness_byte_is_named(tmp_path: Path, within: int) -> None:
    path = tmp_path / "w.rvf"
    with open_rvf(str(path), os_env()) as s:
        for i in range(4):
            s.put(f"k{i}", b"v")
        third = witness_offsets(s)[2]  # entry #2: create is #0
    data = bytearray(path.read_bytes())
    data[third + HEADER_SIZE + within] ^= 0x01
    path.write_bytes(bytes(data))
    with open_rvf(str(path), os_env(), readonly="true") as r:  # still opens: state is intact
        assert r.get("k3") == b"v"
        problems = r.verify()
    assert problems and problems[0].startswith("witness entry #2"), problems


def test_a_flipped_byte_in_compacted_history_is_found(tmp_path: Path) -> None:
    path = tmp_path / "w.rvf"
    with open_rvf(str(path), os_env()) as s:
        for i in range(4):
            s.put(f"k{i}", b"v")
        s.compact()
        wit = witness_offsets(s)[0]
    data = bytearray(path.read_bytes())
    data[wit + HEADER_SIZE + 73 * 1 + 40] ^= 0x01  # entry #1's action hash
    path.write_bytes(bytes(data))
    with open_rvf(str(path), os_env(), readonly="true") as r:
        problems = r.verify()
    assert problems and "entry #1" in problems[0], problems


def test_readonly_store_refuses_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "ro.rvf")
    populated(Path(path)).close()
    with open_rvf(path, os_env(), readonly="true") as r:
        for call in (lambda: r.put("a", b"1"), lambda: r.upsert([rec(9, 1, 1, 1)]), r.compact,
                     lambda: r.remove([2]), lambda: r.commit()):
            with pytest.raises(PermissionError, match="readonly=true"):
                call()
    with pytest.raises(FileNotFoundError):
        open_rvf(str(tmp_path / "missing.rvf"), os_env(), readonly="true")


def test_what_an_open_shows_after_a_crash_survives_power_loss() -> None:
    """A process crash after the manifest write but before its fsync leaves the commit in the
    page cache; the next open shows it, so it must make it durable (found by the harness)."""
    from crashgate.harness.simdisk import DiskImage, SimDisk
    from crashgate.harness.simenv import sim_env

    disk = SimDisk(DiskImage.empty("/data"))
    env = sim_env(disk)
    s = open_rvf("/data/s.rvf", env)
    s.put("a", b"1")
    env.failpoints.arm("rvf.after-manifest-write")
    with pytest.raises(SimulatedCrash):
        s.put("b", b"2")
    disk.crash()
    with open_rvf("/data/s.rvf", sim_env(disk)) as r:
        assert r.get("b") == b"2"  # shown ...
    after_power_loss = SimDisk(disk.durable_image())
    with open_rvf("/data/s.rvf", sim_env(after_power_loss)) as r:
        assert r.get("b") == b"2"  # ... so it survives


def test_segments_larger_than_a_read_chunk_and_torn_inside(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "big.rvf"
    rng = np.random.default_rng(3)
    first = rng.standard_normal((700, 384))  # ~2.2 MB: more than one 1 MiB read chunk
    with open_rvf(str(path), os_env()) as s:
        s.upsert([VectorRecord.of(i, first[i]) for i in range(700)])
        committed = path.stat().st_size
        s.upsert([VectorRecord.of(1000 + i, first[i]) for i in range(700)])
    full = path.read_bytes()
    for cut in (committed + 10, committed + HEADER_SIZE + 1_500_000, len(full) - 600):
        path.write_bytes(full[:cut] + b"\xaa" * 100)
        with open_rvf(str(path), os_env(), readonly="true") as r:
            assert r.count() == 700 and r.fetch([5])[0].vector == tuple(first[5])


def test_a_file_hashed_with_shake_as_before_xxh3_opens_and_verifies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written before XXH3-128 became the writer's checksum hold SHAKE-256 (algorithm 2):
    they open, verify, and take new XXH3 commits beside the old segments."""
    import functools

    from crashgate.reference.rvf import rewrite
    from crashgate.reference.rvf import store as store_module
    shake = functools.partial(encode_segment, checksum_algo=2)
    monkeypatch.setattr(store_module, "encode_segment", shake)
    monkeypatch.setattr(rewrite, "encode_segment", shake)
    path = str(tmp_path / "old.rvf")
    s = open_rvf(path, os_env(), lock="false")
    s.put("a", b"1")
    s.upsert([VectorRecord.of(1, [1.0, 2.0], {"m": 1})])
    s.close()
    raw = (tmp_path / "old.rvf").read_bytes()
    assert raw[0x20] == 2
    monkeypatch.undo()
    s = open_rvf(path, os_env(), lock="false")
    assert s.get("a") == b"1" and [r.id for r in s.fetch([1])] == [1] and s.verify() == []
    s.put("b", b"2")
    s.close()
    s = open_rvf(path, os_env(), lock="false")
    assert s.get("b") == b"2" and s.verify() == []
    s.close()


def test_live_metadata_is_the_metadata_fetch_gives_and_a_copy(tmp_path) -> None:
    # what rvlite builds its cache from, without reading the vectors
    s = open_rvf(str(tmp_path / "m.rvf"), os_env())
    try:
        s.upsert([VectorRecord.of(i, [float(i)] * 4, {"n": i, "tag": "x" * i}) for i in (3, 1, 2)])
        s.remove([2])
        got = s.live_metadata()
        assert list(got) == [1, 3]
        assert got == {r.id: dict(r.metadata) for r in s.fetch(s.ids())}
        got[1]["n"] = 99
        assert s.live_metadata()[1]["n"] == 1
    finally:
        s.close()
