"""One recorded file-system operation (``DiskOp``): what a ``SimDisk`` trace is made of, and what
the crash-state replay (``crashstates``) applies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crashgate.harness.spill import Spill

__all__ = ["DATA_KINDS", "ENTRY_KINDS", "DiskOp", "OpKind"]

OpKind = Literal["write", "truncate", "sync", "create", "rename", "unlink", "mkdir", "sync_dir"]
DATA_KINDS = frozenset({"write", "truncate"})
ENTRY_KINDS = frozenset({"create", "rename", "unlink", "mkdir"})


@dataclass(frozen=True, slots=True, init=False, eq=False, repr=False)
class DiskOp:
    """One mutating call (or sync) that reached the page cache, in program order.

    ``path`` is the name the call used (for a write, the name its handle was opened with; for
    rename, the source). The inode numbers make the trace replayable without names:
    ``ino`` is the inode acted on (the file written, truncated or synced; the inode an entry op
    creates, moves or unlinks; the directory of ``sync_dir``), ``parent`` the directory inode of
    ``path``'s entry and ``dst_parent`` the directory receiving a rename.

    A write's ``data`` is bytes held in memory or, when built with ``spill=``, in a ``Spill``
    (a temporary file: a long run's history need not fit in memory), read back on each access
    of ``data``. ``length`` is ``len(data)`` without reading it. The two kinds are
    interchangeable: equal when their fields and bytes are, and a pickled op carries its bytes
    (so it can cross to a spawned process, which cannot read the spill).
    """

    kind: OpKind
    path: str
    offset: int
    size: int
    dst: str
    ino: int
    parent: int
    dst_parent: int
    length: int
    """``len(data)``, kept so asking costs no read of a spilled op's bytes."""
    _held: bytes            # the data, or b"" when spilled
    _spill: Spill | None    # where the data is, if spilled
    _at: int                # its offset in the spill

    def __init__(self, kind: OpKind, path: str, offset: int = 0, data: bytes = b"",
                 size: int = 0, dst: str = "", ino: int = 0, parent: int = 0,
                 dst_parent: int = 0, *, spill: Spill | None = None) -> None:
        """``spill``: append ``data`` to it and keep only where it went (for a write whose
        bytes are worth moving out of memory); without it the op holds ``data``."""
        at = 0
        if spill is not None and data:
            at, length = spill.put(data)
            held = b""
        else:
            held = bytes(data)
            length = len(held)
            spill = None
        put = object.__setattr__
        put(self, "kind", kind)
        put(self, "path", path)
        put(self, "offset", offset)
        put(self, "size", size)
        put(self, "dst", dst)
        put(self, "ino", ino)
        put(self, "parent", parent)
        put(self, "dst_parent", dst_parent)
        put(self, "length", length)
        put(self, "_held", held)
        put(self, "_spill", spill)
        put(self, "_at", at)

    @property
    def data(self) -> bytes:
        """The bytes written (``b""`` for any other kind): read from the spill if spilled."""
        spill = self._spill
        return self._held if spill is None else spill.get(self._at, self.length)

    @property
    def spilled(self) -> bool:
        """Whether ``data`` is in a spill file rather than in memory."""
        return self._spill is not None

    def shape(self) -> tuple[object, ...]:
        """Every field but the bytes written (their length instead): what a ``CrashState``
        refers to, and what two runs of one workload must agree on."""
        return (self.kind, self.path, self.offset, self.size, self.dst, self.ino, self.parent,
                self.dst_parent, self.length)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DiskOp):
            return NotImplemented
        if self is other:
            return True
        if self.shape() != other.shape():
            return False
        if self._spill is not None and self._spill is other._spill and self._at == other._at:
            return True  # the same bytes in the same spill: no need to read them
        return self.data == other.data

    def __hash__(self) -> int:
        # by shape only (length, not bytes): equal ops have equal shapes, and hashing a
        # spilled op must not read it
        return hash(self.shape())

    def __reduce__(self) -> tuple[object, ...]:
        # the bytes themselves, never the spill: the receiver may not share its file
        return (DiskOp, (self.kind, self.path, self.offset, self.data, self.size, self.dst,
                         self.ino, self.parent, self.dst_parent))

    def describe(self) -> str:
        """``"write /db @4096+512"``, ``"rename /a.tmp -> /a"``, ``"sync /db"`` ..."""
        if self.kind == "write":
            return f"write {self.path} @{self.offset}+{self.length}"
        if self.kind == "truncate":
            return f"truncate {self.path} to {self.size}"
        if self.kind == "rename":
            return f"rename {self.path} -> {self.dst}"
        return f"{self.kind} {self.path}"

    def __repr__(self) -> str:
        return f"DiskOp({self.describe()})"
