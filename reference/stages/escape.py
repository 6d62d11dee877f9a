"""Stage 4's escape hatch: RVF's data exported into SQLite, so that SQLite can be the primary
again (ADR-072: "Emergency rollback: export RVF to SQLite and switch").

The export never writes the SQLite file it replaces: it builds a new file beside it (the next
``sqlite.<n>.db``), closes it (SQLite checkpoints its WAL into it) and syncs the directory. The
adapter then switches the stage and the name of its SQLite file in one write of its control
record, so a crash at any point leaves the previous SQLite file as it was and in use, or the new
one whole and in use; the previous file is removed only after the switch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from crashgate.backends import CorruptStore, Env, remove_if_present
from crashgate.reference.sqlite_store import open_sqlite
from crashgate.reference.stages.sync import sync_kv, sync_relational, sync_vectors

__all__ = ["ESCAPE_FAILPOINTS", "export_into_sqlite", "next_sqlite_name", "remove_sqlite"]

ESCAPE_FAILPOINTS = ("stage4.after-export", "stage4.after-switch")
"""Hit by ``activate_escape_hatch``: the export written and synced, before the switch; the
switch made, before the previous file is removed."""
_SIDE_FILES = ("-wal", "-shm", "-journal")


def next_sqlite_name(current: str) -> str:
    """``sqlite.db`` -> ``sqlite.1.db`` -> ``sqlite.2.db`` ..."""
    parts = current.split(".")
    n = int(parts[1]) + 1 if len(parts) == 3 and parts[1].isdigit() else 1
    return f"sqlite.{n}.db"


def remove_sqlite(env: Env, path: str) -> None:
    """Remove a SQLite file and its side files (a WAL, a journal), where there are any."""
    remove_if_present(env.fs, path, *(path + s for s in _SIDE_FILES))


def export_into_sqlite(rvf: Any, path: str, env: Env, options: Mapping[str, str],
                       batch_done: Callable[[], None]) -> None:
    """Write ``rvf``'s key-value data, relational records and vectors into a new SQLite file
    at ``path`` (whatever an interrupted export left there is removed first), closed, with its
    directory synced. ``options``: the SQLite store's options."""
    remove_sqlite(env, path)
    store = open_sqlite(path, env, **options)
    try:
        sync_kv(rvf, store, batch_done)
        sync_relational(rvf, store, batch_done)
        sync_vectors(rvf, store, batch_done)
    except Exception:
        store.close()
        raise
    store.close()
    left = [path + s for s in ("-wal", "-journal") if env.fs.exists(path + s)]
    if left:
        raise CorruptStore(path, f"{left[0]} is still there after a clean close; the export is "
                                 "not whole in its file. Nothing was switched")
    env.fs.sync_dir(os.path.dirname(path) or ".")
