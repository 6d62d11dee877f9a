"""ADR-0003's ``MemoryStore``: long-term memory with tenant ids, retention fields and deletion
audit events, over any crashgate store with kv and batch.

Keys (``adr0003/`` prefix):

- ``memory/<tenant>/<memory id>``: the record, JSON ``{content, created_at, expires_at,
  metadata}``;
- ``audit/<tenant>/<seq>``: one deletion event, ``seq`` 12 digits so key order is event order;
- ``audit-seq/<tenant>``: the tenant's last event number.

Every deletion is one ``write_batch``: the record's delete, its audit event and the new event
number together, so after any crash a record is either there (and unaudited) or gone with its
event: never gone without a trace, never audited while still there. Reads compare
``expires_at`` with ``clock.time()``: an expired record is never returned, purged or not.
"""

from __future__ import annotations

import builtins
import json
import math
import threading
from collections.abc import Mapping
from typing import Any

from crashgate.backends import Clock
from crashgate.reference.adr0003.records import (
    PREFIX,
    AuditEvent,
    MemoryRecord,
    check_id,
    dumps,
    require,
)

__all__ = ["MemoryStore"]

_RECORDS = PREFIX + "memory/"
_AUDIT = PREFIX + "audit/"
_SEQ = PREFIX + "audit-seq/"


class MemoryStore:
    """Long-term memories of tenants in ``store``; time from ``clock`` (``env.clock``).
    One writer at a time (a lock serialises this process's writes)."""

    def __init__(self, store: Any, clock: Clock) -> None:
        require(store, "memory")
        self.store = store
        self.clock = clock
        self._lock = threading.RLock()

    # -- writes ---------------------------------------------------------------------------

    def remember(self, tenant_id: str, memory_id: str, content: str, *,
                 retention_s: float | None = None,
                 metadata: Mapping[str, Any] | None = None) -> MemoryRecord:
        """Store (or replace) a memory, kept ``retention_s`` seconds from now (None: until it is
        forgotten). Replacing an expired, unpurged one audits its expiry in the same batch."""
        check_id("tenant_id", tenant_id)
        check_id("memory_id", memory_id)
        if not isinstance(content, str):
            raise ValueError(f"content={content!r}: give the memory as a str")
        if retention_s is not None and (isinstance(retention_s, bool) or not isinstance(
                retention_s, int | float) or not math.isfinite(retention_s) or retention_s < 0):
            raise ValueError(f"retention_s={retention_s!r}: give seconds >= 0, or None to keep "
                             "the memory until it is forgotten")
        with self._lock:
            now = self.clock.time()
            record = MemoryRecord(tenant_id, memory_id, content, now,
                                  None if retention_s is None else now + float(retention_s),
                                  dict(metadata or {}))
            puts = {_record_key(tenant_id, memory_id): dumps(_record_doc(record))}
            old = self._stored(tenant_id, memory_id)
            if old is not None and old.expired(now):
                puts.update(self._audit_puts(tenant_id, [old], "expire", "remember",
                                             "retention expired; replaced", now))
            self.store.write_batch(puts)
            return record

    def forget(self, tenant_id: str, memory_id: str, *, actor: str, reason: str
               ) -> AuditEvent | None:
        """Delete a memory with its audit event (one batch); None if there was none. An
        expired, unpurged memory is audited as ``expire``, since retention removed it first."""
        check_id("tenant_id", tenant_id)
        check_id("memory_id", memory_id)
        _check_text("actor", actor)
        _check_text("reason", reason)
        with self._lock:
            now = self.clock.time()
            old = self._stored(tenant_id, memory_id)
            if old is None:
                return None
            action = "expire" if old.expired(now) else "delete"
            puts = self._audit_puts(tenant_id, [old], action, actor, reason, now)
            self.store.write_batch(puts, [_record_key(tenant_id, memory_id)])
            return _event(next(k for k in puts if k.startswith(_AUDIT)), puts)

    def purge_expired(self, *, actor: str = "retention") -> list[AuditEvent]:
        """Delete every expired memory of every tenant, each with an ``expire`` event, in one
        batch; returns the events (by tenant, then event order)."""
        _check_text("actor", actor)
        with self._lock:
            now = self.clock.time()
            by_tenant: dict[str, list[MemoryRecord]] = {}
            for key, raw in self.store.scan(_RECORDS):
                record = _record(key, raw)
                if record.expired(now):
                    by_tenant.setdefault(record.tenant_id, []).append(record)
            if not by_tenant:
                return []
            puts: dict[str, bytes] = {}
            deletes: list[str] = []
            for tenant, records in sorted(by_tenant.items()):
                puts.update(self._audit_puts(tenant, records, "expire", actor,
                                             "retention expired", now))
                deletes += [_record_key(tenant, r.memory_id) for r in records]
            self.store.write_batch(puts, deletes)
            return [_event(k, puts) for k in sorted(puts) if k.startswith(_AUDIT)]

    def _audit_puts(self, tenant_id: str, records: builtins.list[MemoryRecord], action: str,
                    actor: str, reason: str, now: float) -> dict[str, bytes]:
        raw = self.store.get(_SEQ + tenant_id)
        seq = int(raw) if raw is not None else 0
        puts: dict[str, bytes] = {}
        for record in records:
            seq += 1
            puts[f"{_AUDIT}{tenant_id}/{seq:012d}"] = dumps({
                "memory_id": record.memory_id, "action": action, "actor": actor,
                "reason": reason, "at": now})
        puts[_SEQ + tenant_id] = str(seq).encode()
        return puts

    # -- reads ----------------------------------------------------------------------------

    def _stored(self, tenant_id: str, memory_id: str) -> MemoryRecord | None:
        key = _record_key(tenant_id, memory_id)
        raw = self.store.get(key)
        return None if raw is None else _record(key, raw)

    def get(self, tenant_id: str, memory_id: str) -> MemoryRecord | None:
        """The memory, or None if there is none or it has expired."""
        check_id("tenant_id", tenant_id)
        check_id("memory_id", memory_id)
        record = self._stored(tenant_id, memory_id)
        return None if record is None or record.expired(self.clock.time()) else record

    def list(self, tenant_id: str) -> list[MemoryRecord]:
        """The tenant's unexpired memories, by memory id."""
        check_id("tenant_id", tenant_id)
        now = self.clock.time()
        records = [_record(k, v) for k, v in self.store.scan(f"{_RECORDS}{tenant_id}/")]
        return [r for r in records if not r.expired(now)]

    def audit_events(self, tenant_id: str) -> builtins.list[AuditEvent]:
        """The tenant's deletion events, oldest first."""
        check_id("tenant_id", tenant_id)
        return [_event(k, dict([(k, v)])) for k, v in self.store.scan(f"{_AUDIT}{tenant_id}/")]


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}={value!r}: give a non-empty str (it is kept in the audit "
                         "event)")


def _record_key(tenant_id: str, memory_id: str) -> str:
    return f"{_RECORDS}{tenant_id}/{memory_id}"


def _record_doc(record: MemoryRecord) -> dict[str, Any]:
    return {"content": record.content, "created_at": record.created_at,
            "expires_at": record.expires_at, "metadata": dict(record.metadata)}


def _record(key: str, raw: bytes) -> MemoryRecord:
    tenant_id, memory_id = key[len(_RECORDS):].split("/", 1)
    doc = json.loads(raw)
    return MemoryRecord(tenant_id, memory_id, doc["content"], doc["created_at"],
                        doc["expires_at"], doc["metadata"])


def _event(key: str, puts: Mapping[str, bytes]) -> AuditEvent:
    tenant_id, event_id = key[len(_AUDIT):].split("/", 1)
    doc = json.loads(puts[key])
    return AuditEvent(tenant_id, event_id, doc["memory_id"], doc["action"], doc["actor"],
                      doc["reason"], doc["at"])
