"""ADR-032's browser writer lease: a lock record with a heartbeat in an IndexedDB object store.

The record ``lease["writer"]`` is ``{"holder": tab | None, "token": n, "heartbeat": t}`` with
``t`` from ``env.clock.time()``. A tab takes the lease when there is no record, when it was
released, or when its heartbeat is older than ``STALE_AFTER`` (30 s); every take increments the
fencing token, which never goes back (a release keeps it). A fresh lease held by another tab
gives ``LockHeld`` naming the holder.

Fencing: every write transaction of a holder calls ``guard(txn)`` inside the transaction (whose
scope includes the lease store). It raises ``LeaseExpired`` unless the record still holds this
tab's token and is not stale, and renews the heartbeat when ``HEARTBEAT_EVERY`` (10 s) has
passed. Because the check and the write commit in one transaction, and a transaction that read
the lease store conflicts with any later write to it, a tab whose lease expired or was taken
over can never commit again. A lease that was lost stays lost: the tab must take a new one.

There is no background timer in the model: the heartbeat is renewed by the holder's writes and by
``heartbeat()`` (the browser's ``setInterval``), so an idle holder must call it.

A caller that can prove more than the heartbeat shows (the rvlite hybrid holds the RVF file lock,
which every holder of its lease also holds) may pass ``recover_dead`` to ``acquire``: a fresh
lease is then taken over at once unless its holder is alive *in this process*, i.e. a ``Lease``
object here still holds it through a connection that is open, not refreshed, and whose file
system still works (a simulated crash kills the file system of the process it ends).
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from typing import Any

from crashgate.backends import LeaseExpired, LockHeld
from crashgate.reference.indexeddb import IndexedDB, Transaction

__all__ = ["HEARTBEAT_EVERY", "LEASE_STORE", "STALE_AFTER", "Lease", "LeaseRecord", "read_lease"]

STALE_AFTER = 30.0
HEARTBEAT_EVERY = 10.0
LEASE_STORE = "lease"
_KEY = "writer"
_LIVE: weakref.WeakSet[Lease] = weakref.WeakSet()
"""The leases taken in this process (to tell a live holder from a dead one)."""


@dataclass(frozen=True)
class LeaseRecord:
    holder: str | None
    """The tab holding the lease; ``None`` once released."""
    token: int
    heartbeat: float

    @staticmethod
    def of(value: Any) -> LeaseRecord:
        return LeaseRecord(value.get("holder"), int(value["token"]), float(value["heartbeat"]))

    def to_json(self) -> dict[str, Any]:
        return {"holder": self.holder, "token": self.token, "heartbeat": self.heartbeat}

    def stale(self, now: float) -> bool:
        return now - self.heartbeat > STALE_AFTER

    def describe(self, now: float) -> str:
        return (f"tab {self.holder} holds the writer lease (fencing token {self.token}), last "
                f"heartbeat {now - self.heartbeat:.1f} s ago")


def read_lease(txn: Transaction) -> LeaseRecord | None:
    """The lease record as ``txn`` sees it (its scope must include ``LEASE_STORE``)."""
    value = txn.get(LEASE_STORE, _KEY)
    return None if value is None else LeaseRecord.of(value)


class Lease:
    """A tab's writer lease on one IndexedDB database. Take it with ``Lease.acquire``."""

    def __init__(self, db: IndexedDB, tab: str, token: int) -> None:
        self.db = db
        self.tab = tab
        self.token = token
        self._incarnation = db.incarnation
        self._lost: str | None = None
        _LIVE.add(self)

    @classmethod
    def acquire(cls, db: IndexedDB, *, tab: str | None = None, wait: float = 0.0,
                recover_dead: str | None = None) -> Lease:
        """Take the lease for ``tab`` (a fresh random id by default). While another tab holds a
        fresh lease, wait up to ``wait`` seconds on the env's clock for it to go stale, then
        raise ``LockHeld`` naming the holder. ``db`` must have the ``lease`` object store.

        ``recover_dead``: why a holder that is not alive in this process must be dead; such a
        fresh lease is then taken over at once, with a new token, and reported as
        ``env.observe("lease.recovered", ...)``."""
        clock = db.env.clock
        me = tab or f"tab-{os.urandom(4).hex()}"
        deadline = clock.monotonic() + wait
        while True:
            with db.transaction(LEASE_STORE, "readwrite") as txn:
                now = clock.time()
                rec = read_lease(txn)
                held = rec if rec and rec.holder is not None and not rec.stale(now) else None
                dead = held is not None and recover_dead is not None and not _alive_here(
                    db.path, held)
                if held is None or dead:
                    token = (rec.token if rec else 0) + 1
                    txn.put(LEASE_STORE, _KEY, LeaseRecord(me, token, now).to_json())
            if held is None or dead:
                if held is not None:
                    db.env.observe("lease.recovered", {
                        "path": db.path, "holder": held.holder, "token": held.token,
                        "age": now - held.heartbeat, "reason": recover_dead})
                return cls(db, me, token)
            assert rec is not None
            left = deadline - clock.monotonic()
            if left <= 0:
                until = STALE_AFTER - (now - rec.heartbeat)
                raise LockHeld(db.path, rec.describe(now), fix=(
                    f"close the other tab, or wait: the lease becomes recoverable when its "
                    f"heartbeat is older than {STALE_AFTER:.0f} s (in {max(until, 0):.1f} s)"))
            clock.sleep(min(left, max(STALE_AFTER - (now - rec.heartbeat), 0.0) + 0.5))

    @property
    def lost(self) -> str | None:
        """Why this lease was lost, once a check found it so (it then stays lost)."""
        return self._lost

    def holds(self, path: str, rec: LeaseRecord) -> bool:
        """Whether this lease object is ``rec``'s holder at ``path`` and still alive: not lost
        or released, its page not refreshed, its connection open and its file system working."""
        if (self._lost is not None or self.db.incarnation != self._incarnation or self.db.closed
                or (self.tab, self.token, self.db.path) != (rec.holder, rec.token, path)):
            return False
        try:
            return self.db.env.fs.exists(self.db.path)
        except OSError:   # the file system of a crashed (simulated) process
            return False

    def _fence(self, reason: str, holder: str = "") -> LeaseExpired:
        self._lost = reason
        return LeaseExpired(self.db.path, self.token, reason, holder=holder)

    def guard(self, txn: Transaction) -> None:
        """Inside a readwrite transaction including ``LEASE_STORE``: raise ``LeaseExpired``
        unless this tab still holds its lease; renew the heartbeat when it is due."""
        if self._lost is not None:
            raise self._fence(self._lost)
        if self.db.incarnation != self._incarnation:
            raise self._fence("the page that took it was refreshed")
        now = self.db.env.clock.time()
        rec = read_lease(txn)
        if rec is None or rec.token != self.token or rec.holder != self.tab:
            if rec is not None and rec.holder is not None:
                raise self._fence(f"tab {rec.holder} took it over with token {rec.token}",
                                  rec.holder)
            raise self._fence("it was released")
        if rec.stale(now):
            raise self._fence(f"its last heartbeat was {now - rec.heartbeat:.1f} s ago "
                              f"(stale after {STALE_AFTER:.0f} s)")
        if now - rec.heartbeat >= HEARTBEAT_EVERY:
            txn.put(LEASE_STORE, _KEY, LeaseRecord(self.tab, self.token, now).to_json())

    def heartbeat(self) -> None:
        """Renew the heartbeat when it is due (what the tab's timer does every 10 s);
        ``LeaseExpired`` when the lease was lost."""
        with self.db.transaction(LEASE_STORE, "readwrite") as txn:
            self.guard(txn)

    def release(self) -> None:
        """Give the lease up (a clean close); the token is kept so tokens never repeat.
        A no-op when it was already lost or the page was refreshed."""
        if self._lost is not None or self.db.incarnation != self._incarnation:
            return
        with self.db.transaction(LEASE_STORE, "readwrite") as txn:
            rec = read_lease(txn)
            if rec is not None and rec.token == self.token and rec.holder == self.tab:
                txn.put(LEASE_STORE, _KEY, LeaseRecord(None, self.token, rec.heartbeat).to_json())
        self._lost = "it was released"


def _alive_here(path: str, rec: LeaseRecord) -> bool:
    return any(lease.holds(path, rec) for lease in list(_LIVE))
