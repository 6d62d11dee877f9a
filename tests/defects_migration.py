"""Migration tools with one realistic defect each, for ADR-032 row 4 to catch (through
``crashgate certify rvf --migrator defects_migration:NAME`` with ``PYTHONPATH=tests``).

Both meet the migrator contract (``crashgate.backends.migrator``): they read the JSON ingest
file through ``env.fs``, write an RVF file, hit ``BATCH_DONE`` after each batch, and a plain
rerun of a finished migration is a no-op. Neither loses or duplicates anything when it is left to
run; each fails a user in one situation only.

- ``progress_first`` keeps its resume point in a side file, written with care (temporary file,
  fsync, rename, directory fsync) but BEFORE the batch it counts is committed: a crash inside a
  batch leaves the progress ahead of the data, and the rerun skips that batch for good.
- ``size_check`` decides "already migrated" from the source's size and record count, kept in
  the destination: after the source changed with the same size, the rerun is a silent no-op
  over the old values.
"""

from __future__ import annotations

import json
import os
from typing import Any

from crashgate.backends import BATCH_DONE, Env, MigrationResult, VectorRecord, read_all
from crashgate.reference.rvf.store import RvfStore, open_rvf

MARKER = "migration/source"


def _records(source: str, env: Env) -> tuple[list[VectorRecord], int]:
    raw = read_all(env.fs, source)
    by_id = {int(d["id"]): VectorRecord.of(int(d["id"]), d["vector"], d.get("metadata") or {})
             for d in json.loads(raw)}
    return [by_id[i] for i in sorted(by_id)], len(raw)


def _open(dest: str, env: Env, records: list[VectorRecord]) -> RvfStore:
    if env.fs.exists(dest) or not records:
        return open_rvf(dest, env)
    return open_rvf(dest, env, dimension=str(len(records[0].vector)), metric="l2")


def _write_atomically(env: Env, path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    f = env.fs.open(tmp, "w")
    try:
        f.write(0, data)
        f.sync()
    finally:
        f.close()
    env.fs.rename(tmp, path)
    env.fs.sync_dir(os.path.dirname(path) or ".")


def progress_first(source: str, dest: str, env: Env, *, batch_size: int,
                   **_options: Any) -> MigrationResult:
    """Resumes after the records its progress file counts; the file is updated before the batch
    is written (the defect: it should be updated after the batch is durable, or in the same
    commit, as ``crashgate rvf migrate`` does)."""
    records, _size = _records(source, env)
    progress = dest + ".progress"
    done = int(json.loads(read_all(env.fs, progress))["done"]) if env.fs.exists(progress) else 0
    store = _open(dest, env, records)
    try:
        for start in range(done, len(records), batch_size):
            batch = records[start:start + batch_size]
            _write_atomically(env, progress, json.dumps({"done": start + len(batch)}).encode())
            store.upsert(batch)
            env.failpoints.hit(BATCH_DONE)
    finally:
        store.close()
    return MigrationResult(len(records), max(len(records) - done, 0), min(done, len(records)))


def size_check(source: str, dest: str, env: Env, *, batch_size: int,
               **_options: Any) -> MigrationResult:
    """Upserts every batch (by id, so a crashed run is simply redone), then records the
    source's size and record count; a rerun that finds them equal does nothing (the defect:
    equal size and count do not make an equal source; ``crashgate rvf migrate`` keys its
    progress on a digest of the records)."""
    records, size = _records(source, env)
    marker = json.dumps({"bytes": size, "records": len(records)}).encode()
    store = _open(dest, env, records)
    try:
        if store.get(MARKER) == marker:
            return MigrationResult(len(records), 0, len(records))
        for start in range(0, len(records), batch_size):
            store.upsert(records[start:start + batch_size])
            env.failpoints.hit(BATCH_DONE)
        store.put(MARKER, marker)
    finally:
        store.close()
    return MigrationResult(len(records), len(records), 0)
