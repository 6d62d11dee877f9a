"""What the reference tools' command lines share (``crashgate rvf``, ``crashgate arch``,
``crashgate patterns``): the exit codes, the input error, the guard that turns a store's typed
errors into one line on stderr and an exit code, and the positive-integer argument type."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from crashgate.backends import BadOption, CorruptStore, LockHeld, VersionTooNew

__all__ = ["EXIT_FAIL", "EXIT_OK", "EXIT_USAGE", "InputError", "guarded", "positive_int"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 3

Command = Callable[[argparse.Namespace], int]


class InputError(Exception):
    """Bad input on the command line or in an input file (exit 3); the message names the
    argument and the fix."""


def guarded(func: Command, prefix: Callable[[argparse.Namespace], str],
            failures: tuple[type[BaseException], ...] = ()) -> Command:
    """``func`` with a store's refusals (lock held, version too new, damage, a permission, and
    ``failures``) as ``<prefix>: <error>`` and exit 1, and bad input as exit 3."""
    refused: tuple[type[BaseException], ...] = (LockHeld, VersionTooNew, CorruptStore,
                                                PermissionError, *failures)

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except refused as exc:
            print(f"{prefix(args)}: {exc}", file=sys.stderr)
            return EXIT_FAIL
        except (InputError, BadOption) as exc:
            print(f"{prefix(args)}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return run


def positive_int(unit: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number, 1 or more (``unit`` names what is counted)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(
                f"{text!r}: give a whole number{' of ' + unit if unit else ''}, 1 or more")
        return value
    return parse
