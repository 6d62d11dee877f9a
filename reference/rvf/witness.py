"""The witness chain: one 73-byte entry per mutation, each hashing the one before it.

An entry is ``prev_hash[32] action_hash[32] timestamp_ns u64 type u8`` (little-endian).
``prev_hash`` is SHAKE-256/256 of the previous entry's 73 bytes, all zeros for the first entry;
``action_hash`` is SHAKE-256/256 of the data segments (header and payload bytes, in file order)
that the mutation wrote. Each commit writes its entry in a WITNESS segment and records the chain's
length and head (the hash of its entry) in its manifest, so an altered entry is named exactly:
its hash no longer matches the head its commit recorded, or its action hash no longer matches the
commit's data segments.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from crashgate.reference.rvf.segments import hash256

__all__ = ["ENTRY_SIZE", "ZERO_HASH", "Anchor", "WitnessEntry", "WitnessType",
           "decode_entries", "verify_chain"]

ENTRY_SIZE = 73
ZERO_HASH = b"\0" * 32
_ENTRY = struct.Struct("<32s32sQB")
assert _ENTRY.size == ENTRY_SIZE


class WitnessType(enum.IntEnum):
    CREATE = 1
    COMMIT = 2
    COMPACT = 3
    DERIVE = 4


def _type_label(t: int) -> str:
    try:
        return WitnessType(t).name
    except ValueError:
        return f"type {t}"


@dataclass(frozen=True)
class WitnessEntry:
    prev_hash: bytes
    action_hash: bytes
    timestamp_ns: int
    type: int

    def encode(self) -> bytes:
        return _ENTRY.pack(self.prev_hash, self.action_hash, self.timestamp_ns, self.type)

    def digest(self) -> bytes:
        """SHAKE-256/256 of the encoded entry: the next entry's ``prev_hash``."""
        return hash256(self.encode())

    @staticmethod
    def after(head: bytes, action_hash: bytes, timestamp_ns: int, type: WitnessType
              ) -> WitnessEntry:
        """The entry that follows a chain whose head is ``head`` (``ZERO_HASH`` if empty)."""
        return WitnessEntry(head, action_hash, timestamp_ns, int(type))


def decode_entries(payload: bytes) -> list[WitnessEntry]:
    """The entries of a WITNESS payload; ``ValueError`` unless it is a whole number of them."""
    if len(payload) % ENTRY_SIZE:
        raise ValueError(f"witness payload of {len(payload)} bytes is not a multiple of "
                         f"{ENTRY_SIZE}")
    return [WitnessEntry(*_ENTRY.unpack_from(payload, at))
            for at in range(0, len(payload), ENTRY_SIZE)]


@dataclass(frozen=True)
class Anchor:
    """What a manifest recorded about the entry at one index of the chain."""

    head: bytes
    """The chain head the manifest recorded: the digest this entry must have."""
    action_hash: bytes | None
    """The hash of the commit's data segments recomputed now, or None when those segments are
    no longer in the file (history carried over by compaction)."""
    where: str
    """Which manifest recorded it, for messages (e.g. 'manifest at offset 4096, epoch 3')."""


def verify_chain(entries: Sequence[WitnessEntry], anchors: Mapping[int, Anchor]
                 ) -> list[tuple[int, str]]:
    """Every problem found as ``(entry index, message)``, ordered by index.

    Checks that the first ``prev_hash`` is zeros, each later one is the digest of the entry
    before it, and, where a manifest anchors an entry, its digest and its action hash.
    """
    problems: list[tuple[int, str]] = []
    prev = ZERO_HASH
    for i, entry in enumerate(entries):
        label = f"witness entry #{i} ({_type_label(entry.type)})"
        if entry.prev_hash != prev:
            want = "all zeros (it is the first entry)" if i == 0 else (
                f"the hash of entry #{i - 1} ({prev.hex()[:16]}...)")
            if i > 0 and i - 1 not in anchors:  # nothing else pins entry i-1 down
                want += f"; entry #{i - 1} or entry #{i} was altered"
            problems.append((i, f"{label}: prev_hash {entry.prev_hash.hex()[:16]}... is not "
                                f"{want}"))
        if entry.type not in set(WitnessType):
            problems.append((i, f"{label}: unknown entry type {entry.type}"))
        anchor = anchors.get(i)
        digest = entry.digest()
        if anchor is not None:
            if digest != anchor.head:
                problems.append((i, f"{label}: its hash {digest.hex()[:16]}... does not match "
                                    f"the head {anchor.head.hex()[:16]}... recorded by the "
                                    f"{anchor.where}"))
            if anchor.action_hash is not None and entry.action_hash != anchor.action_hash:
                problems.append((i, f"{label}: action_hash does not match the data segments "
                                    f"of the {anchor.where}"))
        prev = digest
    problems.sort(key=lambda p: p[0])
    return problems
