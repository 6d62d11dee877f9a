"""Issue 7, point 4: a lease store that never lets a dead writer's lease go stale.

The harness now reopens a lease store after a crash as a user would (waits the lease out on
the virtual clock, else opens read-only), so a store that keeps ADR-032's lease rule exactly
certifies. This store breaks the rule the other way: a lease record naming a holder is held
until that holder releases it, however old its heartbeat, so after a refresh (a tab killed
mid-write) no writer can ever open the store again. "A stale lease (heartbeat older than 30
seconds) is recoverable by a new writer": row 6 and invariant 1 must still catch it.
"""

from __future__ import annotations

from typing import Any

from faulty_backends import KV_STORE, LEASE_KV_DECLARATION, OPTIONS, LeaseKV

from crashgate.backends import Env, LockHeld, check_options
from crashgate.reference.indexeddb import IndexedDB
from crashgate.reference.lease import LEASE_STORE, Lease, read_lease

__all__ = ["open_lease_kv_never_stale"]


class NeverStaleLeaseKV(LeaseKV):
    """``LeaseKV`` whose lease is only ever freed by its holder's clean release."""

    def __init__(self, path: str, env: Env, *, readonly: bool) -> None:
        if readonly:
            super().__init__(path, env, readonly=True)
            return
        self.path = path
        self._fencing = True
        self._db = IndexedDB(path, env, stores=(KV_STORE, LEASE_STORE))
        self.declaration = LEASE_KV_DECLARATION
        try:
            with self._db.transaction(LEASE_STORE, "readwrite") as txn:
                rec = read_lease(txn)
            if rec is not None and rec.holder is not None:   # the defect: no staleness check
                raise LockHeld(self._db.path, rec.describe(env.clock.time()),
                               fix="wait for the holder to close the store")
            self._lease: Lease | None = Lease.acquire(self._db)
        except BaseException:
            self._db.close()
            raise


def open_lease_kv_never_stale(path: str, env: Env, **options: str) -> Any:
    opts = check_options("lease-kv-never-stale", options, OPTIONS)
    return NeverStaleLeaseKV(path, env, readonly=opts["readonly"] == "true")
