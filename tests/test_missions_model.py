"""Issue 13: ARCH-001's mission documents in the model (``harness/ops.py``, ``harness/model.py``,
``harness/crashcheck.py``), the workloads (``harness/workload.py``) and the stateful model
(``harness/stateful.py``): mission puts and deletes are ops of the history, every mission a
store lists is part of its state (compared as canonical JSON), a torn or resurrected mission
is classified, the reference stores pass, and a store that loses part of a document is caught
with a failure that names the mission and the field."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from crashgate.backends import (
    Capability,
    Declaration,
    Durability,
    Env,
    canonical_mission,
    resolve,
)
from crashgate.harness.crashcheck import ViolationClass, allowed_range, judge
from crashgate.harness.model import StoreState, prefix_states, read_missions, read_state
from crashgate.harness.ops import (
    MissionDelete,
    MissionPut,
    Put,
    QUpdate,
    describe_op,
    is_mission,
    is_mutation,
    is_relational,
)
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.stateful import machine_for, run_model
from crashgate.harness.verdict import Verdict
from crashgate.harness.workload import PROFILES, random_workload
from crashgate.reference.memory import MemoryStore

DOC: dict[str, Any] = {
    "mission_id": "m1", "phase": "CODING", "budget": {"max_cost_usd": 10, "spent": 1.0},
    "tool_calls": [{"tool_name": "read_file", "success": True},
                   {"tool_name": "run_tests", "success": False}]}


def _memory() -> Any:
    return resolve("memory").open("/data/store", sim_env(SimDisk(DiskImage.empty("/data"))))


def _states(ops: list[Any]) -> tuple[list[StoreState], dict[str, list[int]]]:
    states = prefix_states(ops)
    index: dict[str, list[int]] = {}
    for j, state in enumerate(states):
        index.setdefault(state.digest, []).append(j)
    return states, index


# -- ops and the model -------------------------------------------------------------------------


def test_mission_ops_apply_canonical_text_and_describe_themselves() -> None:
    relational: dict[Any, Any] = {}
    put = MissionPut(DOC)
    put.apply({}, {}, relational)
    assert relational == {("mission", "m1"): canonical_mission(DOC).decode()}
    MissionPut({**DOC, "budget": {"max_cost_usd": 10.0, "spent": 1.0}}).apply({}, {}, relational)
    assert '"max_cost_usd":10.0' in relational[("mission", "m1")]   # 10 and 10.0 stay apart
    MissionDelete("m1").apply({}, {}, relational)
    MissionDelete("absent").apply({}, {}, relational)   # deleting a missing one is no error
    assert relational == {}
    assert all(is_mutation(op) and is_mission(op) and not is_relational(op)
               for op in (put, MissionDelete("m1")))
    assert describe_op(put) == f"put mission 'm1' ({len(canonical_mission(DOC))} bytes of JSON)"
    assert describe_op(MissionDelete("m/ü")) == "delete mission 'm/ü'"
    with pytest.raises(TypeError, match="relational records"):
        put.apply({}, {})
    assert eval(repr(put)) == put   # a reproduction prints ops as code


def test_a_store_that_changes_the_document_it_was_handed_does_not_change_the_op() -> None:
    class Mutating:
        def mission_put(self, doc: dict[str, Any]) -> None:
            doc.pop("budget")
            doc["tool_calls"].pop()

    op = MissionPut(json.loads(json.dumps(DOC)))
    op.run(Mutating())
    assert op.doc == DOC


def test_read_state_shows_every_mission_and_the_digest_of_other_states_is_unchanged() -> None:
    store = _memory()
    ops = [Put("k", b"v"), MissionPut(DOC), MissionPut({"mission_id": "m/2", "n": [1, 1.0]}),
           MissionDelete("m1"), MissionPut({**DOC, "status": "done"})]
    for op in ops:
        op.run(store)
    seen = read_state(store, [])
    want = prefix_states(ops)[-1]
    assert seen == want and seen.digest == want.digest
    assert [name for name, _ in seen.relational] == [("mission", "m/2"), ("mission", "m1")]
    assert dict(seen.relational)[("mission", "m/2")] == '{"mission_id":"m/2","n":[1,1.0]}'
    # a state without missions (or relational records) keeps the digest it always had
    plain = prefix_states([Put("k", b"v")])[1]
    assert plain.digest == StoreState((("k", b"v"),)).digest
    assert StoreState((("k", b"v"),), relational=(
        (("mission", "x"), '{"mission_id":"x"}'),)).digest != plain.digest
    store.close()


def test_a_missing_field_or_tool_call_is_named_by_its_path() -> None:
    want = prefix_states([MissionPut(DOC)])[1]
    short = {**DOC, "tool_calls": DOC["tool_calls"][:1]}
    no_budget = {k: v for k, v in DOC.items() if k != "budget"}
    as_float = {**DOC, "budget": {"max_cost_usd": 10.0, "spent": 1.0}}
    for doc, says in [
            (short, "mission 'm1': at ['tool_calls']: seen 1 items, expected 2"),
            (no_budget, "mission 'm1': at ['budget']: seen absent, expected {\"max_cost_usd\""),
            (as_float, "mission 'm1': at ['budget']['max_cost_usd']: seen 10.0, expected 10"),
            (None, "mission 'm1': seen absent, expected '{\"budget\"")]:
        ops = [] if doc is None else [MissionPut(doc)]
        seen = prefix_states(ops)[-1]
        assert seen != want
        [line] = seen.describe_diff(want)
        assert line.startswith(says), line


def test_read_missions_says_when_a_listed_mission_cannot_be_read() -> None:
    class Broken:
        def mission_ids(self) -> list[str]:
            return ["gone", "nan", "ok"]

        def mission_get(self, mission_id: str) -> dict[str, Any] | None:
            return {"gone": None, "nan": {"mission_id": "nan", "x": float("nan")},
                    "ok": {"mission_id": "ok"}}[mission_id]

    got = read_missions(Broken())
    assert got[("mission", "gone")] == "<listed by mission_ids, but mission_get returned None>"
    assert str(got[("mission", "nan")]).startswith("<mission_get returned no mission document")
    assert got[("mission", "ok")] == '{"mission_id":"ok"}'


def test_a_torn_mission_and_a_resurrected_one_are_classified() -> None:
    ops: list[Any] = [MissionPut(DOC), MissionPut({"mission_id": "m2"}), MissionDelete("m2"),
                      Put("k", b"v")]
    states, index = _states(ops)
    allowed = allowed_range(4, False, Durability.POWER_LOSS, power_loss=True)
    # half of a put: a document never put under its id
    torn = StoreState((("k", b"v"),), relational=(
        (("mission", "m1"), canonical_mission({**DOC, "tool_calls": []}).decode()),))
    assert judge(torn, states, index, ops, allowed).violation is ViolationClass.TORN
    # the deleted mission shows again, while the put after the delete is there
    back = StoreState((("k", b"v"),), relational=(
        *states[4].relational, (("mission", "m2"), '{"mission_id":"m2"}')))
    verdict = judge(back, states, index, ops, allowed)
    assert verdict.violation is ViolationClass.LOST_DELETE, verdict
    assert "mission 'm2': seen '{\"mission_id\":\"m2\"}', expected absent" in verdict.detail
    # an acknowledged put lost whole
    lost = StoreState((("k", b"v"),))
    assert judge(lost, states, index, ops, allowed).violation is not None


# -- workloads ---------------------------------------------------------------------------------


def _decl(*caps: Capability) -> Declaration:
    return Declaration(Durability.POWER_LOSS, frozenset({Capability.KV, *caps}))


def test_a_store_with_missions_draws_small_mission_writes_that_replace_and_hit() -> None:
    ops = random_workload(_decl(Capability.MISSIONS), 300, 7, PROFILES["small"])
    assert ops == random_workload(_decl(Capability.MISSIONS), 300, 7, PROFILES["small"])
    puts = [op for op in ops if isinstance(op, MissionPut)]
    deletes = [op for op in ops if isinstance(op, MissionDelete)]
    assert len(puts) > 30 and len(deletes) > 10, (len(puts), len(deletes))
    ids = [op.mission_id for op in puts]
    assert len(set(ids)) <= PROFILES["small"].missions < len(ids)     # puts replace
    assert {op.mission_id for op in deletes} & set(ids)                # deletes hit
    assert max(len(canonical_mission(op.doc)) for op in puts) < 8192   # a few KB
    assert len({canonical_mission(op.doc) for op in puts}) == len(puts)   # each distinct
    assert any(op.doc["tool_calls"] for op in puts)
    history = random_workload(_decl(Capability.MISSIONS), 300, 7, PROFILES["small"],
                              history=True)
    assert any(isinstance(op, MissionPut) for op in history)
    states = prefix_states(ops)
    assert any(name[0] == "mission" for name, _ in states[-1].relational)


@pytest.mark.parametrize("caps", [(), (Capability.BATCH,), (Capability.RELATIONAL,)])
def test_a_store_without_missions_draws_none(caps: tuple[Capability, ...]) -> None:
    for history in (False, True):
        ops = random_workload(_decl(*caps), 200, 3, PROFILES["small"], history=history)
        assert not any(is_mission(op) for op in ops)


# -- the stateful model ------------------------------------------------------------------------

RUN = settings(max_examples=15, stateful_step_count=25, deadline=None, database=None,
               suppress_health_check=list(HealthCheck))


def _run(spec: Any, seed: int, run: settings = RUN) -> Counter[str]:
    """The stats of a seeded run of the model on ``spec`` (raises what the run found)."""
    machine = machine_for(spec)
    hypothesis.seed(seed)(machine)
    run_state_machine_as_test(machine, settings=run)
    return machine.stats


def _history_ops(machine: Any) -> list[tuple[str, str, str | None]]:
    return [(r.name, r.outcome, r.error) for r in machine.history]


def test_memory_draws_mission_writes_and_checks_them_through_crashes() -> None:
    stats = _run("memory", 4)
    assert stats["rule:mission_write"] > 5, stats
    assert not machine_for("json").has_missions and machine_for("memory").has_missions
    assert "mission_write" not in {r.function.__name__ for r in machine_for("json")
                                   .setup_state().rules}
    machine = machine_for("memory")()
    try:
        machine.mission_write(op=MissionPut(dict(DOC)))
        machine.mission_write(op=MissionPut({"mission_id": "genesis", "n": 1}))
        machine.mission_write(op=MissionDelete("genesis"))
        machine.agrees_with_model()
        machine.reopen()   # memory keeps what a clean close saved
        machine.agrees_with_model()
        saved = {("mission", "m1"): canonical_mission(DOC).decode()}
        assert dict(read_state(machine.store, []).relational) == saved
        # memory promises nothing for a crash: it shows what its last clean close saved, and
        # the judge accepts that prefix; a put after it is gone
        machine.mission_write(op=MissionPut({"mission_id": "genesis", "after": "reopen"}))
        machine.process_crash()
        assert dict(read_state(machine.store, []).relational) == saved
        machine.agrees_with_model()
        # each write was read back (mission_get) and agreed: no error recorded
        ran = _history_ops(machine)
        assert [op for op, _, _ in ran if op.startswith("mission")] == [
            "mission_put", "mission_get", "mission_put", "mission_get", "mission_delete",
            "mission_get", "mission_put", "mission_get"], ran
        assert all(error is None for op, _, error in ran if op == "mission_get"), ran
    finally:
        machine.teardown()


class DropsLastToolCall(MemoryStore):
    """Loses the audit trail's last entry: ``mission_put`` keeps all but the last tool call."""

    def mission_put(self, doc: Mapping[str, Any]) -> None:
        calls = doc.get("tool_calls")
        if isinstance(calls, list) and calls:
            doc = {**doc, "tool_calls": calls[:-1]}
        super().mission_put(doc)


class DropsBudgetInPlace(MemoryStore):
    """Drops the budget from the very document it is handed (``pop``), then stores it."""

    def mission_put(self, doc: Mapping[str, Any]) -> None:
        if isinstance(doc, dict):
            doc.pop("budget", None)
        super().mission_put(doc)


def open_drops_last_tool_call(path: str, env: Env, **options: str) -> DropsLastToolCall:
    return DropsLastToolCall(path, env, options.get("metric", "l2"))


def open_drops_budget_in_place(path: str, env: Env, **options: str) -> DropsBudgetInPlace:
    return DropsBudgetInPlace(path, env, options.get("metric", "l2"))


@pytest.mark.parametrize(("factory", "says"), [
    (open_drops_last_tool_call, "['tool_calls']: seen"),
    (open_drops_budget_in_place, "['budget']: seen absent, expected"),
])
def test_a_store_that_loses_part_of_a_mission_is_caught_readably(
        tmp_path: Path, factory: Any, says: str) -> None:
    ev = run_model(factory, seed=2, examples=30, steps=20, workdir=tmp_path)
    assert ev.verdict is Verdict.FAIL, ev.summary
    assert "mission '" in ev.summary and says in ev.summary, ev.summary
    script = ev.reproduce.removeprefix("python ")
    source = Path(script).read_text()
    assert "mission_write(op=MissionPut(" in source, source
    if factory is open_drops_last_tool_call:   # the reproduction fails again on its own
        ran = subprocess.run([sys.executable, script], capture_output=True, text=True,
                             timeout=300, check=False)
        assert ran.returncode != 0 and says in ran.stdout + ran.stderr, ran.stderr[-2000:]


@pytest.mark.parametrize("spec", ["arch-phase1", "arch-phase3"])
def test_an_arch_phase_passes_the_model_with_missions_moves_and_crashes(spec: str) -> None:
    quick = settings(RUN, max_examples=6, stateful_step_count=20)
    stats = _run(spec, 5, quick)
    moves = stats["rule:move_stage"] + stats["rule:move_failpoint_crash"] \
        + stats["rule:move_crash_inside"]
    assert stats["rule:mission_write"] and moves, stats
    assert stats["crash_states"] > 0, stats


def test_a_mission_write_is_among_the_crash_rules_ops() -> None:
    from crashgate.harness.stateful import _crash_mutations

    search = settings(max_examples=300, database=None, suppress_health_check=list(HealthCheck))
    with_missions = _crash_mutations(True, False, False, False, missions=True)
    for kind in (MissionPut, MissionDelete):
        def of_kind(op: object, kind: type = kind) -> bool:
            return isinstance(op, kind)

        assert isinstance(hypothesis.find(with_missions, of_kind, settings=search), kind)
    with pytest.raises(hypothesis.errors.NoSuchExample):
        hypothesis.find(_crash_mutations(True, False, False, False), is_mission,
                        settings=search)
    assert not is_mission(QUpdate("s", "a", 1.0))
