"""The AgentDB ``patterns`` table, and how a ``VectorRecord`` becomes one of its rows and back.

The table has the fields the pattern migration guide lists ("What Gets Migrated"), an
``extra`` JSON column for every other metadata key, the embedding as a BLOB and a per-record
sum (``sqlite_file.record_sum``), as every crashgate SQLite record carries::

    patterns(id TEXT PRIMARY KEY,          -- the decimal of the u64 record id
             name TEXT, description TEXT, category TEXT, framework TEXT, language TEXT,
             template TEXT, examples TEXT,  -- examples: JSON
             confidence REAL, usage_count INTEGER, success_rate REAL, quality_score REAL,
             metadata TEXT,                 -- JSON: the record's "metadata" key
             created_at TEXT, updated_at TEXT,
             extra TEXT,                    -- JSON object: every other key (NULL: none)
             embedding BLOB NOT NULL,       -- little-endian float64
             vector_sum BLOB NOT NULL,      -- record_sum over the id and the embedding
             sum BLOB NOT NULL)             -- record_sum over the id, the embedding, the columns

``vector_sum`` is what a search checks: a query ranks every row by its embedding, so every
embedding it reads must verify, while only the hits' other columns are ever answered (their
whole rows are then read and checked against ``sum``). Hashing an id and an embedding per row,
not seventeen fields, is what keeps brute force at tens of thousands of rows per second.

**The id is TEXT**, the decimal of the u64 (``"18446744073709551615"``): the guide's pattern
ids are strings, so a file of this shape is what its tools read, and a decimal needs no
signed reinterpretation (the SQLite store's ``_row_ids`` maps u64 to i64 because its key is
an INTEGER). Only the canonical decimal of a u64 is an id: anything else read back is damage.

**Metadata round-trips exactly.** A key lands in its column only when the column keeps it
as it was given; otherwise it goes to ``extra`` with the rest (``json.dumps``, as the SQLite
store's metadata): strings (valid UTF-8, no NUL) in the TEXT columns; floats in the REAL
columns (finite, not -0.0: SQLite's REAL drops NaN and may store an integral float as an
integer, losing -0.0's sign), never an int (an int stays an int); ints (not bool, within
i64) in ``usage_count``; ``examples`` and ``metadata`` hold any JSON value. An absent key is
NULL; a JSON ``null`` is the text ``null`` in a JSON column, or goes to ``extra``.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from crashgate.backends import CorruptStore, VectorRecord
from crashgate.reference.sqlite_file import record_sum

__all__ = ["COLUMNS", "CREATE", "JSON_COLUMNS", "SCHEMA_VERSION", "SELECT", "SELECT_VECTORS",
           "TABLE", "decode_row", "decode_vector", "from_row", "id_text", "parse_id", "to_row"]

SCHEMA_VERSION = 1
TABLE = "patterns"
TEXT_COLUMNS = ("name", "description", "category", "framework", "language", "template",
                "created_at", "updated_at")
REAL_COLUMNS = ("confidence", "success_rate", "quality_score")
INT_COLUMNS = ("usage_count",)
JSON_COLUMNS = ("examples", "metadata")
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "TEXT"), ("description", "TEXT"), ("category", "TEXT"), ("framework", "TEXT"),
    ("language", "TEXT"), ("template", "TEXT"), ("examples", "TEXT"), ("confidence", "REAL"),
    ("usage_count", "INTEGER"), ("success_rate", "REAL"), ("quality_score", "REAL"),
    ("metadata", "TEXT"), ("created_at", "TEXT"), ("updated_at", "TEXT"), ("extra", "TEXT"))
"""The value columns, in table order, as (name, declared type)."""
CREATE = (f"CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, "
          + ", ".join(f"{n} {t}" for n, t in COLUMNS)
          + ", embedding BLOB NOT NULL, vector_sum BLOB NOT NULL, sum BLOB NOT NULL)")
_TEXTUAL = {n for n, t in COLUMNS if t == "TEXT"}
SELECT = ("SELECT CAST(id AS BLOB), "
          + ", ".join(f"CAST({n} AS BLOB)" if n in _TEXTUAL else n for n, _ in COLUMNS)
          + f", embedding, vector_sum, sum FROM {TABLE}")
SELECT_VECTORS = f"SELECT CAST(id AS BLOB), embedding, vector_sum FROM {TABLE}"
"""Every row's id and embedding, as ``decode_vector`` takes them (what a search ranks)."""
"""Every row's fields as ``from_row`` takes them (text read as bytes: damaged text that is no
longer UTF-8 is reported, not raised by apsw)."""
_U64 = 1 << 64
_I64 = 1 << 63


def id_text(id_: int) -> str:
    """The ``id`` column of the u64 ``id_``; ``ValueError`` naming it otherwise."""
    if isinstance(id_, bool) or not isinstance(id_, int) or not 0 <= id_ < _U64:
        raise ValueError(f"pattern id {id_!r} is not a u64 (an int, 0 <= id < 2**64)")
    return str(id_)


def _fits(column: str, value: Any) -> bool:
    """Whether ``column`` keeps ``value`` exactly (module docstring)."""
    if column in TEXT_COLUMNS:
        if not isinstance(value, str) or "\0" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if column in REAL_COLUMNS:
        return (type(value) is float and math.isfinite(value)
                and not (value == 0.0 and math.copysign(1.0, value) < 0))
    if column in INT_COLUMNS:
        return type(value) is int and -_I64 <= value < _I64
    return column in JSON_COLUMNS


def _cell(value: object) -> bytes:
    """One column's value in the sum: a tag for its SQLite type, then its bytes."""
    if value is None:
        return b"n"
    if isinstance(value, bytes):   # TEXT, as read (CAST AS BLOB) or encoded to write
        return b"t" + value
    if isinstance(value, float):
        return b"r" + struct.pack("<d", value)
    if isinstance(value, int):
        return b"i" + value.to_bytes(8, "little", signed=True)
    raise TypeError(f"a patterns cell of type {type(value).__name__}")


def _sum(ident: bytes, cells: Sequence[object], embedding: bytes) -> bytes:
    return record_sum(ident, embedding, *(_cell(c) for c in cells))


def to_row(record: VectorRecord) -> tuple[Any, ...]:
    """The row of ``record``: (id, the ``COLUMNS`` values, embedding, vector_sum, sum)."""
    ident = id_text(record.id)
    metadata = dict(record.metadata)
    cells: list[object] = []
    for column, _ in COLUMNS:
        if column == "extra":
            cells.append(json.dumps(metadata, sort_keys=True) if metadata else None)
        elif column in metadata and _fits(column, metadata[column]):
            value = metadata.pop(column)
            cells.append(json.dumps(value, sort_keys=True) if column in JSON_COLUMNS else value)
        else:
            cells.append(None)
    embedding = np.asarray(record.vector, dtype="<f8").tobytes()
    coded = [c.encode("utf-8") if isinstance(c, str) else c for c in cells]
    raw_id = ident.encode("ascii")
    return (ident, *cells, embedding, record_sum(raw_id, embedding),
            _sum(raw_id, coded, embedding))


def _json(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8"))


def decode_row(path: str, row: Sequence[object]) -> tuple[int, bytes, dict[str, Any]]:
    """(id, embedding bytes, metadata) of one row as ``SELECT`` reads it, after its sum is
    checked: ``CorruptStore`` naming the record and ``path`` for a row that does not verify
    or decode."""
    raw_id, *cells, embedding, vector_sum, got = row
    ident = raw_id.decode("ascii", "replace") if isinstance(raw_id, bytes) else repr(raw_id)
    what = f"pattern record of id {ident!r}"
    if not isinstance(raw_id, bytes) or not isinstance(embedding, bytes):
        raise CorruptStore(path, f"the {what} holds a {type(embedding).__name__} embedding or "
                                 f"a {type(raw_id).__name__} id")
    try:
        want = _sum(raw_id, cells, embedding)
    except TypeError as exc:   # a damaged type byte: a cell of a type never written
        raise CorruptStore(path, f"the {what} has {exc}") from exc
    if got != want or vector_sum != record_sum(raw_id, embedding):
        raise CorruptStore(path, f"the {what} does not match its checksum (the file changed "
                                 "under SQLite: damage at rest)")
    try:   # verified, so this fails only for a row this schema did not write
        id_ = parse_id(raw_id)
        if len(embedding) % 8:
            raise ValueError(f"the embedding is {len(embedding)} bytes, not float64s")
        metadata: dict[str, Any] = {}
        for (column, _), cell in zip(COLUMNS, cells, strict=True):
            if cell is None:
                continue
            if column == "extra":
                extra = _json(cell)   # type: ignore[arg-type]
                if not isinstance(extra, dict):
                    raise TypeError(f"extra is {type(extra).__name__}, not an object")
                metadata.update(extra)
            elif column in JSON_COLUMNS:
                metadata[column] = _json(cell)   # type: ignore[arg-type]
            elif isinstance(cell, bytes):
                metadata[column] = cell.decode("utf-8")
            else:
                metadata[column] = cell
    except (ValueError, TypeError) as exc:
        raise CorruptStore(path, f"the {what} does not decode: {exc}") from exc
    return id_, embedding, metadata


def decode_vector(path: str, row: Sequence[object]) -> tuple[int, bytes]:
    """(id, embedding bytes) of one row as ``SELECT_VECTORS`` reads it, after its
    ``vector_sum`` is checked: ``CorruptStore`` naming the record and ``path`` otherwise."""
    raw_id, embedding, got = row
    if not isinstance(raw_id, bytes) or not isinstance(embedding, bytes) \
            or got != record_sum(raw_id, embedding):
        ident = raw_id.decode("ascii", "replace") if isinstance(raw_id, bytes) else raw_id
        raise CorruptStore(path, f"the pattern record of id {ident!r} does not match its "
                                 "vector checksum (the file changed under SQLite: damage at "
                                 "rest)")
    try:
        return parse_id(raw_id), embedding
    except ValueError as exc:
        raise CorruptStore(path, f"the pattern record of id {raw_id!r} does not decode: "
                                 f"{exc}") from exc


def parse_id(raw: bytes) -> int:
    """The u64 of an ``id`` column read as bytes; ``ValueError`` unless it is the canonical
    decimal of one."""
    text = raw.decode("ascii")
    if not text.isdigit() or text != id_text(int(text)):
        raise ValueError(f"id {text!r} is not the decimal of a u64")
    return int(text)


def from_row(path: str, row: Sequence[object]) -> VectorRecord:
    """The record of one row as ``SELECT`` reads it (``decode_row``)."""
    id_, embedding, metadata = decode_row(path, row)
    return VectorRecord.of(id_, np.frombuffer(embedding, dtype="<f8"), metadata)
