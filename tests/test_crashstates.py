"""Crash states: exact states of each model on small hand-written traces, the replay rules, and
properties over random programs (nothing appears that the program did not write)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from crashgate.harness import (
    CrashModel,
    CrashState,
    DiskImage,
    DiskOp,
    SimDisk,
    crash_state_strategy,
    enumerate_crash_states,
    pending_at,
    sync_positions,
)
from crashgate.harness.content import CHUNK_SIZE
from crashgate.harness.crashenum import plan_crash_states
from crashgate.harness.crashstates import _garbage

M = CrashModel
OLD, NEW = b"o" * 512, b"N" * 512


def states(disk: SimDisk, models: Iterable[CrashModel], position: int | None = None,
           budget: int = 10_000, seed: int = 0) -> list[tuple[CrashState, DiskImage]]:
    pos = disk.position if position is None else position
    return list(enumerate_crash_states(disk.base, disk.trace, [pos], models, budget, seed))


def contents(found: list[tuple[CrashState, DiskImage]], path: str) -> set[bytes | None]:
    return {image.files.get(path) for _, image in found}


@pytest.fixture
def three_writes() -> SimDisk:
    """Three independent pending writes to three durable files."""
    disk = SimDisk(DiskImage({"/a": b"", "/b": b"", "/c": b""}))
    fs = disk.fs()
    for name in "abc":
        fs.open(f"/{name}", "r+").write(0, name.encode())
    return disk


def test_three_independent_writes(three_writes: SimDisk) -> None:
    disk = three_writes
    assert pending_at(disk.base, disk.trace, 3) == [0, 1, 2]
    assert len(states(disk, [M.PROCESS])) == 1
    prefix = states(disk, [M.PREFIX])
    assert [s.kept for s, _ in prefix] == [(), (0,), (0, 1), (0, 1, 2)]
    subset = states(disk, [M.SUBSET])
    assert len(subset) == 8
    assert {tuple(sorted(k for k, v in img.files.items() if v)) for _, img in subset} == {
        (), ("/a",), ("/b",), ("/c",), ("/a", "/b"), ("/a", "/c"), ("/b", "/c"),
        ("/a", "/b", "/c")}
    # Models share a position's dedupe: PROCESS = all kept, so SUBSET adds 7 more.
    assert len(states(disk, [M.PROCESS, M.PREFIX, M.SUBSET])) == 8
    assert states(disk, [M.TORN]) == []  # one-byte writes cannot tear


def test_a_fsynced_write_survives_every_state() -> None:
    disk = SimDisk(DiskImage({"/f": b"1"}))
    f = disk.fs().open("/f", "r+")
    f.write(0, b"2")
    f.sync()
    f.write(1, b"3")
    assert contents(states(disk, list(M)), "/f") == {b"2", b"23"}


def test_torn_sectors_keep_old_bytes() -> None:
    disk = SimDisk(DiskImage({"/f": OLD * 2}))
    disk.fs().open("/f", "r+").write(0, NEW * 2)
    assert contents(states(disk, [M.TORN]), "/f") == {OLD * 2, NEW + OLD, OLD + NEW}
    found = states(disk, [M.SUBSET, M.TORN])
    assert contents(found, "/f") == {OLD * 2, NEW * 2, NEW + OLD, OLD + NEW}
    torn = [s for s, img in found if s.torn]
    assert {s.torn for s in torn} == {((0, (0,)),), ((0, (1,)),)}
    assert "torn: only sectors [0] written" in torn[0].describe(disk.trace)


def test_a_torn_append_leaves_zeros_past_the_old_end() -> None:
    disk = SimDisk(DiskImage({"/f": b""}))
    disk.fs().open("/f", "r+").write(0, NEW * 2)
    zero = bytes(512)
    assert contents(states(disk, [M.SUBSET, M.TORN]), "/f") == {
        b"", NEW * 2, NEW + zero, zero + NEW, zero * 2}


def test_torn_count_is_exhaustive_for_small_writes() -> None:
    disk = SimDisk(DiskImage({"/f": OLD * 3, "/g": b""}))
    fs = disk.fs()
    fs.open("/f", "r+").write(0, NEW * 3)  # 3 sectors: 7 proper subsets written
    fs.open("/g", "r+").write(0, b"g")
    found = states(disk, [M.TORN])
    # 7 tears x {g kept, g lost}, all distinct images.
    assert len(found) == 14
    assert all(s.torn and len(s.torn[0][1]) < 3 for s, _ in found)


def test_garbage_only_in_the_lost_sectors_of_the_write() -> None:
    disk = SimDisk(DiskImage({"/f": OLD * 4}))
    disk.fs().open("/f", "r+").write(256, b"N" * 768)  # sectors 0 (half) and 1
    found = states(disk, [M.GARBAGE], seed=3)
    assert found
    for state, image in found:
        data = image.files["/f"]
        assert state.garbage_seed is not None
        assert len(data) == 2048
        assert data[:256] == OLD[:256] and data[1024:] == OLD * 2  # neighbours untouched
        written = dict(state.torn)[0]
        for sector, (lo, hi) in ((0, (256, 512)), (1, (512, 1024))):
            if sector in written:
                assert data[lo:hi] == b"N" * (hi - lo)
            else:
                assert data[lo:hi] not in (b"N" * (hi - lo), OLD[: hi - lo])
        assert state.image(disk.base, disk.trace) == image  # deterministic garbage
    again = states(disk, [M.GARBAGE], seed=3)
    assert [img for _, img in again] == [img for _, img in found]


def test_dropped_create_loses_the_writes_to_it() -> None:
    disk = SimDisk(DiskImage.empty("/d"))
    f = disk.fs().open("/d/f", "c")
    f.write(0, b"data")
    f.sync()  # data durable, name not
    assert contents(states(disk, list(M)), "/d/f") == {None, b"data"}


def test_atomic_replace_shows_old_or_new_only() -> None:
    disk = SimDisk(DiskImage({"/d/f": b"old"}))
    fs = disk.fs()
    t = fs.open("/d/f.tmp", "x")
    t.write(0, b"new")
    t.sync()
    fs.rename("/d/f.tmp", "/d/f")
    found = states(disk, list(M))
    assert contents(found, "/d/f") == {b"old", b"new"}
    process = [img for s, img in found if s.model is M.PROCESS]
    assert process == [DiskImage({"/d/f": b"new"})]  # a process crash keeps the rename
    # A rename whose source create was lost is lost too: the old name keeps the old inode.
    rename_only = CrashState(disk.position, M.SUBSET, kept=(3,))
    assert rename_only.image(disk.base, disk.trace).files == {"/d/f": b"old"}


def test_files_in_a_lost_directory_are_lost() -> None:
    disk = SimDisk()
    fs = disk.fs()
    fs.makedirs("/x")
    f = fs.open("/x/f", "c")
    f.write(0, b"v")
    f.sync()
    fs.sync_dir("/x")
    assert pending_at(disk.base, disk.trace, disk.position) == [0]  # only the mkdir
    found = states(disk, [M.SUBSET])
    assert {(img.dirs, tuple(img.files.items())) for _, img in found} == {
        (frozenset({"/"}), ()), (frozenset({"/", "/x"}), (("/x/f", b"v"),))}


def test_sync_positions_and_pending() -> None:
    disk = SimDisk(DiskImage.empty("/d"))
    fs = disk.fs()
    f = fs.open("/d/f", "c")  # 0 create
    f.write(0, b"x")  # 1
    f.sync()  # 2
    fs.sync_dir("/d")  # 3
    f.write(1, b"y")  # 4
    assert sync_positions(disk.trace) == [2, 3]
    assert pending_at(disk.base, disk.trace, 2) == [0, 1]
    assert pending_at(disk.base, disk.trace, 3) == [0]
    assert pending_at(disk.base, disk.trace, 5) == [4]
    assert disk.pending() == [4]


def _many_writes(n: int) -> SimDisk:
    disk = SimDisk(DiskImage({f"/f{i}": b"" for i in range(n)}))
    fs = disk.fs()
    for i in range(n):
        fs.open(f"/f{i}", "r+").write(0, NEW * 2)
    return disk


def test_budget_is_respected_and_shared_fairly() -> None:
    disk = _many_writes(12)
    got = states(disk, [M.SUBSET], budget=50)
    assert len(got) == 50  # 4096 possible: sampled down to the budget
    both = list(enumerate_crash_states(disk.base, disk.trace, [6, 12], list(M), 40, seed=1))
    assert len(both) == 40
    # A process crash has one state per position: the 6 of its share of 8 it cannot use go to
    # the four power models (38: 10, 9, 10, 9, the odd units evenly spaced), and each model's
    # share is split evenly by position.
    by_model = Counter(s.model for s, _ in both)
    assert by_model == {M.PROCESS: 2, M.PREFIX: 10, M.SUBSET: 9, M.TORN: 10, M.GARBAGE: 9}
    for model in M:
        at = Counter(s.position for s, _ in both if s.model is model)
        assert abs(at[6] - at[12]) <= 1, (model, at)
    assert 19 <= sum(s.position == 6 for s, _ in both) <= 21
    assert list(enumerate_crash_states(disk.base, disk.trace, [12], list(M), 0, 1)) == []


def test_every_model_gets_its_share_however_many_positions() -> None:
    # Before stratification the budget went position by position, model by model, and with
    # many positions the first models ate it (an rvf run: 3 subset states, 0 garbage).
    disk = _many_writes(30)
    positions = list(range(1, 31))
    plan = plan_crash_states(disk.base, disk.trace, positions, list(M), 60, seed=5)
    found = list(enumerate_crash_states(disk.base, disk.trace, positions, list(M), 60, seed=5,
                                        plan=plan))
    by_model = Counter(s.model for s, _ in found)
    assert by_model == {m: 12 for m in M} == plan.share
    # 12 process crashes over 30 positions: an even sample, spread over the whole run
    spots = sorted(s.position for s, _ in found if s.model is M.PROCESS)
    assert len(set(spots)) == 12 and spots[0] <= 3 and spots[-1] >= 28
    assert all(b - a in (2, 3) for a, b in zip(spots, spots[1:], strict=False))
    assert [s for s, _ in found] == [s for s, _ in enumerate_crash_states(
        disk.base, disk.trace, positions, list(M), 60, seed=5)]   # the plan is the default one


def test_a_model_with_nothing_to_work_with_passes_its_share_on_and_says_why() -> None:
    disk = SimDisk(DiskImage({"/a": b"", "/b": b""}))
    fs = disk.fs()
    fs.open("/a", "r+").write(0, b"a")   # one-byte writes: nothing to tear
    fs.open("/b", "r+").write(0, b"b")
    plan = plan_crash_states(disk.base, disk.trace, [1, 2], list(M), 50, seed=0)
    assert plan.capacity[M.TORN] == plan.capacity[M.GARBAGE] == 0
    assert "nothing to tear" in plan.reasons[M.GARBAGE]
    found = states(disk, list(M), budget=50)
    assert Counter(s.model for s, _ in found) == {M.PROCESS: 1, M.PREFIX: 2, M.SUBSET: 1}


def test_positions_per_model_process_crashes_between_any_two_writes() -> None:
    # Process crashes at every op, power loss only at the fsync window: a crash between the
    # truncate and the write (the file empty in the page cache) is among the states.
    disk = SimDisk(DiskImage({"/f": b"old"}))
    f = disk.fs().open("/f", "r+")
    f.truncate(0)   # 0
    f.write(0, b"new")   # 1
    f.sync()   # 2
    positions = {M.PROCESS: [1, 2, 3], M.PREFIX: sync_positions(disk.trace)}
    found = list(enumerate_crash_states(disk.base, disk.trace, positions, [M.PROCESS, M.PREFIX],
                                        20, seed=0))
    assert {(s.model, s.position) for s, _ in found} >= {(M.PROCESS, 1), (M.PREFIX, 2)}
    assert {img.files["/f"] for s, img in found if s.model is M.PROCESS} == {b"", b"new"}
    assert all(s.position == 2 for s, _ in found if s.model is M.PREFIX)


def test_enumeration_is_deterministic_for_a_seed() -> None:
    disk = _many_writes(10)
    run = [s for s, _ in states(disk, list(M), budget=60, seed=7)]
    assert run == [s for s, _ in states(disk, list(M), budget=60, seed=7)]
    assert run != [s for s, _ in states(disk, list(M), budget=60, seed=8)]


def test_enumeration_dedupes_per_position_and_replays_exactly() -> None:
    disk = _many_writes(5)
    found = list(enumerate_crash_states(disk.base, disk.trace, [2, 5], list(M), 400, seed=2))
    for pos in (2, 5):
        images = [img for s, img in found if s.position == pos]
        assert len(images) == len(set(images))
    for state, image in found:
        assert state.image(disk.base, disk.trace) == image


def test_a_trace_replays_only_against_its_own_base() -> None:
    disk = SimDisk()
    fs = disk.fs()
    fs.makedirs("/data")
    fs.sync_dir("/")
    fs.open("/data/f", "c").write(0, b"x")
    # A later durable snapshot of the same directories is accepted (same inode numbers) ...
    snapshot = disk.durable_image()
    assert pending_at(snapshot, disk.trace, disk.position) == pending_at(
        disk.base, disk.trace, disk.position)
    # ... a base holding other files at those inode numbers is refused.
    with pytest.raises(ValueError, match="pass disk.base"):
        pending_at(DiskImage({"/a": b"", "/b": b""}), disk.trace, disk.position)


def test_bad_arguments_name_the_fix() -> None:
    disk = _many_writes(1)
    with pytest.raises(ValueError, match="positions must lie in"):
        list(enumerate_crash_states(disk.base, disk.trace, [99], list(M), 5, 0))
    with pytest.raises(ValueError, match="not pending"):
        CrashState(0, M.SUBSET, kept=(0,)).image(disk.base, disk.trace)
    with pytest.raises(ValueError, match="recorded by SimDisk"):
        pending_at(disk.base, [DiskOp("write", "/f0", data=b"x")], 1)
    with pytest.raises(ValueError, match="at least one position"):
        crash_state_strategy(disk.base, disk.trace, [])


# -- shrinking ------------------------------------------------------------------------------


def _four_appends() -> tuple[SimDisk, dict[int, DiskImage]]:
    disk = SimDisk(DiskImage.empty("/d"))
    f = disk.fs().open("/d/f", "c")  # 0
    caches = {}
    for i in range(4):  # 1..4
        caches[disk.position] = disk.cache_image()
        f.write(i * 512, NEW)
    caches[disk.position] = disk.cache_image()
    return disk, caches


QUIET = settings(database=None, max_examples=500)


def test_strategy_shrinks_to_the_fewest_kept_ops_and_the_prefix_model() -> None:
    disk, _ = _four_appends()
    strategy = crash_state_strategy(disk.base, disk.trace, [2, 5])
    # Also true of process crashes, which sort last: the shrinker leaves them for PREFIX.
    smallest = find(strategy, lambda s: "/d/f" in s.image(disk.base, disk.trace).files,
                    settings=QUIET)
    assert smallest == CrashState(2, M.PREFIX, kept=(0,), pending=(0, 1))


def test_strategy_shrinks_a_lossy_state_to_the_prefix_model() -> None:
    disk, caches = _four_appends()
    strategy = crash_state_strategy(disk.base, disk.trace, [2, 5], [M.SUBSET, M.PREFIX])

    def lost_a_write(s: CrashState) -> bool:
        image = s.image(disk.base, disk.trace)
        return "/d/f" in image.files and image != caches[s.position]

    assert find(strategy, lost_a_write, settings=QUIET) == CrashState(
        2, M.PREFIX, kept=(0,), pending=(0, 1))


def test_strategy_shrinks_a_tear_to_its_first_sector() -> None:
    disk = SimDisk(DiskImage({"/f": OLD * 2}))
    disk.fs().open("/f", "r+").write(0, NEW * 2)
    strategy = crash_state_strategy(disk.base, disk.trace, [1], [M.SUBSET, M.TORN])

    def torn(s: CrashState) -> bool:
        return s.image(disk.base, disk.trace).files["/f"] not in (OLD * 2, NEW * 2)

    assert find(strategy, torn, settings=QUIET) == CrashState(
        1, M.TORN, kept=(0,), torn=((0, (0,)),), pending=(0,))


# -- properties over random programs --------------------------------------------------------

# Up to ~2 sectors, often crossing a sector boundary, in varied bytes.
DATA = st.builds(lambda pattern, n: (pattern * n)[:n], st.binary(min_size=1, max_size=16),
                 st.integers(1, 1100))
NAMES = st.sampled_from(["/f", "/g", "/d/f", "/d/g", "/d/e/f", "/x/f"])
OPS = st.one_of(
    st.tuples(st.just("write"), NAMES, st.integers(0, 1500), DATA),
    st.tuples(st.just("truncate"), NAMES, st.integers(0, 1600)),
    st.tuples(st.just("sync"), NAMES),
    st.tuples(st.just("rename"), NAMES, NAMES),
    st.tuples(st.just("rename"), st.sampled_from(["/d/e", "/e"]), st.sampled_from(["/e", "/d/e"])),
    st.tuples(st.just("remove"), NAMES),
    st.tuples(st.just("makedirs"), st.sampled_from(["/x", "/d/e"])),
    st.tuples(st.just("sync_dir"), st.sampled_from(["/", "/d", "/d/e", "/x"])),
)


def run_program(program: list[tuple]) -> tuple[SimDisk, dict[int, DiskImage]]:
    """Run ops (skipping the ones the file system refuses); cache images by position."""
    disk = SimDisk(DiskImage({"/f": b"base" * 200}, frozenset({"/d"})))
    fs = disk.fs()
    handles = {}
    caches = {0: disk.cache_image()}
    for op in program:
        kind, *args = op
        try:
            if kind in ("write", "truncate", "sync"):
                path = args[0]
                if path not in handles or not fs.exists(path):
                    handles[path] = fs.open(path, "c")
                h = handles[path]
                if kind == "write":
                    h.write(args[1], args[2])
                elif kind == "truncate":
                    h.truncate(args[1])
                else:
                    h.sync()
            else:
                getattr(fs, kind)(*args)
        except OSError:
            pass
        caches[disk.position] = disk.cache_image()
    return disk, caches


def allowed_bytes(disk: SimDisk) -> dict[int, set[int]]:
    allowed: dict[int, set[int]] = {}
    for data in disk.base.files.values():
        for k, b in enumerate(data):
            allowed.setdefault(k, {0}).add(b)
    for op in disk.trace:
        if op.kind == "write":
            for k, b in enumerate(op.data, op.offset):
                allowed.setdefault(k, {0}).add(b)
    return allowed


@settings(max_examples=60, deadline=None)
@given(program=st.lists(OPS, min_size=3, max_size=25), seed=st.integers(0, 3))
def test_crash_states_hold_only_what_the_program_wrote(program: list[tuple], seed: int) -> None:
    disk, caches = run_program(program)
    allowed = allowed_bytes(disk)
    # A lost directory rename can show a later file under the directory's old name: check
    # base names, not whole paths.
    names = {"f", "g", "e", "d", "x", ""}
    positions = sorted(caches)
    models = [M.PROCESS, M.PREFIX, M.SUBSET, M.TORN]
    for state, image in enumerate_crash_states(disk.base, disk.trace, positions, models,
                                               budget=300, seed=seed):
        assert {p.rsplit("/", 1)[1] for p in image.files.keys() | image.dirs} <= names
        for path, data in image.files.items():
            for k, b in enumerate(data):
                assert b in allowed.get(k, {0}), (state.describe(disk.trace), path, k)
        if state.model is M.PROCESS or (len(state.kept) == len(state.pending)
                                        and not state.torn):
            assert image == caches[state.position]  # everything kept = the page cache
        assert state.image(disk.base, disk.trace) == image


@settings(max_examples=60, deadline=None)
@given(program=st.lists(OPS, max_size=25))
def test_syncing_everything_makes_the_cache_durable(program: list[tuple]) -> None:
    disk, _ = run_program(program)
    fs = disk.fs()
    image = disk.cache_image()
    for path in image.files:
        fs.open(path, "r").sync()
    for d in image.dirs:
        fs.sync_dir(d)
    assert disk.durable_image() == image
    # What stays pending (writes to unlinked inodes) cannot reach any name.
    assert all(img == image for _, img in states(disk, [M.SUBSET, M.TORN], budget=20))


# -- large files: chunked contents, shared between images ------------------------------------

C = CHUNK_SIZE
BIG = b"".join(bytes([k]) * C for k in range(20)) + b"tail"   # 20 chunks and a bit


def test_images_share_the_untouched_chunks_of_a_large_file() -> None:
    disk = SimDisk(DiskImage({"/f": BIG}))
    f = disk.fs().open("/f", "r+")
    f.write(3 * C + 10, b"s" * 600)           # synced: durable from here on
    f.sync()
    f.write(7 * C - 300, b"p" * 600)          # pending, across chunks 6 and 7 (two sectors)
    f.write(len(BIG), b"appended" * 100)      # pending append, into the last chunk
    base = disk.base.contents["/f"].chunks
    durable = disk.durable_image().contents["/f"].chunks
    assert [k for k in range(20) if durable[k] is not base[k]] == [3]
    found = states(disk, list(M))
    assert len(found) > 8
    synced = {id(image.contents["/f"].chunks[3]) for _, image in found}
    assert len(synced) == 1   # the walk's durable chunk, one object for every image
    for state, image in found:
        chunks = image.contents["/f"].chunks
        copied = [k for k in range(20) if chunks[k] is not base[k]]
        assert set(copied) <= {3, 6, 7}, (state.describe(disk.trace), copied)
        assert image.files["/f"][:6 * C] == BIG[:3 * C + 10] + b"s" * 600 + BIG[3 * C + 610:6 * C]


def flat_replay(base: bytes, trace: list[DiskOp], state: CrashState) -> bytes:
    """The replay rule on one flat bytearray, as the code before chunked contents did it."""
    buf = bytearray(base)
    torn = dict(state.torn)
    lost = set(state.pending) - set(state.kept)
    for j, op in enumerate(trace[:state.position]):
        if op.kind not in ("write", "truncate") or j in lost:
            continue
        if op.kind == "truncate":
            del buf[op.size:]
            buf.extend(bytes(op.size - len(buf)))
            continue
        end = op.offset + len(op.data)
        buf.extend(bytes(max(end - len(buf), 0)))
        if j not in torn:
            buf[op.offset:end] = op.data
            continue
        if state.garbage_seed is not None:
            buf[op.offset:end] = _garbage(state.garbage_seed, j, len(op.data))
        for s in torn[j]:
            lo, hi = max(op.offset, s * state.sector_size), min(end, (s + 1) * state.sector_size)
            buf[lo:hi] = op.data[lo - op.offset:hi - op.offset]
    return bytes(buf)


NEAR_CHUNK = st.builds(lambda k, d: max(k * C + d, 0), st.integers(0, 3),
                       st.integers(-1100, 1100))
BIG_OPS = st.one_of(
    st.tuples(st.just("write"), NEAR_CHUNK, st.binary(min_size=1, max_size=3),
              st.one_of(st.integers(1, 1100), st.integers(C - 600, C + 600))),
    st.tuples(st.just("truncate"), NEAR_CHUNK),
    st.tuples(st.just("sync")),
)


@settings(max_examples=40, deadline=None)
@given(program=st.lists(BIG_OPS, min_size=1, max_size=8), seed=st.integers(0, 3))
def test_chunked_images_equal_the_flat_replay(program: list[tuple], seed: int) -> None:
    base = BIG[:2 * C + 77]
    disk = SimDisk(DiskImage({"/f": base}))
    f = disk.fs().open("/f", "r+")
    for op in program:
        if op[0] == "write":
            f.write(op[1], (op[2] * op[3])[:op[3]])
        elif op[0] == "truncate":
            f.truncate(op[1])
        else:
            f.sync()
    positions = range(disk.position + 1)
    for state, image in enumerate_crash_states(disk.base, disk.trace, positions, list(M),
                                               budget=80, seed=seed):
        assert image.files["/f"] == flat_replay(base, disk.trace, state), \
            state.describe(disk.trace)
