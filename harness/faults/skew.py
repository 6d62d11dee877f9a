"""Version skew: a file written by one wire or schema version, opened by another.

How a file of another version is made, from outside the store:

- ``option``: the backend takes the version as an option (RVF's ``wire_version=N``: the code is
  version N, writes files at N and reads files up to N), so writer and reader are the same
  backend opened with two values;
- ``sqlite-user-version``: a SQLite file's schema version is ``PRAGMA user_version``, four
  big-endian bytes at offset 60 of the database header; the fault rewrites them after a clean
  close, the way a newer (or older) release of the code would have left them.

The fault also damages files, so a checker can tell "too new" from "damaged" apart.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from crashgate.backends import (
    BackendSpec,
    BadOption,
    Capability,
    Declaration,
    Env,
    FileSystem,
    read_all,
)
from crashgate.harness.faults.base import Fault, requires
from crashgate.harness.ops import Op

__all__ = ["DAMAGES", "SQLITE_MAGIC", "VersionSkew", "Versioning", "damage", "main_file",
           "probe_versioning", "read_user_version", "write_user_version"]

SQLITE_MAGIC = b"SQLite format 3\x00"
USER_VERSION_AT = 60
Damage = Literal["garbage-header", "zeroed-header", "flipped-bytes", "truncated"]
DAMAGES: tuple[Damage, ...] = ("garbage-header", "zeroed-header", "flipped-bytes", "truncated")


@dataclass(frozen=True)
class Versioning:
    """How files of another version are made for one backend: ``kind`` is ``option``,
    ``sqlite-user-version`` or ``none``; ``current`` is the version the backend is at."""

    kind: str
    current: int | None
    option: str = ""
    why: str = ""


def main_file(fs: FileSystem, path: str) -> str | None:
    """The file holding a store at ``path``: ``path`` itself, or the largest file under it."""
    if fs.exists(path):
        try:
            fs.listdir(path)
        except NotADirectoryError:
            return path
        best: tuple[int, str] | None = None
        for name in fs.listdir(path):
            sub = f"{path.rstrip('/')}/{name}"
            try:
                f = fs.open(sub, "r")
            except (IsADirectoryError, FileNotFoundError):
                continue
            size = f.size()
            f.close()
            if best is None or size > best[0]:
                best = (size, sub)
        return best[1] if best else None
    return None


def read_user_version(fs: FileSystem, path: str) -> int | None:
    """``PRAGMA user_version`` of the SQLite file at ``path`` (None if it is not SQLite)."""
    head = read_all(fs, path)[:USER_VERSION_AT + 4]
    if not head.startswith(SQLITE_MAGIC) or len(head) < USER_VERSION_AT + 4:
        return None
    return int(struct.unpack_from(">i", head, USER_VERSION_AT)[0])


def write_user_version(fs: FileSystem, path: str, version: int) -> None:
    f = fs.open(path, "r+")
    try:
        f.write(USER_VERSION_AT, struct.pack(">i", version))
        f.sync()
    finally:
        f.close()


def damage(fs: FileSystem, path: str, how: Damage, seed: int) -> str:
    """Damage the file at ``path`` in place; returns what was done, for a person."""
    rng = random.Random(seed)
    data = read_all(fs, path)
    if not data:
        raise ValueError(f"cannot damage {path}: it is empty")
    f = fs.open(path, "r+")
    try:
        if how == "garbage-header":
            n = min(64, len(data))
            f.write(0, rng.randbytes(n))
            what = f"first {n} bytes overwritten with random bytes"
        elif how == "zeroed-header":
            n = min(64, len(data))
            f.write(0, bytes(n))
            what = f"first {n} bytes zeroed"
        elif how == "flipped-bytes":
            at = sorted(rng.sample(range(len(data) // 4, len(data)), min(4, len(data) // 2 or 1)))
            for i in at:
                f.write(i, bytes([data[i] ^ 0xFF]))
            what = f"bytes at offsets {at} inverted"
        elif how == "truncated":
            f.truncate(len(data) // 2)
            what = f"truncated from {len(data)} to {len(data) // 2} bytes"
        else:
            raise ValueError(f"damage how={how!r} is not one of {list(DAMAGES)}")
        f.sync()
    finally:
        f.close()
    return f"{path}: {what}"


def probe_versioning(spec: BackendSpec, decl: Declaration, env_factory: Any,
                     path: str) -> Versioning:
    """Find how to make files of other versions for ``spec``. ``env_factory()`` gives a fresh
    scratch env (and ``path`` a store path in it) for trying options."""
    for option, cap in (("wire_version", Capability.WIRE_VERSION),
                        ("schema_version", Capability.SCHEMA_VERSION)):
        if not decl.has(cap):
            continue
        current = decl.wire_version if cap is Capability.WIRE_VERSION else None
        try:
            store = spec.open(path, env_factory(), **{option: str(current or 1)})
        except BadOption:
            continue
        store.close()
        return Versioning("option", current if current is not None else 1, option)
    if decl.has(Capability.SCHEMA_VERSION):
        env = env_factory()
        store = spec.open(path, env)
        store.close()
        target = main_file(env.fs, path)
        version = read_user_version(env.fs, target) if target else None
        if target is not None and version is not None:
            return Versioning("sqlite-user-version", version)
        return Versioning("none", None, why="it declares a schema version but takes no "
                          "schema_version option and its file is not SQLite")
    return Versioning("none", None, why="it declares a wire version but takes no "
                      "wire_version option")


class VersionSkew(Fault):
    """Write with ``writer_version``, open with ``reader_version``, as ``versioning`` says."""

    levers = frozenset({"fs"})

    def __init__(self, writer_version: int, reader_version: int, versioning: Versioning) -> None:
        if versioning.kind == "none":
            raise ValueError(f"VersionSkew cannot make files of other versions: "
                             f"{versioning.why}")
        self.writer_version = writer_version
        self.reader_version = reader_version
        self.versioning = versioning
        self._events: list[str] = []

    @property
    def name(self) -> str:
        return f"VersionSkew(v{self.writer_version} file, v{self.reader_version} reader)"

    def needs(self, decl: Declaration) -> str | None:
        return requires(decl, Capability.WIRE_VERSION, Capability.SCHEMA_VERSION,
                        what="file or schema version")

    def _options(self, version: int) -> dict[str, str]:
        v = self.versioning
        return {v.option: str(version)} if v.kind == "option" else {}

    def write(self, spec: BackendSpec, env: Env, path: str, ops: Sequence[Op]) -> None:
        """Create the store at ``path`` as version ``writer_version`` and run ``ops`` on it."""
        store = spec.open(path, env, **self._options(self.writer_version))
        try:
            for op in ops:
                op.run(store)
        finally:
            store.close()
        if self.versioning.kind == "sqlite-user-version":
            target = main_file(env.fs, path)
            assert target is not None
            write_user_version(env.fs, target, self.writer_version)
        self._events.append(f"wrote {path} as v{self.writer_version} ({len(ops)} ops)")

    def open_reader(self, spec: BackendSpec, env: Env, path: str, **extra: str) -> Any:
        """Open ``path`` as a version ``reader_version`` reader (a writer unless ``extra`` says
        ``readonly=true``)."""
        self._events.append(f"opened {path} as a v{self.reader_version} reader"
                            + (f" with {extra}" if extra else ""))
        opts = self._options(self.reader_version)
        if self.versioning.kind == "sqlite-user-version" and self.reader_version != \
                self.versioning.current:
            raise ValueError("a SQLite schema reader is the backend's own code: its version is "
                             f"{self.versioning.current}, not {self.reader_version}")
        return spec.open(path, env, **opts, **extra)

    @property
    def fired(self) -> tuple[str, ...]:
        return tuple(self._events)
