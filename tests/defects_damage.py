"""Test backends that break the damage-at-rest promise (issue 8): the damage row must fail them.

- ``open_unchecked``: a key-value store in one file of length-prefixed records and no checksum.
  A record whose framing no longer parses is reported as ``CorruptStore``, but a flipped bit
  inside a value is read back as data: an altered value.
- ``open_untyped``: a key-value store in one JSON document carrying a CRC-32 of its contents,
  so a damaged value is never returned; but it parses with ``json.loads`` and reads fields
  without wrapping what they raise, so a damaged file surfaces as ``JSONDecodeError``,
  ``KeyError``, ``UnicodeDecodeError`` ...: an untyped exception instead of ``CorruptStore``.

Both rewrite their file in place and fsync it after every change (durability is not what they
get wrong), and both declare the default promise, ``damage=detected``.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

from crashgate.backends import (
    Capability,
    CorruptStore,
    Declaration,
    Durability,
    Env,
    check_options,
    read_all,
)

__all__ = ["FileKV", "open_unchecked", "open_untyped"]


class FileKV:
    """A dict kept in one file at ``path``, rewritten whole after every change; subclasses say
    how it is encoded (``encode``) and decoded (``decode``)."""

    note = ""

    def __init__(self, path: str, env: Env) -> None:
        self.path = path
        self._fs = env.fs
        self.declaration = Declaration(
            durability=Durability.POWER_LOSS, capabilities=frozenset({Capability.KV}),
            notes={"test": f"tests/defects_damage.py: {self.note}"})
        self._kv: dict[str, bytes] = {}
        if self._fs.exists(path):
            self._kv = self.decode(read_all(self._fs, path))

    def encode(self, kv: dict[str, bytes]) -> bytes:
        raise NotImplementedError

    def decode(self, raw: bytes) -> dict[str, bytes]:
        raise NotImplementedError

    def _save(self) -> None:
        f = self._fs.open(self.path, "w")
        try:
            f.write(0, self.encode(self._kv))
            f.sync()
        finally:
            f.close()

    def put(self, key: str, value: bytes) -> None:
        self._kv[key] = bytes(value)
        self._save()

    def get(self, key: str) -> bytes | None:
        return self._kv.get(key)

    def delete(self, key: str) -> None:
        if self._kv.pop(key, None) is not None:
            self._save()

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self._kv.items() if k.startswith(prefix))

    def close(self) -> None:
        self._save()


class UncheckedKV(FileKV):
    """Records ``u16 key length, key, u32 value length, value``: framing checked, values not."""

    note = "no checksum: a flipped bit in a value is read back as data"

    def encode(self, kv: dict[str, bytes]) -> bytes:
        out = bytearray()
        for k, v in sorted(kv.items()):
            kb = k.encode()
            out += struct.pack("<H", len(kb)) + kb + struct.pack("<I", len(v)) + v
        return bytes(out)

    def decode(self, raw: bytes) -> dict[str, bytes]:
        kv: dict[str, bytes] = {}
        at = 0
        while at < len(raw):
            try:
                (klen,) = struct.unpack_from("<H", raw, at)
                key = raw[at + 2:at + 2 + klen].decode()
                (vlen,) = struct.unpack_from("<I", raw, at + 2 + klen)
            except (struct.error, UnicodeDecodeError) as exc:
                raise CorruptStore(self.path, f"record at byte {at} does not parse "
                                   f"({exc})") from exc
            start = at + 6 + klen
            if start + vlen > len(raw):
                raise CorruptStore(self.path, f"record {key!r} at byte {at} runs past the "
                                   "end of the file")
            kv[key] = raw[start:start + vlen]   # the defect: nothing checks these bytes
            at = start + vlen
        return kv


class UntypedKV(FileKV):
    """``{"crc": CRC-32 of the items' JSON, "items": {key: hex value}}``."""

    note = "decode errors are not wrapped: a damaged file raises JSONDecodeError and the like"

    def encode(self, kv: dict[str, bytes]) -> bytes:
        items = {k: v.hex() for k, v in sorted(kv.items())}
        body = json.dumps(items, sort_keys=True)
        return json.dumps({"crc": zlib.crc32(body.encode()), "items": items}).encode()

    def decode(self, raw: bytes) -> dict[str, bytes]:
        doc: Any = json.loads(raw)          # the defect: JSONDecodeError / UnicodeDecodeError
        items = doc["items"]                # ... KeyError, TypeError
        if zlib.crc32(json.dumps(items, sort_keys=True).encode()) != doc["crc"]:
            raise CorruptStore(self.path, "checksum mismatch")
        return {k: bytes.fromhex(v) for k, v in items.items()}


def open_unchecked(path: str, env: Env, **options: str) -> UncheckedKV:
    check_options("defects_damage:open_unchecked", options, {})
    return UncheckedKV(path, env)


def open_untyped(path: str, env: Env, **options: str) -> UntypedKV:
    check_options("defects_damage:open_untyped", options, {})
    return UntypedKV(path, env)
