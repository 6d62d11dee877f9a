"""Catching one store up with another: the backfill of a promotion or rollback, the repair of a
divergence, the export of the escape hatch.

A sync makes ``dst`` hold exactly what ``src`` holds (for the keys and ids it is given, or for
all of them), writing only what differs, in batches, with a failpoint after each batch. So it
is idempotent (a second run writes nothing) and resumable (a crash after some batches leaves
them written; the next run finds them equal and carries on where the first stopped), and the
store being caught up is never cleared first: a crash half-way leaves it holding its old
records and some of the new ones, never fewer of either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from crashgate.backends import VectorRecord

__all__ = ["BATCH", "sync_kv", "sync_vectors"]

BATCH = 256
"""Records per write of a sync: a crash between two of them is a point the failpoint names."""


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def sync_kv(src: Any, dst: Any, checkpoint: Callable[[], None],
            keys: Iterable[str] | None = None) -> int:
    """Make ``dst``'s key-value data equal ``src``'s (only ``keys``, when given); returns how
    many keys were written or deleted. ``checkpoint()`` runs after each batch."""
    if keys is None:
        want = dict(src.scan(""))
        have = dict(dst.scan(""))
    else:
        wanted = sorted(set(keys))
        want = {k: v for k in wanted if (v := src.get(k)) is not None}
        have = {k: v for k in wanted if (v := dst.get(k)) is not None}
    puts = sorted(k for k, v in want.items() if have.get(k) != v)
    deletes = sorted(have.keys() - want.keys())
    work = [(k, True) for k in puts] + [(k, False) for k in deletes]
    for chunk in _chunks(work, BATCH):
        dst.write_batch({k: want[k] for k, put in chunk if put},
                        [k for k, put in chunk if not put])
        checkpoint()
    return len(work)


def _same(a: VectorRecord, b: VectorRecord) -> bool:
    return a.vector == b.vector and dict(a.metadata) == dict(b.metadata)


def sync_vectors(src: Any, dst: Any, checkpoint: Callable[[], None],
                 ids: Iterable[int] | None = None) -> int:
    """Make ``dst``'s vectors equal ``src``'s (only ``ids``, when given; both stores list their
    ids with ``ids()`` otherwise); returns how many records were written or removed."""
    wanted = sorted(set(src.ids()) | set(dst.ids())) if ids is None else sorted(set(ids))
    written = 0
    for chunk in _chunks(wanted, BATCH):
        want = {r.id: r for r in src.fetch(chunk)}
        have = {r.id: r for r in dst.fetch(chunk)}
        upserts = [r for i, r in want.items() if i not in have or not _same(have[i], r)]
        removes = sorted(have.keys() - want.keys())
        if removes:
            dst.remove(removes)
        if upserts:
            dst.upsert(upserts)
        if removes or upserts:
            checkpoint()
        written += len(upserts) + len(removes)
    return written
