"""Test backends whose defects the certifier must name as what they are (issue 7, point 5).

- ``open_lazy_tombstones``: a log-structured key-value store with atomic batches that fsyncs
  its puts and batches but appends single deletes to a tombstone log it never syncs ("deletes
  are cheap"). After power loss a deleted key comes back while later writes stay: a lost
  delete, which a classifier keyed on batches used to call "batch partly applied".
- ``open_flaky_flush``: ARCH-001's JSON store whose fsyncs go through a flusher that, now and
  then and not repeatably, has not run yet when the put is acknowledged. Its losses do not
  come back on every replay: conclusive evidence all the same, reported with its rate.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
from collections.abc import Iterable, Mapping
from typing import Any

from crashgate.backends import (
    Capability,
    Declaration,
    Durability,
    Env,
    File,
    FileSystem,
    check_options,
    read_all,
)
from crashgate.reference.json_store import open_json

__all__ = ["TombstoneLogKV", "open_flaky_flush", "open_lazy_tombstones"]


class TombstoneLogKV:
    """``path`` is a directory holding ``data.log`` (puts and batches, one JSON line each,
    fsynced) and ``tombstones.log`` (single deletes, one JSON line each: the defect is that
    it is never fsynced). Every line carries a sequence number; open replays both logs merged
    by it."""

    def __init__(self, path: str, env: Env) -> None:
        self.path = path
        self._fs = env.fs
        self.declaration = Declaration(
            durability=Durability.POWER_LOSS,
            capabilities=frozenset({Capability.KV, Capability.BATCH}),
            notes={"test": "tests/defects_verdicts.py: single deletes are never fsynced"},
        )
        if not self._fs.exists(path):
            self._fs.makedirs(path)
            parent = path.rsplit("/", 1)[0] or "/"
            self._fs.sync_dir(parent)
        self._kv: dict[str, bytes] = {}
        self._seq = 0
        self._files: dict[str, File] = {}
        self._replay()

    def _log(self, name: str) -> File:
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = self._fs.open(f"{self.path}/{name}", "c")
            self._fs.sync_dir(self.path)
        return f

    def _replay(self) -> None:
        lines: list[dict[str, Any]] = []
        for name in ("data.log", "tombstones.log"):
            try:
                raw = read_all(self._fs, f"{self.path}/{name}")
            except FileNotFoundError:
                continue
            for line in raw.split(b"\n"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue   # a torn last line: never acknowledged
        for rec in sorted(lines, key=lambda r: r["seq"]):
            for k in rec.get("deletes", []):
                self._kv.pop(k, None)
            for k, v in rec.get("puts", {}).items():
                self._kv[k] = base64.b64decode(v)
            self._seq = max(self._seq, rec["seq"])

    def _append(self, name: str, puts: Mapping[str, bytes], deletes: Iterable[str],
                sync: bool) -> None:
        self._seq += 1
        rec = {"seq": self._seq, "deletes": list(deletes),
               "puts": {k: base64.b64encode(v).decode() for k, v in puts.items()}}
        f = self._log(name)
        f.write(f.size(), json.dumps(rec).encode() + b"\n")
        if sync:
            f.sync()
        for k in rec["deletes"]:
            self._kv.pop(k, None)
        self._kv.update(puts)

    def put(self, key: str, value: bytes) -> None:
        self._append("data.log", {key: bytes(value)}, (), sync=True)

    def write_batch(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> None:
        self._append("data.log", {k: bytes(v) for k, v in puts.items()}, deletes, sync=True)

    def delete(self, key: str) -> None:
        self._append("tombstones.log", {}, (key,), sync=False)   # the defect

    def get(self, key: str) -> bytes | None:
        return self._kv.get(key)

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self._kv.items() if k.startswith(prefix))

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def open_lazy_tombstones(path: str, env: Env, **options: str) -> TombstoneLogKV:
    check_options("lazy-tombstones", options, {})
    return TombstoneLogKV(path, env)


@dataclasses.dataclass
class _FlakyFile:
    inner: File
    rng: random.Random

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def sync(self) -> None:
        if self.rng.random() < 0.5:   # the flusher had not run yet: acknowledged unsynced
            return
        self.inner.sync()


@dataclasses.dataclass
class _FlakyFS:
    inner: FileSystem
    rng: random.Random

    def open(self, path: str, mode: Any = "r") -> File:
        return _FlakyFile(self.inner.open(path, mode), self.rng)  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def open_flaky_flush(path: str, env: Env, **options: str) -> Any:
    # not seeded, on purpose: whether a sync is skipped does not repeat from run to run
    rng = random.Random()
    return open_json(path, dataclasses.replace(env, fs=_FlakyFS(env.fs, rng)), **options)
