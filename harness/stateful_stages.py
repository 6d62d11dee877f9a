"""Promotion and rollback in the stateful model, for a migration stage adapter (a store that
declares ``Capability.STAGES`` and is a ``backends.Staged``).

The stage is part of what the model predicts. A move (``ops.Promote`` / ``ops.Rollback``) is an
op of the model's history like a write: it changes no data, so the model's key-value and vector
state is the same on both sides of it, and the stage after any prefix of the history is the
first stage plus the moves in that prefix (``stages_along``). That gives the three checks:

- after every step the store is in the model's stage (``stage_problem``);
- right after a move, everything the adapter reads equals the model (``reads_problem``): a move
  changes which store is read, so a stage reading a store that was not caught up shows here;
- after a crash, the reopened adapter shows the data and the stage of one prefix of the history
  the declared durability allows (``judge_stage``): inside a move, the stage before it or the
  stage after it, never another, and never a stage that disagrees with the data it shows.

The machine's rules draw a move as ``"move up"`` or ``"move down"`` (``MOVES``) and turn it
around at the ends (``move_op``): both directions stay reachable from every stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from crashgate.harness.crashcheck import Allowed
from crashgate.harness.model import StoreState, read_state
from crashgate.harness.ops import Op, Promote, Rollback, Upsert, describe_op

__all__ = ["FIRST_STAGE", "LAST_STAGE", "MOVES", "MOVE_PROBES", "STAGE_RANGE", "StageJudgement",
           "judge_stage", "move_op", "reads_problem", "spread", "stage_problem", "stages_along"]

FIRST_STAGE = 0
LAST_STAGE = 4
"""ADR-072's stages are 0-4."""
STAGE_RANGE = (FIRST_STAGE, LAST_STAGE)
"""The stages of an adapter that does not say (``Staged.stage_range``: ARCH-001's phases are
1-4)."""
MOVES = ("move up", "move down")
"""How the rules draw a move (strings, like ``"compact"``: a reproduction prints them as they
are); ``move_op`` turns one into the op for the stage the model is in."""
MOVE_PROBES = 8
"""Process crashes judged inside a move that the machine crashes inside (besides the one it
goes on from), spread evenly over the move: a switch written before its catch-up is a window
of a few writes among the move's dozens, which one drawn position seldom hits."""


def spread(positions: Sequence[int], n: int) -> list[int]:
    """At most ``n`` of ``positions``, evenly spread, first and last included (all of them
    when there are no more than ``n``)."""
    if n <= 0 or not positions:
        return []
    if len(positions) <= n:
        return list(positions)
    if n == 1:
        return [positions[0]]
    last = len(positions) - 1
    return sorted({positions[round(i * last / (n - 1))] for i in range(n)})


def move_op(stage: int, move: str, stage_range: tuple[int, int] = STAGE_RANGE
            ) -> Promote | Rollback:
    """The op for ``move`` (one of ``MOVES``) from ``stage``: up, or down, as drawn, except
    that it turns around at the last and the first stage of ``stage_range`` (a move past an
    end is refused by the store, and teaches nothing)."""
    if move not in MOVES:
        raise ValueError(f"move {move!r} is not one of {MOVES}; draw it from MOVES")
    first, last = stage_range
    if not first <= stage <= last:
        raise ValueError(f"stage {stage!r} is not one of the adapter's stages ({first}-"
                         f"{last}); the model's stage went wrong")
    up = move == MOVES[0]
    if stage == last or (stage > first and not up):
        return Rollback()
    return Promote()


def stages_along(first: int, ops: Iterable[Op]) -> list[int]:
    """``out[j]``: the stage after ``ops[:j]`` for a store that began in stage ``first``
    (``len(ops) + 1`` entries)."""
    out = [first]
    for op in ops:
        step = 1 if isinstance(op, Promote) else -1 if isinstance(op, Rollback) else 0
        out.append(out[-1] + step)
    return out


def stage_problem(store: Any, expected: int) -> str | None:
    """What is wrong with ``store.stage`` when the model says ``expected``, or None."""
    got = store.stage
    if got == expected:
        return None
    return f"the adapter is in stage {got!r}, the model says stage {expected}"


def reads_problem(store: Any, ops: Sequence[Op], want: StoreState) -> str | None:
    """How what ``store`` reads (every key, every vector id ``ops`` ever upserted) differs from
    ``want``, the model's state, or None when it agrees."""
    ids = {r.id for op in ops if isinstance(op, Upsert) for r in op.records}
    seen = read_state(store, ids)
    if seen == want:
        return None
    return (f"after moving to stage {store.stage}, the adapter reads what the model does not "
            "hold: " + "; ".join(seen.describe_diff(want)))


@dataclass(frozen=True)
class StageJudgement:
    """``matched``: the prefix of the history the recovered store shows, data and stage both
    (None when no prefix fits); ``problem`` says why none does."""

    matched: int | None
    problem: str | None = None


def judge_stage(seen: int, first: int, ops: Sequence[Op], states: Sequence[StoreState],
                matched: int, allowed: Allowed) -> StageJudgement:
    """Judge the stage ``seen`` that an adapter reopened in after a crash. ``ops`` are the
    history up to the crash (the in-flight op last, when there is one), ``states`` their prefix
    states, ``matched`` the prefix the data showed (``crashcheck.judge``) and ``allowed`` the
    prefixes the durability allows. The answer is the last allowed prefix with both the data
    and the stage the store shows (a move changes no data: the data alone cannot tell the two
    sides of one apart)."""
    along = stages_along(first, ops)
    digest = states[matched].digest
    same = [j for j in range(allowed.lo, allowed.hi + 1) if states[j].digest == digest]
    fits = [j for j in same if along[j] == seen]
    if fits:
        return StageJudgement(fits[-1])
    last = ops[allowed.acknowledged] if allowed.in_flight else None
    if isinstance(last, Promote | Rollback):
        before, after = along[allowed.acknowledged], along[allowed.acknowledged + 1]
        where = (f"the crash came inside a {describe_op(last)} from stage {before} to stage "
                 f"{after}, so it must reopen in stage {before} or stage {after}")
    else:
        where = (f"no move was in flight; with {allowed.acknowledged} ops acknowledged it must "
                 f"reopen in stage {along[allowed.acknowledged]}")
    possible = sorted({along[j] for j in range(allowed.lo, allowed.hi + 1)})
    if seen in possible and len(possible) > 1:
        data_stages = ", ".join(map(str, sorted({along[j] for j in same})))
        where = (f"its data is from when it was in stage {data_stages}: the stage and the "
                 "data it reopened with come from different points of its history")
    return StageJudgement(None, f"the adapter reopened in stage {seen}; {where}")
