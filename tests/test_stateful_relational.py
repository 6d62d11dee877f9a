"""Issue 10 item 2: the stateful model drives and checks ADR-072's relational operations
(Q-value updates, GOAP plans) on every store declaring ``Capability.RELATIONAL``: the reference
stores pass the ``model`` row, and stores with one relational defect each
(``tests/defects_relational.py``) fail it with a reproduction that fails again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crashgate.backends import Durability, QValue
from crashgate.harness.cli import main
from crashgate.harness.crashcheck import ViolationClass, allowed_range, judge
from crashgate.harness.model import StoreState, prefix_states, read_state
from crashgate.harness.ops import GoapDelete, GoapStore, Put, QUpdate
from crashgate.harness.stateful import StoreMachine, machine_for


def _model_row(tmp_path: Path, backend: str, budget: str = "quick") -> tuple[int, dict[str, Any]]:
    out = tmp_path / backend.replace(":", "_")
    code = main(["certify", backend, "--scenario", "model", "--budget", budget, "--seed", "1",
                 "--out", str(out), "--quiet"])
    [path] = out.glob("*/*/certificate.json")
    [row] = json.loads(path.read_text())["rows"]
    return code, row


@pytest.mark.parametrize("backend", ["memory", "sqlite", "rvf", "stage2", "stage3"])
def test_the_reference_stores_pass_the_model_row_with_relational_rules(
        tmp_path: Path, capsys, backend: str) -> None:
    assert any(c.__name__ == "_RelationalMachine" for c in machine_for(backend).__mro__)
    code, row = _model_row(tmp_path, backend)
    capsys.readouterr()
    assert code == 0 and row["verdict"] == "pass", row["summary"]
    assert row["measured"]["steps"] > 0, row


@pytest.mark.parametrize(("defect", "says"), [
    ("defects_relational:open_loses_update_count", "acknowledged updates the model says"),
    ("defects_relational:open_stale_plan", "goap_retrieve('p"),
    ("defects_relational:open_write_back_relational", "acknowledged write lost"),
])
def test_a_relational_defect_fails_the_model_row_with_a_reproduction(
        tmp_path: Path, capsys, defect: str, says: str) -> None:
    # standard: a lost count needs two updates of one Q-value in one example, which the quick
    # budget's 15 short examples draw for only some seeds once the memory store's missions
    # take their share of the steps (seeds 1-6: 3 of 6 at quick, 6 of 6 at standard)
    code, row = _model_row(tmp_path, defect, "standard")
    capsys.readouterr()
    assert code == 1 and row["verdict"] == "fail", row["summary"]
    assert says in row["summary"], row["summary"]
    script = row["reproduce"].removeprefix("python ")
    ran = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=300)
    assert ran.returncode != 0 and says in ran.stdout + ran.stderr, ran


def test_an_update_count_is_state_so_a_lost_update_is_a_lost_write() -> None:
    ops = [QUpdate("s", "a", 1.0), QUpdate("s", "a", -0.0), GoapStore("p", {"goal": "x"}),
           GoapDelete("p")]
    states = prefix_states(ops)
    assert dict(states[2].relational) == {("q", "s", "a"): QValue(0.0, 2)}   # -0.0 as 0.0
    assert dict(states[3].relational)[("plan", "p")] == '{"goal":"x"}'
    assert states[4].relational == states[2].relational
    assert states[1].digest != states[2].digest   # same key, the count differs
    # a store that recovered with one update of the two acknowledged
    seen = StoreState(relational=((("q", "s", "a"), QValue(1.0, 1)),))
    index: dict[str, list[int]] = {}
    for j, state in enumerate(states[:3]):
        index.setdefault(state.digest, []).append(j)
    verdict = judge(seen, states[:3], index, ops[:2],
                    allowed_range(2, False, Durability.PROCESS_CRASH, False))
    assert verdict.violation is ViolationClass.LOST and verdict.matched == 1, verdict
    assert "Q-value ('s', 'a'): seen 1.0 after 1 update, expected 0.0 after 2 updates" \
        in verdict.detail, verdict.detail


def test_a_store_without_relational_records_keeps_its_rules_and_digests() -> None:
    machine = machine_for("json")
    assert machine.__mro__[1] is StoreMachine and not machine.has_relational
    names = {r.function.__name__ for r in machine.setup_state().rules}
    assert not names & {"q_update", "plan_write", "relational_read"}, names
    assert {"q_update", "plan_write", "relational_read"} <= {
        r.function.__name__ for r in machine_for("memory").setup_state().rules}
    plain = prefix_states([Put("k", b"v")])[1]
    assert plain.relational == () and plain == StoreState((("k", b"v"),))


def test_relational_writes_are_judged_after_a_crash_and_carried_by_derive() -> None:
    machine = machine_for("rvf")()
    try:
        machine.q_update(state="s0", action="a", value=0.5)
        machine.q_update(state="s0", action="a", value=1.5)
        machine.plan_write(op=GoapStore("p0", {"goal": "eat", "steps": ["go"]}))
        machine.plan_write(op=GoapStore("p1", {"goal": "rest", "steps": []}))
        machine.plan_write(op=GoapDelete("p1"))
        machine.process_crash()
        machine.agrees_with_model()
        seen = read_state(machine.store, [])
        assert dict(seen.relational) == {("q", "s0", "a"): QValue(1.5, 2),
                                         ("plan", "p0"): '{"goal":"eat","steps":["go"]}'}
        machine.derive()   # the child shows the records; its plan never reaches the parent
        machine.relational_read(state="s0", action="a", plan_id="p0")
        machine.relational_read(state="s1", action="b", plan_id="p1")
    finally:
        machine.teardown()
