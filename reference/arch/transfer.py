"""ARCH-001's exporter back to JSON ("Rollback Plan"; the importer is ``importer.py``).

**The exporter** (``export_missions``, ``export_memory``) makes the JSON state hold exactly
what the database holds, with the stage mechanism's syncs (``stages/sync.py``): only what
differs is written, each document atomically (the JSON store's tmp + fsync + rename), with a
checkpoint after each batch; a crash half-way leaves every JSON document whole, old or new,
and a rerun finishes the job. A phase adapter's rollback from phase 3 to 2 runs the same syncs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from crashgate.reference.stages.sync import sync_kv, sync_missions

__all__ = ["export_memory", "export_missions"]


def export_missions(db: Any, json_state: Any, checkpoint: Callable[[], None],
                    ids: Iterable[str] | None = None) -> int:
    """Make ``json_state`` hold exactly ``db``'s mission documents (only ``ids``, when given);
    returns how many documents were written or deleted (``sync_missions``)."""
    return sync_missions(db, json_state, checkpoint, ids)


def export_memory(db: Any, json_state: Any, checkpoint: Callable[[], None],
                  keys: Iterable[str] | None = None) -> int:
    """Make ``json_state`` hold exactly ``db``'s key-value state (only ``keys``, when given);
    returns how many keys were written or deleted (``sync_kv``, one put or delete at a time:
    the JSON state has no batches)."""
    return sync_kv(db, json_state, checkpoint, keys)
