"""Host any in-process backend behind the process driver protocol (``backends/PROTOCOL.md``)::

    python -m crashgate.harness.driver.python_host <backend spec>

e.g. ``crashgate certify 'proc:python -m crashgate.harness.driver.python_host sqlite'``. It reads
one request per line on stdin and answers one line each on stdout; the store is opened with
the real env (``backends.os_env()``; its clock shifted by ``open``'s ``clock_offset``) at the
path ``open`` names, with the spec's options and ``open``'s merged (``open``'s win). Its
declaration is the store's, less the capabilities the protocol cannot carry
(``proc_protocol.only_carried``), and it injects I/O errors (``open``'s ``io_error``) for a
store that does its I/O through ``env.fs``. It is the Python test driver of the protocol: the
same store certified in process and through it must get the same verdicts on every row both can
run. End of stdin ends it at once, without closing the store (as a crash of its parent would
leave it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, BinaryIO

from crashgate.backends import BackendSpec, Declaration, Env, os_env, resolve
from crashgate.backends import proc_protocol as wire
from crashgate.backends.proc_protocol import PROTOCOL_VERSION
from crashgate.harness.faults.faultyfs import FaultyFS
from crashgate.harness.faults.ioerrors import IOErrors, count_mutating_ops
from crashgate.harness.faults.writer_proc import OffsetClock

__all__ = ["Host", "main"]


class Host:
    """The state of one host: the spec it serves, and the store once ``open`` has run."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.store: Any = None
        self.closed = False
        self.ops: dict[str, Callable[[dict[str, Any]], Any]] = {
            "hello": self.hello, "open": self.open, "close": self.close,
            "put": lambda a: self._store().put(a["key"], wire.bytes_from_wire(a["value"])),
            "get": self.get,
            "delete": lambda a: self._store().delete(a["key"]),
            "scan": lambda a: [[k, wire.bytes_to_wire(v)]
                               for k, v in self._store().scan(a.get("prefix", ""))],
            "write_batch": lambda a: self._store().write_batch(
                {k: wire.bytes_from_wire(v) for k, v in a["puts"].items()},
                list(a.get("deletes", ()))),
            "upsert": lambda a: self._store().upsert(
                [wire.record_from_wire(r) for r in a["records"]]),
            "query": lambda a: [wire.hit_to_wire(h) for h in self._store().query(
                a["vector"], int(a["k"]), a.get("where"))],
            "remove": lambda a: self._store().remove(
                [wire.id_from_wire(i) for i in a["ids"]]),
            "count": lambda a: self._store().count(),
            "fetch": lambda a: [wire.record_to_wire(r) for r in self._store().fetch(
                [wire.id_from_wire(i) for i in a["ids"]])],
            "compact": lambda a: self._store().compact(),
            "verify": lambda a: list(self._store().verify()),
            "fs_ops": lambda a: self.fs_ops(),
        }
        self.fs: FaultyFS | None = None      # with open's io_error: the counting file system
        self.fault: IOErrors | None = None   # ... and the injected errors, if any

    def hello(self, args: dict[str, Any]) -> Any:
        if args.get("protocol") != PROTOCOL_VERSION:
            raise NotImplementedError(f"this host speaks protocol {PROTOCOL_VERSION}, not "
                                      f"{args.get('protocol')!r}")
        # the declaration before open: the store opened once in a scratch directory
        from crashgate.harness.certify import probe_declaration
        decl = _as_hosted(probe_declaration(self.spec))
        return {"protocol": PROTOCOL_VERSION, "name": self.spec.label,
                "declaration": wire.decl_to_wire(decl)}

    def open(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.store is not None:
            raise ValueError("open: the store is already open (one store per host)")
        options = {**dict(self.spec.options), **dict(args.get("options") or {})}
        offset = float(args.get("clock_offset") or 0.0)
        env = Env(clock=OffsetClock(offset)) if offset else os_env()
        if args.get("io_error") is not None:
            env = self._inject(env, args["io_error"])
        self.store = self.spec.factory()(str(args["path"]), env, **options)
        # options may change what it promises (synchronous=OFF, readonly=true)
        return {"declaration": wire.decl_to_wire(_as_hosted(self.store.declaration))}

    def _inject(self, env: Env, how: dict[str, Any]) -> Env:
        """``env`` with its file system counting mutating ops and, unless ``how`` only asks to
        count, failing them as ``IOErrors`` does in process (the same fault, on the real
        disk)."""
        if how.get("count"):
            env, self.fs = count_mutating_ops(env)
            return env
        self.fault = IOErrors(how["kind"], at=int(how["at"]), persistent=bool(how["persistent"]))
        env = self.fault.install(env)
        self.fs = self.fault.fs
        return env

    def fs_ops(self) -> dict[str, Any]:
        if self.fs is None:
            raise ValueError("fs_ops: the store was not opened with io_error")
        return {"mutating_ops": self.fs.count,
                "fired": list(self.fault.fired) if self.fault is not None else []}

    def get(self, args: dict[str, Any]) -> Any:
        value = self._store().get(args["key"])
        return None if value is None else wire.bytes_to_wire(value)

    def close(self, args: dict[str, Any]) -> dict[str, Any] | None:
        if self.store is not None and not self.closed:
            self.closed = True
            self.store.close()
        return None if self.fs is None else self.fs_ops()

    def _store(self) -> Any:
        if self.store is None:
            raise ValueError("the store is not open: send 'open' first")
        return self.store

    def answer(self, line: bytes) -> bytes:
        """The response line to one request line."""
        try:
            request = wire.decode(line)
        except wire.DriverError as exc:
            return wire.encode({"id": None, "error": {"code": "EINVAL", "message": str(exc)}})
        rid, op = request.get("id"), request.get("op")
        handler = self.ops.get(str(op))
        try:
            if handler is None:
                raise NotImplementedError(f"unknown op {op!r}; known: {sorted(self.ops)}")
            result = handler(dict(request.get("args") or {}))
            return wire.encode({"id": rid, "ok": result})
        except (KeyError, TypeError) as exc:   # a malformed request: the caller's mistake
            error = {"code": "EINVAL", "message": f"{op}: bad arguments: {exc!r}"}
        except Exception as exc:  # noqa: BLE001 - every error is an answer, typed by its code
            error = wire.error_to_wire(exc)
        return wire.encode({"id": rid, "error": error})


def _as_hosted(decl: Declaration) -> Declaration:
    """``decl`` as this host serves it: only what the protocol carries, and I/O errors
    injectable when the store does its I/O through ``env.fs`` (not a server's)."""
    return replace(wire.only_carried(decl), injects_io_errors=decl.server is None)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m crashgate.harness.driver.python_host <backend>\n")
        return 2
    out: BinaryIO = sys.stdout.buffer
    sys.stdout = sys.stderr   # a print in a store must not break the protocol
    host = Host(resolve(args[0]))
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        out.write(host.answer(line))
        out.flush()
        if host.closed:
            return 0
    out.flush()
    os._exit(0)   # end of stdin: at once, as a parent's crash leaves the store


if __name__ == "__main__":
    sys.exit(main())
