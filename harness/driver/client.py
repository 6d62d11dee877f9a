"""``ProcStore``: a store whose every op is a request to one child process speaking the process
driver protocol (``backends/PROTOCOL.md``), and ``open_proc``, the factory of ``proc:`` names.

The store lives in the child, so crashgate's simulated disk never sees its files: the
declaration names the child as the store's ``server`` (``Declaration.server``), which makes the
rows that need the simulated disk n/a with that reason, exactly as for a Postgres store, and a
process crash is ``faults.server.ServerKill``'s SIGKILL of the child (``ServerBacked``). The
harness then reopens with the factory, which starts a new child.

Where the files live: on the real file system a store's path is the child's path. On a
simulated disk (every row's fresh disk) a marker file at the path, written through ``env.fs``,
names a fresh real directory (``crashgate-proc-*`` in the temporary directory, removed when this
process exits): every open of that disk's path, a reopen after a kill or a second writer,
reaches the same files, and a fresh disk gets a fresh store.

Reading back through crashgate: a driver whose package has no op that returns a stored vector
may name a ``reader`` in its declaration, a backend that reads the store's file layout (e.g.
``rvf-ruvector``). Then ``fetch`` and ``fetch_block`` are answered by opening that backend on
the child's real path, read-only, for each call (``_ReadBack``); every other op stays the
child's. The driver is never asked to ``fetch``: one source of read-back per store, fixed at
open and named in the declaration's notes, rather than a mix that depends on what it answers.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import posixpath
import shlex
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from crashgate.backends import (
    BadOption,
    Capability,
    CorruptStore,
    Declaration,
    Env,
    Hit,
    StoreClosed,
    VectorBlock,
    VectorRecord,
    os_env,
    read_all,
    write_whole,
)
from crashgate.backends import proc_protocol as wire
from crashgate.backends.errors import BadBackend
from crashgate.backends.proc_protocol import PROTOCOL_VERSION, DriverError
from crashgate.backends.registry import BackendSpec, resolve
from crashgate.harness.driver.child import Child

__all__ = ["PREFIX", "ProcStore", "open_command", "open_proc", "real_path"]

PREFIX = "proc:"
_MARKER_KIND = "proc-store"
_OWN_DIRS: list[str] = []


class ProcStore:
    """The methods every proc store has; ``_class_for`` adds the ones its capabilities allow
    (the harness probes protocols with ``isinstance``: a vector-only store has no ``put``)."""

    declaration: Declaration

    def __init__(self, child: Child, path: str, label: str, declaration: Declaration, *,
                 real: str = "", reader: BackendSpec | None = None) -> None:
        self._child = child
        self.path = path
        self._real = real or path          # the path the child opened (see real_path)
        self._reader = reader              # the read-back backend, when the driver names one
        self.label = label
        self.declaration = declaration
        self._closed = False
        self._finalizer = weakref.finalize(self, child.kill)   # a store dropped unclosed

    def _call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        if self._closed:
            raise StoreClosed(self.path)
        ok, value = self._child.request(op, args or {})
        if not ok:
            raise wire.error_from_wire(value, path=self.path)
        return value

    def close(self) -> None:
        """Send ``close`` and wait for the child to exit; a child already dead (killed) has
        nothing left to close."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        answer = self._child.close(self._child.timeout)
        if answer is not None and not answer[0]:
            raise wire.error_from_wire(answer[1], path=self.path)

    def server_pids(self) -> tuple[int, ...]:
        return (self._child.pid,)

    def session_pid(self) -> int:
        return self._child.pid

    def __repr__(self) -> str:
        return f"ProcStore({self.label!r}, pid={self._child.pid}, path={self.path!r})"


class _KV(ProcStore):
    def put(self, key: str, value: bytes) -> None:
        self._call("put", {"key": key, "value": wire.bytes_to_wire(value)})

    def get(self, key: str) -> bytes | None:
        value = self._call("get", {"key": key})
        return None if value is None else wire.bytes_from_wire(value)

    def delete(self, key: str) -> None:
        self._call("delete", {"key": key})

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        pairs = self._call("scan", {"prefix": prefix})
        if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in pairs):
            raise DriverError(f"{self.label}: protocol violation: scan answered {pairs!r:.200}, "
                              "expected [[key, base64 value], ...]")
        return [(k, wire.bytes_from_wire(v)) for k, v in pairs]


class _Batch(ProcStore):
    def write_batch(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> None:
        self._call("write_batch", {"puts": {k: wire.bytes_to_wire(v) for k, v in puts.items()},
                                   "deletes": list(deletes)})


class _Vector(ProcStore):
    def upsert(self, records: Sequence[VectorRecord]) -> None:
        self._call("upsert", {"records": [wire.record_to_wire(r) for r in records]})

    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        hits = self._call("query", {"vector": [float(x) for x in vector], "k": int(k),
                                    "where": None if where is None else dict(where)})
        return [wire.hit_from_wire(h) for h in _array(hits, self.label, "query")]

    def remove(self, ids: Iterable[int]) -> int:
        return _number(self._call("remove", {"ids": wire.ids_to_wire(ids)}), self.label,
                       "remove")

    def count(self) -> int:
        return _number(self._call("count"), self.label, "count")

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        records = self._call("fetch", {"ids": wire.ids_to_wire(ids)})
        return [wire.record_from_wire(r) for r in _array(records, self.label, "fetch")]


class _ReadBack(ProcStore):
    """``fetch`` and ``fetch_block`` answered by the declared reader backend opened read-only
    on the child's real path (with the real OS: the child's files never pass through the
    simulated disk), once per call, so every read sees the file as the child left it."""

    def _read(self, ids: Iterable[int], op: str) -> Any:
        if self._closed:
            raise StoreClosed(self.path)
        assert self._reader is not None   # _class_for adds this mixin only with a reader
        wanted = [int(i) for i in ids]
        reader = self._reader.open(self._real, os_env(), readonly="true")
        try:
            if reader.declaration.file_format != self.declaration.file_format:
                raise DriverError(
                    f"{self.label}: its reader {self._reader.label} reads "
                    f"{reader.declaration.file_format!r} files, the store declares "
                    f"{self.declaration.file_format!r}",
                    fix="name a reader of the store's own file format in the declaration")
            if op == "fetch_block" and hasattr(reader, "fetch_block"):
                return reader.fetch_block(wanted)
            records = reader.fetch(wanted)
        finally:
            reader.close()
        if op == "fetch":
            return list(records)
        # a reader without fetch_block: the same records as arrays (BulkFetch)
        if not records:
            return VectorBlock((), np.zeros((0, 0)), ())
        return VectorBlock(tuple(r.id for r in records),
                           np.array([r.vector for r in records], dtype=np.float64),
                           tuple(r.metadata for r in records))

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        records: list[VectorRecord] = self._read(ids, "fetch")
        return records

    def fetch_block(self, ids: Iterable[int]) -> VectorBlock:
        block: VectorBlock = self._read(ids, "fetch_block")
        return block


class _Compact(ProcStore):
    def compact(self) -> None:
        self._call("compact")


class _Witness(ProcStore):
    def verify(self) -> list[str]:
        return [str(p) for p in _array(self._call("verify"), self.label, "verify")]


def _array(value: object, label: str, op: str) -> list[Any]:
    if not isinstance(value, list):
        raise DriverError(f"{label}: protocol violation: {op} answered {value!r:.200}, "
                          "expected an array")
    return value


def _number(value: object, label: str, op: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DriverError(f"{label}: protocol violation: {op} answered {value!r:.200}, "
                          "expected a number >= 0")
    return value


_MIXINS = ((Capability.KV, _KV), (Capability.VECTOR, _Vector), (Capability.COMPACT, _Compact),
           (Capability.WITNESS, _Witness))


@functools.cache
def _class_for(capabilities: frozenset[Capability], read_back: bool = False
               ) -> type[ProcStore]:
    bases: list[type[ProcStore]] = [m for c, m in _MIXINS if c in capabilities]
    if Capability.KV in capabilities and Capability.BATCH in capabilities:
        bases.insert(1, _Batch)   # write_batch is a key-value op; a vector batch is upsert
    if read_back:
        bases.insert(0, _ReadBack)   # before _Vector: its fetch is the reader's
    name = "ProcStore[" + ",".join(sorted(c.value for c in capabilities)) + \
        ("+reader" if read_back else "") + "]"
    return type(name, (*bases, ProcStore), {"__module__": __name__})


# -- where the child's files are ------------------------------------------------------------


def real_path(env: Env, path: str) -> str:
    """The real path the child opens for the store at ``path`` of ``env`` (see the module)."""
    native = env.fs.native_path(path)
    if native is not None:
        return native
    if env.fs.exists(path):
        try:
            doc = json.loads(read_all(env.fs, path))
            if doc.get("crashgate") != _MARKER_KIND:
                raise ValueError(f"crashgate={doc.get('crashgate')!r}, not {_MARKER_KIND!r}")
            return str(doc["path"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptStore(path, f"the proc store marker does not parse: {exc}") from exc
    directory = tempfile.mkdtemp(prefix="crashgate-proc-")
    _OWN_DIRS.append(directory)
    real = posixpath.join(directory, posixpath.basename(path) or "store")
    write_whole(env.fs, path, json.dumps({"crashgate": _MARKER_KIND, "marker_version": 1,
                                          "path": real}).encode() + b"\n")
    return real


@atexit.register
def _remove_own_dirs() -> None:
    for directory in _OWN_DIRS:
        shutil.rmtree(directory, ignore_errors=True)


# -- opening --------------------------------------------------------------------------------


START_TIMEOUT = 60.0
"""Seconds ``hello`` and ``open`` may take at least: a child starting its runtime (node loading
a native module, python importing crashgate) on a loaded machine is slower than any one op."""


def open_command(command: Sequence[str], path: str, env: Env, *, options: Mapping[str, str],
                 child_env: Mapping[str, str] | None = None, label: str,
                 timeout: float = 30.0, start_timeout: float | None = None) -> ProcStore:
    """Start ``command`` (argv), say ``hello`` and ``open`` the store at ``path`` with
    ``options``; the store, its declaration the child's with ``server`` naming the child.
    ``child_env`` is the child's environment (None: this process's); ``timeout`` the seconds
    any one response may take, ``start_timeout`` the seconds ``hello`` and ``open`` may take
    (default the larger of ``timeout`` and ``START_TIMEOUT``). Errors: ``BackendMissing``
    (the program cannot run), ``DriverError`` (no hello, garbage, another protocol version),
    the child's own mapped errors (``LockHeld``, ``BadOption`` ...) for ``open``."""
    if not command:
        raise BadBackend(label, "the command is empty", "give a command line after 'proc:'")
    child = Child(command, env=child_env, label=label, timeout=timeout)
    start = max(timeout, START_TIMEOUT) if start_timeout is None else start_timeout
    try:
        decl, reader_name = _hello(child, label, start)
        # the store's clock is env's: a host with time-based locks or leases reads it as the
        # real clock shifted (how a writer is made to see a lock 31 s old without waiting)
        offset = env.clock.time() - time.time()
        real = real_path(env, path)
        ok, value = child.request("open", {"path": real,
                                           "options": {str(k): str(v)
                                                       for k, v in options.items()},
                                           "clock_offset": offset}, timeout=start)
        if not ok:
            raise wire.error_from_wire(value, path=path)
        if isinstance(value, dict) and value.get("declaration") is not None:
            decl = wire.decl_from_wire(value["declaration"])   # as opened, with its options
            reader_name = wire.reader_from_wire(value["declaration"])
        reader = _reader_for(reader_name, decl, label)
    except BaseException:
        with contextlib.suppress(Exception):
            child.close(min(timeout, 5.0))
        raise
    server = f"child process `{shlex.join(command)}`, crashgate process protocol " \
             f"{PROTOCOL_VERSION}"
    decl = replace(decl, server=server, notes={
        **decl.notes, "server": "the store lives in a child process (backends/PROTOCOL.md): "
        "its files never pass through crashgate's simulated disk, so the rows that need it "
        "(power loss, crash states at disk operations, I/O errors, damage at rest) cannot "
        "act on it; a process crash is SIGKILL of the child"})
    if reader is not None:
        decl = replace(decl, notes={
            **decl.notes, "reader": f"fetch (and fetch_block) are not the store's answers: "
            f"crashgate reads the store's file with its own reader `{reader.label}` "
            "(opened read-only after the child's last op), because the driver declares it; "
            "count, query and every write are the child's"})
    return _class_for(decl.capabilities, reader is not None)(child, path, label, decl,
                                                             real=real, reader=reader)


def _reader_for(name: str | None, decl: Declaration, label: str) -> BackendSpec | None:
    """The resolved reader the declaration names (resolved now, so that an unknown name fails
    the open, not the first fetch), or None."""
    if name is None:
        return None
    if not decl.has(Capability.VECTOR):
        raise DriverError(f"{label}: the declaration names the reader {name!r} but not the "
                          "capability 'vector': a reader answers fetch of vector records",
                          fix="drop 'reader', or declare 'vector'")
    try:
        return resolve(name)
    except Exception as exc:  # noqa: BLE001 - any failure to name a backend is the driver's
        raise DriverError(f"{label}: the declaration names the reader {name!r}, which is no "
                          f"backend crashgate knows: {exc}",
                          fix="name a backend of `crashgate backends` that reads the store's "
                              "files (e.g. rvf-ruvector)") from exc


def _hello(child: Child, label: str, timeout: float) -> tuple[Declaration, str | None]:
    try:
        ok, value = child.request("hello", {"protocol": PROTOCOL_VERSION}, timeout=timeout)
    except DriverError as exc:
        raise DriverError(f"{label}: the child did not answer hello: {exc.problem}",
                          fix="check that the command runs by hand and speaks "
                              "backends/PROTOCOL.md") from None
    if not ok:
        raise DriverError(f"{label}: the child refused hello: {value!r:.300}",
                          fix="make the driver speak protocol version "
                              f"{PROTOCOL_VERSION} (backends/PROTOCOL.md)")
    if not isinstance(value, dict) or value.get("protocol") != PROTOCOL_VERSION:
        got = value.get("protocol") if isinstance(value, dict) else value
        raise DriverError(f"{label}: the child speaks protocol version {got!r}; crashgate "
                          f"speaks {PROTOCOL_VERSION}",
                          fix=f"use a driver for protocol version {PROTOCOL_VERSION}")
    return (wire.decl_from_wire(value.get("declaration")),
            wire.reader_from_wire(value.get("declaration")))


def open_proc(command: str, path: str, env: Env, **options: str) -> ProcStore:
    """The factory of a ``proc:<command>`` name: ``command`` split like a POSIX shell; the
    options ``timeout`` (seconds per response, default 30) and ``start_timeout`` (seconds for
    ``hello`` and ``open``, default the larger of ``timeout`` and 60) are the client's, every
    other option goes to the child's ``open``."""
    label = PREFIX + command
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise BadBackend(label, f"the command does not split like a shell line: {exc}",
                         "quote it as a POSIX shell would") from None
    timeout = _seconds(label, "timeout", options.pop("timeout", "30"))
    start = options.pop("start_timeout", None)
    return open_command(argv, path, env, options=options, label=label, timeout=timeout,
                        start_timeout=None if start is None else _seconds(label, "start_timeout",
                                                                          start))


def _seconds(label: str, name: str, text: str) -> float:
    try:
        seconds = float(text)
        if not seconds > 0:
            raise ValueError(text)
    except ValueError:
        raise BadOption(label, name, text, ["a number of seconds > 0, e.g. 30"]) from None
    return seconds
