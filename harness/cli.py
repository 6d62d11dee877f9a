"""The ``crashgate`` command.

Command groups live in their own modules and are loaded by import path, so a group whose
dependencies are broken fails only when it is used. A module named here exposes
``add_parser(subparsers)``, which adds its sub-command(s) and sets ``func(args) -> int`` on them.

Exit codes are a contract: 0 certified / no violation, 1 a verdict failed, 2 unknown,
3 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from crashgate.backends import (
    BackendMissing,
    BadOption,
    CrashgateError,
    UnknownBackend,
)
from crashgate.backends.errors import BadBackend
from crashgate.harness.interrupt import raise_if_interrupted, remembering_interrupts

__all__ = ["EXIT_FAIL", "EXIT_OK", "EXIT_UNKNOWN", "EXIT_USAGE", "JOBS_HELP", "USAGE_ERRORS",
           "OutputClosed", "UsageError", "jobs_option", "main", "one_line"]

EXIT_OK, EXIT_FAIL, EXIT_UNKNOWN, EXIT_USAGE = 0, 1, 2, 3

COMMAND_MODULES: tuple[str, ...] = (
    "crashgate.harness.cli_backends",
    "crashgate.harness.cli_powerloss",
    "crashgate.scenarios.cli",
    "crashgate.scenarios.gate_cli",
    "crashgate.scenarios.soak_cli",
    "crashgate.reference.rvf.cli",
    "crashgate.reference.rvlite_cli",
    "crashgate.reference.arch.cli",
    "crashgate.reference.patterns.cli",
)


class UsageError(CrashgateError):
    """Bad input on the command line (exit 3)."""


USAGE_ERRORS: tuple[type[BaseException], ...] = (
    UnknownBackend, BadOption, BackendMissing, BadBackend, UsageError)

# an OSError with one of these, escaping a command, is a path the user gave that cannot be used
_PATH_ERRNOS = {errno.ENOENT: "it, or its parent directory, does not exist",
                errno.ENOTDIR: "a part of it that should be a directory is a file",
                errno.EISDIR: "it is a directory; give a file path",
                errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                errno.EROFS: "the file system is read-only",
                errno.ENAMETOOLONG: "the name is too long"}


def one_line(exc: BaseException) -> str:
    """An error's message on one line: a usage error is one line on stderr, whatever the
    error's own layout (its fix on an indented line below)."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


class OutputClosed(UsageError):
    """Standard output was closed before everything was printed (``| head -1``)."""


JOBS_HELP = ("worker processes that recover and judge crash states (default: every core, "
             "{cores} here; 1 checks in this process)")


def jobs_option(text: str) -> int:
    """``--jobs N`` as argparse reads it: a whole number of at least 1, else a usage error
    (argparse names the option before the message)."""
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of worker processes: give 1 or more (1 checks crash "
            "states in this process; leave the option out for every core)")
    return jobs


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line: the usage block is one --help away
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(Exception(message))} "
                  f"(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="crashgate",
        description="Certify persistence backends and migration stage adapters against crashes, "
        "power loss, duplicate writers, lease expiry and version skew.",
        epilog="Exit codes: 0 certified, 1 a verdict failed, 2 unknown, 3 usage error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name + ".").startswith(exc.name + "."):
                continue  # a group not built yet is simply absent
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    with remembering_interrupts():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        code: int = args.func(args)
        raise_if_interrupted()   # a Ctrl-C that something swallowed still stops the run
        sys.stdout.flush()   # a closed pipe shows here, not in the interpreter's shutdown
    except USAGE_ERRORS as exc:
        if isinstance(exc, OutputClosed):
            _drop_stdout()
        return _usage(one_line(exc))
    except BrokenPipeError:
        # the reader went away (``| head -1``): what it read stands, the rest is dropped
        _drop_stdout()
        return _usage("standard output was closed before everything was printed (broken pipe)")
    except OSError as exc:
        if exc.errno not in _PATH_ERRNOS or exc.filename is None:
            raise
        why = _PATH_ERRNOS[exc.errno]
        parent = os.path.dirname(os.path.abspath(exc.filename))
        if exc.errno == errno.ENOENT and not os.path.isdir(parent):
            why = f"its directory {parent} does not exist; create it first"
        return _usage(f"cannot use {exc.filename}: {why} ({exc.strerror})")
    except KeyboardInterrupt:
        print("crashgate: interrupted", file=sys.stderr)
        return 130
    return code


def _usage(line: str) -> int:
    line = line.removeprefix("Error: ")   # "crashgate: Error: ..." says it twice
    with contextlib.suppress(OSError):   # stderr gone too: the exit code is all that is left
        print(f"crashgate: {line}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def _drop_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        return


if __name__ == "__main__":
    # run the imported module's main, not this __main__ copy: command modules import
    # crashgate.harness.cli, and its UsageError must be the one main catches
    from crashgate.harness.cli import main as _imported_main
    raise SystemExit(_imported_main())
