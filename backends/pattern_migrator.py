"""The pattern migrator contract: a tool that moves test patterns from an AgentDB pattern file
(the ``agentdb`` backend, SQLite) into a vector store, checks how far it got, and undoes it (the
pattern migration guide's ``migrate-patterns.ts``: migrate, ``--status``, ``--rollback``).

A pattern migrator is an object with three methods (``PatternMigrator``):

- ``migrate(source, target, env, *, target_backend, batch_size, dry_run, backup, dimension,
  progress) -> PatternMigrationResult``. ``source`` is an agentdb file, ``target`` the path
  that ``target_backend`` (a backend name, ``rvf`` by default) opens. A dry run writes nothing
  anywhere; otherwise a backup of the source is made first (unless ``backup`` is False) and
  the patterns go in batches of ``batch_size``, each one atomic upsert. A failed batch is a
  failed migration (``errors`` non-empty: ``ok`` is False), never a success; a rerun, also
  after a crash anywhere, ends with exactly the source's patterns in the target.
- ``status(source, target, env, *, target_backend) -> Coverage``: exact coverage (counts and
  the ids missing, extra or differing), not a threshold. Reads only.
- ``rollback(source, target, env, *, target_backend) -> RollbackResult``: the source restored
  from the backup, and what the migration wrote (the target, its side files, its journal)
  removed.

Every byte goes through ``env.fs``, and a migrator hits ``env.failpoints`` at each batch
boundary (``BATCH_DONE``, ADR-032's name) and before each batch's write (``BATCH_READ``), so a
crash can be placed there; the harness also crashes it after every disk operation.

Names resolve as migrator names do (``backends.migrator``, through ``backends.registry``): the
built-in ``agentdb-to-rvf``, ``package.module:callable``, or a name registered under the
``crashgate.pattern_migrators`` entry-point group, with optional ``?options``. The callable is
a factory: ``callable(**options) -> PatternMigrator``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from crashgate.backends.env import Env
from crashgate.backends.errors import CrashgateError
from crashgate.backends.migrator import BATCH_DONE, MigratorMissing, UnknownMigrator
from crashgate.backends.registry import (
    Builtin,
    ResolvedName,
    callables_in,
    import_target,
    known_in,
    resolve_name,
)

__all__ = ["BATCH_DONE", "BATCH_READ", "Coverage", "DEFAULT_PATTERN_MIGRATOR",
           "DEFAULT_TARGET_BACKEND", "PATTERN_MIGRATOR_GROUP", "PatternMigrationError",
           "PatternMigrationResult", "PatternMigrator", "PatternMigratorSpec", "RollbackResult",
           "known_pattern_migrators", "resolve_pattern_migrator"]

BATCH_READ = "patterns.migrate.batch-read"
"""Hit after a batch was read from the source, before anything of it is written."""
PATTERN_MIGRATOR_GROUP = "crashgate.pattern_migrators"
DEFAULT_PATTERN_MIGRATOR = "agentdb-to-rvf"
DEFAULT_TARGET_BACKEND = "rvf"

BUILTIN_PATTERN_MIGRATORS: dict[str, Builtin] = {
    "agentdb-to-rvf": Builtin("crashgate.reference.patterns.migrate:agentdb_to_rvf",
                              "pip install crashgate",
                              "crashgate patterns migrate: an AgentDB pattern file into a "
                              "vector store (RVF by default)"),
}

Progress = Callable[[str], None]


class PatternMigrationError(CrashgateError):
    """The migration cannot go ahead as asked (a bad source, a foreign target, a pattern of
    another dimension): nothing was written. The message names what and the fix."""


@dataclass(frozen=True)
class PatternMigrationResult:
    """One run: ``total`` patterns in the source, ``migrated`` written by this run,
    ``skipped`` already in the target as they are in the source, in ``batches`` batches,
    ``duration`` seconds on the env's clock; ``errors`` (empty: success); ``backup`` the
    backup's path (None: none made, e.g. a dry run or ``backup=False``)."""

    total: int
    migrated: int
    skipped: int
    batches: int
    duration: float
    errors: tuple[str, ...] = ()
    backup: str | None = None
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class Coverage:
    """How the target holds the source's patterns, exactly: ids ``missing`` from the target,
    ``extra`` in it (not in the source), ``differing`` (vector beyond the tolerance, or
    metadata not equal). Ids sorted."""

    source_count: int
    target_count: int
    missing: tuple[int, ...] = ()
    extra: tuple[int, ...] = ()
    differing: tuple[int, ...] = ()
    target_exists: bool = True

    @property
    def complete(self) -> bool:
        return (self.target_exists and not (self.missing or self.extra or self.differing)
                and self.source_count == self.target_count)

    def lines(self) -> list[str]:
        def ids(xs: tuple[int, ...]) -> str:
            more = f" and {len(xs) - 10} more" if len(xs) > 10 else ""
            return f"{len(xs)}" + (f" (ids {list(xs[:10])}{more})" if xs else "")
        if not self.target_exists:
            return [f"source patterns: {self.source_count}", "target: none (not migrated)",
                    "coverage: incomplete"]
        return [f"source patterns: {self.source_count}", f"target patterns: {self.target_count}",
                f"missing from the target: {ids(self.missing)}",
                f"extra in the target: {ids(self.extra)}",
                f"differing: {ids(self.differing)}",
                f"coverage: {'complete' if self.complete else 'incomplete'}"]


@dataclass(frozen=True)
class RollbackResult:
    """What a rollback did: the backup the source was restored from (None: there was none),
    the paths it removed, and ``errors`` (empty: done)."""

    restored_from: str | None
    removed: tuple[str, ...]
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


class PatternMigrator(Protocol):
    def migrate(self, source: str, target: str, env: Env, *, target_backend: str,
                batch_size: int, dry_run: bool = False, backup: bool = True,
                dimension: int = 384, progress: Progress | None = None
                ) -> PatternMigrationResult: ...

    def status(self, source: str, target: str, env: Env, *, target_backend: str
               ) -> Coverage: ...

    def rollback(self, source: str, target: str, env: Env, *, target_backend: str
                 ) -> RollbackResult: ...


def known_pattern_migrators() -> list[str]:
    """Built-in and entry-point pattern migrator names, sorted."""
    return known_in(BUILTIN_PATTERN_MIGRATORS, PATTERN_MIGRATOR_GROUP)


class _Unknown(UnknownMigrator):
    """An unknown pattern migrator name: ``UnknownMigrator``'s one line, its group named."""

    def __init__(self, name: str, known: Iterable[str], *, module: str | None = None) -> None:
        super().__init__(name, known, module=module)
        text = str(self).replace("migrator", "pattern migrator", 1).replace(
            "crashgate.migrators", PATTERN_MIGRATOR_GROUP)
        Exception.__init__(self, text)


@dataclass(frozen=True)
class PatternMigratorSpec(ResolvedName):
    """A resolved pattern migrator name; importing is deferred to ``load``."""

    @property
    def is_default(self) -> bool:
        return self.target == BUILTIN_PATTERN_MIGRATORS[DEFAULT_PATTERN_MIGRATOR].target

    def load(self) -> PatternMigrator:
        """The migrator, made by its factory with this spec's options: ``MigratorMissing``
        when its module does not import, the unknown-name error (with the module's callables
        as close matches) when it lacks the callable."""
        module_name, _, attr = self.target.partition(":")
        factory = import_target(
            self.target, missing=lambda exc: MigratorMissing(self.name, self.install, str(exc)),
            unknown=lambda module: _Unknown(attr, callables_in(module), module=module_name))
        if not callable(factory):
            raise _Unknown(attr, [], module=module_name)
        made = factory(**dict(self.options))
        lacking = [m for m in ("migrate", "status", "rollback")
                   if not callable(getattr(made, m, None))]
        if lacking:
            raise PatternMigrationError(
                f"pattern migrator {self.label}: {self.target}(**options) returned a "
                f"{type(made).__name__} without {', '.join(lacking)}; a pattern migrator "
                "factory returns an object with migrate, status and rollback "
                "(crashgate.backends.pattern_migrator)")
        return made


def resolve_pattern_migrator(spec: str) -> PatternMigratorSpec:
    """Turn a pattern migrator name (with optional ``?options``) into a spec; an unknown name
    is a one-line error with close matches."""
    return PatternMigratorSpec(*resolve_name(
        spec, builtin=BUILTIN_PATTERN_MIGRATORS, group=PATTERN_MIGRATOR_GROUP,
        unknown=lambda name: _Unknown(name, known_pattern_migrators())))
