"""The MANIFEST segment: what one commit made true.

Every commit ends with one manifest; its fsync is the commit point. A manifest describes the live
state after the commit (epoch, dimension, metric, counts, lineage, witness head) and, as its
*segment directory*, the data segments this commit added (offset, segment id, type) and its
witness segment. The live state is rebuilt by replaying, in file order, the data segments named
by the chain of manifests up to the newest one that verifies (``prev`` links each manifest to the
one before it). A compacted or derived file starts with one manifest (flag CHECKPOINT) naming
every live data segment.

The payload is compact UTF-8 JSON (see FORMAT.md for the field list).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KINDS", "Lineage", "Manifest", "SegRef"]

KINDS = ("create", "commit", "compact", "derive")


@dataclass(frozen=True)
class SegRef:
    """A segment a manifest names: where it is, its id and its type."""

    offset: int
    seg_id: int
    seg_type: int


@dataclass(frozen=True)
class Lineage:
    """File identity: ``file_id`` and ``parent_id`` 16 bytes, ``parent_hash`` 32 bytes (all
    zeros for a root file), ``depth`` 0 for a root. ``parent_path`` is informational."""

    file_id: bytes
    parent_id: bytes = b"\0" * 16
    parent_hash: bytes = b"\0" * 32
    depth: int = 0
    parent_path: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"file_id": self.file_id.hex(), "parent_id": self.parent_id.hex(),
                "parent_hash": self.parent_hash.hex(), "depth": self.depth,
                "parent_path": self.parent_path}

    @staticmethod
    def from_json(doc: dict[str, Any]) -> Lineage:
        lin = Lineage(bytes.fromhex(doc["file_id"]), bytes.fromhex(doc["parent_id"]),
                      bytes.fromhex(doc["parent_hash"]), int(doc["depth"]),
                      str(doc.get("parent_path", "")))
        if len(lin.file_id) != 16 or len(lin.parent_id) != 16 or len(lin.parent_hash) != 32:
            raise ValueError("lineage ids must be 16 bytes and the parent hash 32 bytes")
        return lin


@dataclass(frozen=True)
class Manifest:
    kind: str
    epoch: int
    dimension: int
    """0 until the first vector fixes it."""
    metric: str
    vectors: int
    """Live vectors after this commit."""
    keys: int
    """Live key-value records after this commit."""
    dead: int
    """Records in this file that a later delete or overwrite made dead (what compaction frees)."""
    prev: int
    """Offset of the previous manifest in this file, -1 for the first."""
    segments: tuple[SegRef, ...]
    witness: SegRef
    witness_count: int
    witness_head: bytes
    lineage: Lineage
    committed_ns: int
    dtype: str = "float64"
    extra: dict[str, Any] = field(default_factory=dict)
    """Fields this reader does not know, kept so a rewrite does not drop them."""

    def encode(self) -> bytes:
        doc: dict[str, Any] = dict(self.extra)
        doc.update({
            "kind": self.kind, "epoch": self.epoch, "dimension": self.dimension,
            "metric": self.metric, "dtype": self.dtype, "vectors": self.vectors,
            "keys": self.keys, "dead": self.dead, "prev": self.prev,
            "segments": [[s.offset, s.seg_id, s.seg_type] for s in self.segments],
            "witness": [self.witness.offset, self.witness.seg_id, self.witness.seg_type],
            "witness_count": self.witness_count, "witness_head": self.witness_head.hex(),
            "lineage": self.lineage.as_json(), "committed_ns": self.committed_ns,
        })
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @staticmethod
    def decode(payload: bytes) -> Manifest:
        """Parse a manifest payload; ``ValueError`` (naming the field) if it does not parse."""
        try:
            doc = json.loads(payload.decode())
            known = {"kind", "epoch", "dimension", "metric", "dtype", "vectors", "keys", "dead",
                     "prev", "segments", "witness", "witness_count", "witness_head", "lineage",
                     "committed_ns"}
            m = Manifest(
                kind=str(doc["kind"]), epoch=int(doc["epoch"]), dimension=int(doc["dimension"]),
                metric=str(doc["metric"]), vectors=int(doc["vectors"]), keys=int(doc["keys"]),
                dead=int(doc["dead"]), prev=int(doc["prev"]),
                segments=tuple(SegRef(int(o), int(i), int(t)) for o, i, t in doc["segments"]),
                witness=SegRef(*(int(x) for x in doc["witness"])),
                witness_count=int(doc["witness_count"]),
                witness_head=bytes.fromhex(doc["witness_head"]),
                lineage=Lineage.from_json(doc["lineage"]),
                committed_ns=int(doc["committed_ns"]), dtype=str(doc["dtype"]),
                extra={k: v for k, v in doc.items() if k not in known},
            )
        except KeyError as exc:
            raise ValueError(f"manifest has no field {exc.args[0]!r}") from None
        except (TypeError, AttributeError, OverflowError, RecursionError) as exc:
            # OverflowError: int() of an Infinity, which Python's JSON reads
            raise ValueError(f"manifest field has the wrong shape: {exc}") from None
        if m.kind not in KINDS:
            raise ValueError(f"manifest kind {m.kind!r} is not one of {KINDS}")
        if m.dtype != "float64":
            raise ValueError(f"manifest dtype {m.dtype!r} is not 'float64'")
        return m
