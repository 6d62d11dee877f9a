"""Issue 10: stage adapters with one deliberate defect each, for ``test_detection_stages.py``.

Each is the reference ``StageAdapter`` (``reference/stages``) with one thing done wrong, opened
by a factory in the stage it starts in (``defects_stages:open_reads_shadow`` and so on):

- ``ReadsShadow`` (starts in stage 2): stage 2 reads from RVF, the shadow, instead of SQLite,
  the source of truth. It agrees with the model as long as the shadow took every write; a
  shadow write that failed (a recorded divergence) or that a crash kept from it shows.
- ``SwitchThenSync`` (starts in stage 1): a promotion writes the new stage first and catches
  the store up after it (the reference records ``moving_to`` first and switches last). A crash
  during the catch-up reopens in the new stage, reading a store that was not caught up.
- ``DropsStage3Writes`` (starts in stage 3): stage 3 writes RVF only (SQLite, the fallback,
  gets nothing), and the rollback to stage 2 switches without catching SQLite up: every write
  made in stage 3 is gone once stage 2 reads SQLite again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from crashgate.backends import Env
from crashgate.reference.stages import StageAdapter, StageRecord, open_stage
from crashgate.reference.stages.roles import RVF, Data

__all__ = ["DropsStage3Writes", "ReadsShadow", "SwitchThenSync", "open_drops_stage3_writes",
           "open_reads_shadow", "open_switch_then_sync"]


class ReadsShadow(StageAdapter):
    """Stage 2 answers every read from the shadow."""

    def _read(self, what: str, kind: Data, keys: Sequence[str], ids: Sequence[int],
              call: Callable[[Any], Any]) -> Any:
        if self.stage == 2:
            return call(self.store(RVF))   # the defect: SQLite is the source of truth
        return super()._read(what, kind, keys, ids, call)


class _SwitchFirst:
    """A ``StageControl`` whose "moving to" record of a promotion is the switch itself."""

    def __init__(self, control: Any) -> None:
        self._control = control

    def __getattr__(self, name: str) -> Any:
        return getattr(self._control, name)

    def set_stage(self, record: StageRecord) -> None:
        if record.moving_to is not None and record.moving_to > record.stage:
            # the defect: the promotion switches before its catch-up, not after
            record = dataclasses.replace(record, stage=record.moving_to, moving_to=None)
        self._control.set_stage(record)


class SwitchThenSync(StageAdapter):
    """A promotion switches the stage marker, then catches the next stage's store up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._control = _SwitchFirst(self._control)   # type: ignore[assignment]


class DropsStage3Writes(StageAdapter):
    """Stage 3 never writes SQLite, and the rollback to stage 2 does not catch it up."""

    def _write(self, op: str, keys: Sequence[str], ids: Sequence[int],
               call: Callable[[Any], Any]) -> Any:
        if self.stage == 3:
            self._check_open()
            return call(self.store(RVF))   # the defect: SQLite, the fallback, gets nothing
        return super()._write(op, keys, ids, call)

    def rollback(self) -> int:
        if self.stage != 3:
            return super().rollback()
        self._check_open()
        # the defect: SQLite is taken to be in step, so 3 -> 2 is only the switch (stages 3
        # and 2 use the same two stores: nothing to open or close)
        self._control.set_stage(dataclasses.replace(self._control.stage(), stage=2,
                                                    moving_to=None))
        self.stage = 2
        self.declaration = self._declare(self)
        return 2


def open_reads_shadow(path: str, env: Env, **options: str) -> StageAdapter:
    """A stage adapter (new ones in stage 2) whose stage 2 reads the shadow."""
    return open_stage(path, env, 2, cls=ReadsShadow, **options)


def open_switch_then_sync(path: str, env: Env, **options: str) -> StageAdapter:
    """A stage adapter (new ones in stage 1) that switches before it catches up."""
    return open_stage(path, env, 1, cls=SwitchThenSync, **options)


def open_drops_stage3_writes(path: str, env: Env, **options: str) -> StageAdapter:
    """A stage adapter (new ones in stage 3) whose rollback to 2 loses stage 3's writes."""
    return open_stage(path, env, 3, cls=DropsStage3Writes, **options)
