"""The stateful model's promote and rollback rules (``harness/stateful_stages.py``): moves
reach every stage and turn around at the ends, crash positions fall inside a move, a failpoint
crash inside a move reopens in the stage before or after it, and a stage from anywhere else
is a violation that says which stages were allowed."""

from __future__ import annotations

import pytest

from crashgate.backends import Durability
from crashgate.harness.crashcheck import allowed_range
from crashgate.harness.model import prefix_states
from crashgate.harness.ops import Batch, Promote, Put, Rollback, describe_op
from crashgate.harness.stateful import machine_for
from crashgate.harness.stateful_stages import judge_stage, move_op, spread, stages_along


def test_a_move_turns_around_at_the_ends_and_goes_the_way_drawn_between() -> None:
    assert move_op(0, "move down") == Promote() and move_op(4, "move up") == Rollback()
    for stage in (1, 2, 3):
        assert move_op(stage, "move up") == Promote()
        assert move_op(stage, "move down") == Rollback()
    with pytest.raises(ValueError, match="move 'sideways' is not one of"):
        move_op(2, "sideways")
    assert stages_along(2, [Put("a", b""), Promote(), Promote(), Rollback()]) == [2, 2, 3, 4, 3]
    assert describe_op(Promote()) == "promote to the next stage"
    assert spread(range(10, 20), 3) == [10, 14, 19] and spread(range(2), 8) == [0, 1]


def test_the_machine_moves_through_every_stage_and_reads_agree_after_each_move() -> None:
    machine = machine_for("stage0")()
    try:
        seen = [machine.store.stage]
        for move in ["move up"] * 5 + ["move down"] * 5:
            machine.put(key="a", value=bytes([len(seen)]))
            machine.move_stage(move=move)
            machine.agrees_with_model()
            seen.append(machine.store.stage)
        assert seen == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 0]
        assert machine.stage == 0
    finally:
        machine.teardown()


def test_power_loss_positions_fall_inside_a_move() -> None:
    machine = machine_for("stage1")()
    try:
        machine.put(key="a", value=b"1")
        machine.move_stage(move="move up")
        start, end = machine.model.spans[-1]
        assert isinstance(machine.model.ops[-1], Promote) and end is not None
        inside = [p for p in machine.model.crash_positions(machine.disk) if start < p < end]
        assert inside, (start, end, machine.model.crash_positions(machine.disk))
    finally:
        machine.teardown()


@pytest.mark.parametrize("failpoint", ["stage.backfill-batch", "stage.before-switch"])
def test_a_failpoint_crash_inside_a_move_reopens_before_or_after_it(failpoint: str) -> None:
    machine = machine_for("stage1")()
    try:
        machine.write_batch(batch=Batch((("a", b"1"), ("b", b"2"))))
        machine.move_failpoint_crash(failpoint=failpoint, after_hits=0, move="move up")
        assert machine.crashed
        machine.process_crash()
        assert machine.store.stage in (1, 2) and machine.stage == machine.store.stage
        machine.agrees_with_model()
        machine.scan(prefix="")
    finally:
        machine.teardown()


def test_a_stage_neither_before_nor_after_the_move_in_flight_is_a_violation() -> None:
    ops = [Put("a", b"1"), Promote(), Promote()]
    states = prefix_states(ops)
    allowed = allowed_range(2, True, Durability.POWER_LOSS, power_loss=True)
    for seen, want in ((2, 2), (3, 3)):
        assert judge_stage(seen, 1, ops, states, 3, allowed).matched == want
    wrong = judge_stage(1, 1, ops, states, 3, allowed)
    assert wrong.matched is None
    assert wrong.problem == ("the adapter reopened in stage 1; the crash came inside a promote "
                             "to the next stage from stage 2 to stage 3, so it must reopen in "
                             "stage 2 or stage 3")
    settled = judge_stage(4, 1, ops[:2], states[:3], 2,
                          allowed_range(2, False, Durability.POWER_LOSS, power_loss=True))
    assert settled.problem is not None and "must reopen in stage 2" in settled.problem
