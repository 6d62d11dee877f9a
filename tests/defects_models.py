"""Issue 7, point 6: a defect only the later crash models reach.

``open_zero_check_log``: a key-value log. Each put or delete appends a record (``u32
length``, ``u32 key length``, key, value) to the log and fsyncs it, then replaces a small
statistics file beside it (ops and bytes so far, for monitoring) atomically; it
promises power-loss durability. The defect: it has no checksum and tells a torn tail by zeros
("a sector that did not reach the disk reads as zeros"), which holds for the torn model and not
for garbage: a record whose header reached the disk and one of whose value sectors holds
garbage is read back as a value nobody wrote. Three fsyncs an op make many crash positions; when
the budget was spread over positions first, each got a state or two and the later models
(subset, torn, garbage) none, so this store passed.
"""

from __future__ import annotations

import struct
from typing import Any

from crashgate.backends import (
    Capability,
    Declaration,
    Durability,
    Env,
    File,
    check_options,
    read_all,
)

__all__ = ["ZeroCheckLog", "open_zero_check_log"]

_HEAD = struct.Struct("<II")


def _zero_sector(body: bytes, offset: int, sector: int = 512) -> bool:
    """Whether the part of ``body`` (at file ``offset``) in some disk sector is all zeros:
    what this store takes for a sector that never reached the disk."""
    start = 0
    while start < len(body):
        end = min(len(body), (offset + start) // sector * sector + sector - offset)
        if not any(body[start:end]):
            return True
        start = end
    return False


class ZeroCheckLog:
    def __init__(self, path: str, env: Env) -> None:
        self.path = path
        self._fs = env.fs
        self.declaration = Declaration(
            durability=Durability.POWER_LOSS,
            capabilities=frozenset({Capability.KV}),
            notes={"test": "tests/defects_models.py: torn tails told by zeros, no checksum"},
        )
        self._kv: dict[str, bytes] = {}
        self._end = 0
        self._ops = 0
        if self._fs.exists(path):
            self._replay(read_all(self._fs, path))
        self._file: File = self._fs.open(path, "c")
        if self._end == 0:
            self._fs.sync_dir(path.rsplit("/", 1)[0] or "/")

    def _replay(self, raw: bytes) -> None:
        at = 0
        while at + _HEAD.size <= len(raw):
            size, klen = _HEAD.unpack_from(raw, at)
            body = raw[at + _HEAD.size: at + _HEAD.size + size]
            if size == 0 or klen > size or len(body) < size or _zero_sector(
                    body, at + _HEAD.size):
                break   # the defect: zeros are taken as the only sign of a torn tail
            key = body[:klen].decode("utf-8", "replace")
            value = body[klen:]
            if value == b"\x00DELETE":
                self._kv.pop(key, None)
            else:
                self._kv[key] = value
            at += _HEAD.size + size
        self._end = at

    def _append(self, key: str, value: bytes) -> None:
        k = key.encode()
        record = _HEAD.pack(len(k) + len(value), len(k)) + k + value
        self._file.write(self._end, record)
        self._file.sync()
        self._end += len(record)
        self._ops += 1
        # the statistics file is replaced atomically: temp file, fsync, rename, directory fsync
        stats = self._fs.open(self.path + ".stats.tmp", "w")
        try:
            stats.write(0, f"ops {self._ops} bytes {self._end}\n".encode())
            stats.sync()
        finally:
            stats.close()
        self._fs.rename(self.path + ".stats.tmp", self.path + ".stats")
        self._fs.sync_dir(self.path.rsplit("/", 1)[0] or "/")

    def put(self, key: str, value: bytes) -> None:
        self._append(key, bytes(value))
        self._kv[key] = bytes(value)

    def delete(self, key: str) -> None:
        self._append(key, b"\x00DELETE")
        self._kv.pop(key, None)

    def get(self, key: str) -> bytes | None:
        return self._kv.get(key)

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self._kv.items() if k.startswith(prefix))

    def close(self) -> None:
        self._file.sync()
        self._file.close()


def open_zero_check_log(path: str, env: Env, **options: str) -> Any:
    check_options("zero-check-log", options, {})
    return ZeroCheckLog(path, env)
