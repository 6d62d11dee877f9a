"""``crashcheck.judge``: a recovered state that is no prefix of the history is classified for a
person to act on; a lost delete is not a partly applied batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from crashgate.backends import CorruptStore, Durability, VectorRecord
from crashgate.harness.crashcheck import Judgement, ViolationClass, allowed_range, judge
from crashgate.harness.model import StoreState, prefix_states
from crashgate.harness.ops import Batch, Delete, Op, Put, Remove, Upsert


def _judge(ops: Sequence[Op], seen: StoreState | BaseException, acknowledged: int,
           in_flight: bool = False) -> Judgement:
    states = prefix_states(ops)
    index: dict[str, list[int]] = {}
    for j, s in enumerate(states):
        index.setdefault(s.digest, []).append(j)
    allowed = allowed_range(acknowledged, in_flight, Durability.POWER_LOSS, True)
    return judge(seen, states, index, ops, allowed)


def _kv(values: Mapping[str, bytes]) -> StoreState:
    return StoreState(tuple(sorted(values.items())))


BATCH_THEN_DELETE: list[Op] = [Batch((("a", b"1"), ("b", b"2"))), Put("c", b"3"), Delete("a"),
                               Put("d", b"4")]


def test_a_lost_delete_of_a_key_a_batch_wrote_is_a_lost_delete_not_a_partial_batch() -> None:
    got = _judge(BATCH_THEN_DELETE, _kv({"a": b"1", "b": b"2", "c": b"3", "d": b"4"}), 4)
    assert got.violation is ViolationClass.LOST_DELETE, got


def test_a_batch_with_some_of_its_final_effects_missing_is_partly_applied() -> None:
    got = _judge(BATCH_THEN_DELETE, _kv({"a": b"1", "c": b"3"}), 2)
    assert got.violation is ViolationClass.BATCH, got


def test_a_lost_write_with_later_ones_visible_is_out_of_order() -> None:
    got = _judge(BATCH_THEN_DELETE, _kv({"b": b"2", "d": b"4"}), 4)
    assert got.violation is ViolationClass.REORDERED, got


def test_a_removed_vector_that_comes_back_is_a_lost_delete() -> None:
    r1, r2 = VectorRecord.of(1, [0.0, 1.0]), VectorRecord.of(2, [1.0, 0.0])
    ops: list[Op] = [Upsert((r1,)), Upsert((r2,)), Remove((1,)), Put("k", b"v")]
    both = prefix_states(ops[:2])[-1]
    seen = StoreState(_kv({"k": b"v"}).kv, both.vectors)
    got = _judge(ops, seen, 4)
    assert got.violation is ViolationClass.LOST_DELETE, got


def test_the_in_flight_delete_may_be_lost_whole() -> None:
    ops: list[Op] = [Put("a", b"1"), Delete("a")]
    assert _judge(ops, _kv({"a": b"1"}), 1, in_flight=True).violation is None


def test_a_store_that_reports_corruption_is_told_apart_from_one_that_cannot_open() -> None:
    ops: list[Op] = [Put("a", b"1")]
    corrupt = _judge(ops, CorruptStore("/data/store", "checksum mismatch"), 1)
    assert corrupt.violation is ViolationClass.CORRUPT, corrupt
    broken = _judge(ops, OSError("EIO"), 1)
    assert broken.violation is ViolationClass.UNOPENABLE, broken
