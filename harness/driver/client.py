"""``open_proc``, the factory of ``proc:`` names, and ``open_command``: start a child speaking
the process driver protocol (``backends/PROTOCOL.md``), say ``hello`` and ``open``, and answer
the ``ProcStore`` (``proc_store``) its declaration's capabilities call for.

Where the files live: on the real file system a store's path is the child's path. On a
simulated disk (every row's fresh disk) a marker file at the path, written through ``env.fs``,
names a fresh real directory (``crashgate-proc-*`` in the temporary directory, removed when this
process exits): every open of that disk's path, a reopen after a kill or a second writer,
reaches the same files, and a fresh disk gets a fresh store.
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
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from crashgate.backends import (
    BadOption,
    Capability,
    CorruptStore,
    Declaration,
    Env,
    read_all,
    write_whole,
)
from crashgate.backends import proc_protocol as wire
from crashgate.backends.errors import BadBackend
from crashgate.backends.proc_protocol import PROTOCOL_VERSION, DriverError
from crashgate.backends.registry import BackendSpec, resolve
from crashgate.harness.driver.child import Child
from crashgate.harness.driver.proc_store import MIXINS, BatchOps, ProcStore
from crashgate.harness.driver.read_back import ReadBack

__all__ = ["PREFIX", "ProcStore", "class_for", "open_command", "open_proc", "real_path"]

PREFIX = "proc:"
_MARKER_KIND = "proc-store"
_OWN_DIRS: list[str] = []


@functools.cache
def class_for(capabilities: frozenset[Capability], read_back: bool = False) -> type[ProcStore]:
    """The ``ProcStore`` class with the op mixins ``capabilities`` call for (``MIXINS``), and
    ``ReadBack`` first when the declaration names a reader."""
    bases: list[type[ProcStore]] = [m for c, m in MIXINS if c in capabilities]
    if Capability.KV in capabilities and Capability.BATCH in capabilities:
        bases.insert(1, BatchOps)   # write_batch is a key-value op; a vector batch is upsert
    if read_back:
        bases.insert(0, ReadBack)   # before _Vector: its fetch is the reader's
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
                 timeout: float = 30.0, start_timeout: float | None = None,
                 io_error: Mapping[str, Any] | None = None) -> ProcStore:
    """Start ``command`` (argv), say ``hello`` and ``open`` the store at ``path`` with
    ``options``; the store, its declaration the child's with ``server`` naming the child.
    ``child_env`` is the child's environment (None: this process's); ``timeout`` the seconds
    any one response may take, ``start_timeout`` the seconds ``hello`` and ``open`` may take
    (default the larger of ``timeout`` and ``START_TIMEOUT``). Errors: ``BackendMissing``
    (the program cannot run), ``DriverError`` (no hello, garbage, another protocol version),
    the child's own mapped errors (``LockHeld``, ``BadOption`` ...) for ``open``.
    ``io_error`` (``proc_protocol.io_error_from_option``) goes to ``open`` for a driver that
    declares ``io_errors``; ``BadOption`` for one that does not."""
    if not command:
        raise BadBackend(label, "the command is empty", "give a command line after 'proc:'")
    child = Child(command, env=child_env, label=label, timeout=timeout)
    start = max(timeout, START_TIMEOUT) if start_timeout is None else start_timeout
    try:
        decl, reader_name = _hello(child, label, start)
        if io_error is not None and not decl.injects_io_errors:
            raise BadOption(label, "io_error", json.dumps(io_error),
                            ["(none: the driver does not declare io_errors, so it cannot "
                             "inject I/O errors; see backends/PROTOCOL.md)"])
        # the store's clock is env's: a host with time-based locks or leases reads it as the
        # real clock shifted (how a writer is made to see a lock 31 s old without waiting)
        offset = env.clock.time() - time.time()
        real = real_path(env, path)
        args: dict[str, Any] = {"path": real,
                                "options": {str(k): str(v) for k, v in options.items()},
                                "clock_offset": offset}
        if io_error is not None:
            args["io_error"] = dict(io_error)
        ok, value = child.request("open", args, timeout=start)
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
        "act on it; a process crash is SIGKILL of the child" + (
            "; the driver injects I/O errors itself (it declares io_errors), so the I/O-error "
            "row runs through it" if decl.injects_io_errors else "")})
    if reader is not None:
        decl = replace(decl, notes={
            **decl.notes, "reader": f"fetch (and fetch_block) are not the store's answers: "
            f"crashgate reads the store's file with its own reader `{reader.label}` "
            "(opened read-only after the child's last op), because the driver declares it; "
            "count, query and every write are the child's"})
    return class_for(decl.capabilities, reader is not None)(
        child, path, label, decl, real=real, reader=reader, injecting=io_error is not None)


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
    ``hello`` and ``open``, default the larger of ``timeout`` and 60) and ``io_error``
    (``count``, ``EIO@3``, ``ENOSPC@3+``: see backends/PROTOCOL.md) are the client's, every
    other option goes to the child's ``open``."""
    label = PREFIX + command
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise BadBackend(label, f"the command does not split like a shell line: {exc}",
                         "quote it as a POSIX shell would") from None
    timeout = _seconds(label, "timeout", options.pop("timeout", "30"))
    start = options.pop("start_timeout", None)
    io_error = options.pop("io_error", None)
    return open_command(argv, path, env, options=options, label=label, timeout=timeout,
                        start_timeout=None if start is None else _seconds(label, "start_timeout",
                                                                          start),
                        io_error=None if io_error is None else wire.io_error_from_option(
                            io_error, label=label))


def _seconds(label: str, name: str, text: str) -> float:
    try:
        seconds = float(text)
        if not seconds > 0:
            raise ValueError(text)
    except ValueError:
        raise BadOption(label, name, text, ["a number of seconds > 0, e.g. 30"]) from None
    return seconds
