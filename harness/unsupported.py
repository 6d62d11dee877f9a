"""An op the store under test does not have: the store raised ``Unsupported`` naming it (a
process driver's ``EUNSUPPORTED``, e.g. ``fetch`` of a package with no read-back).

That is not a broken promise: the store never offered the op, so a check that needed it could
check nothing, and its verdict is ``unknown`` naming the op, not ``fail``. Only the typed error
counts: a bare ``NotImplementedError`` (of the harness, or of a tool under test that merely calls
the store) stays a failure of whoever raised it.
"""

from __future__ import annotations

from crashgate.backends import CrashgateError, Unsupported

__all__ = ["cannot_answer", "unsupported_op"]


def _unsupported(exc: BaseException) -> Unsupported | None:
    """``exc`` when it is an ``Unsupported``, else the one a wrapper of it was raised from
    (``raise Wrapper(...) from exc``, the ``__cause__`` chain); else None.

    What is not followed, because reading it as "the store lacks the op" would hide a finding:
    the implicit ``__context__`` (an error raised while an ``Unsupported`` was being handled: a
    fallback that then lost data, a ``close`` that broke), and a cause under an error the
    contract gives a meaning of its own (a ``CrashgateError`` such as ``CorruptStore``, an
    ``OSError``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, Unsupported):
            return current
        if isinstance(current, CrashgateError | OSError):
            return None
        seen.add(id(current))
        current = current.__cause__
    return None


def unsupported_op(exc: BaseException) -> str | None:
    """The store op ``exc`` says the store does not have (``Unsupported.op``, also through the
    ``__cause__`` chain of an error that wraps it), else None."""
    found = _unsupported(exc)
    return None if found is None else found.op


def cannot_answer(exc: BaseException) -> str | None:
    """The ``unknown`` summary for ``exc`` when the store lacks the op (``unsupported_op``):
    ``the store cannot answer fetch: nothing could be checked (<the store's words>)``; else
    None."""
    found = _unsupported(exc)
    if found is None:
        return None
    lines = (found.why or str(found)).splitlines()
    why = f" ({lines[0]})" if lines else ""
    return f"the store cannot answer {found.op}: nothing could be checked{why}"
