"""Typed errors of the backend contract.

Every error names what went wrong and how to fix it: the message is the whole story a user reads
in a CI log, so it carries the argument, its value and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "BackendMissing",
    "BadBackend",
    "BadOption",
    "CorruptStore",
    "CrashgateError",
    "DuplicateOption",
    "LeaseExpired",
    "LockHeld",
    "StoreClosed",
    "UnknownBackend",
    "Unsupported",
    "VersionTooNew",
    "close_matches_for",
]


def close_matches_for(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates that look like ``word``, best first (for "did you mean" hints)."""
    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.5)


class CrashgateError(Exception):
    """Base of every error crashgate raises on purpose.

    Picklable whatever a subclass's ``__init__`` takes (the default pickling calls it with the
    message alone, which fails): an error raised in a worker process reaches the parent as
    itself, its fields and notes included."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[CrashgateError], args: tuple[Any, ...], state: dict[str, Any]
             ) -> CrashgateError:
    error = cls.__new__(cls, *args)   # not __init__: the fields come back as they were
    error.args = args
    error.__dict__.update(state)
    return error


class LockHeld(CrashgateError):
    """Another writer holds the store (ADR-032's ``ELOCK``)."""

    code = "ELOCK"

    def __init__(self, path: str, holder: str, *, fix: str | None = None) -> None:
        self.path = path
        self.holder = holder
        fix = fix or (
            "close the other writer, or open this store read-only; a lock whose holder is dead "
            "is recovered once it is older than the stale interval"
        )
        super().__init__(f"ELOCK: {path} is locked by another writer ({holder}).\n  Fix: {fix}")


class LeaseExpired(LockHeld):
    """A writer whose heartbeat lease expired or was taken over tried to write: it is fenced off
    (ADR-032's browser lease; the fencing token names which lease it held)."""

    def __init__(self, path: str, token: int, reason: str, *, holder: str = "") -> None:
        self.path = path
        self.holder = holder
        self.token = token
        self.reason = reason
        CrashgateError.__init__(
            self,
            f"ELOCK: the writer lease on {path} was lost (fencing token {token}): {reason}.\n"
            "  This writer is fenced off; its write was not applied.\n"
            "  Fix: reopen the store to take a fresh lease (granted once the holder's heartbeat "
            "is older than 30 s).",
        )


class VersionTooNew(CrashgateError):
    """The file was written by a newer wire or schema version than this reader supports."""

    def __init__(
        self, path: str, *, found: int, supported: int, what: str = "RVF wire version",
        upgrade: str = "npm update @ruvector/rvf",
    ) -> None:
        self.path = path
        self.found = found
        self.supported = supported
        super().__init__(
            f"Error: {path} requires {what} {found}, but this reader supports version "
            f"{supported}.\n  Run: {upgrade}\n  The file was not modified."
        )


class CorruptStore(CrashgateError):
    """The store's files are damaged: detected and reported, never returned as data."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(
            f"{path} is damaged: {detail}.\n  Fix: restore it from a backup or rebuild it; "
            "crashgate never guesses at damaged data."
        )


class BackendMissing(CrashgateError):
    """An explicitly named backend is not installed: fail loud, never fall back silently."""

    def __init__(self, name: str, install: str, cause: str = "") -> None:
        self.name = name
        self.install = install
        why = f" ({cause})" if cause else ""
        super().__init__(
            f"Error: backend {name!r} is not installed{why}.\n  Run: {install}\n"
            f"  Asking for {name!r} explicitly requires it; crashgate does not fall back to "
            "another backend."
        )


class UnknownBackend(CrashgateError):
    """A backend name that resolves to nothing."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        known = sorted(known)
        hints = close_matches_for(name, known)
        hint = f" Did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
        super().__init__(
            f"unknown backend {name!r}.{hint}\n  Known backends: {', '.join(known)}; "
            "or give 'package.module:factory', or install a package that registers one under "
            "the 'crashgate.backends' entry-point group."
        )


class BadOption(CrashgateError):
    """A backend option that the backend does not know, or a value it does not accept."""

    def __init__(
        self, backend: str, option: str, value: object, allowed: Iterable[str] | None = None,
        *, known_options: Iterable[str] | None = None,
    ) -> None:
        self.backend = backend
        self.option = option
        self.value = value
        if allowed is not None:
            allowed = list(allowed)
            hints = close_matches_for(str(value), allowed)
            hint = f" Did you mean {hints[0]!r}?" if hints else ""
            msg = (
                f"backend {backend!r}: option {option}={value!r} is not accepted.{hint}\n"
                f"  Allowed values: {', '.join(allowed)}"
            )
        else:
            known = sorted(known_options or [])
            hints = close_matches_for(option, known)
            hint = f" Did you mean {hints[0]!r}?" if hints else ""
            msg = (
                f"backend {backend!r} has no option {option!r}.{hint}\n"
                f"  Known options: {', '.join(known) or '(none)'}"
            )
        super().__init__(msg)


class DuplicateOption(BadOption):
    """An option given twice in one name (``sqlite?synchronous=OFF&synchronous=FULL``): which
    one was meant is a guess crashgate does not make."""

    def __init__(self, backend: str, option: str, values: Iterable[str]) -> None:
        self.backend = backend
        self.option = option
        self.value = tuple(values)
        CrashgateError.__init__(
            self,
            f"backend {backend!r}: option {option!r} is given {len(self.value)} times "
            f"({', '.join(repr(v) for v in self.value)}).\n  Fix: give each option once.")


class BadBackend(CrashgateError):
    """A named backend (or migrator) that resolves but does not work as one: its module raises
    on import, it lacks the named attribute, its factory raises on a fresh store, or the store
    it returns declares nothing (or something malformed)."""

    def __init__(self, name: str, problem: str, fix: str, *, kind: str = "backend") -> None:
        self.name = name
        self.problem = problem
        self.fix = fix
        super().__init__(f"{kind} {name!r}: {problem}.\n  Fix: {fix}")


class Unsupported(NotImplementedError):
    """An op the store does not have (a process driver's ``EUNSUPPORTED``, e.g. ``fetch`` of a
    package with no read-back): not a broken promise, so a check that needed the op checked
    nothing and is ``unknown`` naming it (``harness/unsupported.py``).

    ``op`` is the store's op (its method's name: ``"fetch"``), ``why`` the store's own words.
    A ``NotImplementedError``, so code that catches that still does; but only this type says
    "the store lacks the op": a bare ``NotImplementedError`` is whoever raised it's failure."""

    def __init__(self, op: str, why: str = "") -> None:
        self.op = op
        self.why = why
        super().__init__(f"the store does not offer {op}: {why or 'no reason given'}")

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from its fields (the default passes the message alone as ``op``), notes kept
        return (type(self), (self.op, self.why), dict(self.__dict__))


class StoreClosed(CrashgateError):
    """A call on a store after ``close()``."""

    def __init__(self, path: str) -> None:
        super().__init__(f"store {path} is closed; open it again to use it")
