"""Ctrl-C, remembered until it is obeyed.

A KeyboardInterrupt raised in the middle of a library may not come out as one: Hypothesis,
interrupted before its engine has started, raises an ``AssertionError`` of its own instead
(which a row would report as a finding), and an interrupt landing while a server is being
started has been seen to vanish, so that the run went on to the end and exited 0.
``remembering_interrupts()`` makes SIGINT set a flag as well as raise; ``raise_if_interrupted()``
raises it again at the next safe point (each model step, each row), so a Ctrl-C always stops a
run and never becomes a verdict.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["interrupt_obeyed", "interrupted", "raise_if_interrupted", "remembering_interrupts"]

_seen = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _seen
    _seen = True
    raise KeyboardInterrupt


def interrupted() -> bool:
    """A Ctrl-C arrived since ``remembering_interrupts()`` was entered."""
    return _seen


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C arrived, whatever became of the first one."""
    if _seen:
        raise KeyboardInterrupt


def interrupt_obeyed() -> None:
    """Whoever caught the Ctrl-C has obeyed it (a soak stops early and keeps what it gathered):
    it is not raised again."""
    global _seen
    _seen = False


@contextlib.contextmanager
def remembering_interrupts() -> Iterator[None]:
    """While inside, a Ctrl-C is remembered as well as raised. Nothing changes where SIGINT is
    not Python's own default (ignored by the shell that started us, or handled by a host such
    as pytest), or off the main thread, where no handler can be set."""
    global _seen
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    _seen = False
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _seen = False
