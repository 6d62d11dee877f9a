"""The spill file: bytes put are the bytes got, in this process, in threads and in a forked
child; wrong offsets and short reads are named errors; a child may read but not append."""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from crashgate.harness.spill import Spill


def _fork_and_check(check: Callable[[], bool]) -> int:
    """Run ``check()`` in a forked child; its exit code (0: True, 1: False, 2: raised)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 2
        try:
            code = 0 if check() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_put_returns_where_get_finds_it() -> None:
    spill = Spill()
    parts = [b"", b"a", bytes(range(256)) * 300, b"\0" * 5, bytearray(b"ba"),
             memoryview(b"xyz")[1:]]
    where = [spill.put(p) for p in parts]
    assert [length for _, length in where] == [len(p) for p in parts]
    assert [offset for offset, _ in where] == [0, 0, 1, 76801, 76806, 76808]
    assert spill.size == sum(map(len, parts))
    # any order, any number of times
    for (offset, length), p in reversed(list(zip(where, parts, strict=True))):
        assert spill.get(offset, length) == bytes(p)
        assert isinstance(spill.get(offset, length), bytes)
    assert spill.get(where[2][0] + 10, 3) == bytes(range(10, 13))


def test_get_outside_what_was_put_names_the_range() -> None:
    spill = Spill()
    spill.put(b"0123456789")
    for offset, length in [(-1, 2), (0, -1), (8, 3), (11, 0)]:
        with pytest.raises(ValueError, match=rf"offset={offset}, length={length}.*holds 10"):
            spill.get(offset, length)
    assert spill.get(10, 0) == b""


def test_a_short_read_names_the_file_and_offset() -> None:
    spill = Spill()
    offset, length = spill.put(b"x" * 100)
    os.ftruncate(spill._fd, 40)   # another process truncated the file under us
    with pytest.raises(OSError, match=r"short read from spill file .*100 bytes at offset 0, "
                                      r"the file ended after 40"):
        spill.get(offset, length)


def test_a_closed_spill_refuses_and_no_file_is_left() -> None:
    spill = Spill()
    spill.put(b"abc")
    assert spill.name.startswith("spill file (fd ")
    assert "3 bytes" in repr(spill)
    spill.close()
    assert spill.closed and "closed" in repr(spill)
    with pytest.raises(ValueError, match="closed"):
        spill.get(0, 3)
    with pytest.raises(ValueError, match="closed"):
        spill.put(b"d")


def test_the_file_is_unlinked_from_the_start(tmp_path: Path) -> None:
    spill = Spill(dir=str(tmp_path))
    spill.put(b"data")
    assert os.listdir(tmp_path) == []   # nothing to clean up, however the process ends
    assert spill.get(0, 4) == b"data"


def test_a_spill_is_not_pickled() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Spill())


def test_threads_read_at_once() -> None:
    spill = Spill()
    blobs = [bytes([k]) * (1000 + 37 * k) for k in range(64)]
    where = [spill.put(b) for b in blobs]
    bad: list[int] = []

    def reader(shift: int) -> None:
        for i in range(len(blobs) * 20):
            k = (i * 7 + shift) % len(blobs)
            if spill.get(*where[k]) != blobs[k]:
                bad.append(k)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_a_forked_child_reads_but_may_not_append() -> None:
    spill = Spill()
    where = [spill.put(bytes([k]) * 70_000) for k in range(5)]

    def child_reads() -> bool:
        return all(spill.get(*where[k]) == bytes([k]) * 70_000 for k in reversed(range(5)))

    def child_appends() -> bool:
        try:
            spill.put(b"clobber")
        except RuntimeError as e:
            return "belongs to the process that made it" in str(e)
        return False

    assert _fork_and_check(child_reads) == 0
    assert _fork_and_check(child_appends) == 0
    # the parent's file is as it was, and it still appends
    assert spill.size == 5 * 70_000
    assert spill.put(b"more") == (5 * 70_000, 4)
    assert all(spill.get(*w) == bytes([k]) * 70_000 for k, w in enumerate(where))
