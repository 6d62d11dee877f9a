"""Test stores with one realistic defect each in how a writer lock or lease holds over time
(``module:factory`` specs, e.g. ``defects_locks:open_rvf_steals_old_lock``; child processes
find this module through PYTHONPATH). ADR-032 row 3 and invariant 1 must catch the first, row 6
and invariant 1 the second, at the standard budget.

- ``open_rvf_steals_old_lock``: the reference RVF store whose ``<file>.lock`` counts as stale
  once it is older than 30 s, whether or not its holder still runs (a lock file judged by its
  age alone, as naive lockfile code does). A live writer that has held the store for more than
  30 s loses it to the next writer.
- ``open_lease_kv_trusts_its_clock``: the test suite's lease key-value store whose writes skip
  reading the lease record while its own clock says the last check was less than a heartbeat
  interval (10 s) ago: "my lease is good until T" (the fast path that makes Kleppmann's paused
  lease holder write after its lease was taken over). Only the full check fences it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from faulty_backends import OPTIONS as LEASE_OPTIONS
from faulty_backends import LeaseKV

from crashgate.backends import Env, check_options
from crashgate.reference.lease import HEARTBEAT_EVERY
from crashgate.reference.rvf.lock import WriterLock
from crashgate.reference.rvf.store import OPTIONS, RvfStore

__all__ = ["AgeOnlyLock", "TrustsItsClock", "open_lease_kv_trusts_its_clock",
           "open_rvf_steals_old_lock"]


# -- a writer lock judged by its age alone -------------------------------------------------


class AgeOnlyLock(WriterLock):
    """The reference lock, except that a lock older than ``stale_after`` is recovered without
    asking whether its holder is alive (the defect)."""

    def acquire(self) -> None:
        for _ in range(8):
            got = self._read_settled()
            if got is None or got[1] is None or got[1].pid == self.process.identity().pid:
                break  # no lock, a torn one, or this process's own: the reference judges it
            raw, info = got
            if info.age(self.clock.time()) <= self.stale_after:
                break
            self._recover(raw)  # the defect: old is taken to mean dead
        super().acquire()


def open_rvf_steals_old_lock(path: str, env: Env, **options: str) -> RvfStore:
    """The reference RVF store with ``AgeOnlyLock`` (it still declares ``writer-lock``)."""
    opts = check_options("rvf", options, OPTIONS)
    if opts["readonly"] == "true" or opts["lock"] != "true":
        return RvfStore(path, env, opts, options)
    if env.fs.exists(path):
        # the reference refuses a newer or damaged file before it takes the lock: so does this
        RvfStore(path, env, {**opts, "readonly": "true"}, {}).close()
    lock = AgeOnlyLock(env.fs, env.clock, path, stale_after=float(str(opts["stale_after"])),
                       process=env.process)
    lock.acquire()
    try:
        return RvfStore(path, env, opts, options, lock=lock)
    except BaseException:
        lock.release()
        raise


# -- a lease holder that trusts its own clock ---------------------------------------------


class TrustsItsClock(LeaseKV):
    """The test suite's lease store, except that a write skips the lease check (reading the
    record, comparing the fencing token) while this writer's own monotonic clock says its last
    check was less than ``HEARTBEAT_EVERY`` seconds ago (the defect: a local deadline stands in
    for the fencing token)."""

    def __init__(self, path: str, env: Env, *, readonly: bool) -> None:
        super().__init__(path, env, readonly=readonly)
        self._clock = env.clock
        self._checked = env.clock.monotonic()

    def _write(self, puts: Mapping[str, bytes], deletes: Iterable[str]) -> None:
        now = self._clock.monotonic()
        self._fencing = now - self._checked >= HEARTBEAT_EVERY  # the defect
        super()._write(puts, deletes)
        if self._fencing:
            self._checked = now


def open_lease_kv_trusts_its_clock(path: str, env: Env, **options: str) -> TrustsItsClock:
    """Defective: a holder writes on its local lease deadline without reading the record."""
    opts = check_options("lease-kv", options, LEASE_OPTIONS)
    return TrustsItsClock(path, env, readonly=opts["readonly"] == "true")
