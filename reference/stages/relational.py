"""ADR-072's relational operations (Q-values, GOAP plans) on a stage adapter: they go where the
key-value data goes (``roles.CARRIES``), through the adapter's dual write and truth read. The
other store of a dual-write stage gets a Q-value as the truth's update left it (``q_value_put``),
never the update again: a store that had missed one update would otherwise stay a count short
for good."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from crashgate.backends import QValue, check_relational_id
from crashgate.reference.stages.control import PLANS, Q_VALUES, plan_ref, q_value_ref, state_ref

__all__ = ["StageRelational"]


class StageRelational:
    """The ``Relational`` methods of ``StageAdapter``, which provides the three below."""

    def _check_open(self) -> None:
        raise NotImplementedError

    def _write_relational(self, op: str, refs: Sequence[str], call: Callable[[Any], Any],
                          mirror: Callable[[Any, Any], Any] | None = None) -> Any:
        raise NotImplementedError

    def _read_relational(self, what: str, refs: Sequence[str],
                         call: Callable[[Any], Any]) -> Any:
        raise NotImplementedError

    def q_value_get(self, state: str, action: str) -> QValue | None:
        state, action = check_relational_id("state", state), check_relational_id("action", action)
        got: QValue | None = self._read_relational(
            "q_value_get", [q_value_ref(state, action)], lambda s: s.q_value_get(state, action))
        return got

    def q_value_update(self, state: str, action: str, value: float) -> QValue:
        """The truth's read-modify-write; the other store gets its result (``q_value_put``)."""
        state, action = check_relational_id("state", state), check_relational_id("action", action)
        new: QValue = self._write_relational(
            "q_value_update", [q_value_ref(state, action)],
            lambda s: s.q_value_update(state, action, value),
            lambda s, got: s.q_value_put(state, action, got))
        return new

    def q_value_put(self, state: str, action: str, q: QValue) -> None:
        state, action = check_relational_id("state", state), check_relational_id("action", action)
        self._write_relational("q_value_put", [q_value_ref(state, action)],
                               lambda s: s.q_value_put(state, action, q))

    def q_value_delete(self, state: str, action: str) -> None:
        state, action = check_relational_id("state", state), check_relational_id("action", action)
        self._write_relational("q_value_delete", [q_value_ref(state, action)],
                               lambda s: s.q_value_delete(state, action))

    def q_values(self, state: str) -> dict[str, QValue]:
        state = check_relational_id("state", state)
        got: dict[str, QValue] = self._read_relational("q_values", [state_ref(state)],
                                                       lambda s: s.q_values(state))
        return got

    def relational_states(self) -> list[str]:
        got: list[str] = self._read_relational("relational_states", [Q_VALUES],
                                               lambda s: s.relational_states())
        return got

    def goap_store(self, plan_id: str, plan: Mapping[str, Any]) -> None:
        plan_id = check_relational_id("plan_id", plan_id)
        self._write_relational("goap_store", [plan_ref(plan_id)],
                               lambda s: s.goap_store(plan_id, plan))

    def goap_retrieve(self, plan_id: str) -> dict[str, Any] | None:
        plan_id = check_relational_id("plan_id", plan_id)
        got: dict[str, Any] | None = self._read_relational(
            "goap_retrieve", [plan_ref(plan_id)], lambda s: s.goap_retrieve(plan_id))
        return got

    def goap_delete(self, plan_id: str) -> None:
        plan_id = check_relational_id("plan_id", plan_id)
        self._write_relational("goap_delete", [plan_ref(plan_id)],
                               lambda s: s.goap_delete(plan_id))

    def goap_ids(self) -> list[str]:
        got: list[str] = self._read_relational("goap_ids", [PLANS], lambda s: s.goap_ids())
        return got
