"""ARCH-001's flattening of a mission document into the rows of its version-2 tables, and back.

``flatten(doc)`` splits a mission document (``check_mission``) into:

- the ``missions`` row: ``mission_uuid`` (the ``mission_id``), the columns ARCH-001 extracts
  (phase, status, timestamps, ``budget.*``, ``metadata.owner`` ...; ``MISSION_FIELDS``) and
  ``metadata``, the JSON of **the rest**: the document with everything that went into a
  column or a row taken out (unknown fields, and whatever has an unexpected shape, stay there);
- rows of the child tables (``LIST_TABLES``: one row per element of an array, e.g.
  ``project_memory.narrative`` -> ``session_narrative``; ``trajectory``: the object as one row;
  ``artifacts``: ``artifacts.<type>.<name>`` -> one row with ``artifact_type``/``artifact_name``).

**Lossless for any document ``check_mission`` accepts**, by these rules (``unflatten`` undoes
them exactly, as ``canonical_mission`` compares):

- A value goes into a typed column only when the column holds it unchanged: ``text`` a str
  without NUL; ``num`` an int in SQLite's 64-bit range (not a bool) or a float, in a column
  without affinity (so ``1`` stays an INTEGER and ``1.0`` a REAL, ``-0.0`` keeps its sign);
  ``bool`` a bool (0/1); ``json`` any value, as JSON text. Else it stays where it was. NULL in
  a column means "nothing was taken from here" (a JSON ``null`` is a value: it stays, or is the
  JSON text ``null``).
- An element of a flattened array is a row with its position (``seq``) and ``extra``: for an
  object, the JSON of what its typed columns did not take (always a JSON object); for a str of
  a table with a text column (``domain_concepts.concept``), NULL, the str being in that column;
  for anything else, the element's own JSON (never an object), its typed columns NULL.
- What is moved out leaves its container behind in the rest: a flattened array stays as
  ``[]``, the trajectory as ``{}``, each artifact type as its object without the moved entries.
  So an absent array, an empty one and one holding a string (kept whole) stay apart.

Shapes: ``Rows.mission`` is {column: value}; ``Rows.children`` is {table: [{column: value}]}
(without ``mission_id``), each table's rows in ``seq`` order. ``unflatten`` raises
``ValueError`` for rows no ``flatten`` can produce (damage; the caller names the mission).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crashgate.backends import canonical_mission, check_mission

__all__ = ["ARTIFACTS", "CHILD_TABLES", "LIST_TABLES", "MISSION_FIELDS", "TRAJECTORY", "Field",
           "ListTable", "Rows", "dumps", "flatten", "unflatten"]

_I64 = 1 << 63


@dataclass(frozen=True)
class Field:
    """A column that takes ``key`` of an object when it has the column's ``kind``."""

    column: str
    key: str
    kind: str   # "text" | "num" | "bool" | "json"


@dataclass(frozen=True)
class ListTable:
    """A child table of one row per element of the array at ``path`` (or, with ``single``,
    one row for the object at ``path``)."""

    table: str
    path: tuple[str, ...]
    fields: tuple[Field, ...]
    text_column: str | None = None   # a str element goes here whole
    single: bool = False


@dataclass(frozen=True)
class Rows:
    """One mission document as rows (module docstring)."""

    mission: dict[str, Any]
    children: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _f(kind: str, *names: str) -> tuple[Field, ...]:
    return tuple(Field(n, n, kind) for n in names)


# The missions row's columns: (column, path in the document, kind), after ARCH-001's v2 schema
MISSION_FIELDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("phase", ("phase",), "text"), ("status", ("status",), "text"),
    ("created_at", ("created_at",), "text"), ("completed_at", ("completed_at",), "text"),
    ("updated_at", ("updated_at",), "text"),
    ("planning_sub_state", ("planning_sub_state",), "text"),
    ("max_cost_usd", ("budget", "max_cost_usd"), "num"),
    ("current_cost_usd", ("budget", "current_cost_usd"), "num"),
    ("alert_threshold", ("budget", "alert_threshold"), "num"),
    ("cost_breakdown", ("budget", "cost_breakdown"), "json"),
    ("owner", ("metadata", "owner"), "text"),
    ("description", ("metadata", "description"), "text"),
    ("api_version", ("apiVersion",), "text"),
)
V1_MISSION_FIELDS = MISSION_FIELDS[:4]   # ARCH-001's phase-1 example: phase, status, timestamps

LIST_TABLES: tuple[ListTable, ...] = (
    ListTable("tool_calls", ("tool_calls",),   # the audit trail: one row per call
              _f("text", "tool_name") + _f("json", "args", "result")
              + _f("text", "timestamp") + _f("num", "duration_ms") + _f("bool", "success")
              + _f("text", "error_message")),
    ListTable("decisions", ("decisions",),
              _f("text", "decision_type", "rationale", "timestamp", "agent_name")
              + _f("json", "context")),
    ListTable("playbook_runs", ("playbook_runs",),
              _f("text", "playbook_name", "phase", "started_at", "completed_at")
              + _f("bool", "success") + _f("json", "metrics") + _f("text", "error_message")),
    ListTable("session_narrative", ("project_memory", "narrative"),
              (Field("session_num", "session", "num"),)
              + _f("text", "summary", "date", "phase")),
    ListTable("domain_concepts", ("project_memory", "domain", "concepts"),
              _f("text", "concept", "timestamp"), text_column="concept"),
    ListTable("domain_concerns", ("project_memory", "domain", "concerns"),
              _f("text", "concern", "timestamp"), text_column="concern"),
    ListTable("quality_gates", ("quality_gates",),
              _f("text", "gate_name", "status") + _f("json", "details")
              + _f("text", "timestamp")),
)
TRAJECTORY = ListTable("trajectory", ("project_memory", "trajectory"),
                       _f("text", "current_phase", "current_focus")
                       + _f("json", "completed_phases", "blockers") + _f("text", "updated_at"),
                       single=True)
# artifacts.<artifact_type>.<artifact_name> -> one row; these fields of the entry in columns
ARTIFACTS = ListTable("artifacts", ("artifacts",),
                      _f("text", "ref", "path", "url", "branch") + _f("json", "metadata")
                      + _f("text", "created_at"))
CHILD_TABLES: tuple[ListTable, ...] = (*LIST_TABLES, TRAJECTORY, ARTIFACTS)


def dumps(value: object) -> str:
    """JSON text of a value kept as JSON (ints stay ints, floats floats; no NaN)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _column_value(kind: str, value: object) -> object | None:
    """What the column holds for ``value``, or None when the column cannot hold it as is."""
    if kind == "json":
        return dumps(value)
    if kind == "text":
        return value if isinstance(value, str) and "\x00" not in value else None
    if kind == "bool":
        return int(value) if isinstance(value, bool) else None
    if type(value) is int and -_I64 <= value < _I64:
        return value
    return value if type(value) is float else None


def _doc_value(kind: str, value: object, column: str) -> object:
    """The document's value of a non-NULL column; ``ValueError`` if no flatten wrote it."""
    ok = {"json": isinstance(value, str), "text": isinstance(value, str),
          "bool": value in (0, 1) and type(value) is int,
          "num": type(value) in (int, float)}[kind]
    if not ok:
        raise ValueError(f"column {column} holds {type(value).__name__} {value!r}")
    if kind == "json":
        return json.loads(value)   # type: ignore[arg-type]
    return bool(value) if kind == "bool" else value


def _take(obj: dict[str, Any], fields: tuple[Field, ...], row: dict[str, Any]) -> None:
    """Move the fields of ``obj`` its columns can hold into ``row``."""
    for f in fields:
        value = _column_value(f.kind, obj[f.key]) if f.key in obj else None
        row[f.column] = value
        if value is not None:
            del obj[f.key]


def _put_back(obj: dict[str, Any], fields: tuple[Field, ...], row: Mapping[str, Any]) -> None:
    for f in fields:
        if row[f.column] is not None:
            if f.key in obj:
                raise ValueError(f"key {f.key!r} is both in column {f.column} and in the JSON")
            obj[f.key] = _doc_value(f.kind, row[f.column], f.column)


def _parent(rest: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    """The object holding ``path[-1]``, if every step of ``path[:-1]`` is an object."""
    node: Any = rest
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _element_row(spec: ListTable, seq: int, element: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"seq": seq}
    if isinstance(element, dict):
        element = dict(element)
        _take(element, spec.fields, row)
        row["extra"] = dumps(element)
        return row
    row |= {f.column: None for f in spec.fields}
    if spec.text_column and isinstance(element, str) and "\x00" not in element:
        row[spec.text_column], row["extra"] = element, None
    else:
        row["extra"] = dumps(element)
    return row


def _element(spec: ListTable, row: Mapping[str, Any]) -> Any:
    extra = row["extra"]
    if extra is None:
        if spec.text_column is None or not isinstance(row[spec.text_column], str):
            raise ValueError(f"a {spec.table} row has neither extra nor text")
        return row[spec.text_column]
    if not isinstance(extra, str):
        raise ValueError(f"a {spec.table} row's extra holds {type(extra).__name__}")
    value = json.loads(extra)
    if isinstance(value, dict):
        _put_back(value, spec.fields, row)
    elif any(row[f.column] is not None for f in spec.fields):
        raise ValueError(f"a {spec.table} row holding a whole value has columns set")
    return value


def flatten(doc: Mapping[str, Any]) -> Rows:
    """The rows of ``doc`` (``check_mission``-ed here; the caller's object is not changed)."""
    rest = json.loads(canonical_mission(check_mission(doc)))   # a copy, made in C
    mission: dict[str, Any] = {"mission_uuid": rest.pop("mission_id")}
    children: dict[str, list[dict[str, Any]]] = {}
    for spec in LIST_TABLES:
        parent = _parent(rest, spec.path)
        items = parent.get(spec.path[-1]) if parent is not None else None
        if parent is not None and isinstance(items, list):
            children[spec.table] = [_element_row(spec, i, e) for i, e in enumerate(items)]
            parent[spec.path[-1]] = []
    parent = _parent(rest, TRAJECTORY.path)
    if parent is not None and isinstance(parent.get(TRAJECTORY.path[-1]), dict):
        children[TRAJECTORY.table] = [_element_row(TRAJECTORY, 0, parent[TRAJECTORY.path[-1]])]
        parent[TRAJECTORY.path[-1]] = {}
    rows: list[dict[str, Any]] = []
    kinds = rest.get("artifacts")
    for kind, entries in (kinds.items() if isinstance(kinds, dict) else ()):
        if not isinstance(entries, dict) or "\x00" in kind:
            continue
        for name in [n for n, e in entries.items() if isinstance(e, dict) and "\x00" not in n]:
            row = _element_row(ARTIFACTS, len(rows), entries.pop(name))
            rows.append({"artifact_type": kind, "artifact_name": name} | row)
    if rows:
        children[ARTIFACTS.table] = rows
    for column, path, kind in MISSION_FIELDS:
        parent = _parent(rest, path)
        value = (_column_value(kind, parent[path[-1]])
                 if parent is not None and path[-1] in parent else None)
        mission[column] = value
        if value is not None:
            del parent[path[-1]]   # type: ignore[union-attr]
    mission["metadata"] = dumps(rest)
    return Rows(mission, children)


def unflatten(rows: Rows) -> dict[str, Any]:
    """The document ``rows`` came from; ``ValueError`` for rows no ``flatten`` produces."""
    m = rows.mission
    if not isinstance(m["metadata"], str) or not isinstance(m["mission_uuid"], str):
        raise ValueError("the missions row's metadata or mission_uuid is not text")
    rest = json.loads(m["metadata"])
    if not isinstance(rest, dict) or "mission_id" in rest:
        raise ValueError("the missions row's metadata is not the rest of a document")
    for column, path, kind in MISSION_FIELDS:
        if m[column] is not None:
            parent = _parent(rest, path)
            if parent is None or path[-1] in parent:
                raise ValueError(f"column {column} has no place in the document")
            parent[path[-1]] = _doc_value(kind, m[column], column)
    for spec in LIST_TABLES + (TRAJECTORY,):
        got = rows.children.get(spec.table, [])
        if not got:
            continue
        parent = _parent(rest, spec.path)
        hole = parent.get(spec.path[-1]) if parent is not None else None
        if parent is None or hole != ({} if spec.single else []) or (spec.single and len(got) > 1):
            raise ValueError(f"{spec.table} rows have no place in the document")
        items = [_element(spec, r) for r in sorted(got, key=lambda r: r["seq"])]
        parent[spec.path[-1]] = items[0] if spec.single else items
        if spec.single and not isinstance(items[0], dict):
            raise ValueError("the trajectory row is not an object")
    for r in rows.children.get(ARTIFACTS.table, []):
        kinds = rest.get("artifacts")
        entries = kinds.get(r["artifact_type"]) if isinstance(kinds, dict) else None
        entry = _element(ARTIFACTS, r)
        if not isinstance(entries, dict) or r["artifact_name"] in entries or not isinstance(
                entry, dict):
            raise ValueError("an artifacts row has no place in the document")
        entries[r["artifact_name"]] = entry
    return {"mission_id": m["mission_uuid"], **rest}
