"""A model of a browser IndexedDB database, persisted through ``env.fs`` so it can be crashed.

A database is a set of named object stores, each an ordered map ``key -> value`` (keys are ints
or strs, ints first as in IndexedDB; values anything ``json.dumps`` accepts except ``None``).
All access goes through transactions, which are atomic: every write of a transaction is on disk
or none is.

On disk it is one append-only log of committed transactions::

    header  b"CGIDB" | format u8 | 2 reserved | generation u64 LE                  (16 bytes)
    frame   length u32 LE | blake2b-64(payload) | payload                         (repeated)
    payload JSON {"seq": n, "ops": [[op, store, key?, value?], ...], "written"?: {store: seq}}

A commit appends one frame and fsyncs it: the fsync is the commit point. On load, frames are
replayed until the first one that is short or fails its checksum (a torn tail, which only a crash
leaves behind); a writer truncates that tail, durably, before it appends. The file is created,
and compacted, by writing a new file beside it (the next generation), fsyncing it and renaming it
over the old one: a crash leaves the old or the new file. A compacted file's first frame is a
snapshot of the live data (it carries on the old file's frame numbers and keeps its ``written``).

Opening replays the whole file, so a writer keeps the file within ``_COMPACT_RATIO`` times its
live data (or ``_COMPACT_MIN`` bytes): as frames are applied it collects the ops a snapshot would
drop (puts of values since overwritten or deleted, deletes, clears) and counts their bytes and
the frames' envelopes, and after each commit it compacts once the rest is a
``1 / _COMPACT_RATIO`` share of the file. A long value's frame so goes at the first commit after
the value dies, not when the log next doubles, and opening costs O(live data), whatever the
history.

Several connections (tabs) may open one database in one process. Like the browser, the model
serialises them: each transaction first reads what other connections appended, and a read-write
transaction whose scope another connection wrote after it began is aborted with
``TransactionConflict`` rather than overwrite what it did not see. ``refresh()`` is a page
reload: in-flight transactions are aborted, committed ones are kept.

Threads: every call that reads or changes a connection's state (its data, its frame count and
offset, the file) holds one lock per database path in this process, so connections may be used
from several threads. Without it two threads appended at the same offset, or one replayed the
other's frame while it was still counting it (frames out of order, repeated or overwritten: real
damage), two compactions shared one ``.tmp`` file, and a read iterated a table a commit was
changing. A transaction stays one thread's; its reads see the data as of each call.

Readers in other processes see appends as they happen: a frame is checked whole (its length and
checksum) before it is replayed, so a tail still being written is read as the torn end of what
is committed (never damage, never truncated by a reader), and a compaction replaces the file by a
rename, so a reader sees the old file or the new one whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Literal

from crashgate.backends import CorruptStore, CrashgateError, Env, StoreClosed

__all__ = [
    "IndexedDB",
    "Key",
    "Transaction",
    "TransactionAborted",
    "TransactionConflict",
    "is_indexeddb_file",
    "key_order",
]

Key = int | str
Mode = Literal["readonly", "readwrite"]

MAGIC = b"CGIDB"
FORMAT = 1
_HEADER = struct.Struct("<5sB2xQ")
_FRAME = struct.Struct("<I8s")
_COMPACT_MIN = 4 * 1024        # never compact a log smaller than this (a few dozen frames)
_COMPACT_RATIO = 2             # compact when the log is this many times its live data
_ENVELOPE = _FRAME.size + 16   # length, checksum, {"seq":,"ops":[]} less a comma (ops have one)
_DELETED = object()
_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


class TransactionAborted(CrashgateError):
    """The transaction was aborted (a refresh, an explicit abort, a conflict or a closed
    connection): none of its writes happened."""


class TransactionConflict(TransactionAborted):
    """Another connection wrote to this transaction's scope after it began."""


def key_order(key: Key) -> tuple[int, int | str]:
    """IndexedDB's key order for the key types the model allows: numbers before strings."""
    return (0, key) if isinstance(key, int) else (1, key)


def is_indexeddb_file(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts like a database of this model."""
    return head.startswith(MAGIC)


def _lock_for(path: str) -> threading.RLock:
    """The lock every connection of this process to the database at ``path`` holds while it
    reads or changes its state (the module docstring, "Threads"); one per path, kept for the
    process's life (a few hundred bytes per database ever opened)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.RLock())


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=8).digest()


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), _digest(payload)) + payload


def _encode(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def _clone(value: Any) -> Any:
    """A copy of a stored value (a reader must not change the database through it). Stored
    values are what ``put`` made of JSON (dicts, lists and immutable scalars), so copying the
    containers is a whole copy: a long string is shared, not encoded and decoded again."""
    kind = type(value)
    if kind is dict:
        out = dict(value)   # one copy; only nested containers need copies of their own
        for k, v in out.items():
            if type(v) is dict or type(v) is list:
                out[k] = _clone(v)
        return out
    if kind is list:
        return [_clone(v) for v in value]
    return value


class Transaction:
    """A transaction over ``scope`` (object store names). Reads see the committed state as of
    its start plus its own writes; ``commit()`` writes all of it, ``abort()`` none of it."""

    def __init__(self, db: IndexedDB, scope: frozenset[str], mode: Mode, began: int) -> None:
        self.db = db
        self.scope = scope
        self.mode = mode
        self.began = began
        self.state: Literal["active", "committed", "aborted"] = "active"
        self._why = ""
        self._ops: list[list[Any]] = []
        self._overlay: dict[str, dict[Key, Any]] = {}
        self._cleared: set[str] = set()

    def _check(self, store: str, write: bool = False) -> None:
        if self.state != "active":
            raise TransactionAborted(
                f"transaction on {self.db.path} is {self.state}{self._why}; start a new one")
        if store not in self.scope:
            raise ValueError(f"object store {store!r} is not in this transaction's scope "
                             f"{sorted(self.scope)}")
        if write and self.mode != "readwrite":
            raise PermissionError(f"a readonly transaction cannot write to {store!r}; "
                                  "open it with mode='readwrite'")

    @staticmethod
    def _check_key(key: Key) -> None:
        if isinstance(key, bool) or not isinstance(key, int | str):
            raise TypeError(f"key {key!r} is a {type(key).__name__}; keys are int or str")

    def get(self, store: str, key: Key) -> Any:
        """The value under ``key`` (a copy), or ``None`` when there is none."""
        return self.get_many(store, [key])[0]

    def get_many(self, store: str, keys: Iterable[Key]) -> list[Any]:
        """The values under ``keys`` (copies), ``None`` where there is none: ``get`` for many
        keys at once (IndexedDB's ``getAll`` over a list of keys), copied in one pass."""
        with self.db._lock:   # another thread's commit may be changing the table
            self._check(store)
            over = self._overlay.get(store, {})
            cleared = store in self._cleared
            table = self.db._data[store]
            values = []
            for key in keys:
                self._check_key(key)
                default = _DELETED if cleared else table.get(key, _DELETED)
                value = over.get(key, default)
                values.append(None if value is _DELETED else value)
            return [_clone(v) for v in values]

    def items(self, store: str) -> list[tuple[Key, Any]]:
        """Every (key, value) of ``store`` in key order (values are copies)."""
        with self.db._lock:
            self._check(store)
            merged = {} if store in self._cleared else dict(self.db._data[store])
            merged.update(self._overlay.get(store, {}))
            keys = sorted((k for k, v in merged.items() if v is not _DELETED), key=key_order)
            return [(k, _clone(merged[k])) for k in keys]

    def put(self, store: str, key: Key, value: Any) -> None:
        self.put_many(store, [(key, value)])

    def put_many(self, store: str, items: Iterable[tuple[Key, Any]]) -> None:
        """``put`` of each ``(key, value)``, in order (the browser's loop of put requests in one
        transaction), with the values checked and copied through JSON in one pass. A value
        that is ``None`` or not JSON-able is an error naming its key, and then none is put."""
        self._check(store, write=True)
        pairs = list(items)
        for key, value in pairs:
            self._check_key(key)
            if value is None:
                raise ValueError(f"value for key {key!r} is None; to remove a key use delete()")
        try:
            copies = json.loads(_encode([v for _, v in pairs]))
        except (TypeError, ValueError):
            for key, value in pairs:   # find the one to name
                try:
                    _encode(value)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"value for key {key!r} is not JSON-able: {exc}") from exc
            raise
        over = self._overlay.setdefault(store, {})
        for (key, _), copy in zip(pairs, copies, strict=True):
            over[key] = copy
            self._ops.append(["put", store, key, copy])

    def delete(self, store: str, key: Key) -> None:
        self._check(store, write=True)
        self._check_key(key)
        self._overlay.setdefault(store, {})[key] = _DELETED
        self._ops.append(["del", store, key])

    def clear(self, store: str) -> None:
        self._check(store, write=True)
        self._overlay[store] = {}
        self._cleared.add(store)
        self._ops.append(["clear", store])

    def commit(self) -> None:
        """Write everything, atomically (conflict -> ``TransactionConflict``, nothing written)."""
        with self.db._lock:   # the conflict check, the append and the apply as one
            self._check(next(iter(self.scope)))
            try:
                self.db._finish(self, self._ops if self.mode == "readwrite" else None)
            except BaseException:
                self._end("aborted", "its commit failed")
                raise
            self._end("committed")

    def abort(self) -> None:
        if self.state == "active":
            self._end("aborted", "it was aborted")

    def _end(self, state: Literal["committed", "aborted"], why: str = "") -> None:
        with self.db._lock:
            self.state = state
            self._why = f" ({why})" if why else ""
            self.db._inflight.discard(self)

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.state == "active":
            if exc_type is None:
                self.commit()
            else:
                self.abort()


class IndexedDB:
    """One connection to the database at ``path`` (a browser tab's ``IDBDatabase``).

    ``stores`` are the object stores to create when missing (IndexedDB's upgrade step).
    ``readonly`` connections never write, never create the file, never truncate a torn tail.
    """

    def __init__(self, path: str, env: Env, *, stores: Iterable[str] = (),
                 readonly: bool = False) -> None:
        self.path = path
        self.env = env
        self.readonly = readonly
        self.incarnation = 0
        """Bumped by ``refresh()``: whatever a page load held (its lease) dies with it."""
        self._closed = False
        self._inflight: set[Transaction] = set()
        self._lock = _lock_for(path)
        with self._lock:   # two threads opening a new database must not both create it
            self._reset()
            if not env.fs.exists(path):
                if readonly:
                    raise FileNotFoundError(f"no IndexedDB database at {path}; a read-only "
                                            "connection does not create one")
                self._write_new_file(0, None)
            self._catch_up()
            missing = [s for s in dict.fromkeys(stores) if s not in self._data]
            if missing:
                if readonly:
                    raise CorruptStore(path, f"object stores {missing} are missing")
                self._append([["create", s] for s in missing], set(), None)

    @property
    def closed(self) -> bool:
        return self._closed

    def object_store_names(self) -> list[str]:
        with self._lock:
            return sorted(self._data)

    def transaction(self, scope: str | Iterable[str], mode: Mode = "readonly") -> Transaction:
        """A transaction over the object stores in ``scope``. Use it as a context manager
        (commit on a clean exit, abort on an exception) or call ``commit()`` / ``abort()``."""
        self._check_open()
        if mode not in ("readonly", "readwrite"):
            raise ValueError(f"mode {mode!r} is not 'readonly' or 'readwrite'")
        if mode == "readwrite" and self.readonly:
            raise PermissionError(f"{self.path} is open read-only; open it without readonly=True")
        with self._lock:
            self._catch_up()
            names = frozenset([scope] if isinstance(scope, str) else scope)
            unknown = sorted(names - set(self._data))
            if unknown or not names:
                raise ValueError(f"object stores {unknown} do not exist in {self.path}; known: "
                                 f"{self.object_store_names()} (create them at open with "
                                 "stores=)")
            txn = Transaction(self, names, mode, self.seq)
            self._inflight.add(txn)
            return txn

    def get(self, store: str, key: Key) -> Any:
        """One value (``None`` when absent), in a readonly transaction of its own."""
        with self.transaction(store) as t:
            return t.get(store, key)

    def items(self, store: str) -> list[tuple[Key, Any]]:
        with self.transaction(store) as t:
            return t.items(store)

    def refresh(self) -> None:
        """A page reload: abort every in-flight transaction, let what the page held die with it
        (``incarnation`` changes, so its lease is gone) and reload the committed state."""
        with self._lock:
            self._check_open()
            for txn in list(self._inflight):
                txn._end("aborted", "the page was refreshed")
            self.incarnation += 1
            self._reset()
            self._catch_up()

    def compact(self) -> None:
        """Rewrite the log as one frame holding the live data, in a new generation."""
        self._check_open()
        if self.readonly:
            raise PermissionError(f"{self.path} is open read-only; it cannot be compacted")
        with self._lock:   # one .tmp file per database: one compaction at a time
            self._catch_up()
            ops: list[list[Any]] = []
            for store in sorted(self._data):
                ops.append(["create", store])
                ops.extend(["put", store, k, v] for k, v in self._data[store].items())
            payload = _encode({"seq": self.seq + 1, "ops": ops, "written": self._written})
            self._write_new_file(self.generation + 1, payload)
            self.generation += 1
            self.seq += 1
            self._offset = _HEADER.size + _FRAME.size + len(payload)
            self._torn = False
            self._dead = 0
            self._dying.clear()

    def _count_dead(self) -> None:
        """Add the ops that died since the last count to ``_dead``, measured in one
        ``json.dumps`` (each op's bytes and its comma: the list's length less one): each dead
        op is encoded once, and only by a writer (a reader collects none)."""
        if self._dying:
            self._dead += len(_encode(self._dying)) - 1
            self._dying.clear()

    def _maybe_compact(self) -> None:
        """Compact once the file is ``_COMPACT_RATIO`` times its live data: the file less its
        dead bytes."""
        self._count_dead()
        if self._offset > max(_COMPACT_MIN, _COMPACT_RATIO * (self._offset - self._dead)):
            self.compact()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                for txn in list(self._inflight):
                    txn._end("aborted", "the connection was closed")
                self._closed = True

    # -- the log ----------------------------------------------------------------------------

    def _reset(self) -> None:
        self._data: dict[str, dict[Key, Any]] = {}
        self._written: dict[str, int] = {}    # store -> seq of the last frame that wrote it
        self.generation = 0
        self.seq = 0
        self._offset = _HEADER.size           # end of the last valid frame
        self._torn = False                    # bytes past _offset that are no valid frame
        self._dead = 0                        # bytes of the file a snapshot would drop
        self._dying: list[Any] = []           # ops a snapshot would drop, not yet in _dead
        # whether the file's directory entry may not be durable yet (see ``_append``)
        self._entry_unsynced = not self.readonly

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(self.path)

    def _write_new_file(self, generation: int, payload: bytes | None) -> None:
        tmp = f"{self.path}.tmp"
        f = self.env.fs.open(tmp, "w")
        try:
            body = _frame(payload) if payload is not None else b""
            f.write(0, _HEADER.pack(MAGIC, FORMAT, generation) + body)
            f.sync()
        finally:
            f.close()
        self.env.fs.rename(tmp, self.path)
        self._entry_unsynced = True   # until the next line returns
        self.env.fs.sync_dir(os.path.dirname(self.path) or ".")
        self._entry_unsynced = False

    def _catch_up(self) -> None:
        """Apply the frames that others (or an earlier run) committed since we last read."""
        f = self.env.fs.open(self.path, "r")
        try:
            head = f.read(0, _HEADER.size)
            if len(head) < _HEADER.size or not is_indexeddb_file(head):
                raise CorruptStore(self.path, "not an IndexedDB model file (bad header)")
            _, fmt, generation = _HEADER.unpack(head)
            if fmt > FORMAT:
                raise CorruptStore(self.path, f"format {fmt} is newer than this model's {FORMAT}")
            if generation != self.generation:   # compacted by another connection: start over
                self._reset()   # (and its rename may not be durable yet: _entry_unsynced)
                self.generation = generation
            size = f.size()
            blob = f.read(self._offset, size - self._offset) if size > self._offset else b""
        finally:
            f.close()
        pos = 0
        while len(blob) - pos >= _FRAME.size:
            length, digest = _FRAME.unpack_from(blob, pos)
            payload = blob[pos + _FRAME.size: pos + _FRAME.size + length]
            if len(payload) < length or _digest(payload) != digest:
                break
            self._replay(payload, first=self._offset + pos == _HEADER.size)
            pos += _FRAME.size + length
        self._offset += pos
        self._torn = pos < len(blob)
        self._count_dead()   # a writer that only follows others holds no dead values

    def _replay(self, payload: bytes, first: bool) -> None:
        """Apply one frame; frames are numbered on from the file's first (a compacted file's
        first frame carries on the old file's numbering)."""
        try:
            doc = json.loads(payload)
            seq, ops = int(doc["seq"]), doc["ops"]
            if not first and seq != self.seq + 1:
                raise ValueError(f"frame {seq} follows frame {self.seq}")
            for op in ops:
                self._apply(op, seq)
            if not first:   # a snapshot's envelope stays in the next snapshot
                self._dead += _ENVELOPE + len(str(seq))
            self._written.update({k: int(v) for k, v in doc.get("written", {}).items()})
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError,
                RecursionError) as exc:
            raise CorruptStore(self.path, f"a checksummed frame is invalid: "
                                          f"{type(exc).__name__}: {exc}") from exc
        self.seq = seq

    def _apply(self, op: list[Any], seq: int) -> None:
        kind, store = op[0], op[1]
        if kind == "create":
            self._data.setdefault(store, {})
            return
        table = self._data[store]
        if kind == "put":
            old = table.get(op[2], _DELETED)
            if old is not _DELETED and not self.readonly:   # the put that wrote it is dead
                self._dying.append(("put", store, op[2], old))
            table[op[2]] = op[3]
        elif kind == "del":
            old = table.pop(op[2], _DELETED)
            if not self.readonly:   # only a writer compacts: a reader keeps no dead values
                self._dying.append(op)
                if old is not _DELETED:
                    self._dying.append(("put", store, op[2], old))
        elif kind == "clear":
            if not self.readonly:
                self._dying.append(op)
                self._dying.extend(("put", store, k, v) for k, v in table.items())
            table.clear()
        else:
            raise ValueError(f"unknown operation {kind!r}")
        self._written[store] = seq

    def _append(self, ops: list[list[Any]], scope: set[str], since: int | None) -> None:
        """Commit ``ops`` as one frame. ``since``: the seq a transaction began at; a frame that
        another connection wrote to a store of ``scope`` after it is a conflict."""
        self._catch_up()
        if since is not None:
            hit = sorted(s for s in scope if self._written.get(s, 0) > since)
            if hit:
                raise TransactionConflict(
                    f"another connection wrote object stores {hit} of {self.path} after this "
                    "transaction began; nothing was written: retry the transaction")
        if not ops:
            return
        payload = _encode({"seq": self.seq + 1, "ops": ops})
        if self._entry_unsynced:
            # The file this frame goes into may be a new generation whose rename never reached
            # the disk: its directory sync failed (an I/O error after a compaction), another
            # connection compacted, or an earlier open created the file and raised before its
            # sync. An fsync of the file does not make its name durable; without this, every
            # commit from here on would be acknowledged and then lost with the old file.
            self.env.fs.sync_dir(os.path.dirname(self.path) or ".")
            self._entry_unsynced = False
        f = self.env.fs.open(self.path, "r+")
        try:
            if self._torn:   # a crash left a partial frame: drop it, durably, before appending
                f.truncate(self._offset)
                f.sync()
                self._torn = False
            f.write(self._offset, _frame(payload))
            f.sync()
        finally:
            f.close()
        self.seq += 1
        for op in ops:
            self._apply(op, self.seq)
        self._dead += _ENVELOPE + len(str(self.seq))
        self._offset += _FRAME.size + len(payload)
        self._maybe_compact()

    def _finish(self, txn: Transaction, ops: list[list[Any]] | None) -> None:
        """A transaction ends: commit ``ops`` (``None`` for a readonly one, nothing to write)."""
        self._check_open()
        if ops is not None:
            self._append(ops, set(txn.scope), txn.began)
