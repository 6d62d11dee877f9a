"""``crashgate backends``: the backends crashgate knows, with what each declares."""

from __future__ import annotations

import argparse

from crashgate.backends import BackendMissing, known_names, resolve
from crashgate.backends.errors import BadBackend
from crashgate.backends.registry import BUILTIN
from crashgate.harness.certify import probe_declaration

__all__ = ["add_parser"]


def _describe(name: str, *, named: bool) -> tuple[str, str, str]:
    """One row. A backend the user named that does not work is a usage error (raised); one of
    the listed known names is shown as unavailable: only selecting it must fail loud."""
    spec = resolve(name)
    try:
        decl = probe_declaration(spec)
    except BackendMissing as exc:
        return name, "unavailable", str(exc).splitlines()[0]
    except BadBackend as exc:
        if named:
            raise
        return name, "unavailable", str(exc).splitlines()[0]
    caps = ", ".join(sorted(c.value for c in decl.capabilities))
    return name, decl.durability.value, caps


def run(args: argparse.Namespace) -> int:
    rows = [_describe(n, named=bool(args.names)) for n in (args.names or known_names())]
    width = max(len(r[0]) for r in rows)
    print(f"{'backend':<{width}}  {'durability':<13}  capabilities")
    for name, durability, caps in rows:
        print(f"{name:<{width}}  {durability:<13}  {caps}")
        if name in BUILTIN and not args.names:
            print(f"{'':<{width}}  {'':<13}  ({BUILTIN[name].summary})")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("backends", help="list the backends and what each declares",
                       description="List the known backends with the durability and the "
                       "capabilities each declares (with its default options).")
    p.add_argument("names", nargs="*", help="backend names with options, e.g. "
                   "'sqlite?synchronous=OFF', or 'proc:<command>' for a store in a child "
                   "process speaking backends/PROTOCOL.md (default: every known backend)")
    p.set_defaults(func=run)
