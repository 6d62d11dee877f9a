"""RVF building blocks: the 64-byte header, payload encodings, manifests, witness entries and
the forward walk that finds the commit point."""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import numpy as np
import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from crashgate.backends import CorruptStore, VersionTooNew
from crashgate.reference.rvf.manifest import Lineage, Manifest, SegRef
from crashgate.reference.rvf.payloads import (
    decode_journal,
    decode_meta,
    decode_vec,
    encode_journal,
    encode_meta,
    encode_vec,
)
from crashgate.reference.rvf.scan import ChunkReader, locate, walk
from crashgate.reference.rvf.segments import (
    HEADER_SIZE,
    MAGIC,
    Flag,
    HeaderError,
    SegmentHeader,
    SegType,
    content_hash,
    encode_segment,
    type_name,
)
from crashgate.reference.rvf.witness import (
    ENTRY_SIZE,
    ZERO_HASH,
    Anchor,
    WitnessEntry,
    WitnessType,
    decode_entries,
    verify_chain,
)


def test_header_layout_matches_the_specification() -> None:
    raw = encode_segment(version=1, seg_type=SegType.VEC, seg_id=7, payload=b"abc",
                         timestamp_ns=99, flags=Flag.SEALED | Flag.HAS_LINEAGE)
    assert len(raw) == 128 and raw[:4] == b"SFVR" and raw[64:67] == b"abc"
    assert raw[67:] == b"\0" * 61  # padded to the next 64-byte boundary
    magic, version, seg_type, flags, seg_id, length, ts = struct.unpack_from("<IBBHQQQ", raw)
    assert (magic, version, seg_type, flags, seg_id, length, ts) == (
        MAGIC, 1, 0x01, 0x808, 7, 3, 99)
    assert raw[0x20] == 1 and raw[0x21] == 0  # XXH3-128 (the runtime's default), uncompressed
    assert raw[0x28:0x38] == xxhash.xxh3_128_intdigest(b"abc").to_bytes(16, "little") \
        == content_hash(b"abc")
    old = encode_segment(version=1, seg_type=SegType.VEC, seg_id=7, payload=b"abc",
                         timestamp_ns=99, checksum_algo=2)   # what files before XXH3 hold
    assert old[0x20] == 2 and old[0x28:0x38] == hashlib.shake_256(b"abc").digest(16)
    assert struct.unpack_from("<II", raw, 0x38) == (3, 61)
    h = SegmentHeader.decode(raw[:64])
    assert (h.version, h.seg_type, h.seg_id, h.payload_length, h.total_length) == (
        1, 1, 7, 3, 128)


def test_every_flipped_header_byte_is_detected() -> None:
    raw = encode_segment(version=1, seg_type=SegType.META, seg_id=1, payload=b"x" * 10,
                         timestamp_ns=5)
    for at in range(HEADER_SIZE):
        bad = bytearray(raw[:HEADER_SIZE])
        bad[at] ^= 0x01
        with pytest.raises(HeaderError):
            SegmentHeader.decode(bytes(bad))


def test_type_names() -> None:
    assert type_name(0x0A) == "WITNESS" and type_name(0x23) == "DELTA"
    assert type_name(0x40) == "UNKNOWN(0x40)"


@given(st.lists(st.tuples(st.integers(0, 2**64 - 1),
                          st.lists(st.floats(allow_nan=False), min_size=3, max_size=3),
                          st.dictionaries(st.text(max_size=3), st.integers() | st.text())),
                max_size=5, unique_by=lambda t: t[0]))
def test_vec_payload_roundtrips_exactly(rows: list[tuple[int, list[float], dict[str, object]]]
                                       ) -> None:
    ids = [r[0] for r in rows]
    vectors = np.array([r[1] for r in rows], dtype=np.float64).reshape(len(rows), 3)
    block = decode_vec(encode_vec(ids, vectors, [r[2] for r in rows]))
    assert [int(i) for i in block.ids] == ids
    assert np.array_equal(block.vectors, vectors)  # float64: bit for bit
    assert block.metadata == [r[2] for r in rows]


def test_meta_and_journal_payloads_roundtrip() -> None:
    puts = {"a": b"", "ünï": b"\0\xff" * 100, "": b"x"}
    assert decode_meta(encode_meta(puts)) == list(puts.items())
    j = decode_journal(encode_journal(["k", "ü"], [0, 2**64 - 1]))
    assert (j.keys, j.ids) == (["k", "ü"], [0, 2**64 - 1])
    with pytest.raises(ValueError):
        decode_meta(encode_meta(puts)[:-1])
    with pytest.raises(ValueError):
        decode_vec(b"\x01\0\0\0\x03\0\0\0\x07" + b"\0" * 7)  # dtype 7


def manifest(**changes: object) -> Manifest:
    m = Manifest(kind="commit", epoch=3, dimension=4, metric="l2", vectors=2, keys=1, dead=0,
                 prev=128, segments=(SegRef(256, 5, SegType.VEC),),
                 witness=SegRef(384, 6, SegType.WITNESS), witness_count=3,
                 witness_head=b"\x01" * 32, lineage=Lineage(b"\x02" * 16), committed_ns=1)
    return dataclasses.replace(m, **changes)


def test_manifest_roundtrip_keeps_unknown_fields() -> None:
    m = manifest(extra={"future": [1, 2]})
    assert Manifest.decode(m.encode()) == m
    with pytest.raises(ValueError, match="no field 'epoch'"):
        Manifest.decode(b'{"kind": "commit"}')
    with pytest.raises(ValueError, match="kind"):
        Manifest.decode(manifest(kind="weird").encode())



@pytest.mark.parametrize("field, value", [("epoch", "Infinity"), ("prev", "-Infinity"),
                                          ("segments", "[[1, 2]]"), ("witness", "7"),
                                          ("lineage", "[]"), ("witness_head", '"zz"')])
def test_a_manifest_with_a_field_of_the_wrong_kind_is_a_value_error(field: str,
                                                                   value: str) -> None:
    doc = manifest().encode().decode()
    start = doc.index(f'"{field}":') + len(field) + 3
    end = start + len(json_value(doc, start))
    with pytest.raises(ValueError):
        Manifest.decode((doc[:start] + value + doc[end:]).encode())


def json_value(doc: str, start: int) -> str:
    """The JSON text of the value starting at ``start`` in ``doc``."""
    import json
    _, end = json.JSONDecoder().raw_decode(doc, start)
    return doc[start:end]


def test_vec_metadata_that_is_not_objects_is_a_value_error() -> None:
    good = encode_vec([1, 2], np.zeros((2, 1)), [{}, {}])
    assert good.endswith(b"[{},{}]")
    for meta in (b"[1,2]", b"[{},null]", b"[" * 100_000):
        with pytest.raises(ValueError, match="VEC metadata"):
            decode_vec(good[:-len(b"[{},{}]")] + meta)


def test_witness_entries_and_chain() -> None:
    e0 = WitnessEntry.after(ZERO_HASH, b"\x01" * 32, 10, WitnessType.CREATE)
    e1 = WitnessEntry.after(e0.digest(), b"\x02" * 32, 11, WitnessType.COMMIT)
    raw = e0.encode() + e1.encode()
    assert len(e0.encode()) == ENTRY_SIZE == 73
    assert e1.prev_hash == hashlib.shake_256(e0.encode()).digest(32)
    assert decode_entries(raw) == [e0, e1]
    assert verify_chain([e0, e1], {1: Anchor(e1.digest(), b"\x02" * 32, "m")}) == []
    bad = WitnessEntry(e1.prev_hash, b"\x03" * 32, 11, 2)
    problems = verify_chain([e0, bad], {1: Anchor(e1.digest(), b"\x02" * 32, "m")})
    assert [i for i, _ in problems] == [1, 1]
    first = WitnessEntry(b"\x09" * 32, b"\0" * 32, 1, 1)
    assert verify_chain([first], {})[0][1].startswith("witness entry #0 (CREATE): prev_hash")
    with pytest.raises(ValueError):
        decode_entries(raw[:-1])


class BytesFile:
    def __init__(self, data: bytes) -> None:
        self.data, self.path = data, "mem"

    def read(self, offset: int, size: int) -> bytes:
        return self.data[offset:offset + size]

    def size(self) -> int:
        return len(self.data)


def seg(seg_type: int, payload: bytes, seg_id: int, version: int = 1) -> bytes:
    return encode_segment(version=version, seg_type=seg_type, seg_id=seg_id, payload=payload,
                          timestamp_ns=0)


def test_walk_stops_at_the_first_broken_or_short_segment() -> None:
    a, b = seg(SegType.META, b"a", 1), seg(SegType.MANIFEST, b"{}", 2)
    for data, stop, reason in ((a + b, len(a + b), ""), (a + b[:10], len(a), "shorter"),
                               (a + b[:70], len(a), "needs 128 bytes"),
                               (a + b"\xff" * 64, len(a), "magic")):
        w = walk(ChunkReader(BytesFile(data), len(data)), 1)
        assert w.stop == stop and reason in w.stop_reason and w.newer is None


def test_locate_tells_torn_from_damaged_from_newer() -> None:
    good = seg(SegType.MANIFEST, manifest(prev=-1).encode(), 1)
    later = seg(SegType.MANIFEST, manifest().encode(), 3)
    filler = seg(SegType.META, b"m" * 100, 2)

    def find(data: bytes, supported: int = 1) -> int:
        loc = locate(ChunkReader(BytesFile(data), len(data)), "f", supported)
        assert loc.manifest is not None
        return loc.manifest.offset

    assert find(good + filler + later) == len(good + filler)
    assert find(good + filler + later[:-1]) == 0  # the last manifest is torn: the one before
    assert find(good + b"\x07" * 300) == 0  # garbage tail
    broken = bytearray(good + filler + later)
    broken[len(good)] ^= 1  # a broken header with a committed manifest behind it
    with pytest.raises(CorruptStore, match="committed manifest follows"):
        find(bytes(broken))
    with pytest.raises(VersionTooNew):
        find(good + seg(SegType.META, b"v2", 2, version=2)[:70])  # intact v2 header, torn
    assert find(good + seg(SegType.META, b"v2", 2, version=2), supported=2) == 0
