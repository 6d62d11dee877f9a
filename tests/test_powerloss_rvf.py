"""Issue 3's acceptance: ``crashgate powerloss rvf`` and ``rvlite`` check at least 1,000 crash
states each with zero violations, also with large batches (segments of several MiB) and many
deletes."""

from __future__ import annotations

import pytest

from crashgate.backends import resolve
from crashgate.harness.ops import Remove, Upsert
from crashgate.harness.powerloss import record_run, run_powerloss
from crashgate.harness.workload import PROFILES


@pytest.mark.parametrize("backend", ["rvf", "rvlite"])
def test_small_workload_thousand_states_clean(backend: str) -> None:
    report = run_powerloss(resolve(backend), seed=11, ops=250, budget=1500,
                           profile=PROFILES["small"])
    assert report.states_checked >= 1000
    assert not report.violations, report.first


def test_large_profile_writes_multi_mib_segments_and_many_deletes() -> None:
    # 44 ops, the acceptance run's length below: a dozen ops is too few to say "many" of
    rec = record_run(resolve("rvf"), 44, 5, PROFILES["large"])
    biggest = max(len(op.data) for op in rec.disk.trace if op.kind == "write")
    assert biggest >= 2 << 20, biggest
    removed = sum(len(op.ids) for op in rec.ops if isinstance(op, Remove))
    upserted = sum(len(op.records) for op in rec.ops if isinstance(op, Upsert))
    assert removed >= upserted // 10


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["rvf", "rvlite"])
def test_large_workload_thousand_states_clean(backend: str) -> None:
    report = run_powerloss(resolve(backend), seed=5, ops=44, budget=1300,
                           profile=PROFILES["large"])
    assert report.states_checked >= 1000, report.states_checked
    assert not report.violations, report.first
