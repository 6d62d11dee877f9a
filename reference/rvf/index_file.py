"""The HNSW index file beside an RVF file (``<path>.hnsw``): hnswlib's state, stamped with the
commit it was built from, checksummed, and written atomically. FORMAT.md, "The index file".

Layout (little-endian)::

    0      8  magic b"RVFHNSW\\0"
    8      4  u32 header length H
    12     H  header: compact UTF-8 JSON, sorted keys (below)
    12+H   P  payload: a NumPy .npz archive (``numpy.savez``, read with ``allow_pickle=False``)
    end-32 32 BLAKE2b-256 of every byte before it

Header: ``format`` (1), ``epoch``, ``file_id`` and ``commit`` (hex: the RVF file's lineage id and
the 32-byte digest of its committed manifest segment, ``RvfStore.commit_digest``), ``metric``,
``dimension``, ``m``, ``ef_construction``, ``count`` (live ids), ``payload_bytes``,
``hnswlib`` (the scalar fields of hnswlib's ``Index.__getstate__`` dict) and
``hnswlib_version``. Payload: the array fields of that dict, plus ``live_ids`` (u64, sorted).

Nothing is trusted before the checksum holds: hnswlib copies its arrays with ``memcpy`` on the
sizes they claim, so a damaged payload handed to it could crash the process.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import hnswlib
import numpy as np

from crashgate.backends import FileSystem, read_all, write_whole

__all__ = ["IndexRejected", "Stamp", "decode_index", "encode_index", "index_path",
           "inspect_index"]

MAGIC = b"RVFHNSW\0"
FORMAT = 1
_HEAD = struct.Struct("<8sI")
_SUM = 32


@dataclass(frozen=True)
class Stamp:
    """Which committed state of which RVF file an index reflects."""

    epoch: int
    file_id: bytes     # the RVF file's lineage id (16 bytes)
    commit: bytes      # its committed manifest segment's digest (32 bytes)


class IndexRejected(Exception):
    """The index file cannot be used; ``str`` is the reason (``missing``, ``stale: ...``)."""


def index_path(store_path: str) -> str:
    return store_path + ".hnsw"


def _checksum(data: bytes | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=_SUM).digest()


def encode_index(fs: FileSystem, path: str, stamp: Stamp, index: hnswlib.Index,
                 expect: Mapping[str, Any]) -> None:
    """Write ``index`` (built over ``expect["ids"]``) to ``path`` atomically: a temporary file
    beside it, fsync, rename, fsync of the directory (``backends.write_whole``)."""
    (state,) = index.__getstate__()
    arrays: dict[str, Any] = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    buf = io.BytesIO()
    np.savez(buf, live_ids=np.asarray(expect["ids"], dtype=np.uint64), **arrays)
    payload = buf.getbuffer()
    header = json.dumps({
        "format": FORMAT, "epoch": stamp.epoch, "file_id": stamp.file_id.hex(),
        "commit": stamp.commit.hex(), "metric": expect["metric"],
        "dimension": expect["dimension"], "m": expect["m"],
        "ef_construction": expect["ef_construction"], "count": len(expect["ids"]),
        "payload_bytes": len(payload), "hnswlib": scalars,
        "hnswlib_version": version("hnswlib"),
    }, sort_keys=True, separators=(",", ":")).encode()
    head = _HEAD.pack(MAGIC, len(header)) + header
    digest = hashlib.blake2b(head, digest_size=_SUM)
    digest.update(payload)
    write_whole(fs, path, head, payload, digest.digest())


def decode_index(fs: FileSystem, path: str, stamp: Stamp, expect: Mapping[str, Any]
                 ) -> hnswlib.Index:
    """The index saved at ``path`` if it was built from ``stamp`` with the parameters and the
    live ids of ``expect`` (``metric``, ``dimension``, ``m``, ``ef_construction``, ``ids``);
    else ``IndexRejected`` with the reason."""
    header, arrays, live_ids = _verified(fs, path, stamp, expect)
    return _restore(dict(header["hnswlib"]), arrays, live_ids, expect)


def inspect_index(fs: FileSystem, path: str, stamp: Stamp, metric: str, dimension: int,
                  ids: list[int]) -> str:
    """What an open with ``index=hnsw`` would do with the index file at ``path`` (for
    ``crashgate rvf status`` of a store opened without the index): ``usable (m=.., ...)``, or
    the reason it would be rebuilt. Reads only; hnswlib is never handed the payload."""
    try:
        header = _header_of(fs, path)
        expect = {"metric": metric, "dimension": dimension, "m": header["m"],
                  "ef_construction": header["ef_construction"], "ids": ids}
        _verified(fs, path, stamp, expect)
    except IndexRejected as exc:
        return f"rebuilt at an open with index=hnsw: {exc}"
    except (KeyError, TypeError) as exc:
        return f"rebuilt at an open with index=hnsw: damaged: unreadable header ({exc})"
    return (f"usable by an open with index=hnsw&m={header['m']}&ef_construction="
            f"{header['ef_construction']} ({header['count']} ids, epoch {header['epoch']})")


def _header_of(fs: FileSystem, path: str) -> dict[str, Any]:
    header, _ = _checked(fs, path)
    return header


def _checked(fs: FileSystem, path: str) -> tuple[dict[str, Any], memoryview]:
    """The header and payload of the file at ``path`` once its checksum holds."""
    if not fs.exists(path):
        raise IndexRejected("missing")
    try:
        raw = read_all(fs, path)
    except OSError as exc:
        raise IndexRejected(f"unreadable ({exc})") from None
    if len(raw) < _HEAD.size + _SUM:
        raise IndexRejected(f"damaged: truncated to {len(raw)} bytes")
    body = memoryview(raw)[:-_SUM]
    if _checksum(body) != raw[-_SUM:]:
        raise IndexRejected("damaged: checksum mismatch")
    magic, hlen = _HEAD.unpack_from(raw)
    if magic != MAGIC or _HEAD.size + hlen > len(body):
        raise IndexRejected("damaged: not an index file")
    try:
        header = json.loads(bytes(body[_HEAD.size:_HEAD.size + hlen]))
    except ValueError as exc:
        raise IndexRejected(f"damaged: unreadable header ({exc})") from None
    if not isinstance(header, dict):
        raise IndexRejected("damaged: the header is not an object")
    return header, body[_HEAD.size + hlen:]


def _verified(fs: FileSystem, path: str, stamp: Stamp, expect: Mapping[str, Any]
              ) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """The header, hnswlib's arrays and the live ids of the index file at ``path``, once it
    is known to be ``stamp``'s with ``expect``'s parameters and ids; else ``IndexRejected``."""
    header, payload = _checked(fs, path)
    try:
        _check_header(header, stamp, expect, len(payload))
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        live_ids = arrays.pop("live_ids")
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise IndexRejected(f"damaged: unreadable header or payload ({exc})") from None
    if not np.array_equal(live_ids, np.asarray(expect["ids"], dtype=np.uint64)):
        raise IndexRejected("labels: the index's live ids differ from the store's")
    return header, arrays, live_ids


def _check_header(header: Mapping[str, Any], stamp: Stamp, expect: Mapping[str, Any],
                  payload_bytes: int) -> None:
    if header["format"] != FORMAT or header["payload_bytes"] != payload_bytes:
        raise IndexRejected(f"damaged: format {header['format']}, {header['payload_bytes']} "
                            f"payload bytes recorded, {payload_bytes} present")
    if header["file_id"] != stamp.file_id.hex():
        raise IndexRejected(f"foreign: built from RVF file {header['file_id']}, this file is "
                            f"{stamp.file_id.hex()}")
    if header["epoch"] != stamp.epoch:
        raise IndexRejected(f"stale: built at epoch {header['epoch']}, the store is at epoch "
                            f"{stamp.epoch}")
    if header["commit"] != stamp.commit.hex():
        raise IndexRejected(f"stale: built from another commit at epoch {stamp.epoch}")
    for name in ("metric", "dimension", "m", "ef_construction"):
        if header[name] != expect[name]:
            raise IndexRejected(f"parameters: built with {name}={header[name]}, the store has "
                                f"{name}={expect[name]}")
    if header["count"] != len(expect["ids"]):
        raise IndexRejected(f"labels: built over {header['count']} ids, the store holds "
                            f"{len(expect['ids'])}")


def _restore(scalars: dict[str, Any], arrays: dict[str, np.ndarray], live_ids: np.ndarray,
             expect: Mapping[str, Any]) -> hnswlib.Index:
    """hnswlib's state back into an ``Index`` (its dict constructor runs the same
    ``createFromParams`` as ``__setstate__``), after checking the state agrees with itself."""
    if scalars.get("index_inited") is not True:
        raise IndexRejected("damaged: the saved index was never initialised")
    labels = arrays.get("label_lookup_external")
    if (scalars.get("dim") != expect["dimension"] or scalars.get("M") != expect["m"]
            or labels is None or len(labels) != scalars.get("cur_element_count")
            or not np.isin(live_ids, labels).all()):
        raise IndexRejected("damaged: hnswlib's state disagrees with the header")
    try:
        return hnswlib.Index({**scalars, **arrays})
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise IndexRejected(f"damaged: hnswlib refused the state ({exc})") from None
