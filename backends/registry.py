"""Backend names and how they resolve, lazily, to factories.

A name is one of:

- a built-in name: ``memory``, ``json``, ``sqlite``, ``rvf``, ``rvlite``, ``stage0`` ...
  ``stage4`` (ADR-072's stage adapters), ``arch-phase1`` ... ``arch-phase4`` (ARCH-001's),
  ``agentdb`` and ``pattern-proxy`` (the pattern migration guide's source and dual-write
  proxy), ``pgvector`` and ``pg-stage1`` ... ``pg-stage3`` (ADR-0003's Postgres store and its
  SQLite -> Postgres stage adapters);
- ``package.module:factory``, a factory ``open(path, env, **options) -> store`` of your own;
- a name another package registers under the ``crashgate.backends`` entry-point group;
- ``proc:<command line>``, a store in a child process speaking ``backends/PROTOCOL.md``
  (``'proc:node my/driver.js?dimension=8'``: the options after the last ``?`` go to its
  ``open``, except ``timeout=``, the seconds per response, which is crashgate's);

optionally followed by options as a query string: ``sqlite?journal_mode=WAL&synchronous=NORMAL``.
Nothing is imported until a backend is opened, so a broken optional backend fails only when
someone selects it, and then loudly, with the install command.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, quote

from crashgate.backends.contract import Factory
from crashgate.backends.env import Env
from crashgate.backends.errors import (
    BackendMissing,
    BadBackend,
    DuplicateOption,
    UnknownBackend,
    close_matches_for,
)

__all__ = ["BUILTIN", "BUILTIN_NAMES", "ENTRY_POINT_GROUP", "PROC_PREFIX", "BackendSpec",
           "Builtin",
           "ResolvedName", "callables_in", "import_problem", "import_target", "known_in",
           "known_names", "label_of", "resolve", "resolve_name"]

ENTRY_POINT_GROUP = "crashgate.backends"
PROC_PREFIX = "proc:"
PROC_TARGET = "crashgate.harness.driver.client:open_proc"
"""What a ``proc:`` name opens: the client, bound to the name's command (``BackendSpec.factory``);
a string, so that the backends never import the harness."""


@dataclass(frozen=True)
class Builtin:
    """A name crashgate ships: what it imports, how to install it, one line about it."""

    target: str
    install: str
    summary: str


BUILTIN: dict[str, Builtin] = {
    "memory": Builtin("crashgate.reference.memory:open_memory", "pip install crashgate",
                      "in-memory key-value and vector store; promises no durability"),
    "json": Builtin("crashgate.reference.json_store:open_json", "pip install crashgate",
                    "ARCH-001's legacy JSON state files, one document per key"),
    "sqlite": Builtin("crashgate.reference.sqlite_store:open_sqlite", "pip install apsw",
                      "the real SQLite engine through apsw (journal_mode, synchronous)"),
    "rvf": Builtin("crashgate.reference.rvf.store:open_rvf", "pip install crashgate",
                   "append-only RVF segment file: vectors, key-value, witness chain"),
    "rvf-ruvector": Builtin("crashgate.reference.rvf_real.store:open_rvf_ruvector",
                            "pip install crashgate", "the layout the real @ruvector/rvf runtime "
                            "writes (rvf-ruvector/1): float32 vectors, metadata in META segments"),
    "pgvector": Builtin("crashgate.reference.postgres.store:open_pgvector",
                        "pip install 'crashgate[postgres]'",
                        "ADR-0003's Postgres + pgvector: crashgate starts its own server "
                        "(pgserver), or url= names one"),
    "rvlite": Builtin("crashgate.reference.rvlite:open_rvlite", "pip install crashgate",
                      "ADR-032's hybrid: vectors in RVF, metadata in an IndexedDB model"),
    **{f"stage{n}": Builtin(f"crashgate.reference.stages.factory:open_stage{n}",
                            "pip install crashgate", f"ADR-072 stage adapter, {what}")
       for n, what in enumerate((
           "stage 0: SQLite only",
           "stage 1: key-value in SQLite, vectors in RVF (ADR-065's hybrid)",
           "stage 2: dual-write, SQLite the source of truth, RVF the shadow",
           "stage 3: dual-write, RVF the source of truth, SQLite the fallback",
           "stage 4: RVF only, SQLite the read-only escape hatch"))},
    **{f"arch-phase{n}": Builtin(f"crashgate.reference.arch.factory:open_arch_phase{n}",
                                 "pip install apsw", f"ARCH-001 phase adapter, {what}")
       for n, what in enumerate((
           "phase 1: dual-write, JSON the primary, SQLite the shadow",
           "phase 2: reads from SQLite checked against JSON, fallbacks recorded",
           "phase 3: SQLite the primary, legacy JSON files imported",
           "phase 4: SQLite only, JSON state files archived"), start=1)},
    **{f"pg-stage{n}": Builtin(f"crashgate.reference.postgres.stages:open_pg_stage{n}",
                               "pip install 'crashgate[postgres]'",
                               f"ADR-0003 SQLite -> Postgres stage adapter, {what}")
       for n, what in enumerate((
           "stage 1: dual-write, SQLite the source of truth, Postgres the shadow (reads "
           "compared and counted)",
           "stage 2: dual-write, Postgres the source of truth, SQLite the fallback",
           "stage 3: Postgres only"), start=1)},
    "agentdb": Builtin("crashgate.reference.patterns.agentdb:open_agentdb", "pip install apsw",
                       "the guide's AgentDB pattern store: a SQLite patterns table, "
                       "brute-force search"),
    "pattern-proxy": Builtin("crashgate.reference.patterns.proxy:open_pattern_proxy",
                             "pip install apsw", "the guide's dual-write proxy: RVF the "
                             "primary, AgentDB the secondary, failures queued"),
    # the real npm packages, driven in a Node child process (harness/driver/rvf_driver.js);
    # crashgate installs the pinned versions with npm into its cache on first use
    "rvf-node": Builtin("crashgate.harness.driver.rvf_node:open_rvf_node",
                        "apt-get install nodejs npm",
                        "the real @ruvector/rvf-node engine (N-API) in a Node process, "
                        "version=0.2.3|0.1.8"),
    "rvf-sdk": Builtin("crashgate.harness.driver.rvf_node:open_rvf_sdk",
                       "apt-get install nodejs npm",
                       "the real @ruvector/rvf 0.2.3 SDK as applications use it (string ids, "
                       "its .idmap.json side file) in a Node process"),
}

BUILTIN_NAMES: tuple[str, ...] = tuple(BUILTIN)


def _entry_points(group: str = ENTRY_POINT_GROUP) -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=group)}


def known_in(builtin: Mapping[str, Builtin], group: str) -> list[str]:
    """The built-in names of one kind (backends, migrators) and its entry-point names, sorted."""
    if group == ENTRY_POINT_GROUP:   # through the one seam tests patch
        return sorted(set(builtin) | set(_entry_points()))
    return sorted(set(builtin) | set(_entry_points(group)))


def known_names() -> list[str]:
    """Built-in and entry-point backend names, sorted."""
    return known_in(BUILTIN, ENTRY_POINT_GROUP)


def label_of(name: str, options: tuple[tuple[str, str], ...]) -> str:
    """The canonical spelling of a name with options, e.g. ``sqlite?synchronous=FULL``."""
    if not options:
        return name + "?" if "?" in name else name   # a proc: command holding a "?"
    return f"{name}?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in options)


def import_problem(module_name: str, exc: ImportError) -> str:
    """Why ``module_name`` did not import, for a user: the module itself is missing (and whether
    the current directory, where a user's own module often sits, is on the import path), or the
    module was found and one of its own imports failed."""
    missing = exc.name or ""
    if missing and not (module_name + ".").startswith(missing + "."):
        return (f"module {module_name!r} was found, but its own import of {missing!r} failed: "
                f"{exc}")
    top = module_name.split(".")[0]
    cwd = os.getcwd()
    on_path = any(os.path.realpath(p or ".") == os.path.realpath(cwd) for p in sys.path)
    here = os.path.exists(os.path.join(cwd, top + ".py")) or os.path.isdir(os.path.join(cwd, top))
    if on_path:
        where = f"the current directory {cwd} is on the import path"
    elif here:
        where = (f"the current directory {cwd} holds {top!r} but is not on the import path "
                 "(run with PYTHONPATH=.)")
    else:
        where = (f"the current directory {cwd} is not on the import path (put the module's "
                 "directory on PYTHONPATH)")
    return f"no module named {missing or module_name!r} (the module is missing); {where}"


def import_target(target: str, *, missing: Callable[[ImportError], Exception],
                  unknown: Callable[[ModuleType], Exception],
                  broken: Callable[[Exception], Exception] | None = None) -> Any:
    """Import ``module:attr``; ``missing(exc)`` is raised when the module does not import,
    ``unknown(module)`` when it has no such attribute, ``broken(exc)`` when importing it raised
    anything else (by default a ``BadBackend`` naming the exception)."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise missing(exc) from exc
    except Exception as exc:  # noqa: BLE001 - a user's module may raise anything on import
        if broken is not None:
            raise broken(exc) from exc
        raise BadBackend(target, f"importing module {module_name!r} raised "
                         f"{type(exc).__name__}: {exc}",
                         "fix the module so that it imports") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise unknown(module) from None


def callables_in(module: object) -> list[str]:
    """The public callables of ``module``: the close matches for a misspelt attribute."""
    return [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]


@dataclass(frozen=True)
class ResolvedName:
    """A resolved name of any kind (backend, migrator): what to import, with which options,
    and how to install it. Importing is deferred."""

    name: str
    options: tuple[tuple[str, str], ...]
    target: str
    install: str

    @property
    def label(self) -> str:
        """The canonical spelling, e.g. ``sqlite?journal_mode=WAL&synchronous=FULL``."""
        return label_of(self.name, self.options)


@dataclass(frozen=True)
class BackendSpec(ResolvedName):
    """A resolved backend name."""

    @property
    def slug(self) -> str:
        """The label made safe for a directory name."""
        keep = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in self.label)
        return keep.strip("_") or "backend"

    def factory(self) -> Factory:
        """The factory, imported now: ``BackendMissing`` when its module does not import (with
        why), ``BadBackend`` when the module raises on import or lacks the named callable."""
        module_name, _, attr = self.target.partition(":")

        def missing(exc: ImportError) -> Exception:
            if self.name in BUILTIN:   # crashgate's own: the cause is an optional dependency
                return BackendMissing(self.name, self.install, cause=str(exc))
            return BackendMissing(self.name, self.install,
                                  cause=import_problem(module_name, exc))

        def unknown(module: ModuleType) -> Exception:
            hints = close_matches_for(attr, callables_in(module))
            hint = f"; did you mean {hints[0]!r}?" if hints else ""
            where = getattr(module, "__file__", None) or module_name
            return BadBackend(self.name, f"module {module_name!r} ({where}) was imported but "
                              f"has no attribute {attr!r} (the attribute is missing){hint}",
                              "name a factory open(path, env, **options) the module defines")

        found: Factory = import_target(self.target, missing=missing, unknown=unknown)
        if not callable(found):
            raise BadBackend(self.name, f"{self.target} is a {type(found).__name__}, not a "
                             "callable", "name a factory open(path, env, **options)")
        if self.name.startswith(PROC_PREFIX):   # open_proc(command, path, env, **options)
            bound: Factory = functools.partial(found, self.name[len(PROC_PREFIX):])
            return bound
        return found

    def open(self, path: str, env: Env, **extra: str) -> Any:
        """Open a store of this backend at ``path`` (extra options override the spec's)."""
        options = dict(self.options)
        options.update(extra)
        return self.factory()(path, env, **options)


def resolve_name(spec: str, *, builtin: Mapping[str, Builtin], group: str,
                 unknown: Callable[[str], Exception]
                 ) -> tuple[str, tuple[tuple[str, str], ...], str, str]:
    """The resolution every kind of name shares (backends, migrators): ``spec`` (a built-in
    name, ``module:attr`` or an entry-point name of ``group``, with optional ``?options``) as
    ``(name, options, target, install)``. ``unknown(text)`` is raised for a name that resolves
    to nothing."""
    text = spec.strip()
    name, _, query = text.partition("?")
    if not name:
        raise unknown(spec)
    options = _options(spec, name, query, unknown)
    if name in builtin:
        b = builtin[name]
        return name, options, b.target, b.install
    if ":" in name:
        module = name.partition(":")[0]
        return name, options, name, f"pip install {module.split('.')[0]}"
    eps = _entry_points() if group == ENTRY_POINT_GROUP else _entry_points(group)
    if name in eps:
        ep = eps[name]
        dist = ep.dist.name if ep.dist is not None else ep.module.split(".")[0]
        return name, options, ep.value, f"pip install {dist}"
    raise unknown(name)


def _options(spec: str, name: str, query: str, unknown: Callable[[str], Exception]
             ) -> tuple[tuple[str, str], ...]:
    """The options of a name's query string, each given once (``DuplicateOption``)."""
    try:
        options = tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise unknown(spec) from None
    seen: dict[str, list[str]] = {}
    for key, value in options:
        seen.setdefault(key, []).append(value)
    for key, values in seen.items():
        if len(values) > 1:
            raise DuplicateOption(name, key, values)
    return options


def _resolve_proc(spec: str) -> BackendSpec:
    """``proc:<command>[?options]``: options after the last ``?`` (a command holding a ``?``
    is followed by one: ``'proc:./drv --glob=a?b?'``)."""
    rest = spec.strip()[len(PROC_PREFIX):]
    command, _, query = rest.rpartition("?") if "?" in rest else (rest, "", "")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise BadBackend(spec, f"the command does not split like a shell line: {exc}",
                         "quote it as a POSIX shell would") from None
    if not argv:
        raise BadBackend(spec, "no command after 'proc:'",
                         "give the command that starts the driver, e.g. "
                         "'proc:node my/driver.js' (backends/PROTOCOL.md)")
    name = PROC_PREFIX + command.strip()
    options = _options(spec, name, query, lambda _: BadBackend(
        spec, f"the options {query!r} do not parse", "give them as key=value&key=value"))
    return BackendSpec(name, options, PROC_TARGET,
                       f"install {argv[0]!r} or put its directory on PATH")


def resolve(spec: str) -> BackendSpec:
    """Turn a backend name (with optional ``?options``) into a ``BackendSpec``.

    Raises ``UnknownBackend`` with close-match suggestions for a name that resolves to nothing.
    """
    if spec.strip().startswith(PROC_PREFIX):
        return _resolve_proc(spec)
    return BackendSpec(*resolve_name(spec, builtin=BUILTIN, group=ENTRY_POINT_GROUP,
                                     unknown=lambda name: UnknownBackend(name, known_names())))
