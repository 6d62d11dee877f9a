"""What every fault is: an object that says what it needs from a backend, what it acts
through, and how it is installed into the env a store is opened with.

Lifecycle (Jepsen's nemesis, made explicit)::

    fault = IOErrors("EIO", at=3)          # 1. configured: a value, nothing happens yet
    reason = fault.needs(declaration)      # 2. applicable? None, or why the row is n/a
    env = fault.install(env)               # 3. installed: the env the store is opened with
    ...the store runs; the fault fires...  # 4. fired: ``fault.fired`` records what it did
    fault.heal()                           # 5. healed: it stops injecting

A fault acts only through the env (``fs``, ``clock``, ``failpoints``) or from outside the
process (``process``): never by reaching into a store. Those are its ``levers``. Two faults
that pull the same lever would fight over it (two file-system wrappers disagree about which op
is the n-th), so ``compose`` refuses them.
"""

from __future__ import annotations

from collections.abc import Iterable

from crashgate.backends import Capability, Declaration, Env

__all__ = ["LEVERS", "Composed", "Fault", "compose", "requires"]

LEVERS = frozenset({"fs", "clock", "failpoints", "process"})


class Fault:
    """Base of every fault. Subclasses set ``levers`` and override what they need."""

    levers: frozenset[str] = frozenset()
    """What the fault acts through; a class constant, or set per instance."""

    @property
    def name(self) -> str:
        """A short description for messages, e.g. ``IOErrors(EIO at op 3, transient)``."""
        return type(self).__name__

    def needs(self, decl: Declaration) -> str | None:
        """``None`` when the fault applies to a store declaring ``decl``, else why it is n/a."""
        return None

    def install(self, env: Env) -> Env:
        """The env to open the store with, with this fault in it (default: unchanged)."""
        return env

    def heal(self) -> None:
        """Stop injecting (default: nothing to stop)."""

    @property
    def fired(self) -> tuple[str, ...]:
        """What the fault did so far, one line each (empty: it has not fired)."""
        return ()

    def __repr__(self) -> str:
        return self.name


def requires(decl: Declaration, *caps: Capability, what: str) -> str | None:
    """``None`` when ``decl`` has any of ``caps``, else the n/a reason, e.g. "the backend
    declares no writer lock (capability writer-lock)"."""
    if any(decl.has(c) for c in caps):
        return None
    names = " or ".join(c.value for c in caps)
    return f"the backend declares no {what} (capability {names})"


class Composed(Fault):
    """Several faults acting at once, each through its own levers. Installed in order (the
    first one's env wrapper is innermost); n/a when any part is."""

    def __init__(self, faults: Iterable[Fault]) -> None:
        self.faults: tuple[Fault, ...] = tuple(faults)
        self.levers = frozenset().union(*(f.levers for f in self.faults))

    @property
    def name(self) -> str:
        return " + ".join(f.name for f in self.faults)

    def needs(self, decl: Declaration) -> str | None:
        for f in self.faults:
            reason = f.needs(decl)
            if reason is not None:
                return f"{f.name}: {reason}"
        return None

    def install(self, env: Env) -> Env:
        for f in self.faults:
            env = f.install(env)
        return env

    def heal(self) -> None:
        for f in reversed(self.faults):
            f.heal()

    @property
    def fired(self) -> tuple[str, ...]:
        return tuple(line for f in self.faults for line in f.fired)


def compose(*faults: Fault) -> Composed:
    """One fault made of ``faults``. ``ValueError`` naming both faults and the lever when two
    claim the same lever; nested compositions are flattened."""
    flat: list[Fault] = []
    for f in faults:
        if not isinstance(f, Fault):
            raise TypeError(f"compose() takes faults, got {type(f).__name__}: {f!r}")
        flat.extend(f.faults if isinstance(f, Composed) else [f])
    owner: dict[str, Fault] = {}
    for f in flat:
        unknown = sorted(f.levers - LEVERS)
        if unknown:
            raise ValueError(f"fault {f.name} claims unknown lever(s) {unknown}; levers are "
                             f"{sorted(LEVERS)}")
        for lever in sorted(f.levers):
            if lever in owner:
                raise ValueError(
                    f"cannot compose {owner[lever].name} with {f.name}: both act through the "
                    f"'{lever}' lever, and two faults on one lever would fight over it. Run "
                    "them one after the other, or drive both from one fault.")
            owner[lever] = f
    return Composed(flat)
