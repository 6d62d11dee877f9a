"""ARCH-001's legacy JSON state files: a directory holding one JSON document per key.

Layout of ``path`` (a directory)::

    k<percent-encoded key>.json     one document per key (keys up to ~60 characters)
    h<sha256 of the key>.json       the same, for keys whose encoded name would be too long
    .tmp-<final name>               a write in progress; ignored on read, removed on open

A document is ``{"schema": 2, "key": str, "encoding": "utf-8" | "base64", "value": str,
"sum": str}``: the value is stored as text when it is valid UTF-8 (so a person can read the state
file, as ARCH-001's files are read with ``jq``), else as base64. ``sum`` is the hex BLAKE2b-128 of
the schema number, the key and the value bytes (see ``document_sum``).

**Damage at rest.** JSON has no checksum of its own: a flipped digit inside ``"value"`` is still
a valid document with another value. So every read recomputes ``sum`` from the decoded key and
value and refuses a mismatch; any document that does not parse, lacks a field, holds the wrong
type, or is not valid UTF-8 or base64 is ``CorruptStore`` naming the key and the file, never an
untyped ``JSONDecodeError``/``UnicodeDecodeError``/``KeyError``.

**Schema 1 documents** (written before sums, without the field) still read: a document that
says ``"schema": 1`` and has no ``sum`` is returned unchecked (there is nothing to check it
against) and gains its sum when the key is next written. A document that has a ``sum`` is
checked whatever schema it claims, so damage to the schema digit cannot switch the check off;
a schema 2 document without one is damaged. A schema above 2 is ``VersionTooNew``, unless the
document is a whole schema 2 document whose sum verifies only with the number 2 in it: then the
digit was damaged (a flipped bit turns ``2`` into ``3``), and it is ``CorruptStore``.

Each put is atomic on its own (temp file, write, fsync, rename over, fsync of the directory) and
acknowledged only after the directory fsync, so it survives power loss. There is no batch
atomicity: one file per key cannot commit two keys at once, so the store does not declare it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from typing import Any
from urllib.parse import unquote_to_bytes

from crashgate.backends import (
    Capability,
    CorruptStore,
    DamagePromise,
    Declaration,
    Durability,
    Env,
    Option,
    StoreClosed,
    VersionTooNew,
    check_options,
    read_all,
)

__all__ = ["SCHEMA_VERSION", "JsonStore", "document_sum", "file_name_for", "key_for_file_name",
           "open_json"]

SCHEMA_VERSION = 2
_FIRST_WITH_SUM = 2
# What a damaged document can raise while it is parsed and decoded (JSONDecodeError,
# UnicodeDecodeError and binascii.Error are ValueErrors; RecursionError for deep nesting).
_DECODE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, RecursionError,
                  binascii.Error)
OPTIONS: dict[str, Option] = {}
TEMP_PREFIX = ".tmp-"
SUFFIX = ".json"
# Letters kept as themselves are lowercase only, so that two keys differing in case never map
# to names that a case-insensitive file system (macOS, Windows) would treat as one file.
_SAFE = b"abcdefghijklmnopqrstuvwxyz0123456789-_."
_MAX_ENCODED = 180  # well under the usual 255-byte name limit, leaving room for the temp prefix


def _key_bytes(key: str) -> bytes:
    # surrogatepass: keys are arbitrary str, lone surrogates included (JSON escapes them too)
    return key.encode("utf-8", "surrogatepass")


def file_name_for(key: str) -> str:
    """The document's file name for ``key``: ``k`` + percent-encoding, or ``h`` + SHA-256."""
    raw = _key_bytes(key)
    encoded = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)
    if len(encoded) <= _MAX_ENCODED:
        return f"k{encoded}{SUFFIX}"
    return f"h{hashlib.sha256(raw).hexdigest()}{SUFFIX}"


def key_for_file_name(name: str) -> str | None:
    """The key a ``k...`` name encodes; ``None`` for a hashed ``h...`` name (read the document).

    Raises ``ValueError`` for a name that is not one this store writes.
    """
    if not name.endswith(SUFFIX) or name[:1] not in ("k", "h"):
        raise ValueError(f"{name!r} is not a document name")
    body = name[1 : -len(SUFFIX)]
    if name[0] == "h":
        return None
    key = unquote_to_bytes(body).decode("utf-8", "surrogatepass")
    if file_name_for(key) != name:  # only the canonical spelling is ours
        raise ValueError(f"{name!r} is not the canonical name of key {key!r}")
    return key


def document_sum(key: str, value: bytes, schema: int = SCHEMA_VERSION) -> str:
    """The ``sum`` field: hex BLAKE2b-128 of the schema number, the key (UTF-8, surrogatepass)
    and the value, each prefixed with its length."""
    h = hashlib.blake2b(digest_size=16, person=b"crashgate-json")
    for part in (str(schema).encode("ascii"), _key_bytes(key), value):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def _encode_document(key: str, value: bytes) -> bytes:
    try:
        text, encoding = value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(value).decode("ascii"), "base64"
    doc = {"schema": SCHEMA_VERSION, "key": key, "encoding": encoding, "value": text,
           "sum": document_sum(key, value)}
    return json.dumps(doc, ensure_ascii=True, sort_keys=True).encode("ascii")


def _of(key: object) -> str:
    """`` of key 'k'`` for a message, when the key is known."""
    return f" of key {key!r}" if isinstance(key, str) else ""


class JsonStore:
    """One JSON document per key in the directory ``path``. Keys: any str; values: bytes."""

    def __init__(self, path: str, env: Env) -> None:
        self.path = path
        self._fs = env.fs
        self._closed = False
        self.declaration = Declaration(
            durability=Durability.POWER_LOSS,
            capabilities=frozenset({Capability.KV}),
            file_format=f"crashgate-json-state/{SCHEMA_VERSION}",
            damage=DamagePromise.DETECTED,
            notes={
                "damage": "a BLAKE2b sum of key and value in every document, checked on every "
                          "read; any decode error is CorruptStore naming the key and the file",
                "durability": "each put and delete returns only after fsync of the document and "
                              "of the directory (rename and unlink are directory entries)",
                "batch": "not declared: one file per key cannot commit several keys at once",
                "crash": "a crash mid-put leaves a .tmp- file, ignored on read and removed on "
                         "the next open",
            },
        )
        self._open_directory()

    # -- opening ---------------------------------------------------------------------------

    def _open_directory(self) -> None:
        fs = self._fs
        fs.makedirs(self.path)
        # The directory is an entry in its parent: durable only once the parent is synced.
        # Every open does it, not just the one that created it: that one may have crashed
        # before its sync, leaving a directory that exists in the page cache only.
        fs.sync_dir(os.path.dirname(os.path.normpath(self.path)) or ".")
        leftovers = [n for n in fs.listdir(self.path) if n.startswith(TEMP_PREFIX)]
        for name in leftovers:
            fs.remove(self._file(name))
        # Also makes durable whatever this directory shows now: after a process crash between
        # an unlink and its directory fsync, a later delete of that key sees no file and
        # would otherwise acknowledge without ever syncing the unlink.
        fs.sync_dir(self.path)

    # -- helpers ---------------------------------------------------------------------------

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(self.path)

    def _read_document(self, name: str, key: str | None) -> dict[str, Any] | None:
        """The parsed document in ``name``, ``None`` if there is no such file."""
        where = self._file(name)
        try:
            raw = read_all(self._fs, where)
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError(f"top level is {type(doc).__name__}, not an object")
            schema = doc["schema"]
            if not isinstance(schema, int) or isinstance(schema, bool):
                raise ValueError(f"schema is {schema!r}, not an integer")
        except _DECODE_ERRORS as exc:
            raise CorruptStore(where, f"the document{_of(key)} does not parse: "
                                      f"{type(exc).__name__}: {exc}") from exc
        if schema > SCHEMA_VERSION and self._written_as_current(name, doc):
            raise CorruptStore(where, f"the document{_of(key)} says schema {schema}, but it is a "
                                      f"schema {SCHEMA_VERSION} document whose schema number was "
                                      "damaged (its checksum verifies only with "
                                      f"{SCHEMA_VERSION})")
        if schema > SCHEMA_VERSION:
            raise VersionTooNew(where, found=schema, supported=SCHEMA_VERSION,
                                what="JSON state schema version",
                                upgrade="pip install -U crashgate")
        return doc

    def _written_as_current(self, name: str, doc: dict[str, Any]) -> bool:
        """Whether ``doc`` decodes as this schema's document once its schema number is ours."""
        try:
            self._decode_value(name, {**doc, "schema": SCHEMA_VERSION}, None)
        except CorruptStore:
            return False
        return "sum" in doc

    def _decode_value(self, name: str, doc: dict[str, Any], key: str | None) -> tuple[str, bytes]:
        where = self._file(name)
        try:
            stored_key, encoding, text = doc["key"], doc["encoding"], doc["value"]
            if not isinstance(stored_key, str) or not isinstance(text, str):
                raise ValueError("key and value must be strings")
            if encoding == "utf-8":
                value = text.encode("utf-8")
            elif encoding == "base64":
                value = base64.b64decode(text, validate=True)
            else:
                raise ValueError(f"unknown encoding {encoding!r}")
            want = doc.get("sum")
            if want is None and doc["schema"] >= _FIRST_WITH_SUM:
                raise KeyError("sum")
            if want is not None and (not isinstance(want, str)
                                     or want != document_sum(stored_key, value, doc["schema"])):
                raise ValueError("its value does not match its checksum (the file changed "
                                 "after it was written: damage at rest)")
            named = file_name_for(stored_key)
        except _DECODE_ERRORS as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else f"{exc}"
            raise CorruptStore(where, f"the document{_of(key or doc.get('key'))} is damaged: "
                                      f"{what}") from exc
        if named != name or (key is not None and stored_key != key):
            raise CorruptStore(where, f"the document holds key {stored_key!r}, which does not "
                                      f"belong in this file")
        return stored_key, value

    # -- key-value -------------------------------------------------------------------------

    def put(self, key: str, value: bytes) -> None:
        self._check_open()
        if not isinstance(key, str):
            raise TypeError(f"key must be str, got {type(key).__name__}: {key!r}")
        name = file_name_for(key)
        data = _encode_document(key, bytes(value))
        tmp = self._file(TEMP_PREFIX + name)
        f = self._fs.open(tmp, "w")
        try:
            f.write(0, data)
            f.sync()
        finally:
            f.close()
        self._fs.rename(tmp, self._file(name))
        self._fs.sync_dir(self.path)

    def get(self, key: str) -> bytes | None:
        self._check_open()
        name = file_name_for(key)
        doc = self._read_document(name, key)
        if doc is None:
            return None
        return self._decode_value(name, doc, key)[1]

    def delete(self, key: str) -> None:
        self._check_open()
        try:
            self._fs.remove(self._file(file_name_for(key)))
        except FileNotFoundError:
            return
        self._fs.sync_dir(self.path)

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        self._check_open()
        out: list[tuple[str, bytes]] = []
        for name in self._fs.listdir(self.path):
            if name.startswith(TEMP_PREFIX) or not name.endswith(SUFFIX):
                continue  # a write in progress, or a file that is not ours
            try:
                key = key_for_file_name(name)
            except ValueError:
                continue  # e.g. a person's notes.json beside the state files
            if key is not None and not key.startswith(prefix):
                continue
            doc = self._read_document(name, key)
            if doc is None:
                continue  # removed since listdir
            stored_key, value = self._decode_value(name, doc, key)
            if stored_key.startswith(prefix):
                out.append((stored_key, value))
        out.sort()
        return out

    def close(self) -> None:
        self._closed = True


def open_json(path: str, env: Env, **options: str) -> JsonStore:
    """Open (or create) the JSON state directory at ``path``. Takes no options."""
    check_options("json", options, OPTIONS)
    return JsonStore(path, env)
