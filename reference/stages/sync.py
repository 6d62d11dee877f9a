"""Catching one store up with another: the backfill of a promotion or rollback, the repair of a
divergence, the export of the escape hatch; for key-value data, vectors and relational records.

A sync makes ``dst`` hold exactly what ``src`` holds (for the keys and ids it is given, or for
all of them), writing only what differs, in batches, with a failpoint after each batch. So it
is idempotent (a second run writes nothing) and resumable (a crash after some batches leaves
them written; the next run finds them equal and carries on where the first stopped), and the
store being caught up is never cleared first: a crash half-way leaves it holding its old
records and some of the new ones, never fewer of either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from crashgate.backends import QValue, VectorRecord, canonical_mission, plan_json

__all__ = ["BATCH", "SYNCS", "RelationalData", "relational_data", "sync_kv", "sync_missions",
           "sync_relational", "sync_vectors"]

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
    # a store without batches (the JSON state files: one file per key) takes them one by one;
    # each is atomic on its own, and the sync is resumable either way
    write_batch = getattr(dst, "write_batch", None)
    for chunk in _chunks(work, BATCH):
        if write_batch is not None:
            write_batch({k: want[k] for k, put in chunk if put},
                        [k for k, put in chunk if not put])
        else:
            for k, put in chunk:
                if put:
                    dst.put(k, want[k])
                else:
                    dst.delete(k)
        checkpoint()
    return len(work)


def sync_missions(src: Any, dst: Any, checkpoint: Callable[[], None],
                  ids: Iterable[str] | None = None) -> int:
    """Make ``dst``'s mission documents (``MissionStore``) equal ``src``'s (only ``ids``, when
    given; every id either store lists otherwise); returns how many were written or deleted.
    Documents compare as their canonical JSON (``canonical_mission``: 1, 1.0 and True differ).
    Each ``mission_put`` is atomic on its own; ``checkpoint()`` runs after each batch of
    ``BATCH`` ids that wrote something."""
    wanted = sorted(set(src.mission_ids()) | set(dst.mission_ids())) if ids is None \
        else sorted(set(ids))
    written = 0
    for chunk in _chunks(wanted, BATCH):
        wrote = 0
        for mission_id in chunk:
            want, have = src.mission_get(mission_id), dst.mission_get(mission_id)
            if want is None and have is not None:
                dst.mission_delete(mission_id)
            elif want is not None and (have is None
                                       or canonical_mission(have) != canonical_mission(want)):
                dst.mission_put(want)
            else:
                continue
            wrote += 1
        if wrote:
            checkpoint()
        written += wrote
    return written


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


def sync_relational(src: Any, dst: Any, checkpoint: Callable[[], None],
                    states: Iterable[str] | None = None,
                    plans: Iterable[str] | None = None) -> int:
    """Make ``dst``'s relational records (``Relational``) equal ``src``'s: the Q-values of
    ``states`` (every action of each; all states when None) and the plans ``plans`` (all when
    None); returns how many records were written or deleted. ``checkpoint()`` runs after each
    batch of ``BATCH`` records.

    A Q-value is copied with ``q_value_put``, value and count as ``src`` holds them: replaying
    an update would count it again. One that ``dst`` holds and ``src`` does not is deleted
    (``q_value_delete``), as a key is: after a power loss took it from the source of truth, the
    stage reads "no such Q-value", and the store caught up must answer the same, or a later
    stage would bring it back with a count the truth never reached. Plans compare as their
    canonical JSON (``plan_json``): 1, 1.0 and True are equal in Python and differ in JSON."""
    work: list[Callable[[], None]] = []
    states = sorted(set(src.relational_states()) | set(dst.relational_states())) \
        if states is None else sorted(set(states))
    for state in states:
        want, have = src.q_values(state), dst.q_values(state)
        work += [_q_put(dst, state, a, q) for a, q in want.items() if have.get(a) != q]
        work += [_q_delete(dst, state, a) for a in sorted(have.keys() - want.keys())]
    plans = sorted(set(src.goap_ids()) | set(dst.goap_ids())) if plans is None \
        else sorted(set(plans))
    for plan_id in plans:
        plan, old = src.goap_retrieve(plan_id), dst.goap_retrieve(plan_id)
        if plan is None and old is not None:
            work.append(_plan_delete(dst, plan_id))
        elif plan is not None and (old is None or plan_json(old) != plan_json(plan)):
            work.append(_plan_store(dst, plan_id, plan))
    for chunk in _chunks(work, BATCH):
        for write in chunk:   # one commit each: the protocol has no batch of them
            write()
        checkpoint()
    return len(work)


SYNCS: dict[str, Callable[[Any, Any, Callable[[], None]], int]] = {
    "kv": sync_kv, "relational": sync_relational, "vectors": sync_vectors}
"""The whole sync of each kind of data: ``SYNCS[data](src, dst, checkpoint)``."""


# one closure per write, built apart so that each binds its own arguments
def _q_put(dst: Any, state: str, action: str, q: QValue) -> Callable[[], None]:
    return lambda: dst.q_value_put(state, action, q)


def _q_delete(dst: Any, state: str, action: str) -> Callable[[], None]:
    return lambda: dst.q_value_delete(state, action)


def _plan_store(dst: Any, plan_id: str, plan: dict[str, Any]) -> Callable[[], None]:
    return lambda: dst.goap_store(plan_id, plan)


def _plan_delete(dst: Any, plan_id: str) -> Callable[[], None]:
    return lambda: dst.goap_delete(plan_id)


@dataclass(frozen=True)
class RelationalData:
    """A store's whole relational data, comparable: ``q_values`` as (state, action, QValue)
    and ``plans`` as (plan id, canonical JSON), both sorted."""

    q_values: tuple[tuple[str, str, QValue], ...]
    plans: tuple[tuple[str, str], ...]


def relational_data(store: Any) -> RelationalData:
    """Everything relational ``store`` holds (what a sync of all of it would copy)."""
    q = tuple((s, a, v) for s in store.relational_states()
              for a, v in sorted(store.q_values(s).items()))
    plans = []
    for plan_id in store.goap_ids():
        plan = store.goap_retrieve(plan_id)
        if plan is not None:
            plans.append((plan_id, plan_json(plan)))
    return RelationalData(q, tuple(plans))
