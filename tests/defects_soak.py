"""Issue 12: a stage adapter with one deliberate concurrency defect, for ``test_soak.py``:
``RacyQValueUpdate`` (stage 3) updates a Q-value by reading it, then writing the new record,
without holding the adapter's lock between the two, so two agents updating one Q-value at once
both write count n + 1 and one update is lost. Opened as ``defects_soak:open_racy_stage3``."""

from __future__ import annotations

import time

from crashgate.backends import Env, QValue, check_q_value
from crashgate.reference.stages.adapter import StageAdapter
from crashgate.reference.stages.factory import open_stage

__all__ = ["RacyQValueUpdate", "open_racy_stage3"]


class RacyQValueUpdate(StageAdapter):
    def q_value_update(self, state: str, action: str, value: float) -> QValue:
        old = self.q_value_get(state, action)
        time.sleep(0.002)   # between the read and the write another agent's update lands
        new = QValue(check_q_value(value), (old.updates if old else 0) + 1)
        self.q_value_put(state, action, new)
        return new


def open_racy_stage3(path: str, env: Env, **options: str) -> StageAdapter:
    return open_stage(path, env, 3, cls=RacyQValueUpdate, **options)
