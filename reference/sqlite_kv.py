"""The key-value operations of a ``SqliteFile``: one table of (key, value, sum) rows, shared by
the SQLite store (table ``kv``) and ARCH-001's mission database (table ``agent_memory``), so
that both apply the same key rules and check the same per-record sum.

Table (``KV_TABLE``; the host's schema creates it, other columns may follow)::

    <KV_TABLE>(key TEXT PRIMARY KEY, value BLOB NOT NULL,
               sum BLOB NOT NULL)       -- record_sum(key as UTF-8, value)

Every read checks the sum before anything is decoded; keys are read as bytes
(``CAST(key AS BLOB)``) so that text that is no longer UTF-8 is reported, not raised by apsw.

``SqliteKV`` is a mixin: the host (a ``SqliteFile``) provides what the host block names.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, ClassVar

from crashgate.reference.sqlite_file import blob_field, record_sum

if TYPE_CHECKING:
    import apsw

__all__ = ["SqliteKV", "check_key", "key_text", "kv_row"]


def check_key(key: str) -> str:
    """``key`` if it is a str that encodes to UTF-8 (SQLite TEXT holds valid UTF-8 only);
    ``TypeError``/``ValueError`` naming it otherwise."""
    if not isinstance(key, str):
        raise TypeError(f"key must be str, got {type(key).__name__}: {key!r}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"key {key!r} holds a lone surrogate; SQLite TEXT holds valid UTF-8 only. "
            "Use a key that encodes to UTF-8."
        ) from None
    return key


def kv_row(key: str, value: bytes) -> tuple[str, bytes, bytes]:
    """(key, value, sum) of one kv record as it is written."""
    key, value = check_key(key), bytes(value)
    return key, value, record_sum(key.encode("utf-8"), value)


def key_text(raw: object) -> str:
    """A key read as bytes, for a message (damaged keys may no longer be UTF-8)."""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else repr(raw)


class SqliteKV:
    """``put``/``get``/``delete``/``scan``/``write_batch`` on the table ``KV_TABLE``."""

    KV_TABLE: ClassVar[str] = "kv"

    # -- the host's (a SqliteFile's) --
    path: str
    _db: apsw.Connection
    _write_lock: threading.RLock
    if TYPE_CHECKING:
        def _check_open(self) -> None: ...
        def _check_writable(self, what: str) -> None: ...
        def _errors(self) -> AbstractContextManager[None]: ...
        def _transaction(self, what: str = ..., *,
                         durable: bool = ...) -> AbstractContextManager[None]: ...
        def _verified(self, what: str, fields: tuple[bytes, ...], got: object) -> None: ...

    def put(self, key: str, value: bytes) -> None:
        with self._write_lock:   # not inside another thread's open transaction
            self._check_open()
            self._check_writable("put")
            with self._errors():
                self._db.execute(f"INSERT OR REPLACE INTO {self.KV_TABLE}(key, value, sum) "
                                 "VALUES (?, ?, ?)", kv_row(key, value))

    def get(self, key: str) -> bytes | None:
        self._check_open()
        with self._errors():
            rows = self._db.execute(f"SELECT value, sum FROM {self.KV_TABLE} WHERE key = ?",
                                    (check_key(key),)).fetchall()
        if not rows:
            return None
        what = f"kv record of key {key!r}"
        value = blob_field(self.path, rows[0][0], what)
        self._verified(what, (key.encode("utf-8"), value), rows[0][1])
        return value

    def delete(self, key: str) -> None:
        with self._write_lock:
            self._check_open()
            self._check_writable("delete")
            with self._errors():
                self._db.execute(f"DELETE FROM {self.KV_TABLE} WHERE key = ?",
                                 (check_key(key),))

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        self._check_open()
        out: list[tuple[str, bytes]] = []
        # Keys sort as UTF-8 bytes (BINARY collation), which is code-point order, as in Python:
        # the keys with the prefix are one run starting at the prefix.
        with self._errors():
            for raw, value, got in self._db.execute(
                    f"SELECT CAST(key AS BLOB), value, sum FROM {self.KV_TABLE} "
                    "WHERE key >= ? ORDER BY key", (check_key(prefix),)):
                what = f"kv record of key {key_text(raw)!r}"
                fields = (blob_field(self.path, raw, what), blob_field(self.path, value, what))
                self._verified(what, fields, got)
                key = fields[0].decode("utf-8")   # verified: it is the UTF-8 that was written
                if not key.startswith(prefix):
                    break
                out.append((key, fields[1]))
        return out

    def write_batch(self, puts: Mapping[str, bytes], deletes: Iterable[str] = (), *,
                    durable: bool = False) -> None:
        """Deletes then puts, in one transaction; ``durable``: fsynced whatever
        ``synchronous`` says (``SqliteFile._transaction``)."""
        dels = [(check_key(k),) for k in deletes]
        rows = [kv_row(k, v) for k, v in puts.items()]
        with self._transaction("write_batch", durable=durable):
            self._db.executemany(f"DELETE FROM {self.KV_TABLE} WHERE key = ?", dels)
            self._db.executemany(f"INSERT OR REPLACE INTO {self.KV_TABLE}(key, value, sum) "
                                 "VALUES (?, ?, ?)", rows)
