"""The wire codec of the process driver protocol (``backends/PROTOCOL.md``, version 1), shared by
crashgate's client (``harness/driver/client.py``) and any host written in Python
(``harness/driver/python_host.py``).

Values on the wire: a u64 id is a string of decimal digits, bytes are base64 (with padding), a
vector is a JSON array of float64, metadata a JSON object; a record is ``{"id", "vector",
"metadata"}``, a hit ``{"id", "distance", "metadata"}``. An error is ``{"code", "message", ...}``
with a code of ``ERROR_CODES``; ``error_to_wire`` and ``error_from_wire`` turn crashgate's errors
into codes and back.
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from crashgate.backends.contract import (
    Capability,
    DamagePromise,
    Declaration,
    Durability,
    Hit,
    VectorRecord,
)
from crashgate.backends.errors import (
    BadOption,
    CorruptStore,
    CrashgateError,
    LockHeld,
    StoreClosed,
    Unsupported,
    VersionTooNew,
)
from crashgate.backends.search import Recall

__all__ = ["CARRIED", "ERROR_CODES", "IO_ERROR_KINDS", "PROTOCOL_VERSION", "DriverError",
           "FsOpsReport", "bytes_from_wire", "fs_ops_from_wire", "io_error_from_option",
           "bytes_to_wire", "decl_from_wire", "decl_to_wire", "decode", "encode",
           "error_from_wire", "error_to_wire", "hit_from_wire", "hit_to_wire", "id_from_wire",
           "id_to_wire", "ids_to_wire", "only_carried", "reader_from_wire", "record_from_wire",
           "record_to_wire"]

PROTOCOL_VERSION = 1
U64 = 2**64
ERROR_CODES = ("ELOCK", "EVERSION", "ECORRUPT", "ECLOSED", "EINVAL", "EOPTION", "EIO", "ENOSPC",
               "ENOENT", "EUNSUPPORTED")
"""The codes ``error_from_wire`` maps onto crashgate's errors; any other is a ``DriverError``."""
CARRIED = frozenset({Capability.KV, Capability.VECTOR, Capability.BATCH, Capability.COMPACT,
                     Capability.WITNESS, Capability.WRITER_LOCK, Capability.WIRE_VERSION,
                     Capability.SCHEMA_VERSION, Capability.METADATA_FILTER, Capability.EPOCH})
"""The capabilities a store behind the protocol can have: those with an op of the protocol,
and promises that need no op. The rest (derive, lease, failpoints, relational, stages, backup,
missions) need calls or an env the protocol does not carry."""


class DriverError(CrashgateError):
    """A child process that broke the protocol or died: ``indeterminate`` says whether a request
    was in flight (applied or not: the harness treats it as a process crash)."""

    def __init__(self, problem: str, *, fix: str = "", indeterminate: bool = False) -> None:
        self.problem = problem
        self.indeterminate = indeterminate
        super().__init__(problem + (f"\n  Fix: {fix}" if fix else ""))


def _bad(what: str, value: object, want: str) -> DriverError:
    return DriverError(f"protocol violation: {what} is {value!r}, expected {want}",
                       fix="make the driver follow backends/PROTOCOL.md")


# -- values ---------------------------------------------------------------------------------


def id_to_wire(value: int) -> str:
    if not 0 <= value < U64:
        raise ValueError(f"vector id {value} is not a u64 (0 <= id < 2**64)")
    return str(value)


def id_from_wire(value: object) -> int:
    if not isinstance(value, str) or not value.isdigit() or not value.isascii():
        raise _bad("an id", value, "a string of decimal digits")
    if int(value) >= U64:
        raise _bad("an id", value, "a u64 (below 2**64)")
    return int(value)


def bytes_to_wire(value: bytes) -> str:
    return base64.b64encode(bytes(value)).decode("ascii")


def bytes_from_wire(value: object) -> bytes:
    if not isinstance(value, str):
        raise _bad("a value", value, "a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise _bad("a value", value, "base64 (RFC 4648, with padding)") from None


def _floats(value: object, what: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        raise _bad(what, value, "an array of numbers")
    return tuple(float(x) for x in value)


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(what, value, "a JSON object")
    return value


def record_to_wire(record: VectorRecord) -> dict[str, Any]:
    return {"id": id_to_wire(record.id), "vector": [float(x) for x in record.vector],
            "metadata": dict(record.metadata)}


def record_from_wire(value: object) -> VectorRecord:
    doc = _object(value, "a record")
    return VectorRecord(id_from_wire(doc.get("id")), _floats(doc.get("vector"), "a vector"),
                        _object(doc.get("metadata", {}), "a record's metadata"))


def hit_to_wire(hit: Hit) -> dict[str, Any]:
    return {"id": id_to_wire(hit.id), "distance": float(hit.distance),
            "metadata": dict(hit.metadata)}


def hit_from_wire(value: object) -> Hit:
    doc = _object(value, "a hit")
    distance = doc.get("distance")
    if not isinstance(distance, int | float) or isinstance(distance, bool):
        raise _bad("a hit's distance", distance, "a number")
    return Hit(id_from_wire(doc.get("id")), float(distance),
               _object(doc.get("metadata", {}), "a hit's metadata"))


# -- the declaration ------------------------------------------------------------------------


def decl_to_wire(decl: Declaration) -> dict[str, Any]:
    """``decl`` as hello's ``declaration`` (only what the protocol carries: see ``CARRIED``)."""
    return {"durability": decl.durability.value,
            "capabilities": sorted(c.value for c in decl.capabilities if c in CARRIED),
            "file_format": decl.file_format, "wire_version": decl.wire_version,
            "metric": decl.metric,
            "recall": None if decl.recall is None else
            {"k": decl.recall.k, "at_least": decl.recall.at_least},
            "damage": decl.damage.value, "metadata": decl.metadata,
            "real_clock": decl.real_clock, "io_errors": decl.injects_io_errors,
            "notes": dict(decl.notes)}


def _enum(kind: Any, value: object, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise _bad(what, value, "one of " + ", ".join(m.value for m in kind)) from None


def decl_from_wire(value: object) -> Declaration:
    """hello's ``declaration`` as a ``Declaration`` (``server`` unset: the client names its
    child). Capabilities the protocol cannot carry are refused, not dropped: a driver that
    declares ``derive`` promises calls crashgate could never make."""
    doc = _object(value, "the declaration")
    caps = doc.get("capabilities", [])
    if not isinstance(caps, list):
        raise _bad("capabilities", caps, "an array of capability names")
    capabilities = frozenset(_enum(Capability, c, "a capability") for c in caps)
    if extra := sorted(c.value for c in capabilities - CARRIED):
        raise DriverError(f"the driver declares {extra}, which the protocol cannot carry",
                          fix="declare only " + ", ".join(sorted(c.value for c in CARRIED)))
    recall = doc.get("recall")
    notes = _object(doc.get("notes") or {}, "notes")
    try:
        return Declaration(
            durability=_enum(Durability, doc.get("durability"), "durability"),
            capabilities=capabilities,
            file_format=_optional_str(doc.get("file_format"), "file_format"),
            wire_version=doc.get("wire_version"),
            metric=_optional_str(doc.get("metric"), "metric"),
            recall=None if recall is None else Recall(int(_object(recall, "recall")["k"]),
                                                      float(recall["at_least"])),
            damage=_enum(DamagePromise, doc.get("damage", "detected"), "damage"),
            metadata=_bool(doc.get("metadata", True), "metadata"),
            real_clock=_bool(doc.get("real_clock", False), "real_clock"),
            injects_io_errors=_bool(doc.get("io_errors", False), "io_errors"),
            notes={str(k): str(v) for k, v in notes.items()})
    except (KeyError, TypeError, ValueError) as exc:
        raise DriverError(f"protocol violation: the declaration does not parse: {exc}",
                          fix="make the driver follow backends/PROTOCOL.md") from exc


def _optional_str(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _bad(what, value, "a string or null")
    return value


def _bool(value: object, what: str) -> bool:
    # a missing field takes its default (the caller's); null is not a bool
    if not isinstance(value, bool):
        raise _bad(what, value, "true or false")
    return value


def only_carried(decl: Declaration) -> Declaration:
    """``decl`` with the capabilities the protocol cannot carry dropped (and named in a note),
    for a host serving an in-process store."""
    dropped = sorted(c.value for c in decl.capabilities - CARRIED)
    if not dropped:
        return decl
    note = f"not carried by the process protocol: {', '.join(dropped)}"
    return replace(decl, capabilities=decl.capabilities & CARRIED, failpoints=(),
                   notes={**decl.notes, "driver": note})


def reader_from_wire(value: object) -> str | None:
    """The declaration's optional ``reader``: the backend spec (e.g. ``rvf-ruvector``) that
    crashgate opens read-only on the store's files to answer ``fetch`` for a store with no
    read-back op, or None. Kept out of ``Declaration``: it is how the client reads, not a
    promise of the store."""
    reader = _object(value, "the declaration").get("reader")
    if reader is not None and (not isinstance(reader, str) or not reader.strip()):
        raise _bad("reader", reader, "a backend spec (e.g. \"rvf-ruvector\") or null")
    return reader


# -- errors ---------------------------------------------------------------------------------


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    """The wire error for ``exc`` (its message is the evidence the client shows)."""
    message = str(exc)
    if isinstance(exc, LockHeld):
        return {"code": "ELOCK", "message": message, "holder": exc.holder}
    if isinstance(exc, VersionTooNew):
        return {"code": "EVERSION", "message": message, "found": exc.found,
                "supported": exc.supported}
    if isinstance(exc, CorruptStore):
        return {"code": "ECORRUPT", "message": message, "detail": exc.detail}
    if isinstance(exc, StoreClosed):
        return {"code": "ECLOSED", "message": message}
    if isinstance(exc, BadOption):
        return {"code": "EOPTION", "message": message, "option": exc.option,
                "value": str(exc.value)}
    if isinstance(exc, OSError) and exc.errno in (errno.EIO, errno.ENOSPC, errno.ENOENT):
        # strerror alone: the client builds the OSError again (its str adds "[Errno n]")
        return {"code": errno.errorcode[exc.errno], "message": exc.strerror or message}
    if isinstance(exc, Unsupported):   # the store's words: the client names the op again
        return {"code": "EUNSUPPORTED", "message": exc.why or message}
    if isinstance(exc, NotImplementedError):
        return {"code": "EUNSUPPORTED", "message": message}
    if isinstance(exc, ValueError):
        return {"code": "EINVAL", "message": message}
    return {"code": "EINTERNAL", "message": f"{type(exc).__name__}: {message}"}


def error_from_wire(value: object, *, path: str, op: str | None = None) -> Exception:
    """The crashgate error for a wire error about the store at ``path`` (the caller's path)
    answering the request ``op``. The child's own message is kept as the error's text: it is
    the evidence. ``EUNSUPPORTED`` is ``Unsupported(op)``: the store lacks that op; without an
    op (an answer to no store op, e.g. the open) it is a plain ``NotImplementedError``."""
    doc = _object(value, "an error")
    code, message = doc.get("code"), str(doc.get("message", ""))
    exc: Exception
    if code == "ELOCK":
        # no holder field: the driver names nobody (the message is not taken for a holder,
        # which would make "the refusal names the holder" hold of any message)
        exc = LockHeld(path, str(doc.get("holder") or ""))
    elif code == "EVERSION":
        exc = VersionTooNew(path, found=_int(doc.get("found")),
                            supported=_int(doc.get("supported")))
    elif code == "ECORRUPT":
        exc = CorruptStore(path, str(doc.get("detail") or message))
    elif code == "ECLOSED":
        exc = StoreClosed(path)
    elif code == "EOPTION":
        exc = BadOption(path, str(doc.get("option", "?")), doc.get("value"), ())
    elif code in ("EIO", "ENOSPC", "ENOENT"):   # ENOENT: FileNotFoundError, as OSError makes
        return OSError(getattr(errno, str(code)), message, path)
    elif code == "EUNSUPPORTED":
        return NotImplementedError(message) if op is None else Unsupported(op, message)
    elif code == "EINVAL":
        return ValueError(message)
    else:
        return DriverError(f"the driver failed with {code}: {message}")
    if message and code != "ECLOSED":
        exc.args = (message,)   # the child's words, not a rebuilt sentence
    return exc


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


# -- framing --------------------------------------------------------------------------------


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as a line (NaN and infinity are not JSON: ``ValueError``)."""
    return json.dumps(message, allow_nan=False, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One line as a message; ``DriverError`` for anything but a JSON object."""
    try:
        doc = json.loads(line)
    except ValueError:
        raise _bad("a line on stdout", line[:200].decode("utf-8", "replace"),
                   "one JSON object per line (log to stderr, not stdout)") from None
    return _object(doc, "a message")


def ids_to_wire(ids: Iterable[int]) -> list[str]:
    return [id_to_wire(int(i)) for i in ids]


# -- I/O errors injected by the driver ------------------------------------------------------


IO_ERROR_KINDS = ("EIO", "ENOSPC")


def io_error_from_option(text: str, *, label: str) -> dict[str, Any]:
    """The ``io_error`` of ``open``'s args for the client option ``io_error``: ``count``,
    ``EIO@3`` (the 3rd mutating file operation fails, once) or ``ENOSPC@3+`` (it and every one
    after); ``BadOption`` for anything else."""
    want = ["count", "EIO@3 (the 3rd mutating file operation fails once)",
            "ENOSPC@3+ (it and every later one fail)"]
    text = text.strip()
    if text == "count":
        return {"count": True}
    kind, _, at = text.partition("@")
    persistent = at.endswith("+")
    at = at.removesuffix("+")
    if kind not in IO_ERROR_KINDS or not at.isdigit() or int(at) < 1:
        raise BadOption(label, "io_error", text, want)
    return {"kind": kind, "at": int(at), "persistent": persistent}


@dataclass(frozen=True)
class FsOpsReport:
    """A driver's ``fs_ops`` answer: mutating file operations made since ``open`` began, and
    a line per injected failure."""

    mutating_ops: int
    fired: tuple[str, ...]


def fs_ops_from_wire(value: object) -> FsOpsReport:
    doc = _object(value, "the fs_ops answer")
    count, fired = doc.get("mutating_ops"), doc.get("fired", [])
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise _bad("mutating_ops", count, "a number >= 0")
    if not isinstance(fired, list):
        raise _bad("fired", fired, "an array of strings")
    return FsOpsReport(count, tuple(str(f) for f in fired))
