"""The JSON side of ARCH-001's phase adapters, and its legacy mission files.

``JsonState(path, env)`` is one adapter directory's JSON state, two directories of the
reference JSON store (``json_store.py``: one document per key, each put tmp + fsync + rename
+ directory fsync, a sum in every document that finds damage)::

    <path>/state/      key-value state (the session handoff, agent memory ...)
    <path>/missions/   one document per mission id, value = canonical_mission(doc)

So a mission put is atomic and survives power loss, and a crash leaves every document whole:
the old one or the new one. There is no batch: one file per key cannot commit several at once.

ARCH-001's **legacy files** are the raw documents old sessions wrote, e.g.
``.vibe/state/active_mission.json``: plain JSON, no envelope, no sum. ``legacy_files`` lists
them; ``read_legacy`` reads one; the importer (``transfer.py``) renames each, once imported, to
``<stem>_migrated_<UTC timestamp>.json`` (``backup_name``), which ``legacy_files`` skips.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Collection, Mapping
from typing import Any

from crashgate.backends import (
    Capability,
    CorruptStore,
    DamagePromise,
    Declaration,
    Durability,
    Env,
    FileSystem,
    canonical_mission,
    check_mission,
    check_mission_id,
    read_all,
)
from crashgate.reference.json_store import (
    SCHEMA_VERSION,
    SUFFIX,
    TEMP_PREFIX,
    JsonStore,
    file_name_for,
    open_json,
)

__all__ = ["BACKUP_PATTERN", "JsonState", "backup_name", "is_backup", "legacy_files",
           "read_legacy", "utc_stamp"]

STATE_DIR = "state"
MISSIONS_DIR = "missions"
BACKUP_PATTERN = re.compile(r"^(?P<stem>.*)_migrated_(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?"
                            r"\.json$")
"""ARCH-001's backup name, ``<stem>_migrated_<UTC timestamp>[-n].json``."""
# what a damaged legacy or mission document raises while it is decoded and checked
_DECODE_ERRORS = (ValueError, TypeError, RecursionError)


class JsonState:
    """The JSON state files of one phase adapter: key-value ``put/get/delete/scan`` (bytes
    values) and ARCH-001's mission operations (``MissionStore``)."""

    def __init__(self, path: str, env: Env) -> None:
        self.path = path
        self.fs = env.fs
        self.clock = env.clock
        env.fs.makedirs(path)
        # ``path`` is an entry in its parent: durable only once the parent is synced (each
        # JSON store below syncs ``path`` for its own directory, not ``path``'s parent)
        env.fs.sync_dir(os.path.dirname(os.path.normpath(path)) or ".")
        self._state: JsonStore = open_json(os.path.join(path, STATE_DIR), env)
        self._missions: JsonStore = open_json(os.path.join(path, MISSIONS_DIR), env)
        self.declaration = Declaration(
            durability=Durability.POWER_LOSS,
            capabilities=frozenset({Capability.KV, Capability.MISSIONS}),
            file_format=f"crashgate-json-state/{SCHEMA_VERSION}",
            damage=DamagePromise.DETECTED,
            notes={
                "damage": "the JSON store's sum in every document; a mission document that "
                          "does not decode or is not a mission is CorruptStore naming it",
                "durability": "each put, delete and mission put returns after fsync of the "
                              "document and of its directory",
                "batch": "not declared: one file per key cannot commit several keys at once",
            },
        )

    # -- key-value -------------------------------------------------------------------------

    def put(self, key: str, value: bytes) -> None:
        self._state.put(key, value)

    def get(self, key: str) -> bytes | None:
        return self._state.get(key)

    def delete(self, key: str) -> None:
        self._state.delete(key)

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        return self._state.scan(prefix)

    # -- missions --------------------------------------------------------------------------

    def mission_put(self, doc: Mapping[str, Any]) -> None:
        doc = check_mission(doc)
        self._missions.put(doc["mission_id"], canonical_mission(doc))

    def mission_get(self, mission_id: str) -> dict[str, Any] | None:
        check_mission_id(mission_id)
        raw = self._missions.get(mission_id)
        return None if raw is None else self._decode(mission_id, raw)

    def mission_delete(self, mission_id: str) -> None:
        check_mission_id(mission_id)
        self._missions.delete(mission_id)

    def mission_ids(self) -> list[str]:
        # scan reads every document: a damaged one is CorruptStore here too, never skipped
        return [key for key, _ in self._missions.scan("")]

    def _decode(self, mission_id: str, raw: bytes) -> dict[str, Any]:
        where = os.path.join(self._missions.path, file_name_for(mission_id))
        try:
            doc = check_mission(json.loads(raw.decode("utf-8")))
        except _DECODE_ERRORS as exc:
            # the sum verified, so the file holds what was put: not a mission document
            raise CorruptStore(where, f"mission {mission_id!r} is not a mission document: "
                                      f"{type(exc).__name__}: {exc}") from exc
        if doc["mission_id"] != mission_id:
            raise CorruptStore(where, f"the document of mission {mission_id!r} says "
                                      f"mission_id {doc['mission_id']!r}")
        return doc

    def close(self) -> None:
        self._state.close()
        self._missions.close()


# -- legacy files ------------------------------------------------------------------------------


def read_legacy(fs: FileSystem, file: str) -> dict[str, Any]:
    """The mission document in the legacy file ``file`` (plain UTF-8 JSON, as old sessions
    wrote ``active_mission.json``). ``CorruptStore`` naming the file and what is wrong when it
    is not one: not UTF-8, not JSON, not an object, no valid ``mission_id``, a value JSON
    cannot hold (NaN, a lone surrogate). ``FileNotFoundError`` when there is no such file."""
    raw = read_all(fs, file)
    try:
        return check_mission(json.loads(raw.decode("utf-8")))
    except _DECODE_ERRORS as exc:
        raise CorruptStore(file, f"the legacy state file is not a mission document: "
                                 f"{type(exc).__name__}: {exc}") from exc


def is_backup(name: str) -> bool:
    """Whether the file name ``name`` is a legacy file's backup (``BACKUP_PATTERN``)."""
    return BACKUP_PATTERN.match(name) is not None


def legacy_files(fs: FileSystem, directory: str) -> list[str]:
    """The legacy state files in ``directory``, as paths, sorted: its top-level ``*.json``
    files, not backups (``is_backup``) and not a JSON store's write in progress (``.tmp-``).
    Subdirectories are not entered (a ``JsonState`` beside the files is not legacy).
    ``FileNotFoundError`` when ``directory`` does not exist."""
    out = []
    for name in fs.listdir(directory):
        if not name.endswith(SUFFIX) or name.startswith(TEMP_PREFIX) or is_backup(name):
            continue
        path = os.path.join(directory, name)
        try:
            fs.listdir(path)
        except (NotADirectoryError, FileNotFoundError):
            out.append(path)   # a file (or gone since): the caller reads it
        else:
            continue           # a directory named *.json
    return out


def utc_stamp(seconds: float) -> str:
    """``seconds`` since the epoch as ARCH-001's backup timestamp, UTC: ``20261130T181100Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


def backup_name(file: str, stamp: str, taken: Collection[str]) -> str:
    """The backup path of the legacy ``file``: ``<stem>_migrated_<stamp>.json`` beside it, or
    with ``-2``, ``-3`` ... before ``.json`` when a name is in ``taken`` (the directory's
    names)."""
    directory, name = os.path.split(file)
    stem = name[:-len(SUFFIX)] if name.endswith(SUFFIX) else name
    candidate, n = f"{stem}_migrated_{stamp}{SUFFIX}", 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}_migrated_{stamp}-{n}{SUFFIX}"
    return os.path.join(directory, candidate) if directory else candidate

