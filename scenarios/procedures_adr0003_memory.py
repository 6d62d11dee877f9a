"""ADR-0003's long-term memory over the backend under certification: "Long-term memory tables
support tenant_id, retention fields, and deletion audit events", held to a plain model.

``MemoryModel`` is the oracle: memories by (tenant, id) with ``created_at`` and ``expires_at``
(an expired memory is one whose ``expires_at`` is at or before the clock), and each tenant's
audit events in order. A forget deletes with a ``delete`` event (``expire`` when the memory had
already expired), a purge deletes every expired memory with an ``expire`` event each, a
remember that replaces an expired memory audits its expiry. ``view(now)`` is everything a
reader may see at ``now``: never an expired memory, every event.

``check_memory_tables`` runs a seeded workload (two tenants, remembers with and without
retention, forgets of live, expired and missing memories, purges, the clock moved) and compares
every answer and the whole view after every step. The crash rows (``procedures_adr0003_crash``)
judge a recovered store by the same view.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from crashgate.harness.clock import VirtualClock
from crashgate.harness.verdict import Evidence, Verdict, first_line
from crashgate.scenarios.procedures_adr0003 import adr0003, open_on_disk

__all__ = ["TENANTS", "MemoryModel", "MemoryOp", "check_memory_tables", "memory_ops",
           "read_view"]

TENANTS = ("acme", "globex")
View = tuple[tuple[str, tuple[Any, ...], tuple[Any, ...]], ...]
"""Per tenant: (tenant, its unexpired memories as (id, content, created_at, expires_at) by id,
its audit events as (memory id, action, actor, reason, at) in order)."""


@dataclass
class MemoryModel:
    """The oracle (module docstring)."""

    records: dict[tuple[str, str], tuple[str, float, float | None]] = field(default_factory=dict)
    events: dict[str, list[tuple[str, str, str, str, float]]] = field(default_factory=dict)

    def copy(self) -> MemoryModel:
        return MemoryModel(dict(self.records), {t: list(e) for t, e in self.events.items()})

    @staticmethod
    def _expired(expires: float | None, now: float) -> bool:
        return expires is not None and now >= expires

    def _audit(self, tenant: str, mid: str, action: str, actor: str, reason: str,
               now: float) -> tuple[str, str, str, str, float]:
        event = (mid, action, actor, reason, now)
        self.events.setdefault(tenant, []).append(event)
        return event

    def remember(self, tenant: str, mid: str, content: str, retention: float | None,
                 now: float) -> None:
        old = self.records.get((tenant, mid))
        if old is not None and self._expired(old[2], now):
            self._audit(tenant, mid, "expire", "remember", "retention expired; replaced", now)
        self.records[(tenant, mid)] = (content, now, None if retention is None
                                       else now + retention)

    def forget(self, tenant: str, mid: str, actor: str, reason: str, now: float
               ) -> tuple[str, str, str, str, float] | None:
        old = self.records.pop((tenant, mid), None)
        if old is None:
            return None
        action = "expire" if self._expired(old[2], now) else "delete"
        return self._audit(tenant, mid, action, actor, reason, now)

    def purge(self, now: float) -> list[tuple[str, str, str, str, float]]:
        out = []
        for tenant, mid in sorted(k for k, v in self.records.items()
                                  if self._expired(v[2], now)):
            del self.records[(tenant, mid)]
            out.append(self._audit(tenant, mid, "expire", "retention", "retention expired", now))
        return out

    def view(self, now: float) -> View:
        return tuple((t, tuple((mid, c, created, exp) for (tt, mid), (c, created, exp)
                               in sorted(self.records.items())
                               if tt == t and not self._expired(exp, now)),
                      tuple(self.events.get(t, ()))) for t in TENANTS)


def read_view(memory: Any) -> View:
    """What ``memory`` (a ``MemoryStore``) shows, as ``MemoryModel.view`` gives it."""
    return tuple((t, tuple((r.memory_id, r.content, r.created_at, r.expires_at)
                           for r in memory.list(t)),
                  tuple((e.memory_id, e.action, e.actor, e.reason, e.at)
                        for e in memory.audit_events(t))) for t in TENANTS)


@dataclass(frozen=True)
class MemoryOp:
    """One step: ``kind`` remember / forget / purge / advance, and its arguments."""

    kind: str
    tenant: str = ""
    memory_id: str = ""
    content: str = ""
    retention: float | None = None
    seconds: float = 0.0

    @property
    def writes(self) -> bool:
        return self.kind != "advance"

    def run(self, memory: Any) -> Any:
        if self.kind == "remember":
            return memory.remember(self.tenant, self.memory_id, self.content,
                                   retention_s=self.retention)
        if self.kind == "forget":
            return memory.forget(self.tenant, self.memory_id, actor="user:ops",
                                 reason="erasure request")
        if self.kind == "purge":
            return memory.purge_expired()
        memory.clock.advance(self.seconds)
        return None

    def apply(self, model: MemoryModel, now: float) -> Any:
        if self.kind == "remember":
            model.remember(self.tenant, self.memory_id, self.content, self.retention, now)
        elif self.kind == "forget":
            return model.forget(self.tenant, self.memory_id, "user:ops", "erasure request", now)
        elif self.kind == "purge":
            return model.purge(now)
        return None


def memory_ops(seed: int, steps: int) -> list[MemoryOp]:
    """A seeded workload of ``steps`` ops over ``TENANTS`` (ids reused, so forgets and
    replacements meet live, expired and missing memories; retentions end half-way between
    whole seconds, so no read falls on an expiry instant)."""
    rng = random.Random(seed)
    ops = []
    for i in range(steps):
        tenant, mid = rng.choice(TENANTS), f"m{rng.randrange(12)}"
        roll = rng.random()
        if roll < 0.5:
            ops.append(MemoryOp("remember", tenant, mid, f"fact {i} of {tenant}",
                                rng.choice((None, 5.5, 30.5, 200.5))))
        elif roll < 0.7:
            ops.append(MemoryOp("forget", tenant, mid))
        elif roll < 0.8:
            ops.append(MemoryOp("purge"))
        else:
            ops.append(MemoryOp("advance", seconds=float(rng.choice((1, 10, 40)))))
    return ops


def _answers(op: MemoryOp, got: Any, want: Any, now: float) -> str | None:
    """Whether the call's own answer is the model's."""
    if op.kind == "remember":
        fields = (got.tenant_id, got.memory_id, got.content, got.created_at, got.expires_at)
        expect = (op.tenant, op.memory_id, op.content, now,
                  None if op.retention is None else now + op.retention)
        return None if fields == expect else f"returned {fields}, not {expect}"
    if op.kind == "forget":
        seen = None if got is None else (got.tenant_id, got.memory_id, got.action, got.actor,
                                         got.reason, got.at)
        event = None if want is None else (op.tenant, *want)
        return None if seen == event else f"returned the event {seen}, not {event}"
    if op.kind == "purge":
        seen_events = [(e.memory_id, e.action, e.actor, e.reason, e.at) for e in got]
        return None if sorted(seen_events) == sorted(want) else \
            f"returned events {seen_events}, not {want}"
    return None


def check_memory_tables(spec: Any, *, seed: int, steps: int) -> Evidence:
    """The workload, every answer and the whole view after every step against the model, and
    another tenant's id never read across tenants."""
    memory_store = adr0003("MemoryStore")
    store, env, _disk = open_on_disk(spec)
    model, problems = MemoryModel(), []
    ops = memory_ops(seed, steps)
    counts = {"expired_hidden": 0, "audited": 0}
    # the layer's own clock (application time, which retention is about), apart from the
    # store's: moving it 40 s must not stale a leased store's writer lease, whose holder
    # renews it as time passes (the browser's setInterval), nor a recovery's lease wait move
    # retention
    clock = VirtualClock(env.clock.time())
    try:
        memory = memory_store(store, clock)
        for n, op in enumerate(ops):
            now = clock.time()
            try:
                got = op.run(memory)
            except Exception as exc:  # noqa: BLE001 - a failed call is the finding
                problems.append(f"step {n} {op}: raised {first_line(exc)}")
                break
            want = op.apply(model, now)
            now = clock.time()
            why = _answers(op, got, want, now) or _compare(memory, model, now, counts)
            if why is not None:
                problems.append(f"step {n} {op.kind} {op.tenant} {op.memory_id}: {why}")
                break
    finally:
        store.close()
    measured = {"steps": len(ops), "seed": seed, **counts}
    if problems:
        return Evidence(Verdict.FAIL, problems[0], measured, conclusive=True)
    if not counts["audited"] or not counts["expired_hidden"]:
        return Evidence(Verdict.UNKNOWN, "the workload never audited a deletion or never hid "
                        "an expired memory: too short to judge", measured)
    return Evidence(Verdict.PASS, f"{len(ops)} steps over {len(TENANTS)} tenants: every "
                    "answer and every view as the model (tenant ids kept apart, expired "
                    "memories never returned, each deletion audited with who, what, why and "
                    "when)", measured)


def _compare(memory: Any, model: MemoryModel, now: float, counts: dict[str, int]
             ) -> str | None:
    got, want = read_view(memory), model.view(now)
    if got != want:
        return f"the store shows {got!r:.300}, the model {want!r:.300}"
    for (tenant, mid), (_c, _created, expires) in model.records.items():
        other = TENANTS[1 - TENANTS.index(tenant)]
        if (other, mid) not in model.records and memory.get(other, mid) is not None:
            return f"get({other!r}, {mid!r}) answered tenant {tenant!r}'s memory"
        if MemoryModel._expired(expires, now):
            counts["expired_hidden"] += 1
            if memory.get(tenant, mid) is not None:
                return f"get({tenant!r}, {mid!r}) returned a memory that expired at {expires}"
    counts["audited"] = sum(len(e) for e in model.events.values())
    return None


def replay(ops: list[MemoryOp], upto: int, start: float) -> tuple[MemoryModel, float]:
    """The model after ``ops[:upto]`` on a clock starting at ``start``, and the clock then."""
    model, now = MemoryModel(), start
    for op in ops[:upto]:
        op.apply(model, now)
        if op.kind == "advance":
            now += op.seconds
    return model, now

