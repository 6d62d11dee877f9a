"""Row 6 and the lease half of invariant 1, on a virtual clock: pass on stores with a heartbeat
lease, n/a without, and a store without fencing, or one that steals a fresh lease, is caught."""

from __future__ import annotations

from pathlib import Path

import pytest
from procedure_helpers import assert_caught, context

from crashgate.backends import resolve
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.procedures_lease import (
    check_fencing,
    lease_rule,
    refresh_during_write,
)


def test_row6_passes_on_a_lease_store(tmp_path: Path) -> None:
    ev = refresh_during_write(context("faulty_backends:open_lease_kv", tmp_path))
    assert ev.verdict is Verdict.PASS, ev.summary
    text = "\n".join(ev.details)
    assert "0 s after the refresh: refused" in text and "20 s after the refresh: refused" in text
    assert ev.measured["processes"] == 1


def test_row6_passes_on_rvlite_at_every_failpoint(tmp_path: Path) -> None:
    ctx = context("rvlite", tmp_path)
    ev = refresh_during_write(ctx)
    assert ev.verdict is Verdict.PASS, ev.summary
    assert ev.measured["processes"] == 1 + len(ctx.declaration.failpoints)


@pytest.mark.parametrize("name", ["memory", "json", "sqlite", "rvf"])
def test_row6_na_without_a_lease(name: str, tmp_path: Path) -> None:
    ev = refresh_during_write(context(name, tmp_path))
    assert ev.verdict is Verdict.NA and "no heartbeat writer lease" in ev.summary


def test_lease_rule_passes_on_a_lease_store(tmp_path: Path) -> None:
    ev = lease_rule(context("faulty_backends:open_lease_kv", tmp_path))
    assert ev.verdict is Verdict.PASS, ev.summary
    assert "taken over once stale and the old holder fenced off" in "\n".join(ev.details)


def test_fencing_on_rvlite() -> None:
    # rvlite's RVF file lock keeps a live holder's store: the takeover is refused, and the
    # holder's late write after its lease went stale is refused and never lands
    ev = check_fencing(resolve("rvlite"), seed=3)
    assert ev.verdict is Verdict.PASS, ev.summary


def test_a_store_without_fencing_is_caught(tmp_path: Path) -> None:
    ev = lease_rule(context("faulty_backends:open_lease_kv_unfenced", tmp_path))
    assert "late write was acknowledged after a new writer had taken its lease over" in \
        ev.summary
    assert_caught(ev)


def test_a_store_that_steals_a_fresh_lease_is_caught(tmp_path: Path) -> None:
    ev = lease_rule(context("faulty_backends:open_lease_kv_steals", tmp_path))
    assert "a second writer opened the store while the first held a fresh lease" in ev.summary
    assert_caught(ev)
