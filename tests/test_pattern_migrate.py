"""crashgate's pattern migrator (``reference/patterns/migrate.py``) and the pattern migration
guide's rows: dry run, backup, failed batches, crashes and reruns, status, rollback; and the
defect migrators of ``defects_patterns`` each caught by its row."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from crashgate.backends import (
    PatternMigrationError,
    VectorRecord,
    os_env,
    resolve,
    resolve_pattern_migrator,
)
from crashgate.harness.clock import VirtualClock
from crashgate.harness.faults.ioerrors import IOErrors, count_mutating_ops
from crashgate.harness.patterns import generate_patterns
from crashgate.harness.simdisk import SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.procedures_patterns import check_dry_run, check_rerun, check_rollback
from crashgate.scenarios.procedures_patterns_common import (
    DIM,
    SOURCE,
    source_image,
    source_problems,
    target_problems,
)
from crashgate.scenarios.procedures_patterns_crash import check_crashes

TARGET = "/data/patterns.rvf"
RVF = resolve("rvf")


def migrator(name: str = "agentdb-to-rvf"):  # type: ignore[no-untyped-def]
    return resolve_pattern_migrator(name).load()


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (names, sizes, contents) and every directory."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.join(folder, d)] = "dir"
        for f in files:
            path = os.path.join(folder, f)
            out[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def test_dry_run_changes_no_file_of_a_real_directory(tmp_path: Path) -> None:
    src = tmp_path / "agentic-qe.db"
    store = resolve("agentdb").open(str(src), os_env())   # WAL mode: -wal/-shm on a reopen
    store.upsert(generate_patterns(50, DIM, 3))
    store.close()
    before = tree_digest(tmp_path)
    result = migrator().migrate(str(src), str(tmp_path / "patterns.rvf"), os_env(),
                                target_backend="rvf", batch_size=8, dry_run=True, dimension=DIM)
    assert result.ok and result.dry_run and result.total == 50 and result.batches == 7
    assert tree_digest(tmp_path) == before
    with pytest.raises(PatternMigrationError, match=r"pattern \d+ .*dimension 8, not 9"):
        migrator().migrate(str(src), str(tmp_path / "patterns.rvf"), os_env(),
                           target_backend="rvf", dry_run=True, dimension=DIM + 1)
    assert tree_digest(tmp_path) == before


def test_backup_holds_the_commits_in_the_sources_wal() -> None:
    base, patterns = source_image(5, 90)
    assert base.files.get(SOURCE + "-wal"), "the source's last commits must be in its WAL"
    disk = SimDisk(base)
    result = migrator().migrate(SOURCE, TARGET, sim_env(disk, VirtualClock()), batch_size=20,
                                dimension=DIM)
    assert result.ok and result.migrated == 90 and result.backup
    assert os.path.basename(result.backup).startswith("agentic-qe.backup-")
    image = disk.cache_image()
    assert result.backup + "-wal" not in image.files   # one file: opens without a WAL
    assert source_problems(image, result.backup, patterns) == []
    assert image.files[SOURCE] == base.files[SOURCE]   # the source was not written


def test_a_failed_batch_fails_the_migration_and_a_rerun_completes() -> None:
    base, patterns = source_image(6, 64)
    counting, counter = count_mutating_ops(sim_env(SimDisk(base), VirtualClock()))
    assert migrator().migrate(SOURCE, TARGET, counting, batch_size=8, dimension=DIM).ok
    # the 4th batch's first write: the target is open and 3 batches are in it
    writes = [op.index for op in counter.ops if op.kind == "write" and op.path == TARGET]
    at = writes[len(writes) // 2]
    disk = SimDisk(base)
    env = sim_env(disk, VirtualClock())
    fault = IOErrors("EIO", at=at)
    result = migrator().migrate(SOURCE, TARGET, fault.install(env), batch_size=8,
                                dimension=DIM)
    assert fault.fired, "the I/O error must hit the run"
    assert not result.ok and "batch" in result.errors[0] and "failed" in result.errors[0]
    assert target_problems(RVF, disk.cache_image(), TARGET, patterns) != []
    again = migrator().migrate(SOURCE, TARGET, env, batch_size=8, dimension=DIM)
    assert again.ok and again.migrated + again.skipped == 64 and again.migrated > 0
    assert target_problems(RVF, disk.cache_image(), TARGET, patterns) == []


def test_status_is_exact_and_a_rerun_writes_only_what_is_missing() -> None:
    base, patterns = source_image(7, 40)
    disk = SimDisk(base)
    env = sim_env(disk, VirtualClock())
    m = migrator()
    assert not m.status(SOURCE, TARGET, env).target_exists
    assert m.migrate(SOURCE, TARGET, env, batch_size=16, dimension=DIM).ok
    ids = [r.id for r in patterns]
    store = RVF.open(TARGET, env)
    store.remove(ids[:2])
    changed = patterns[5]
    store.upsert([VectorRecord(changed.id, changed.vector, {"name": "other"}),
                  VectorRecord.of(12345, [0.0] * DIM)])
    store.close()
    cov = m.status(SOURCE, TARGET, env)
    assert (cov.missing, cov.differing, cov.extra) == (tuple(sorted(ids[:2])),
                                                      (changed.id,), (12345,))
    assert not cov.complete and cov.source_count == 40 and cov.target_count == 39
    again = m.migrate(SOURCE, TARGET, env, batch_size=16, dimension=DIM)
    assert again.migrated == 3 and again.skipped == 37
    assert not again.ok   # the extra pattern is not the source's: the count says so
    store = RVF.open(TARGET, env)
    store.remove([12345])
    store.close()
    assert m.status(SOURCE, TARGET, env).complete


def test_a_target_the_journal_does_not_own_is_refused_and_kept() -> None:
    base, _ = source_image(8, 10)
    disk = SimDisk(base)
    env = sim_env(disk, VirtualClock())
    store = RVF.open(TARGET, env, dimension=str(DIM), metric="l2")
    store.upsert([VectorRecord.of(1, [1.0] * DIM)])
    store.close()
    before = disk.cache_image().files[TARGET]
    with pytest.raises(PatternMigrationError, match="no migration journal"):
        migrator().migrate(SOURCE, TARGET, env, dimension=DIM)
    with pytest.raises(PatternMigrationError, match="nothing to roll back"):
        migrator().rollback(SOURCE, TARGET, env)
    assert disk.cache_image().files[TARGET] == before


@pytest.mark.parametrize("check", [check_dry_run, check_rerun, check_rollback])
def test_the_rows_pass_for_crashgates_migrator_into_rvf(check) -> None:  # type: ignore[no-untyped-def]
    ev = check(RVF, migrator="agentdb-to-rvf", seed=11)
    assert ev.verdict is Verdict.PASS, ev


def test_crash_at_every_batch_boundary_and_mid_batch_then_rerun_is_exact() -> None:
    ev = check_crashes(RVF, migrator="agentdb-to-rvf", seed=12, records=300, batch_size=16,
                       process_states=60, power_states=20, io_errors=4)
    assert ev.verdict is Verdict.PASS, ev
    assert ev.measured["boundaries"] >= 300 // 16 and ev.measured["crashes"] >= 60


@pytest.mark.parametrize(("defect", "check"), [
    ("writes_in_dry_run", check_dry_run),
    ("success_after_failed_batch", check_crashes),
    ("progress_first", check_crashes),
    ("rollback_leaves_target", check_rollback),
])
def test_each_defect_migrator_is_caught_by_its_row(defect: str, check) -> None:  # type: ignore[no-untyped-def]
    ev = check(RVF, migrator=f"defects_patterns:{defect}", seed=7)
    assert ev.verdict is Verdict.FAIL and ev.conclusive, ev
