"""Pattern migrators with one realistic defect each, for the pattern migration guide's rows to
catch (``crashgate certify rvf --pattern-migrator defects_patterns:NAME`` with
``PYTHONPATH=tests``). Each is crashgate's own ``agentdb-to-rvf`` with one thing done wrong:

- ``writes_in_dry_run`` records its plan in the journal even on a dry run (the dry-run row);
- ``success_after_failed_batch`` logs a failed batch and reports success (the crash row's
  I/O errors);
- ``progress_first`` keeps a resume point in its journal, written with care but BEFORE the
  batch it counts, and skips counted batches on a rerun: a crash between the two loses a
  batch for good (the crash row);
- ``rollback_leaves_target`` restores the source but removes only its journal, leaving the
  target and its side files (the rollback row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crashgate.backends import BATCH_DONE, BATCH_READ, Env
from crashgate.backends.pattern_migrator import RollbackResult
from crashgate.reference.patterns.migrate import AgentDbMigrator, same_pattern
from crashgate.reference.patterns.migrate_files import (
    journal_path,
    read_journal,
    restore_database,
    write_journal,
)


class _WritesInDryRun(AgentDbMigrator):
    def migrate(self, source: str, target: str, env: Env, **kw: Any) -> Any:
        if kw.get("dry_run"):
            write_journal(env, target, {"plan": "dry run", "source": source})
            try:
                return super().migrate(source, target, env, **kw)
            finally:
                env.fs.remove(journal_path(target))   # "cleaned up": the rename stays
        return super().migrate(source, target, env, **kw)


class _SuccessAfterFailedBatch(AgentDbMigrator):
    def _copy(self, *args: Any) -> tuple[int, int, list[str]]:
        migrated, skipped, errors = super()._copy(*args)
        for error in errors:
            print(f"warning: {error}")   # logged, and the run carries on as a success
        return migrated, skipped, []


class _ProgressFirst(AgentDbMigrator):
    def _copy(self, src: Any, target: str, env: Env, backend: str, ids: Sequence[int],
              batch_size: int, say: Any) -> tuple[int, int, list[str]]:
        journal = read_journal(env, target) or {}
        done = int(journal.get("done", 0))
        migrated = 0
        with self._target(target, env, backend, readonly=False) as tgt:
            for n in range(done, -(-len(ids) // batch_size)):
                chunk = ids[n * batch_size:(n + 1) * batch_size]
                records = src.fetch(chunk)
                have = {r.id: r for r in tgt.fetch(chunk)}
                todo = [r for r in records if not same_pattern(have.get(r.id), r)]
                env.failpoints.hit(BATCH_READ)
                write_journal(env, target, {**journal, "done": n + 1})   # before the batch
                tgt.upsert(todo)
                migrated += len(todo)
                env.failpoints.hit(BATCH_DONE)
        return migrated, len(ids) - migrated, []


class _RollbackLeavesTarget(AgentDbMigrator):
    def rollback(self, source: str, target: str, env: Env, **kw: Any) -> RollbackResult:
        journal = read_journal(env, target) or {}
        backup = journal.get("backup")
        if backup and env.fs.exists(backup):
            restore_database(env, backup, source)
        env.fs.remove(journal_path(target))
        return RollbackResult(backup, (journal_path(target),))


def writes_in_dry_run(**options: str) -> AgentDbMigrator:
    return _WritesInDryRun(**options)


def success_after_failed_batch(**options: str) -> AgentDbMigrator:
    return _SuccessAfterFailedBatch(**options)


def progress_first(**options: str) -> AgentDbMigrator:
    return _ProgressFirst(**options)


def rollback_leaves_target(**options: str) -> AgentDbMigrator:
    return _RollbackLeavesTarget(**options)
