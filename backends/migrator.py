"""The migrator contract: a tool that copies vector records from a source file into a store,
and the names that select one.

A migrator is a callable ``migrate(source, dest, env, *, batch_size, **options) ->
MigrationResult``. ``source`` is a JSON file in the ingest format (an array of ``{"id": int,
"vector": [float, ...], "metadata": {...}}``, one record per id); ``dest`` is the path a backend
opens. Every byte it reads or writes goes through ``env.fs`` (so a simulated disk can crash it
at any operation), and after each batch is done it calls ``env.failpoints.hit(BATCH_DONE)`` (so
a crash can be placed at every batch boundary; without the call, the harness takes its fsyncs
for boundaries). It must be rerunnable: a rerun after a crash finishes the job exactly once, and
a rerun of a finished job writes nothing (ADR-032 row 4: "No-op. No duplication. Exit code 0.").

Names resolve as backend names do (``backends.registry``): a built-in name (``rvf``, crashgate's
own ``crashgate rvf migrate``), ``package.module:callable``, or a name another package registers
under the ``crashgate.migrators`` entry-point group, each with optional ``?options``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from crashgate.backends.env import Env
from crashgate.backends.errors import BackendMissing, UnknownBackend, close_matches_for
from crashgate.backends.registry import (
    Builtin,
    ResolvedName,
    callables_in,
    import_target,
    known_in,
    resolve_name,
)

__all__ = ["BATCH_DONE", "DEFAULT_MIGRATOR", "MIGRATOR_GROUP", "MigrationResult", "Migrator",
           "MigratorMissing", "MigratorSpec", "UnknownMigrator", "known_migrators",
           "resolve_migrator"]

BATCH_DONE = "migrate.after-batch"
MIGRATOR_GROUP = "crashgate.migrators"
DEFAULT_MIGRATOR = "rvf"

BUILTIN_MIGRATORS: dict[str, Builtin] = {
    "rvf": Builtin("crashgate.reference.rvf_migrate:migrator", "pip install crashgate",
                   "crashgate rvf migrate: JSON or IndexedDB vectors into an RVF file"),
}


@dataclass(frozen=True)
class MigrationResult:
    """What one run of a migrator did: records ``read`` from the source, ``written`` to the
    destination by this run, ``skipped`` as already migrated; ``status`` is the exit status its
    command would return (0 done, a no-op rerun included; non-zero refused or failed, with
    ``message`` saying why)."""

    read: int
    written: int
    skipped: int
    status: int = 0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0


class Migrator(Protocol):
    def __call__(self, source: str, dest: str, env: Env, *, batch_size: int,
                 **options: str) -> MigrationResult: ...


class UnknownMigrator(UnknownBackend):
    """A migrator name that resolves to nothing, or a module without the named callable (a
    usage error: exit 3). One line, with close matches."""

    def __init__(self, name: str, known: Iterable[str], *, module: str | None = None) -> None:
        self.name = name
        known = sorted(known)
        hints = close_matches_for(name, known)
        hint = f" Did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
        if module is not None:
            text = f"migrator {module}:{name}: {module} has no callable {name!r}.{hint}"
        else:
            text = (f"unknown migrator {name!r}.{hint} Known migrators: "
                    f"{', '.join(known) or '(none)'}; or give 'package.module:callable', or "
                    f"install a package that registers one under '{MIGRATOR_GROUP}'.")
        Exception.__init__(self, text)   # not UnknownBackend's: that one speaks of backends


class MigratorMissing(BackendMissing):
    """A named migrator whose module does not import: fail loud with the install command."""

    def __init__(self, name: str, install: str, cause: str = "") -> None:
        self.name, self.install = name, install
        why = f" ({cause})" if cause else ""
        Exception.__init__(self, f"migrator {name!r} cannot be imported{why}. Run: {install}")


def known_migrators() -> list[str]:
    """Built-in and entry-point migrator names, sorted."""
    return known_in(BUILTIN_MIGRATORS, MIGRATOR_GROUP)


@dataclass(frozen=True)
class MigratorSpec(ResolvedName):
    """A resolved migrator name; importing is deferred to ``load``."""

    @property
    def is_default(self) -> bool:
        return self.target == BUILTIN_MIGRATORS[DEFAULT_MIGRATOR].target

    def load(self) -> Migrator:
        """The callable; ``MigratorMissing`` when its module does not import, ``UnknownMigrator``
        (the module's callables as close matches) when the module lacks it."""
        module_name, _, attr = self.target.partition(":")

        def unknown(module: object) -> Exception:
            return UnknownMigrator(attr, callables_in(module), module=module_name)

        found: Migrator = import_target(
            self.target, missing=lambda exc: MigratorMissing(self.name, self.install, str(exc)),
            unknown=unknown)
        if not callable(found):
            raise UnknownMigrator(attr, [], module=module_name)
        return found

    def run(self, source: str, dest: str, env: Env, *, batch_size: int) -> MigrationResult:
        """One run of the migrator with this spec's options."""
        return self.load()(source, dest, env, batch_size=batch_size, **dict(self.options))


def resolve_migrator(spec: str) -> MigratorSpec:
    """Turn a migrator name (with optional ``?options``) into a ``MigratorSpec``; raises
    ``UnknownMigrator`` with close matches for a name that resolves to nothing."""
    return MigratorSpec(*resolve_name(
        spec, builtin=BUILTIN_MIGRATORS, group=MIGRATOR_GROUP,
        unknown=lambda name: UnknownMigrator(name, known_migrators())))
