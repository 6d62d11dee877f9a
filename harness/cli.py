"""The ``crashgate`` command.

Command groups live in their own modules and are loaded by import path, so a group whose
dependencies are broken fails only when it is used. A module named here exposes
``add_parser(subparsers)``, which adds its sub-command(s) and sets ``func(args) -> int`` on them.

Exit codes are a contract: 0 certified / no violation, 1 a verdict failed, 2 unknown,
3 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from crashgate.backends import (
    BackendMissing,
    BadOption,
    CrashgateError,
    UnknownBackend,
)

__all__ = ["EXIT_FAIL", "EXIT_OK", "EXIT_UNKNOWN", "EXIT_USAGE", "main"]

EXIT_OK, EXIT_FAIL, EXIT_UNKNOWN, EXIT_USAGE = 0, 1, 2, 3

COMMAND_MODULES: tuple[str, ...] = (
    "crashgate.harness.cli_backends",
    "crashgate.harness.cli_powerloss",
    "crashgate.scenarios.cli",
    "crashgate.reference.rvf.cli",
    "crashgate.reference.rvlite_cli",
)


class UsageError(CrashgateError):
    """Bad input on the command line (exit 3)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


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
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.func(args)
    except (UnknownBackend, BadOption, BackendMissing, UsageError) as exc:
        print(f"crashgate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("crashgate: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
