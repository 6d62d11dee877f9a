"""u64 vector ids as SQL's signed 64-bit INTEGER (SQLite's rowid, Postgres's bigint): ids up to
2**63 - 1 are themselves, larger ones wrap to the negative half, so the mapping is one to one
and keeps the order within each half."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["from_row_id", "storable_row_ids", "to_row_id"]

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def to_row_id(id_: int) -> int:
    """u64 -> i64; ``ValueError`` naming the id for one that is not a u64."""
    i = int(id_)
    if not 0 <= i < _U64:
        raise ValueError(f"vector id {id_!r} is not a u64 (0 <= id < 2**64)")
    return i - _U64 if i > _I64_MAX else i


def from_row_id(row_id: int) -> int:
    """i64 -> u64 (the inverse of ``to_row_id``)."""
    return row_id + _U64 if row_id < 0 else row_id


def storable_row_ids(ids: Iterable[int]) -> list[int]:
    """The row ids of those ``ids`` that could be stored (others cannot be live), sorted."""
    return sorted({to_row_id(i) for i in ids if 0 <= int(i) < _U64})
