"""Issue 10: a stage 4 whose escape hatch is activated by rewriting the SQLite file in place.

ADR-072's stage 4 keeps SQLite as a read-only escape hatch, and "activate_escape_hatch()
exports RVF into SQLite (atomically: a crash half-way leaves the previous SQLite untouched)".
This adapter copies RVF's data straight into the escape hatch and then switches: a crash in the
middle of the copy leaves stage 4 with an escape hatch that is neither the one it had nor RVF's.
The ``adr072-escape`` row must catch it.
"""

from __future__ import annotations

from crashgate.backends import Env
from crashgate.reference.stages import StageAdapter, StageRecord, open_stage
from crashgate.reference.stages.roles import RVF, SQLITE, roles
from crashgate.reference.stages.sync import sync_kv, sync_vectors

__all__ = ["open_escape_in_place"]


class EscapeInPlace(StageAdapter):
    def activate_escape_hatch(self) -> int:
        self._check_open()
        hatch = self._open(SQLITE)   # the defect: the escape hatch itself is the target
        sync_kv(self._stores[RVF], hatch, self._batch_done)
        sync_vectors(self._stores[RVF], hatch, self._batch_done)
        self._control.set_stage(StageRecord(0, sqlite=self._sqlite_file))
        self.stage = 0
        self._close_stores(roles(0).stores)
        self.declaration = self._declare(self)
        return 0


def open_escape_in_place(path: str, env: Env, **options: str) -> StageAdapter:
    return open_stage(path, env, 4, cls=EscapeInPlace, **options)
