"""Issue 7, point 4: after a crash the harness recovers a store as ADR-032 says a user would
(waits a dead writer's lease out, or reads), so a store that keeps the lease rule exactly
certifies; a store that breaks it (``tests/defects_recovery.py``) is still caught."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crashgate.backends import LockHeld, resolve
from crashgate.harness.cli import main
from crashgate.harness.clock import VirtualClock
from crashgate.harness.powerloss import run_powerloss
from crashgate.harness.recovery import STALE_AFTER, reopen_after_crash
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.workload import PROFILES


def _rows(out: Path) -> list[dict[str, Any]]:
    [path] = out.glob("*/*/certificate.json")
    return list(json.loads(path.read_text())["rows"])


def test_a_dead_writers_fresh_lease_is_waited_out_on_the_virtual_clock() -> None:
    spec = resolve("faulty_backends:open_lease_kv")
    disk = SimDisk(DiskImage.empty("/data"))
    writer = spec.open("/data/store", sim_env(disk))
    writer.put("k", b"v")
    disk.crash()                                # the writer dies holding a fresh lease
    clock = VirtualClock()
    env = sim_env(disk, clock)
    with pytest.raises(LockHeld):
        spec.open("/data/store", env)
    reopened = reopen_after_crash(spec.open, "/data/store", env, writer.declaration)
    assert reopened.how == "writer after the stale interval" and not reopened.readonly
    assert clock.time() - VirtualClock().time() > STALE_AFTER
    assert reopened.store.get("k") == b"v"
    reopened.store.close()


def test_the_lease_store_passes_the_power_loss_row() -> None:
    report = run_powerloss(resolve("faulty_backends:open_lease_kv"), seed=3, ops=40,
                           budget=300, profile=PROFILES["small"])
    assert report.states_checked > 0
    assert not report.violations, report.first


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["faulty_backends:open_lease_kv",
                                     "rvlite?lease_recovery=stale"])
def test_stores_that_keep_the_lease_rule_certify(tmp_path: Path, capsys, backend: str) -> None:
    code = main(["certify", backend, "--budget", "standard", "--seed", "42", "--out",
                 str(tmp_path), "--quiet"])
    capsys.readouterr()
    rows = _rows(tmp_path)
    assert code == 0, [(r["key"], r["verdict"], r["summary"]) for r in rows]
    assert all(r["verdict"] in ("pass", "n/a") for r in rows)


def test_a_lease_that_never_goes_stale_is_still_caught(tmp_path: Path, capsys) -> None:
    code = main(["certify", "defects_recovery:open_lease_kv_never_stale", "--budget",
                 "standard", "--seed", "42", "--scenario", "adr032-6", "--out", str(tmp_path),
                 "--quiet"])
    capsys.readouterr()
    [row] = _rows(tmp_path)
    assert code == 1 and row["verdict"] == "fail", row
    assert "the lease stale" in row["summary"] and "LockHeld" in row["summary"], row
    assert row["reproduce"], row
