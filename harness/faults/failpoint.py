"""A crash at a named failpoint: the store calls ``env.failpoints.hit(name)`` between two of
its writes, and the armed failpoint raises ``SimulatedCrash`` there."""

from __future__ import annotations

import dataclasses

from crashgate.backends import Capability, Declaration, Env
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.faults.base import Fault

__all__ = ["FailpointCrash"]


class FailpointCrash(Fault):
    """Crash at hit number ``after_hits + 1`` of failpoint ``name``, counted from ``arm()``
    (``install`` arms it unless ``armed=False``)."""

    levers = frozenset({"failpoints"})

    def __init__(self, name: str, *, after_hits: int = 0, armed: bool = True) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"FailpointCrash name={name!r}: give a failpoint name the store "
                             "declares (Declaration.failpoints)")
        if after_hits < 0:
            raise ValueError(f"FailpointCrash after_hits={after_hits}: give 0 or more")
        self.failpoint = name
        self.after_hits = after_hits
        self.failpoints: ArmedFailpoints | None = None
        self._arm_on_install = armed

    @property
    def name(self) -> str:
        return f"FailpointCrash({self.failpoint!r}, after {self.after_hits} hits)"

    def needs(self, decl: Declaration) -> str | None:
        if not decl.has(Capability.FAILPOINTS) and not decl.failpoints:
            return "the backend declares no failpoints (capability failpoints)"
        if self.failpoint not in decl.failpoints:
            known = ", ".join(decl.failpoints) or "(none)"
            return f"the backend declares no failpoint {self.failpoint!r}; it declares {known}"
        return None

    def install(self, env: Env) -> Env:
        fps = env.failpoints if isinstance(env.failpoints, ArmedFailpoints) else ArmedFailpoints()
        self.failpoints = fps
        if self._arm_on_install:
            self.arm()
        return dataclasses.replace(env, failpoints=fps)

    def arm(self) -> None:
        if self.failpoints is None:
            raise RuntimeError(f"{self.name}: install() it into an env before arming it")
        self.failpoints.arm(self.failpoint, after_hits=self.after_hits)

    def heal(self) -> None:
        if self.failpoints is not None:
            self.failpoints.disarm(self.failpoint)

    @property
    def fired(self) -> tuple[str, ...]:
        if self.failpoints is None:
            return ()
        return tuple(f"crash at failpoint {n!r}" for n in self.failpoints.fired
                     if n == self.failpoint)
