"""ARCH-001's mission state as an optional capability of a store (``Capability.MISSIONS``): whole
mission documents put, read, deleted and listed by mission id, and the input rules every store
applies to them, so that the JSON state files, the SQLite mission schema and a user's own
store refuse and normalise alike.

A mission document is what ARCH-001's ``.vibe/state/active_mission.json`` holds: a JSON object
with a non-empty string ``mission_id`` and whatever else the mission carries (phase, status,
budget, metadata.owner, project_memory with its narrative, artifacts, quality gates, the tool
call audit trail ...). A store keeps it whole: what ``mission_get`` returns equals, as JSON,
what ``mission_put`` was given (``canonical_mission``): the same keys, the same strings, an int
still an int and a float still a float, an empty array still there.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["MAX_MISSION_ID", "Discrepant", "MissionSchema", "MissionStore", "canonical_mission",
           "check_mission", "check_mission_id", "mission_sum"]

MAX_MISSION_ID = 200
"""The longest mission id in characters (a mission id names a file on the JSON side)."""


@runtime_checkable
class MissionStore(Protocol):
    """ARCH-001's mission operations. A call that returns is acknowledged, durable as the
    store declares, like a put; ``mission_put`` of one document is atomic (after any crash
    the store holds the old document or the new one, never a mix of the two)."""

    def mission_put(self, doc: Mapping[str, Any]) -> None:
        """Insert or replace the mission ``doc["mission_id"]`` (``check_mission``)."""
        ...

    def mission_get(self, mission_id: str) -> dict[str, Any] | None:
        """The mission's document as it was put, or None when there is none."""
        ...

    def mission_delete(self, mission_id: str) -> None:
        """Delete the mission; deleting a missing one is not an error."""
        ...

    def mission_ids(self) -> list[str]:
        """Every stored mission's id, sorted."""
        ...


@runtime_checkable
class MissionSchema(Protocol):
    """Optional, for ARCH-001's schema-versioning rows: an adapter whose SQLite side is one
    file versioned with ``PRAGMA user_version``. ``schema_file`` is that file's path (in the
    store's env); ``schema_version`` the version this code writes; ``write_schema_fixture``
    writes a NEW file at ``path`` at an older ``version`` (one of ``old_schema_versions``)
    holding ``docs``, as that version's code would have, for the harness to put in
    ``schema_file``'s place and check the migration that the next open runs."""

    schema_file: str
    schema_version: int
    old_schema_versions: tuple[int, ...]

    def write_schema_fixture(self, path: str, version: int,
                             docs: list[dict[str, Any]]) -> None: ...


@runtime_checkable
class Discrepant(Protocol):
    """Optional, for ARCH-001's phase 2 ("Log discrepancies", "Alert on JSON fallbacks"): the
    reads served from the fallback (``fallbacks``, by operation), the reads the two sides
    answered differently (``mismatches``), and each of them with its key
    (``discrepancies``: objects with ``kind`` ``fallback`` or ``mismatch``, ``what``, the read,
    ``key``, what it read, and ``detail``)."""

    fallbacks: Mapping[str, int]
    mismatches: Mapping[str, int]
    discrepancies: list[Any]


def check_mission_id(mission_id: object) -> str:
    """``mission_id`` when it is a non-empty str of at most ``MAX_MISSION_ID`` characters
    without NUL or a lone surrogate; ``ValueError``/``TypeError`` naming it otherwise."""
    if not isinstance(mission_id, str):
        raise TypeError(f"mission_id must be a str, got {type(mission_id).__name__} "
                        f"{mission_id!r}")
    if not mission_id or len(mission_id) > MAX_MISSION_ID or "\x00" in mission_id:
        raise ValueError(f"mission_id {mission_id!r} must be 1-{MAX_MISSION_ID} characters "
                         "without NUL")
    try:
        mission_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"mission_id {mission_id!r} is not valid Unicode (a lone "
                         "surrogate)") from None
    return mission_id


def _check_value(value: object, where: str) -> None:
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{where} is not valid Unicode (a lone surrogate)") from None
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}, which JSON cannot hold")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has the key {key!r}: JSON object keys are str")
            _check_value(key, f"{where} key {key!r}")
            _check_value(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__} ({value!r}): a mission document "
                    "holds JSON values only (dict, list, str, int, float, bool, None)")


def _is_plain_json(doc: dict[str, Any]) -> bool:
    """Whether ``doc`` is plain JSON, checked by the C encoder and decoder (a mission of
    thousands of values is checked in a fraction of the walk's time): it encodes (finite
    floats, str keys or keys JSON would turn into str, no other types), its text is valid
    UTF-8 (no lone surrogate), and decodes to an equal object (a tuple, or an int key made a
    str, would not be)."""
    try:
        text = json.dumps(doc, ensure_ascii=False, allow_nan=False, check_circular=False)
        return bool(json.loads(text.encode("utf-8")) == doc)
    except (TypeError, ValueError, RecursionError):
        return False


def check_mission(doc: object) -> dict[str, Any]:
    """``doc`` as a plain dict after checking it is a mission document: a JSON object (dicts
    with str keys, lists, str, int, finite float, bool, None; a tuple is not JSON's and is
    refused) whose ``mission_id`` passes ``check_mission_id``. ``TypeError``/``ValueError``
    naming the field otherwise."""
    if not isinstance(doc, Mapping):
        raise TypeError(f"a mission document is a JSON object, got {type(doc).__name__}")
    doc = dict(doc)
    if "mission_id" not in doc:
        raise ValueError("the mission document has no 'mission_id'; ARCH-001 identifies "
                         "every mission by it")
    check_mission_id(doc["mission_id"])
    if not _is_plain_json(doc):
        _check_value(doc, "the mission document")   # names what is wrong
        raise ValueError("the mission document does not survive JSON unchanged")
    return doc


def canonical_mission(doc: Mapping[str, Any]) -> bytes:
    """The document's canonical JSON (sorted keys, no spaces, UTF-8): equal for two documents
    exactly when they are equal as JSON (``1`` and ``1.0`` differ; ``True`` and ``1`` differ)."""
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


def mission_sum(doc: Mapping[str, Any]) -> bytes:
    """16-byte BLAKE2b of ``canonical_mission(doc)``: what a store keeps beside a document it
    splits into rows, to find damage in any of them when it puts the document back together."""
    return hashlib.blake2b(canonical_mission(doc), digest_size=16).digest()
