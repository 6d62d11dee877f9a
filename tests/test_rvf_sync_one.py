"""``rvf?sync=one``: data and manifest in one write and one fsync. Conformance, the torn last
commit at every byte and with any block of its data lost under a whole manifest, the rule that
only the LAST commit may fall back, and a power-loss run over the simulated disk."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conformance import conformance_test
from test_rvf_store import CrashAt, MemFS, populated, rec, state

from crashgate.backends import BadOption, CorruptStore, Env, SimulatedCrash, os_env, resolve
from crashgate.reference.rvf import FAILPOINTS, open_rvf
from crashgate.reference.rvf.segments import ALIGN, HEADER_SIZE, Flag, SegmentInfo, padding_for
from crashgate.reference.rvf.store import ONE_SYNC_FAILPOINTS

TestRvfSyncOneConformance = conformance_test("rvf?sync=one", max_examples=25)


def manifests(path: Path) -> list[SegmentInfo]:
    with open_rvf(str(path), os_env(), readonly="true") as r:
        return [x for x in r.segments() if x.type_name == "MANIFEST"]


def end_of(seg: SegmentInfo) -> int:
    return seg.offset + HEADER_SIZE + seg.length + padding_for(seg.length)


def last_commit(path: Path) -> tuple[bytes, int, int]:
    """The file's bytes, where its last commit starts (the previous manifest's end) and where
    its manifest starts."""
    ms = manifests(path)
    prev, last = ms[-2], ms[-1]
    return path.read_bytes(), end_of(prev), last.offset


def test_option_declaration_and_flags(tmp_path: Path) -> None:
    with pytest.raises(BadOption, match="sync"):
        open_rvf(str(tmp_path / "bad.rvf"), os_env(), sync="three")
    with open_rvf(str(tmp_path / "one.rvf"), os_env(), sync="one") as s:
        assert s.declaration.failpoints == ONE_SYNC_FAILPOINTS
        assert "rvf.after-data-sync" not in s.declaration.failpoints
        s.put("a", b"1")
    with open_rvf(str(tmp_path / "two.rvf"), os_env()) as s:
        assert s.declaration.failpoints == FAILPOINTS
        s.put("a", b"1")
    one, two = manifests(tmp_path / "one.rvf"), manifests(tmp_path / "two.rvf")
    assert [bool(m.flags & Flag.SAME_SYNC) for m in one] == [False, True]  # create, commit
    assert not any(m.flags & Flag.SAME_SYNC for m in two)


def test_one_fsync_per_commit_and_one_failpoint() -> None:
    fs, fps = MemFS(), CrashAt()
    for sync, syncs in (("one", 1), ("two", 2)):
        s = open_rvf(f"{sync}.rvf", Env(fs=fs, failpoints=fps), lock="false", sync=sync)
        before, fps.hits[:] = fs.syncs, []
        s.put("a", b"1")
        assert fs.syncs - before == syncs
        assert fps.hits == (["rvf.after-manifest-write"] if sync == "one" else list(FAILPOINTS[:3]))
        s.close()


def test_process_crash_after_the_single_write(tmp_path: Path) -> None:
    path = str(tmp_path / "f.rvf")
    fps = CrashAt()
    s = open_rvf(path, Env(failpoints=fps), lock="false", sync="one")
    s.put("a", b"1")
    fps.name = "rvf.after-manifest-write"
    with pytest.raises(SimulatedCrash):
        s.commit(puts={"b": b"2"}, upserts=[rec(1, 1.0, 2.0)])
    with open_rvf(path, os_env(), lock="false") as r:  # the bytes are in the page cache
        assert r.get("b") == b"2" and r.count() == 1 and r.epoch == 2 and r.verify() == []


def test_any_lost_block_of_the_data_under_a_whole_manifest_is_a_torn_commit(
        tmp_path: Path) -> None:
    """What a crash before the single fsync can leave: the manifest's sectors on disk, some of
    its data's not (zeros) or torn (garbage). Every 64-byte block of the data, one at a time."""
    path = tmp_path / "s.rvf"
    s = populated(path, sync="one")
    before = state(s)
    s.commit(puts={"d": b"4" * 200}, deletes=["b"], upserts=[rec(7, 7, 7, 7, tag="y")])
    after = state(s)
    s.close()
    full, start, m_at = last_commit(path)
    fs = MemFS()
    env = Env(fs=fs)
    rng = random.Random(3)
    for at in range(start, m_at, ALIGN):
        for fill in (b"\0" * ALIGN, rng.randbytes(ALIGN)):
            fs.files["s.rvf"] = bytearray(full[:at] + fill + full[at + ALIGN:])
            with open_rvf("s.rvf", env, readonly="true") as r:
                assert state(r) == before, at
            with open_rvf("s.rvf", env, lock="false") as w:
                assert state(w) == before, at
                assert w.verify() == []
            assert len(fs.files["s.rvf"]) == start  # the torn commit is truncated away
            with open_rvf("s.rvf", env, lock="false", sync="one") as w:
                w.commit(puts={"d": b"4" * 200}, deletes=["b"],
                         upserts=[rec(7, 7, 7, 7, tag="y")])
            with open_rvf("s.rvf", env, readonly="true") as r:
                assert state(r) == after and r.verify() == []


def flip(data: bytes, at: int) -> bytes:
    bad = bytearray(data)
    bad[at] ^= 0x40
    return bytes(bad)


def data_segment(path: Path, start: int, end: int, type_name: str) -> SegmentInfo:
    with open_rvf(str(path), os_env(), readonly="true") as r:
        return next(x for x in r.segments()
                    if start <= x.offset < end and x.type_name == type_name)


@pytest.mark.parametrize("where", ["payload", "header"])
def test_bad_data_falls_back_only_in_the_last_commit(tmp_path: Path, where: str) -> None:
    path = tmp_path / "d.rvf"
    s = populated(path, sync="one")
    s.put("e", b"5")
    s.put("f", b"6")
    s.close()
    full, start, m_at = last_commit(path)
    ms = manifests(path)
    earlier_start = end_of(ms[-3])
    delta = HEADER_SIZE + 5 if where == "payload" else 20  # the content or the header check
    # The last commit: its manifest verifies, its META does not; that commit is torn.
    meta = data_segment(path, start, m_at, "META")
    path.write_bytes(flip(full, meta.offset + delta))
    with open_rvf(str(path), os_env(), readonly="true") as r:
        assert r.get("f") is None and r.get("e") == b"5"
    with open_rvf(str(path), os_env()) as w:
        assert w.get("f") is None and w.verify() == []
    assert path.stat().st_size == start
    # The same damage in the commit before it: CorruptStore, for readers and writers.
    path.write_bytes(full)
    meta = data_segment(path, earlier_start, ms[-2].offset, "META")
    bad = flip(full, meta.offset + delta)
    path.write_bytes(bad)
    for opts in ({"readonly": "true"}, {}):
        with pytest.raises(CorruptStore):
            open_rvf(str(path), os_env(), **opts)
        assert path.read_bytes() == bad


def test_a_two_sync_last_commit_with_bad_data_is_still_corrupt(tmp_path: Path) -> None:
    """The flag, not the reader's option, decides: a sync=two manifest over bad data is damage,
    even when the reader was opened with sync=one."""
    path = tmp_path / "two.rvf"
    populated(path).close()
    full, start, m_at = last_commit(path)
    journal = data_segment(path, start, m_at, "JOURNAL")
    path.write_bytes(flip(full, journal.offset + HEADER_SIZE + 1))
    with pytest.raises(CorruptStore, match="content hash"):
        open_rvf(str(path), os_env(), readonly="true", sync="one")


def test_a_bad_witness_in_the_last_one_sync_commit_falls_back(tmp_path: Path) -> None:
    path = tmp_path / "w.rvf"
    populated(path, sync="one").close()
    full, start, m_at = last_commit(path)
    wit = data_segment(path, start, m_at, "WITNESS")
    path.write_bytes(flip(full, wit.offset + HEADER_SIZE + 40))
    with open_rvf(str(path), os_env()) as w:
        assert w.count() == 3 and w.fetch([1])  # the remove([1]) commit is the torn one
        assert w.verify() == []


def test_powerloss_one_sync_thousand_states_clean() -> None:
    from crashgate.harness.powerloss import run_powerloss
    from crashgate.harness.workload import PROFILES

    report = run_powerloss(resolve("rvf?sync=one"), seed=11, ops=250, budget=1500,
                           profile=PROFILES["small"])
    assert report.states_checked >= 1000
    assert not report.violations, report.first
