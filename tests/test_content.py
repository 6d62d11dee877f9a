"""Chunked file contents: every operation against a plain bytearray, canonical chunks (equal
bytes, equal chunks, equal hash), copy-on-write sharing, and frozen contents that never change."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crashgate.harness.content import CHUNK_SIZE, EMPTY, ChunkedFile, Content

C = CHUNK_SIZE

# Offsets and sizes that land on, just before and just after chunk boundaries, or anywhere.
NEAR = st.builds(lambda k, d: max(k * C + d, 0), st.integers(0, 4), st.integers(-3, 3))
OFFSETS = st.one_of(NEAR, st.integers(0, 4 * C + 100))
LENGTHS = st.one_of(st.integers(1, 40), NEAR.map(lambda n: max(n, 1)), st.integers(1, 2 * C))
FILL = st.binary(min_size=1, max_size=7)   # a pattern, repeated: cheap multi-chunk data


def pattern(fill: bytes, n: int) -> bytes:
    return (fill * (n // len(fill) + 1))[:n]


OPS = st.one_of(
    st.tuples(st.just("write"), OFFSETS, st.tuples(FILL, LENGTHS)),
    st.tuples(st.just("truncate"), OFFSETS),
    st.tuples(st.just("freeze")),
)


def canonical(content: Content) -> bool:
    chunks = content.chunks
    return (all(type(c) is bytes and c for c in chunks)
            and all(len(c) == C for c in chunks[:-1])
            and sum(map(len, chunks)) == content.size)


@settings(max_examples=150, deadline=None)
@given(start=st.tuples(FILL, st.integers(0, 3 * C)), ops=st.lists(OPS, max_size=12),
       reads=st.lists(st.tuples(OFFSETS, st.integers(0, 3 * C)), max_size=6))
def test_operations_match_a_bytearray(start: tuple[bytes, int], ops: list[tuple],
                                      reads: list[tuple[int, int]]) -> None:
    model = bytearray(pattern(*start))
    f = Content.of(bytes(model)).edit()
    snapshots: list[tuple[Content, bytes]] = []
    for op in ops:
        if op[0] == "write":
            data = pattern(*op[2])
            f.write(op[1], data)
            if op[1] > len(model):
                model.extend(bytes(op[1] - len(model)))
            model[op[1]:op[1] + len(data)] = data
        elif op[0] == "truncate":
            f.truncate(op[1])
            del model[op[1]:]
            model.extend(bytes(op[1] - len(model)))
        else:
            snapshots.append((f.freeze(), bytes(model)))
        assert len(f) == len(model)
        for offset, size in reads:
            assert f.read(offset, size) == model[offset:offset + size]
    final = f.freeze()
    assert canonical(final) and final.tobytes() == model and len(final) == len(model)
    for offset, size in reads:
        assert final.read(offset, size) == model[offset:offset + size]
    # what was frozen earlier never changes, whatever was written after it
    for snap, then in snapshots:
        assert canonical(snap) and snap.tobytes() == then
        assert (snap == final) == (then == model)


@settings(max_examples=150, deadline=None)
@given(a=st.tuples(st.sampled_from([b"a", b"ab"]), st.integers(0, 2 * C + 2)),
       b=st.tuples(st.sampled_from([b"a", b"ab"]), st.integers(0, 2 * C + 2)),
       cut=st.integers(0, 2 * C + 2))
def test_equal_and_same_hash_exactly_when_the_bytes_are_equal(
        a: tuple[bytes, int], b: tuple[bytes, int], cut: int) -> None:
    x, y = pattern(*a), pattern(*b)
    cx = Content.of(x)
    # the same bytes reached another way: written into a longer file, then cut
    f = Content.of(y + b"tail" * 20_000).edit()
    f.truncate(len(y))
    cy = f.freeze()
    assert (cx == cy) == (x == y)
    if x == y:
        assert hash(cx) == hash(cy)
    assert (cx.first_difference(cy) is None) == (x == y)
    if x != y:
        at = cx.first_difference(cy)
        assert at is not None and x[:at] == y[:at]
        assert at == min(len(x), len(y)) or x[at] != y[at]


def test_untouched_chunks_are_shared_not_copied() -> None:
    big = Content.of(b"".join(bytes([k]) * C for k in range(20)))
    f = big.edit()
    f.write(5 * C + 100, b"x" * 10)          # inside chunk 5
    f.write(20 * C, b"appended")             # a new chunk
    out = f.freeze()
    assert [k for k in range(20) if out.chunks[k] is not big.chunks[k]] == [5]
    assert big.read(5 * C + 100, 10) == bytes([5]) * 10   # the original is unchanged
    again = out.edit()
    again.truncate(3 * C + 7)                # a cut copies nothing but the new last chunk
    cut = again.freeze()
    assert all(cut.chunks[k] is big.chunks[k] for k in range(3))
    # a write covering a whole chunk takes the written bytes as they are
    whole = bytes(C)
    g = big.edit()
    g.write(2 * C, whole)
    assert g.freeze().chunks[2] is whole


def test_a_small_file_is_its_bytes() -> None:
    data = b"a small json document"
    content = Content.of(data)
    assert content.chunks == (data,) and content.chunks[0] is data
    assert content.tobytes() is data and content.read(0, 100) is data
    f = EMPTY.edit()
    f.write(0, data)
    assert f.freeze().chunks[0] is data          # a new file's first write is not copied
    assert Content.of(b"") is EMPTY and EMPTY.tobytes() == b"" and EMPTY.read(0, 5) == b""


def test_gaps_and_extensions_read_as_zeros() -> None:
    f = ChunkedFile()
    f.write(C + 5, b"z")
    assert f.freeze().tobytes() == bytes(C + 5) + b"z"
    f.truncate(3 * C)
    assert f.freeze().tobytes() == bytes(C + 5) + b"z" + bytes(2 * C - 6)
    assert f.read(3 * C, 10) == b"" and f.read(3 * C - 2, 10) == b"\0\0"


def test_bad_content_names_the_fix() -> None:
    with pytest.raises(TypeError, match="must be bytes-like, got str.*encode"):
        Content.of("text")


def test_pickles_without_its_cached_hash() -> None:
    content = Content.of(b"q" * (2 * C + 3))
    hash(content)
    copy = pickle.loads(pickle.dumps(content))
    assert copy == content and copy._hash is None   # bytes hashes differ between processes
