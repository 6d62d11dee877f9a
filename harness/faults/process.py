"""A process crash: the page cache survives, everything the process had not yet written is
lost. Two ways to place one:

- ``ProcessCrash().run(...)``: every op boundary and fsync window of a recorded run, as crash
  states of the ``process`` model (thin over ``harness.powerloss``);
- ``ProcessCrash(on="sync")`` installed in an env: the store dies (``SimulatedCrash``) just
  before its next ``sync`` once ``arm()`` was called, i.e. in the middle of a write, with the
  data written but not committed. Out of process, the same crash is a SIGKILL
  (``DuplicateWriter`` does that).
"""

from __future__ import annotations

import dataclasses

from crashgate.backends import Env, SimulatedCrash
from crashgate.harness.crashstates import CrashModel
from crashgate.harness.faults.faultyfs import MUTATING_OPS, FaultyFS, FsOp
from crashgate.harness.faults.powerloss import PowerLoss

__all__ = ["ProcessCrash"]


class ProcessCrash(PowerLoss):
    """``on`` names the kind of mutating op to die at (``sync``, ``write``, ``rename`` ...);
    ``after`` skips that many of them once armed."""

    levers = frozenset({"fs"})

    def __init__(self, *, on: str = "sync", after: int = 0, budget: int = 300) -> None:
        super().__init__((CrashModel.PROCESS,), budget=budget)
        if on not in MUTATING_OPS:
            raise ValueError(f"ProcessCrash on={on!r} is not a mutating op; one of "
                             f"{list(MUTATING_OPS)}")
        if after < 0:
            raise ValueError(f"ProcessCrash after={after}: give 0 or more ops to skip")
        self.on = on
        self.after = after
        self._armed = False
        self._seen = 0
        self._fired: list[FsOp] = []

    @property
    def name(self) -> str:
        return f"ProcessCrash(at the next {self.on}" + (
            f" after {self.after}" if self.after else "") + ")"

    def install(self, env: Env) -> Env:
        return dataclasses.replace(env, fs=FaultyFS(env.fs, self._trigger))

    def arm(self) -> None:
        """Die at the (``after`` + 1)-th ``on`` op from now."""
        self._armed = True
        self._seen = 0

    def heal(self) -> None:
        self._armed = False

    @property
    def fired(self) -> tuple[str, ...]:
        return super().fired + tuple(f"process crash before {op.describe()}"
                                     for op in self._fired)

    def _trigger(self, op: FsOp) -> BaseException | None:
        if not self._armed or op.kind != self.on:
            return None
        self._seen += 1
        if self._seen <= self.after:
            return None
        self._armed = False
        self._fired.append(op)
        return SimulatedCrash(f"process crash before {op.describe()}")
