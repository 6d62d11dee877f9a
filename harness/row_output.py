"""What a row's procedure prints, logs or warns while it runs, collected as lines: evidence
about the row (e.g. a store logging the recovery it was made to do), not console noise."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

__all__ = ["captured_output"]


class _Lines(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.INFO)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(f"{record.levelname.lower()}: {record.getMessage()}")


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Collect, as lines, what a row's procedure prints, logs or warns while it runs (the
    lines are complete once the block has left)."""
    said: list[str] = []
    out, err = io.StringIO(), io.StringIO()
    handler = _Lines(said)
    root = logging.getLogger()
    root.addHandler(handler)
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as seen, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("default")
            try:
                yield said
            finally:
                caught = list(seen or [])
    finally:
        root.removeHandler(handler)
        said += [f"warning: {w.message}" for w in caught]
        said += [line for line in (out.getvalue() + err.getvalue()).splitlines() if line.strip()]
