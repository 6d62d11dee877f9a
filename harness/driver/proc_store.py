"""``ProcStore``: a store whose every op is a request to one child process speaking the process
driver protocol (``backends/PROTOCOL.md``), and the op mixins a store's capabilities add
(``MIXINS``; ``client.class_for`` puts them together: the harness probes protocols with
``isinstance``, so a vector-only store has no ``put``).

The store lives in the child, so crashgate's simulated disk never sees its files: the
declaration names the child as the store's ``server`` (``Declaration.server``), which makes the
rows that need the simulated disk n/a with that reason, exactly as for a Postgres store, and a
process crash is ``faults.server.ServerKill``'s SIGKILL of the child (``ServerBacked``). The
harness then reopens with the factory, which starts a new child.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from crashgate.backends import Capability, Declaration, Hit, StoreClosed, VectorRecord
from crashgate.backends import proc_protocol as wire
from crashgate.backends.proc_protocol import DriverError
from crashgate.backends.registry import BackendSpec
from crashgate.harness.driver.child import Child

__all__ = ["MIXINS", "BatchOps", "ProcStore"]


class ProcStore:
    """The methods every proc store has; ``client.class_for`` adds the ones its capabilities
    allow (the harness probes protocols with ``isinstance``: a vector-only store has no
    ``put``)."""

    declaration: Declaration

    def __init__(self, child: Child, path: str, label: str, declaration: Declaration, *,
                 real: str = "", reader: BackendSpec | None = None,
                 injecting: bool = False) -> None:
        self._child = child
        self.path = path
        self._real = real or path          # the path the child opened (see real_path)
        self._reader = reader              # the read-back backend, when the driver names one
        self.label = label
        self.declaration = declaration
        self._closed = False
        self._finalizer = weakref.finalize(self, child.kill)   # a store dropped unclosed
        self.injecting = injecting   # opened with io_error: close answers the fs_ops report
        self.fs_ops_at_close: wire.FsOpsReport | None = None

    def _call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        if self._closed:
            raise StoreClosed(self.path)
        ok, value = self._child.request(op, args or {})
        if not ok:
            raise wire.error_from_wire(value, path=self.path, op=op)
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
        if answer is not None and self.injecting:
            self.fs_ops_at_close = wire.fs_ops_from_wire(answer[1])

    def fs_ops(self) -> wire.FsOpsReport:
        """The child's count of mutating file operations since ``open`` began, and the
        failures it injected (a store opened with the option ``io_error`` only)."""
        return wire.fs_ops_from_wire(self._call("fs_ops"))

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


class BatchOps(ProcStore):
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


MIXINS: tuple[tuple[Capability, type[ProcStore]], ...] = (
    (Capability.KV, _KV), (Capability.VECTOR, _Vector), (Capability.COMPACT, _Compact),
    (Capability.WITNESS, _Witness))
"""The op mixin each capability adds (``BatchOps`` is added for key-value plus batch)."""

