"""PowerLoss and ProcessCrash as thin handles on the crash-state runner."""

from __future__ import annotations

from crashgate.backends import resolve
from crashgate.harness.crashstates import CrashModel
from crashgate.harness.faults import PowerLoss, ProcessCrash


def test_process_crash_runs_only_process_crash_states() -> None:
    fault = ProcessCrash(budget=40)
    report = fault.run(resolve("json"), seed=2, ops=5)
    assert report.ok and report.states_checked > 0
    assert set(report.by_model) == {CrashModel.PROCESS.value}
    assert fault.fired and "crash states" in fault.fired[0]


def test_power_loss_runs_only_the_power_models() -> None:
    fault = PowerLoss((CrashModel.PREFIX, CrashModel.TORN), budget=60)
    report = fault.run(resolve("json"), seed=4, ops=6)
    assert report.ok and report.states_checked > 0
    assert set(report.by_model) <= {CrashModel.PREFIX.value, CrashModel.TORN.value}
    assert "prefix, torn" in fault.name
