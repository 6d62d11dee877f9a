"""Judging one recovered crash state against the model.

A crash at trace position ``p`` leaves ``a`` ops acknowledged (a prefix of the workload) and at
most one op in flight. The recovered store must show exactly a prefix state ``S[j]`` of the
model, with ``lo <= j <= hi``: ``hi`` is ``a`` (``a + 1`` when an op was in flight), and ``lo`` is
``a`` when the store's declared durability covers this kind of crash, else 0. Anything else is a
violation, classified for a person to act on.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from crashgate.backends import CorruptStore, Durability
from crashgate.harness.model import StoreState
from crashgate.harness.ops import Batch, Op, Remove, Upsert

__all__ = ["Allowed", "Judgement", "ViolationClass", "acknowledged_at", "allowed_range", "judge"]


class ViolationClass(enum.StrEnum):
    LOST = "acknowledged write lost"
    BATCH = "batch partly applied"
    TORN = "torn or garbage data visible"
    UNOPENABLE = "store cannot be opened"
    REORDERED = "writes visible out of order"
    LOST_DELETE = "acknowledged delete lost (deleted data visible again)"
    CORRUPT = "store reports its data corrupt"


@dataclass(frozen=True)
class Allowed:
    lo: int
    hi: int
    acknowledged: int
    in_flight: bool


def allowed_range(acknowledged: int, in_flight: bool, durability: Durability,
                  power_loss: bool) -> Allowed:
    needed = Durability.POWER_LOSS if power_loss else Durability.PROCESS_CRASH
    lo = acknowledged if durability.covers(needed) else 0
    return Allowed(lo, acknowledged + (1 if in_flight else 0), acknowledged, in_flight)


def acknowledged_at(spans: Sequence[tuple[int, int | None]], position: int,
                    done: int = 0) -> tuple[int, bool]:
    """How many ops had returned at trace ``position`` (counting from ``done``), and whether one
    was in flight. ``spans`` are the (start, end) trace positions of the ops in order; an op
    still running has end ``None``."""
    for start, end in spans:
        if end is not None and end <= position:
            done += 1
        elif start <= position:
            return done, True
        else:
            break
    return done, False


@dataclass(frozen=True)
class Judgement:
    violation: ViolationClass | None
    matched: int | None          # the prefix state index the store showed, if any
    detail: str


def judge(seen: StoreState | BaseException, states: Sequence[StoreState],
          index: dict[str, list[int]], ops: Sequence[Op], allowed: Allowed) -> Judgement:
    """``index`` maps a state digest to the prefix indices having it (precomputed once)."""
    if isinstance(seen, BaseException):
        first = str(seen).splitlines()[0] if str(seen) else type(seen).__name__
        kind = (ViolationClass.CORRUPT if isinstance(seen, CorruptStore)
                else ViolationClass.UNOPENABLE)
        return Judgement(kind, None, f"{type(seen).__name__}: {first}")
    candidates = [j for j in index.get(seen.digest, []) if j <= allowed.hi]
    ok = [j for j in candidates if j >= allowed.lo]
    if ok:
        return Judgement(None, ok[-1], f"shows the state after {ok[-1]} ops")
    if candidates:
        j = candidates[-1]
        return Judgement(
            ViolationClass.LOST, j,
            f"shows the state after {j} ops but {allowed.acknowledged} were acknowledged; "
            + "; ".join(seen.describe_diff(states[allowed.lo])),
        )
    return Judgement(_classify_mixture(seen, states, ops, allowed), None,
                     "; ".join(seen.describe_diff(states[allowed.hi])))


def _classify_mixture(seen: StoreState, states: Sequence[StoreState], ops: Sequence[Op],
                      allowed: Allowed) -> ViolationClass:
    """The store shows no prefix state: say why, as precisely as the evidence allows.

    Each op's *effects* are the keys, vector ids and mission ids it changed (``S[i]`` to
    ``S[i+1]``); an effect is *final* when no later op before ``hi`` changes that key or id
    again, so the recovered store should show it. When every difference from the expected
    state is a final effect of one multi-part op (a batch, an upsert or remove of several ids)
    showing the value from before it, while its other effects show, that op was partly
    applied; a final removal whose old value shows again is a lost delete; anything else is
    out of order."""
    seen_kv = seen.kv_dict()
    # a value the program never wrote for that key: torn or garbage
    written: dict[str, set[bytes]] = {}
    for st in states[: allowed.hi + 1]:
        for k, v in st.kv:
            written.setdefault(k, set()).add(v)
    if any(v not in written.get(k, set()) for k, v in seen_kv.items()):
        return ViolationClass.TORN
    seen_ids = {v[0]: v for v in seen.vectors}
    all_vectors = {v for st in states[: allowed.hi + 1] for v in st.vectors}
    if any(v not in all_vectors for v in seen_ids.values()):
        return ViolationClass.TORN
    # a mission document never put under its id: half of one put, or a mix of two
    all_missions = {m for st in states[: allowed.hi + 1] for m in _missions(st).items()}
    if any(m not in all_missions for m in _missions(seen).items()):
        return ViolationClass.TORN
    seen_items = _items(seen)
    effects = _final_effects(states, allowed.hi)
    for expected in range(allowed.acknowledged, allowed.hi + 1):
        want = _items(states[expected])
        differ = {item for item in seen_items.keys() | want.keys()
                  if seen_items.get(item) != want.get(item)}
        # one multi-part op half there: every difference is one of its final effects showing
        # the value from before it, while others of its effects show
        for i, changed in effects.items():
            if i >= expected or not isinstance(ops[i], Batch | Upsert | Remove):
                continue
            if differ <= changed.keys() and len(differ) < len(changed) and all(
                    seen_items.get(item) == changed[item][0] for item in differ):
                return ViolationClass.BATCH
    for i, changed in effects.items():
        if i >= allowed.acknowledged:
            continue   # the op in flight may be lost whole
        for item, (before, after) in changed.items():
            if after is None and before is not None and seen_items.get(item) == before:
                return ViolationClass.LOST_DELETE
    return ViolationClass.REORDERED


_Item = tuple[str, str | int]   # ("kv", key), ("vector", id) or ("mission", mission_id)


def _missions(state: StoreState) -> dict[_Item, object]:
    """ARCH-001's missions of ``state``: ("mission", id) -> canonical JSON text."""
    return {("mission", name[1]): text for name, text in state.relational
            if name[0] == "mission"}


def _items(state: StoreState) -> dict[_Item, object]:
    out: dict[_Item, object] = {("kv", k): v for k, v in state.kv}
    out.update({("vector", v[0]): v for v in state.vectors})
    out.update(_missions(state))
    return out


def _final_effects(states: Sequence[StoreState], hi: int
                   ) -> dict[int, dict[_Item, tuple[object, object]]]:
    """Op index -> {item: (value before, value after)} for the changes of ops ``< hi`` that no
    later op before ``hi`` changes again (None: absent)."""
    last: dict[_Item, int] = {}
    changes: dict[int, dict[_Item, tuple[object, object]]] = {}
    before = _items(states[0])
    for i in range(min(hi, len(states) - 1)):
        after = _items(states[i + 1])
        for item in before.keys() | after.keys():
            if before.get(item) != after.get(item):
                changes.setdefault(i, {})[item] = (before.get(item), after.get(item))
                last[item] = i
        before = after
    return {i: {item: ch for item, ch in changed.items() if last[item] == i}
            for i, changed in changes.items()}
