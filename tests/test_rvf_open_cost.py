"""Issue 9: the RVF store opens in O(live data), not O(history). Counted, not timed: what an open
reads (``RvfStore.open_stats``: headers decoded and payloads read), for the same live data after
10 and after 10,000 commits; and the checkpoints that make it so (checkpoint.py) hold up: torn at
any offset, damaged history behind them, and bytes in a value that read as a segment header."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_rvf_store import MemFS, rec, state

from crashgate.backends import Env, os_env
from crashgate.reference.rvf import RvfStore, open_rvf
from crashgate.reference.rvf.checkpoint import MIN_COST
from crashgate.reference.rvf.replay import load_full
from crashgate.reference.rvf.segments import (
    HEADER_SIZE,
    Flag,
    SegmentInfo,
    SegType,
    encode_segment,
    padding_for,
)

KEYS, IDS = 20, 10


def _write(s: RvfStore, commits: int) -> None:
    """``commits`` commits that leave the same live data whatever their number: KEYS keys and
    IDS vectors, each last written by the final 10 commits' values."""
    for i in range(commits):
        n, tag = i % 10, ("final" if i >= commits - 10 else f"old{i}")
        s.write_batch({f"k{j:02}": f"{tag}:{j}".encode() for j in range(KEYS) if j % 10 == n})
        if n < 5:
            s.upsert([rec(j, float(n), float(j), tag=tag) for j in range(IDS) if j % 5 == n])
    # both files end with the same records (the last 10 commits wrote every key and id once)


def _opened(commits: int) -> tuple[RvfStore, MemFS]:
    fs = MemFS()
    s = open_rvf("h.rvf", Env(fs=fs), lock="false")
    _write(s, commits)
    s.close()
    return open_rvf("h.rvf", Env(fs=fs), lock="false", readonly="true"), fs


def _live(s: RvfStore) -> tuple[object, ...]:
    return s.scan(), s.fetch(s.ids())


def test_open_reads_as_much_after_10000_commits_as_after_10() -> None:
    small, _ = _opened(10)
    big, fs = _opened(10_000)
    assert _live(big) == _live(small) and big.epoch > small.epoch
    few, many = small.open_stats.segments_read, big.open_stats.segments_read
    # The bound from the design: the walk from the newest checkpoint reads its snapshot (no
    # more segments than replaying the same live data from 10 commits) and fewer than
    # MIN_COST segments appended since (plus the commit that crossed it); each segment costs a
    # header and at most one payload. The backward search adds a header or two.
    assert many <= 2 * few + 2 * MIN_COST, (few, many)
    # ... and it is not the walk from offset 0, which reads every segment of the history
    assert big.status()["segments"] > 100 * many
    # what it read is what the walk from offset 0 gives
    whole = load_full(fs.open("h.rvf"), "h.rvf", 1)
    assert (sorted(whole.kv.items()), whole.table.ids()) == (big.scan(), big.ids())
    assert big.verify() == []


def _checkpoints(path: Path) -> list[SegmentInfo]:
    """The checkpoint manifests appended after the file's first (created) manifest."""
    with open_rvf(str(path), os_env(), readonly="true") as r:
        ms = [x for x in r.segments() if x.type_name == "MANIFEST"]
    return [x for x in ms[1:] if x.flags & Flag.CHECKPOINT]


def _end(seg: SegmentInfo) -> int:
    return seg.offset + HEADER_SIZE + seg.length + padding_for(seg.length)


@pytest.mark.parametrize("sync", ["two", "one"])
def test_a_torn_checkpoint_opens_at_the_commit_before_it(tmp_path: Path, sync: str) -> None:
    path = tmp_path / "c.rvf"
    with open_rvf(str(path), os_env(), lock="false", sync=sync) as s:
        for i in range(3 * MIN_COST):
            s.put(f"k{i % 7}", bytes([i]) * 50)
            if i % 3 == 0:
                s.upsert([rec(i % 5, i, 1.0)])
            if _checkpoints(path):
                break
        want = state(s)
    cks = _checkpoints(path)
    assert len(cks) == 1, "no checkpoint was written"
    full = path.read_bytes()
    ck = cks[0]
    assert _end(ck) == len(full)
    with open_rvf(str(path), os_env(), readonly="true") as r:
        start = min(x.offset for x in r.segments() if x.offset > 0 and x.seg_id >= ck.seg_id - 2
                    and x.type_name in ("META", "VEC", "WITNESS"))
    for cut in range(start, len(full), 64):
        path.write_bytes(full[:cut] + b"\xaa" * 32)
        with open_rvf(str(path), os_env(), readonly="true") as r:
            assert state(r) == want, cut


def test_damage_behind_the_checkpoint_is_found_by_verify_not_by_open(tmp_path: Path) -> None:
    path = tmp_path / "d.rvf"
    with open_rvf(str(path), os_env(), lock="false") as s:
        for i in range(2 * MIN_COST):
            s.put(f"k{i % 4}", bytes([i]) * 40)
        want = state(s)
    first_commit = next(x for x in _segments(path) if x.type_name == "META")
    data = bytearray(path.read_bytes())
    data[first_commit.offset + HEADER_SIZE + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with open_rvf(str(path), os_env(), readonly="true") as r:
        assert state(r) == want  # the committed state: what the checkpoint holds
        assert r.open_stats.segments_read < 2 * MIN_COST + 10
        assert any("content hash" in p for p in r.verify())


def _segments(path: Path) -> list[SegmentInfo]:
    with open_rvf(str(path), os_env(), readonly="true") as r:
        return r.segments()


def test_a_value_that_holds_a_segment_header_is_refused_and_writes_nothing(tmp_path: Path
                                                                          ) -> None:
    path = tmp_path / "f.rvf"
    with open_rvf(str(path), os_env(), lock="false") as s:
        s.put("a", b"1")
        size = path.stat().st_size
        forged = encode_segment(version=1, seg_type=SegType.MANIFEST, seg_id=99,
                                payload=b"{}", timestamp_ns=0)
        # META payload: count, key length, key, value length, then the value; pad the value so
        # the forged header starts at a 64-byte aligned offset of the file
        lead = -(size + HEADER_SIZE + 4 + 4 + 1 + 4) % 64
        with pytest.raises(ValueError, match="intact RVF segment header"):
            s.put("b", b"\0" * lead + forged)
        assert path.stat().st_size == size and s.get("b") is None
        s.put("b", b"\1" + b"\0" * lead + forged)  # not aligned: an ordinary value
        assert s.get("b") == b"\1" + b"\0" * lead + forged
