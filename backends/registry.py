"""Backend names and how they resolve, lazily, to factories.

A name is one of:

- a built-in name: ``memory``, ``json``, ``sqlite``, ``rvf``, ``rvlite``;
- ``package.module:factory``, a factory ``open(path, env, **options) -> store`` of your own;
- a name another package registers under the ``crashgate.backends`` entry-point group;

optionally followed by options as a query string: ``sqlite?journal_mode=WAL&synchronous=NORMAL``.
Nothing is imported until a backend is opened, so a broken optional backend fails only when
someone selects it, and then loudly, with the install command.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from crashgate.backends.contract import Factory
from crashgate.backends.env import Env
from crashgate.backends.errors import BackendMissing, UnknownBackend

__all__ = ["BUILTIN", "BUILTIN_NAMES", "ENTRY_POINT_GROUP", "BackendSpec", "known_names", "resolve"]

ENTRY_POINT_GROUP = "crashgate.backends"


@dataclass(frozen=True)
class _Builtin:
    target: str
    install: str
    summary: str


BUILTIN: dict[str, _Builtin] = {
    "memory": _Builtin("crashgate.reference.memory:open_memory", "pip install crashgate",
                       "in-memory key-value and vector store; promises no durability"),
    "json": _Builtin("crashgate.reference.json_store:open_json", "pip install crashgate",
                     "ARCH-001's legacy JSON state files, one document per key"),
    "sqlite": _Builtin("crashgate.reference.sqlite_store:open_sqlite", "pip install apsw",
                       "the real SQLite engine through apsw (journal_mode, synchronous)"),
    "rvf": _Builtin("crashgate.reference.rvf.store:open_rvf", "pip install crashgate",
                    "append-only RVF segment file: vectors, key-value, witness chain"),
    "rvlite": _Builtin("crashgate.reference.rvlite:open_rvlite", "pip install crashgate",
                       "ADR-032's hybrid: vectors in RVF, metadata in an IndexedDB model"),
}

BUILTIN_NAMES: tuple[str, ...] = tuple(BUILTIN)


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def known_names() -> list[str]:
    """Built-in and entry-point names, sorted."""
    return sorted(set(BUILTIN) | set(_entry_points()))


@dataclass(frozen=True)
class BackendSpec:
    """A resolved backend name: what to import and with which options. Importing is deferred."""

    name: str
    options: tuple[tuple[str, str], ...]
    target: str
    install: str

    @property
    def label(self) -> str:
        """The canonical spelling, e.g. ``sqlite?journal_mode=WAL&synchronous=FULL``."""
        if not self.options:
            return self.name
        query = "&".join(f"{quote(k)}={quote(v)}" for k, v in self.options)
        return f"{self.name}?{query}"

    @property
    def slug(self) -> str:
        """The label made safe for a directory name."""
        keep = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in self.label)
        return keep.strip("_") or "backend"

    def factory(self) -> Factory:
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise BackendMissing(self.name, self.install, cause=str(exc)) from exc
        try:
            found: Factory = getattr(module, attr)
        except AttributeError:
            raise UnknownBackend(self.target, known_names()) from None
        return found

    def open(self, path: str, env: Env, **extra: str) -> Any:
        """Open a store of this backend at ``path`` (extra options override the spec's)."""
        options = dict(self.options)
        options.update(extra)
        return self.factory()(path, env, **options)


def resolve(spec: str) -> BackendSpec:
    """Turn a backend name (with optional ``?options``) into a ``BackendSpec``.

    Raises ``UnknownBackend`` with close-match suggestions for a name that resolves to nothing.
    """
    text = spec.strip()
    name, _, query = text.partition("?")
    if not name:
        raise UnknownBackend(spec, known_names())
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise UnknownBackend(spec, known_names()) from None
    options = tuple(pairs)
    if name in BUILTIN:
        b = BUILTIN[name]
        return BackendSpec(name, options, b.target, b.install)
    if ":" in name:
        module = name.partition(":")[0]
        return BackendSpec(name, options, name, f"pip install {module.split('.')[0]}")
    eps = _entry_points()
    if name in eps:
        ep = eps[name]
        dist = ep.dist.name if ep.dist is not None else ep.module.split(".")[0]
        return BackendSpec(name, options, ep.value, f"pip install {dist}")
    raise UnknownBackend(name, known_names())
