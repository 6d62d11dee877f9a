"""An op the store under test does not have: ``NotImplementedError`` raised by one of its own
methods (a process driver's ``EUNSUPPORTED``, e.g. ``fetch`` of a package with no read-back).

That is not a broken promise: the store never offered the op, so a check that needed it could
check nothing, and its verdict is ``unknown`` naming the op, not ``fail``. Only an exception
raised inside a method of a store (an object with a ``Declaration``) counts: a
``NotImplementedError`` of the harness, or of a tool under test that merely calls the store
and raises its own, stays that tool's failure.
"""

from __future__ import annotations

from crashgate.backends import Declaration

__all__ = ["cannot_answer", "unsupported_op"]


def unsupported_op(exc: BaseException) -> str | None:
    """The name of the store method that raised ``exc``, when ``exc`` is a
    ``NotImplementedError`` raised inside a store's public method; else None.

    The innermost such frame is taken: a wrapper calls the store's method by the same or
    another name, and the op the store lacks is the one deepest in the stack; private helpers
    (``_call``) and the harness's own objects (the model's machine also carries a declaration)
    are skipped."""
    if not isinstance(exc, NotImplementedError):
        return None
    op: str | None = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        name = frame.f_code.co_name
        owner = frame.f_locals.get("self")
        module = str(frame.f_globals.get("__name__", ""))
        # the harness's own objects (the model's machine, wrappers) are not the store; its
        # process driver client is the store of a proc: backend
        harness = module.startswith("crashgate.harness") and not module.startswith(
            "crashgate.harness.driver")
        if (not name.startswith("_") and not harness
                and isinstance(getattr(owner, "declaration", None), Declaration)
                and callable(getattr(type(owner), name, None))):
            op = name
        tb = tb.tb_next
    return op


def cannot_answer(exc: BaseException) -> str | None:
    """The ``unknown`` summary for ``exc`` when the store lacks the op (``unsupported_op``):
    ``the store cannot answer fetch: nothing could be checked (<its message>)``; else None."""
    op = unsupported_op(exc)
    if op is None:
        return None
    lines = str(exc).splitlines()
    why = f" ({lines[0]})" if lines else ""
    return f"the store cannot answer {op}: nothing could be checked{why}"
