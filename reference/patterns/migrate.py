"""crashgate's pattern migrator, ``agentdb-to-rvf``: an AgentDB pattern file into a vector store
(the pattern migration guide's ``PatternMigrator``; the contract is
``backends.pattern_migrator``).

**What comes through.** Every pattern as it is: its id, its embedding and its metadata (the
guide's fields and any other key), unchanged. The guide's transformations (content built from
template and examples, quality score as ``coverage``, a ``verdict`` from the success rate) are
not applied: they would change the pattern's own fields, and a migration that changes what it
moves cannot be checked against its source. A reader that wants them derives them from the
fields, which are all there. Embeddings are never generated: a pattern whose embedding is not
of ``dimension`` floats is an error naming it.

**How.** The source is opened read-only and read in batches by id, twice: first every pattern
is checked (the dry run stops there, having written nothing anywhere: no journal, no backup,
no target, and the target is not opened); then, after the journal (``migrate_files``) and the
backup, each batch is compared with what the target holds and what differs is written in one
``upsert`` (one atomic batch in a store that declares ``batch``). A rerun, after a crash or
after success, therefore writes only what is missing or different: nothing is duplicated
(upserts are by id) and nothing is left out. A batch that fails stops the migration, which
returns its error (never a success); the target then holds whole batches only.

**What it refuses.** A target that exists without this migration's journal (another store's
file is never written into, and a rollback could not tell what to remove), a journal of
another source, a batch size or dimension below 1, the source as its own target.

The factory ``agentdb_to_rvf(source_backend="agentdb")`` is the built-in name's target; the
option names the backend that reads the source (any vector store with ``ids()``).
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from crashgate.backends import (
    BadOption,
    Env,
    VectorRecord,
    resolve,
)
from crashgate.backends.pattern_migrator import (
    BATCH_DONE,
    BATCH_READ,
    DEFAULT_TARGET_BACKEND,
    Coverage,
    PatternMigrationError,
    PatternMigrationResult,
    Progress,
    RollbackResult,
)
from crashgate.reference.patterns.migrate_files import (
    backup_database,
    backup_path_for,
    foreign_paths,
    journal_path,
    owned_paths,
    read_journal,
    restore_database,
    write_journal,
)
from crashgate.reference.patterns.migrate_overlay import MemoryOverlay

__all__ = ["BATCH_SIZE", "DIMENSION", "TOLERANCE", "AgentDbMigrator", "agentdb_to_rvf",
           "same_pattern"]

BATCH_SIZE = 1000
DIMENSION = 384
TOLERANCE = 1e-6
MIGRATOR = "agentdb-to-rvf"


def same_pattern(a: VectorRecord | None, b: VectorRecord) -> bool:
    """Whether ``a`` holds ``b``: equal ids and metadata, vectors within ``TOLERANCE``."""
    return (a is not None and a.id == b.id and len(a.vector) == len(b.vector)
            and dict(a.metadata) == dict(b.metadata)
            and all(abs(x - y) <= TOLERANCE for x, y in zip(a.vector, b.vector, strict=True)))


def _chunks(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


class AgentDbMigrator:
    """``PatternMigrator`` (module docstring)."""

    def __init__(self, source_backend: str = "agentdb") -> None:
        self.source_backend = source_backend

    # -- opening ---------------------------------------------------------------------------------

    @contextmanager
    def _source(self, source: str, env: Env, *, overlay: bool = False) -> Iterator[Any]:
        """The source, opened read-only; ``overlay``: through ``MemoryOverlay``, so that not
        even the open writes a byte (a WAL file's ``-wal``, ``-shm``)."""
        if not env.fs.exists(source):
            raise PatternMigrationError(f"--source {source}: no such file; give the AgentDB "
                                        "pattern database (e.g. ./data/agentic-qe.db)")
        if overlay:
            env = dataclasses.replace(env, fs=MemoryOverlay(env.fs))
        store = resolve(self.source_backend).open(source, env, readonly="true")
        try:
            yield store
        finally:
            store.close()

    @contextmanager
    def _target(self, target: str, env: Env, backend: str, *, readonly: bool
                ) -> Iterator[Any]:
        spec = resolve(backend)
        if readonly:
            try:
                store = spec.open(target, env, readonly="true")
            except BadOption as exc:   # a backend without the option: a plain open
                if exc.option != "readonly":
                    raise
                store = spec.open(target, env)
        else:
            store = spec.open(target, env)
        try:
            yield store
        finally:
            store.close()

    @staticmethod
    def _checks(source: str, target: str, batch_size: int, dimension: int) -> None:
        if batch_size < 1:
            raise PatternMigrationError(f"--batch-size {batch_size}: give 1 or more patterns "
                                        "per batch (the guide suggests 100 to 10000)")
        if dimension < 1:
            raise PatternMigrationError(f"--dimension {dimension}: give the embeddings' "
                                        "dimension, 1 or more (default 384)")
        if posixpath.normpath(source) == posixpath.normpath(target):
            raise PatternMigrationError(f"--target {target} is the source; give a new path")

    @staticmethod
    def _validate(src: Any, ids: Sequence[int], batch_size: int, dimension: int) -> None:
        for chunk in _chunks(ids, batch_size):
            got = {r.id: r for r in src.fetch(chunk)}
            for pid in chunk:
                rec = got.get(pid)
                if rec is None:
                    raise PatternMigrationError(f"pattern {pid} is listed by the source but "
                                                "cannot be read; is a writer changing it? "
                                                "run the migration again")
                if len(rec.vector) != dimension:
                    raise PatternMigrationError(
                        f"pattern {pid} ({rec.metadata.get('name', 'unnamed')!s}) has an "
                        f"embedding of dimension {len(rec.vector)}, not {dimension}; give "
                        f"--dimension {len(rec.vector)} if that is the model's, or fix the "
                        "pattern (nothing was written)")
                if not all(map(math.isfinite, rec.vector)):
                    raise PatternMigrationError(f"pattern {pid}: its embedding holds a value "
                                                "that is not a finite number (nothing was "
                                                "written)")

    # -- the contract ------------------------------------------------------------------------------

    def migrate(self, source: str, target: str, env: Env, *,
                target_backend: str = DEFAULT_TARGET_BACKEND, batch_size: int = BATCH_SIZE,
                dry_run: bool = False, backup: bool = True, dimension: int = DIMENSION,
                progress: Progress | None = None) -> PatternMigrationResult:
        say = progress or (lambda _line: None)
        t0 = env.clock.monotonic()
        self._checks(source, target, batch_size, dimension)
        resolve(target_backend)   # an unknown name fails before anything is read
        with self._source(source, env, overlay=True) as src:
            ids = sorted(src.ids())
            self._validate(src, ids, batch_size, dimension)
        batches = -(-len(ids) // batch_size)
        journal = read_journal(env, target)
        if journal is None and (foreign := foreign_paths(env, target)):
            raise PatternMigrationError(
                f"--target {target}: {foreign[0]} exists and no migration journal "
                f"({journal_path(target)}) says this migration made it; it is never "
                "written into or removed: give a new --target, or move it away")
        if journal is not None and journal.get("source") != posixpath.abspath(source):
            raise PatternMigrationError(
                f"--target {target} was migrated from {journal.get('source')}, not "
                f"{posixpath.abspath(source)}; roll that migration back first or give "
                "another --target")
        if dry_run:
            say(f"dry run: {len(ids)} patterns of dimension {dimension} checked; would "
                f"migrate them in {batches} batches into {target} ({target_backend})")
            return PatternMigrationResult(len(ids), 0, 0, batches,
                                          env.clock.monotonic() - t0, dry_run=True)
        if journal is None:
            journal = {"migrator": MIGRATOR, "source": posixpath.abspath(source),
                       "target": target, "target_backend": target_backend,
                       "backup": backup_path_for(source, env.clock.time()) if backup
                       else None, "batch_size": batch_size, "state": "migrating"}
            write_journal(env, target, journal)
        backup_path = journal.get("backup")
        if backup_path and not env.fs.exists(backup_path):
            # with the source closed: a reader of a WAL file on the simulated disk holds it
            # in EXCLUSIVE locking mode
            say(f"backing up {source} to {backup_path}")
            backup_database(env, source, backup_path)
        with self._source(source, env) as src:
            migrated, skipped, errors = self._copy(src, target, env, target_backend, ids,
                                                   batch_size, say)
        if not errors and journal.get("state") != "complete":
            write_journal(env, target, {**journal, "state": "complete",
                                        "patterns": len(ids)})
        return PatternMigrationResult(len(ids), migrated, skipped, batches,
                                      env.clock.monotonic() - t0, tuple(errors),
                                      backup_path, dry_run=False)

    def _copy(self, src: Any, target: str, env: Env, backend: str, ids: Sequence[int],
              batch_size: int, say: Progress) -> tuple[int, int, list[str]]:
        migrated = skipped = 0
        errors: list[str] = []
        batches = -(-len(ids) // batch_size)
        with self._target(target, env, backend, readonly=False) as tgt:
            for n, chunk in enumerate(_chunks(ids, batch_size), 1):
                records = src.fetch(chunk)
                have = {r.id: r for r in tgt.fetch(chunk)}
                todo = [r for r in records if not same_pattern(have.get(r.id), r)]
                env.failpoints.hit(BATCH_READ)
                if todo:
                    try:
                        tgt.upsert(todo)
                    except Exception as exc:  # noqa: BLE001 - any failure fails the batch
                        errors.append(f"batch {n} of {batches} (patterns {chunk[0]}.."
                                      f"{chunk[-1]}) failed: {type(exc).__name__}: {exc}; "
                                      f"{migrated} patterns written before it; run the "
                                      "migration again to finish it")
                        break
                migrated += len(todo)
                skipped += len(records) - len(todo)
                env.failpoints.hit(BATCH_DONE)
                say(f"batch {n}/{batches}: {migrated} migrated, {skipped} already there")
            if not errors and (count := tgt.count()) != len(ids):
                errors.append(f"the target holds {count} patterns after the migration, the "
                              f"source {len(ids)}: see crashgate patterns status")
        return migrated, skipped, errors

    def status(self, source: str, target: str, env: Env, *,
               target_backend: str = DEFAULT_TARGET_BACKEND) -> Coverage:
        with self._source(source, env, overlay=True) as src:
            ids = sorted(src.ids())
            if not env.fs.exists(target):
                return Coverage(len(ids), 0, tuple(ids), target_exists=False)
            with self._target(target, env, target_backend, readonly=True) as tgt:
                missing: list[int] = []
                differing: list[int] = []
                for chunk in _chunks(ids, BATCH_SIZE):
                    have = {r.id: r for r in tgt.fetch(chunk)}
                    for rec in src.fetch(chunk):
                        if rec.id not in have:
                            missing.append(rec.id)
                        elif not same_pattern(have[rec.id], rec):
                            differing.append(rec.id)
                wanted = set(ids)
                listed = getattr(tgt, "ids", None)
                extra = sorted(i for i in listed() if i not in wanted) if listed else []
                return Coverage(len(ids), tgt.count(), tuple(missing), tuple(extra),
                                tuple(differing))

    def rollback(self, source: str, target: str, env: Env, *,
                 target_backend: str = DEFAULT_TARGET_BACKEND) -> RollbackResult:
        journal = read_journal(env, target)
        if journal is None:
            raise PatternMigrationError(
                f"--target {target}: no migration journal ({journal_path(target)}), so "
                "nothing to roll back: a target without one was not written by this migrator "
                "(or its rollback already finished)")
        if journal.get("source") != posixpath.abspath(source):
            raise PatternMigrationError(f"--target {target} was migrated from "
                                        f"{journal.get('source')}, not {source}; give that "
                                        "--source")
        backup = journal.get("backup")
        restored = None
        if backup and env.fs.exists(backup):
            restore_database(env, backup, source)
            restored = backup
        elif backup and env.fs.exists(target):
            # the backup comes before the first write to the target: it existed, and is gone
            return RollbackResult(None, (), (f"the backup {backup} is gone: the source cannot "
                                             "be restored; nothing was removed",))
        removed: list[str] = []
        paths = owned_paths(env, target)
        for path in paths:
            if path == journal_path(target):   # last: until it goes, a rerun finishes this
                for folder in sorted({posixpath.dirname(p) or "." for p in removed}):
                    env.fs.sync_dir(folder)
            env.fs.remove(path)
            removed.append(path)
        env.fs.sync_dir(posixpath.dirname(target) or ".")
        return RollbackResult(restored, tuple(removed))


def agentdb_to_rvf(**options: str) -> AgentDbMigrator:
    """The built-in ``agentdb-to-rvf``; ``source_backend`` (default ``agentdb``) reads the
    source. An unknown option is a usage error naming it."""
    unknown = sorted(set(options) - {"source_backend"})
    if unknown:
        raise BadOption(MIGRATOR, unknown[0], options[unknown[0]],
                        known_options=["source_backend"])
    return AgentDbMigrator(**options)
