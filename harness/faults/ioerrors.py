"""I/O errors as SQLite tests itself: ``EIO`` or ``ENOSPC`` at the n-th mutating file-system
operation, once (transient) or from then on (persistent).

The failed operation does not happen at all (the wrapped file system never sees it). For a
``sync`` that is the kind outcome: the data stays in the page cache but is not durable, which
is what a store that ignores a failed fsync gets caught by when the durable image is checked.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from typing import Literal

from crashgate.backends import Env
from crashgate.harness.faults.base import Fault
from crashgate.harness.faults.faultyfs import FaultyFS, FsOp

__all__ = ["ERRNOS", "IOErrors", "count_mutating_ops"]

ErrorKind = Literal["EIO", "ENOSPC"]
ERRNOS: dict[str, int] = {"EIO": errno.EIO, "ENOSPC": errno.ENOSPC}


class IOErrors(Fault):
    """Raise ``OSError(kind)`` at mutating op number ``at`` (counted from 1 after install);
    ``persistent`` keeps raising for every mutating op after it."""

    levers = frozenset({"fs"})

    def __init__(self, kind: ErrorKind = "EIO", *, at: int, persistent: bool = False) -> None:
        if kind not in ERRNOS:
            raise ValueError(f"IOErrors kind={kind!r} is not one of {sorted(ERRNOS)}")
        if not isinstance(at, int) or at < 1:
            raise ValueError(f"IOErrors at={at!r}: the first mutating op is 1; give at >= 1")
        self.kind: ErrorKind = kind
        self.at = at
        self.persistent = persistent
        self.fs: FaultyFS | None = None
        self._fired: list[FsOp] = []
        self._healed = False

    @property
    def name(self) -> str:
        how = "persistent" if self.persistent else "transient"
        return f"IOErrors({self.kind} at op {self.at}, {how})"

    def install(self, env: Env) -> Env:
        self.fs = FaultyFS(env.fs, self._trigger)
        return dataclasses.replace(env, fs=self.fs)

    def heal(self) -> None:
        self._healed = True

    @property
    def fired(self) -> tuple[str, ...]:
        return tuple(f"{self.kind} at {op.describe()}" for op in self._fired)

    @property
    def fired_ops(self) -> tuple[FsOp, ...]:
        return tuple(self._fired)

    def _trigger(self, op: FsOp) -> OSError | None:
        if self._healed:
            return None
        if op.index == self.at or (self.persistent and op.index > self.at):
            self._fired.append(op)
            code = ERRNOS[self.kind]
            return OSError(code, f"{os.strerror(code)} (injected by crashgate: {self.name}, "
                                 f"failing {op.describe()})", op.path)
        return None


def count_mutating_ops(env: Env) -> tuple[Env, FaultyFS]:
    """An env whose file system only counts mutating ops (never fails), and the counter."""
    fs = FaultyFS(env.fs, lambda _op: None)
    return dataclasses.replace(env, fs=fs), fs
