"""The simulated disk: POSIX-like behaviour of SimFS/SimFile, what fsync and a directory fsync
make durable, and dead handles after a process crash."""

from __future__ import annotations

import errno
import pickle
from dataclasses import FrozenInstanceError

import pytest
from conformance import conformance_test

from crashgate.backends import File, FileSystem, resolve
from crashgate.harness import DiskImage, DiskOp, SimDisk, powerloss, sim_env
from crashgate.harness.content import CHUNK_SIZE
from crashgate.harness.crashenum import enumerate_crash_states
from crashgate.harness.crashstates import CrashModel
from crashgate.harness.spill import Spill
from crashgate.harness.workload import PROFILES


def new_disk(*dirs: str, **files: bytes) -> SimDisk:
    return SimDisk(DiskImage({f"/{k}": v for k, v in files.items()}, frozenset(dirs)))


# -- the FileSystem view --------------------------------------------------------------------


def test_implements_the_env_protocols() -> None:
    fs = new_disk().fs()
    assert isinstance(fs, FileSystem)
    assert isinstance(fs.open("/a", "c"), File)
    assert fs.native_path("/a") is None


def test_read_write_size_truncate_and_gaps() -> None:
    fs = new_disk().fs()
    f = fs.open("a", "c")  # relative paths start at /
    f.write(4, b"xy")
    assert f.read(0, 100) == b"\0\0\0\0xy"
    assert f.size() == 6
    f.write(0, b"ab")
    f.truncate(3)
    assert f.read(0, 10) == b"ab\0"
    f.truncate(5)
    assert f.read(1, 10) == b"b\0\0\0"
    assert f.read(10, 5) == b""
    assert fs.open("/a", "r").read(0, 10) == b"ab\0\0\0"


def test_open_modes() -> None:
    fs = new_disk(a=b"old").fs()
    with pytest.raises(FileNotFoundError):
        fs.open("/missing", "r")
    with pytest.raises(FileNotFoundError):
        fs.open("/missing", "r+")
    with pytest.raises(FileExistsError):
        fs.open("/a", "x")
    assert fs.open("/a", "c").read(0, 10) == b"old"
    assert fs.open("/a", "w").size() == 0
    r = fs.open("/a", "r")
    with pytest.raises(OSError) as info:
        r.write(0, b"no")
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError):
        r.truncate(0)
    with pytest.raises(ValueError, match="open mode"):
        fs.open("/a", "rw")


def test_directory_errors_like_the_os() -> None:
    fs = new_disk("/d", f=b"").fs()
    with pytest.raises(IsADirectoryError):
        fs.open("/d", "c")
    with pytest.raises(IsADirectoryError):
        fs.remove("/d")
    with pytest.raises(NotADirectoryError):
        fs.open("/f/x", "c")
    with pytest.raises(FileNotFoundError):
        fs.open("/nodir/x", "c")  # open never creates parents
    with pytest.raises(FileExistsError):
        fs.makedirs("/f")
    with pytest.raises(NotADirectoryError):
        fs.makedirs("/f/sub")
    with pytest.raises(NotADirectoryError):
        fs.listdir("/f")
    with pytest.raises(NotADirectoryError):
        fs.sync_dir("/f")
    with pytest.raises(FileNotFoundError):
        fs.remove("/nope")
    with pytest.raises(FileNotFoundError):
        fs.rename("/nope", "/x")
    assert not fs.exists("/f/x")


def test_makedirs_listdir_exists() -> None:
    disk = new_disk()
    fs = disk.fs()
    fs.makedirs("/")
    assert disk.trace == []  # the root exists: nothing to do
    fs.makedirs("/a/b/c")
    n = disk.position
    fs.makedirs("/a/b")
    assert disk.position == n  # existing: a no-op
    fs.open("/a/b/f", "c")
    assert fs.listdir("/a") == ["b"]
    assert fs.listdir("/a/b") == ["c", "f"]
    assert fs.exists("/a/b/c") and fs.exists("/a/b/f") and not fs.exists("/a/x")
    assert disk.cache_image().dirs == {"/", "/a", "/a/b", "/a/b/c"}


def test_rename_replaces_and_handles_follow_the_inode() -> None:
    fs = new_disk(a=b"A", b=b"B").fs()
    ha, hb = fs.open("/a", "r+"), fs.open("/b", "r")
    fs.rename("/a", "/b")
    assert not fs.exists("/a")
    assert fs.open("/b", "r").read(0, 9) == b"A"
    ha.write(1, b"2")  # the handle still names the moved inode
    assert fs.open("/b", "r").read(0, 9) == b"A2"
    assert hb.read(0, 9) == b"B"  # the replaced inode lives on while open
    fs.remove("/b")
    ha.write(2, b"3")  # unlinked but open: still works, reaches no name
    assert fs.listdir("/") == []


def test_rename_directory_rules() -> None:
    fs = new_disk("/d/sub", "/e", f=b"").fs()
    with pytest.raises(OSError) as info:
        fs.rename("/d", "/d/sub/x")
    assert info.value.errno == errno.EINVAL
    with pytest.raises(IsADirectoryError):
        fs.rename("/f", "/e")
    with pytest.raises(NotADirectoryError):
        fs.rename("/e", "/f")
    with pytest.raises(OSError) as info:
        fs.rename("/e", "/d")  # not empty
    assert info.value.errno == errno.ENOTEMPTY
    fs.rename("/d", "/e")  # onto an empty directory: allowed
    assert fs.listdir("/e") == ["sub"]


def test_failed_calls_record_nothing() -> None:
    disk = new_disk(a=b"")
    fs = disk.fs()
    for call in (lambda: fs.open("/a", "x"), lambda: fs.remove("/b"),
                 lambda: fs.open("/x/y", "c")):
        with pytest.raises(OSError):
            call()
    assert disk.trace == []


# -- durability -----------------------------------------------------------------------------


def test_fsync_makes_the_data_durable_not_the_name() -> None:
    disk = new_disk("/d", old=b"1")
    fs = disk.fs()
    f = fs.open("/old", "r+")
    f.write(0, b"2")
    assert disk.durable_image().files["/old"] == b"1"  # written, not synced
    f.sync()
    assert disk.durable_image().files["/old"] == b"2"
    g = fs.open("/d/new", "c")
    g.write(0, b"data")
    g.sync()
    assert "/d/new" not in disk.durable_image().files  # its directory entry is pending
    assert disk.cache_image().files["/d/new"] == b"data"
    fs.sync_dir("/")
    assert "/d/new" not in disk.durable_image().files  # syncing another directory: no help
    fs.sync_dir("/d")
    assert disk.durable_image().files["/d/new"] == b"data"


def test_a_new_directory_needs_its_parent_synced() -> None:
    disk = new_disk()
    fs = disk.fs()
    fs.makedirs("/x")
    f = fs.open("/x/f", "c")
    f.write(0, b"v")
    f.sync()
    fs.sync_dir("/x")
    assert disk.durable_image().files == {}
    fs.sync_dir("/")
    assert disk.durable_image().files == {"/x/f": b"v"}


def test_rename_without_directory_fsync() -> None:
    disk = new_disk("/d")
    fs = disk.fs()
    f = fs.open("/d/f", "c")
    f.write(0, b"old")
    f.sync()
    fs.sync_dir("/d")
    t = fs.open("/d/f.tmp", "w")
    t.write(0, b"new")
    t.sync()
    fs.rename("/d/f.tmp", "/d/f")
    assert disk.cache_image().files == {"/d/f": b"new"}  # a process crash keeps the rename
    assert disk.durable_image().files == {"/d/f": b"old"}  # power loss may lose it
    fs.sync_dir("/d")
    assert disk.durable_image().files == {"/d/f": b"new"}


def test_rename_across_directories_needs_both_synced() -> None:
    disk = new_disk("/a", "/b", **{"a/f": b"x"})
    fs = disk.fs()
    fs.rename("/a/f", "/b/f")
    fs.sync_dir("/b")
    assert disk.durable_image().files == {"/a/f": b"x"}
    fs.sync_dir("/a")
    assert disk.durable_image().files == {"/b/f": b"x"}


def test_unlink_is_pending_until_the_directory_sync() -> None:
    disk = new_disk(f=b"x")
    fs = disk.fs()
    fs.remove("/f")
    assert disk.durable_image().files == {"/f": b"x"}
    fs.sync_dir("/")
    assert disk.durable_image().files == {}


def test_truncating_open_is_a_pending_truncate() -> None:
    disk = new_disk(f=b"keep")
    fs = disk.fs()
    fs.open("/f", "w")
    assert [op.kind for op in disk.trace] == ["truncate"]
    assert disk.durable_image().files == {"/f": b"keep"}
    assert disk.cache_image().files == {"/f": b""}


# -- process crash --------------------------------------------------------------------------


def test_dead_handles_after_crash_raise_and_change_nothing() -> None:
    disk = new_disk("/d")
    fs = disk.fs()
    f = fs.open("/d/f", "c")
    f.write(0, b"before")
    disk.crash()
    before, n = disk.cache_image(), disk.position
    calls = [lambda: f.write(0, b"after"), lambda: f.truncate(0), lambda: f.sync(),
             lambda: f.read(0, 1), lambda: f.size(), lambda: f.close(),
             lambda: fs.open("/d/g", "c"), lambda: fs.remove("/d/f"),
             lambda: fs.rename("/d/f", "/d/g"), lambda: fs.makedirs("/e"),
             lambda: fs.sync_dir("/d"), lambda: fs.listdir("/d"), lambda: fs.exists("/d/f")]
    for call in calls:
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EIO
        assert "crashed" in str(info.value)
    assert disk.position == n
    assert disk.cache_image() == before  # the page cache survives the process
    fresh = disk.fs()
    assert fresh.open("/d/f", "r").read(0, 99) == b"before"


def test_closed_handle_refuses_io() -> None:
    f = new_disk().fs().open("/f", "c")
    f.close()
    with pytest.raises(OSError) as info:
        f.write(0, b"x")
    assert info.value.errno == errno.EBADF


def test_image_normalises_and_checks() -> None:
    image = DiskImage({"a/b//c": b"x"}, frozenset({"e/"}))
    assert image.files == {"/a/b/c": b"x"}
    assert image.dirs == {"/", "/a", "/a/b", "/e"}
    assert hash(image) == hash(DiskImage({"/a/b/c": b"x"}, frozenset({"/e"})))
    with pytest.raises(ValueError, match="both a file and a directory"):
        DiskImage({"/a": b"", "/a/b": b""})
    assert image.diff(DiskImage({"/a/b/c": b"y"})) == [
        "-dir /e", "~file /a/b/c: 1 -> 1 bytes, first difference at 0"]


def test_sim_env_glue() -> None:
    disk = SimDisk()
    env = sim_env(disk, makedirs=["/tmp/x"])
    assert env.fs.exists("/tmp/x")
    assert env.clock.time() == 1_700_000_000.0
    env.failpoints.hit("somewhere")  # unarmed: counts only


# A store works on the simulated disk. Directories come with the base image (durable, and
# SimFS.open never creates parents).
TestMemoryOnSimDisk = conformance_test(
    "memory", make_env=lambda tmp: sim_env(SimDisk(DiskImage.empty(tmp))), max_examples=15)


def test_image_pickles_without_its_cached_hash() -> None:
    import pickle

    image = DiskImage({"/a": b"x"})
    hash(image)
    copy = pickle.loads(pickle.dumps(image))
    assert copy == image and "_hash" not in copy.__dict__  # hashes differ across processes


def test_a_large_file_is_copied_only_where_written() -> None:
    """Recovering a crash image of a large file (cutting a torn tail, say) copies the chunks it
    writes, not the file; the image it started from is unchanged."""
    big = b"".join(bytes([k]) * CHUNK_SIZE for k in range(12)) + b"torn tail"
    image = DiskImage({"/f": big})
    disk = SimDisk(image)
    f = disk.fs().open("/f", "r+")
    assert f.read(CHUNK_SIZE - 2, 4) == b"\0\0\1\1" and f.size() == len(big)
    f.truncate(11 * CHUNK_SIZE + 100)
    f.write(5 * CHUNK_SIZE, b"new")
    after = disk.cache_image().contents["/f"].chunks
    before = image.contents["/f"].chunks
    assert [k for k in range(12) if after[k] is not before[k]] == [5, 11]
    assert disk.cache_image().files["/f"] == (big[:5 * CHUNK_SIZE] + b"new"
                                              + big[5 * CHUNK_SIZE + 3:11 * CHUNK_SIZE + 100])
    assert image.files["/f"] == big
    assert disk.durable_image().files["/f"] == big   # nothing synced


def test_image_files_are_bytes_and_equal_images_are_equal_however_built() -> None:
    chunked = DiskImage({"/a": b"x" * (3 * CHUNK_SIZE)})
    disk = SimDisk(DiskImage({"/a": b"y" * (3 * CHUNK_SIZE + 5)}))
    f = disk.fs().open("/a", "r+")
    f.truncate(0)
    f.write(0, b"x" * (3 * CHUNK_SIZE))
    assert isinstance(chunked.files["/a"], bytes)
    assert chunked.files == {"/a": b"x" * (3 * CHUNK_SIZE)}
    rebuilt = disk.cache_image()
    assert rebuilt == chunked and hash(rebuilt) == hash(chunked)
    assert rebuilt != DiskImage({"/a": b"x" * (3 * CHUNK_SIZE - 1) + b"z"})
    with pytest.raises(AttributeError, match="immutable"):
        chunked.dirs = frozenset()


# -- spilled write data ---------------------------------------------------------------------


def test_spilled_and_held_ops_are_interchangeable() -> None:
    spill = Spill()
    data = bytes(range(256)) * 1000
    held = DiskOp("write", "/f", offset=512, data=data, ino=3)
    spilled = DiskOp("write", "/f", offset=512, data=data, ino=3, spill=spill)
    assert spilled.spilled and not held.spilled and spill.size == len(data)
    assert spilled.data == data and spilled.length == held.length == len(data)
    assert spilled == held and held == spilled and hash(spilled) == hash(held)
    assert len({held, spilled}) == 1
    assert spilled.describe() == held.describe() == "write /f @512+256000"
    assert repr(spilled) == "DiskOp(write /f @512+256000)"
    # a pickled op carries its bytes, not the spill: a spawned process can read it
    copy = pickle.loads(pickle.dumps(spilled))
    assert not copy.spilled and copy == held and copy.data == data
    # one byte differs, or a field does: not equal
    other = DiskOp("write", "/f", offset=512, data=data[:-1] + b"!", ino=3, spill=spill)
    assert other != spilled and other != held
    assert DiskOp("write", "/f", offset=0, data=data, ino=3, spill=spill) != spilled
    assert DiskOp("write", "/f", offset=512, data=data, ino=4) != spilled
    # nothing to spill: held
    assert not DiskOp("sync", "/f", ino=3, spill=spill).spilled
    with pytest.raises(FrozenInstanceError):
        spilled.offset = 0  # type: ignore[misc]
    # describing needs no read: it works once the data is gone, reading does not
    spill.close()
    assert spilled.describe() == "write /f @512+256000"
    with pytest.raises(ValueError, match="closed"):
        spilled.data  # noqa: B018


def test_a_disk_spills_the_writes_of_at_least_spill_over_bytes() -> None:
    spill = Spill()
    disk = SimDisk(DiskImage.empty("/d"), spill=spill, spill_over=100)
    fs = disk.fs()
    f = fs.open("/d/f", "c")
    for k, n in enumerate([99, 100, 5000, 1]):
        f.write(f.size(), bytes([k]) * n)
    f.sync()
    fs.sync_dir("/d")
    writes = [op for op in disk.trace if op.kind == "write"]
    assert [op.spilled for op in writes] == [False, True, True, False]
    assert spill.size == 5100
    want = b"\0" * 99 + b"\1" * 100 + b"\2" * 5000 + b"\3"
    assert disk.cache_image().files["/d/f"] == disk.durable_image().files["/d/f"] == want
    # without a spill (the default) every write stays in memory, however long
    plain = SimDisk(DiskImage.empty("/d"))
    plain.fs().open("/d/f", "c").write(0, b"x" * (1 << 20))
    assert [op.spilled for op in plain.trace if op.kind == "write"] == [False]
    with pytest.raises(ValueError, match="spill_over must be at least 1.*got 0"):
        SimDisk(spill=spill, spill_over=0)


def test_crash_images_of_a_spilled_trace_equal_those_of_it_held_in_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One recorded run (its long records spilled, as ``record_run`` does), replayed from the
    spill and from the same trace held in memory (the bytes as they were put, not as read
    back): the same states, the same images."""
    put: list[bytes] = []

    class Remembering(Spill):
        def put(self, data: bytes | bytearray | memoryview) -> tuple[int, int]:
            put.append(bytes(data))
            return super().put(data)

    monkeypatch.setattr(powerloss, "Spill", Remembering)
    rec = powerloss.record_run(resolve("rvf"), 30, 1, PROFILES["small"])
    trace = rec.disk.trace
    spilled = {i for i, op in enumerate(trace) if op.spilled}
    assert spilled and len(spilled) < sum(op.kind == "write" for op in trace)
    originals = iter(put)   # puts happen in trace order
    held = [DiskOp(op.kind, op.path, op.offset, next(originals) if op.spilled else op.data,
                   op.size, op.dst, op.ino, op.parent, op.dst_parent) for op in trace]
    assert not any(op.spilled for op in held) and held == list(trace)
    assert [pickle.loads(pickle.dumps(op)) for op in trace] == held

    def states(t: list[DiskOp]) -> list[tuple[object, DiskImage]]:
        return list(enumerate_crash_states(rec.base, t, list(range(len(t) + 1)),
                                           list(CrashModel), 400, seed=7))

    from_spill, from_memory = states(list(trace)), states(held)
    assert [s for s, _ in from_spill] == [s for s, _ in from_memory]
    assert [i for _, i in from_spill] == [i for _, i in from_memory]
    # the comparison covered spilled writes kept whole and torn
    kept = {j for s, _ in from_spill for j in s.kept}  # type: ignore[attr-defined]
    torn = {j for s, _ in from_spill for j, _ in s.torn}  # type: ignore[attr-defined]
    assert kept & spilled and torn & spilled
