"""A dual-write stage's mirror never lags unseen: the clean-shutdown record, the reconcile at a
writer's open, and the adapter in doubt.

A dual write (ADR-072's stages 2 and 3, ARCH-001's phases 1 and 2:
``staged.StagedStores._dual_write``) writes the source of truth,
then the mirror; a mirror write that fails is a queued divergence (``control.py``) that
``repair()`` replays. Three things leave the mirror behind with nothing queued:

- the process dies between the two writes (SIGKILL, power loss);
- the mirror write fails, and so does the queue's record of it (an I/O error or a full disk
  hits every file of the process);
- the truth's own write fails with an error that does not say "nothing was written" (an I/O
  error): it may yet be in the truth's file (SQLite recovers a WAL commit whose fsync failed
  at its next open), while the mirror never got it.

**The record.** A writer marks the adapter open in ``control.db`` (``shutdown``:
``{"clean": false}``) as it opens, after its stores opened and before its first write, and
clean at a ``close`` that found nothing in doubt and closed every store: one control write at
open, one at close, none per write. An open that finds it not clean, or missing (a control
file from before the record), reconciles: a whole sync of the mirror from the truth, for each
kind of data (the plan's syncs, which a promotion's catch-up runs: only what differs is
written, in batches, with the failpoint ``<prefix>.reconcile-batch`` after each,
``RECONCILE_FAILPOINT`` for ADR-072). The queued
divergences stay for ``repair()`` (which then finds nothing to write: they are still counted
as repaired where they are counted, and a stage-3 read they name is still not served from
SQLite until then, as before the reconcile). The record stays not clean
through it, so a crash inside the reconcile is reconciled again by the next open: a diff,
idempotent. ``reconciled`` counts the records it wrote.

**In doubt.** The last two cases are known when they happen: the adapter then refuses every
later write, promotion, rollback, escape hatch, backup and restore with ``InDoubt`` (nothing
done; ``repair()`` still runs: it only copies the truth into the mirror); the failing call
raises (the mirror's and the queue's failure: an ``OSError``, indeterminate, as the truth may
have the write); stage 3 serves no read from its fallback (SQLite may be behind on anything);
and ``close`` leaves the record not clean, so the reopen reconciles.

A reader (``readonly=true``) never writes the record and never reconciles: it reads the truth.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from crashgate.backends import Env, LockHeld, StoreClosed, VersionTooNew
from crashgate.reference.stages.control import StageControl
from crashgate.reference.stages.roles import StagePlan

__all__ = ["RECONCILE_FAILPOINT", "REFUSALS", "InDoubt", "StageReconcile", "StageStatus",
           "in_doubt_error"]

RECONCILE_FAILPOINT = "stage.reconcile-batch"
"""Hit after each batch the reconcile at open of an ADR-072 adapter writes (not in a
declaration: no write hits it)."""
REFUSALS = (ValueError, TypeError, LookupError, PermissionError, StoreClosed, LockHeld,
            VersionTooNew)
"""What a truth's write raises when it wrote nothing (bad input, a closed or fenced store):
the mirror cannot be behind. Any other failure of the truth's write puts the adapter in
doubt."""


class InDoubt(PermissionError):
    """A write refused because the adapter is in doubt (module docstring): nothing was done.
    Built with the message alone (so it pickles as itself): ``in_doubt_error``."""


def in_doubt_error(path: str, what: str, why: str) -> InDoubt:
    """The refusal of ``what`` by the adapter at ``path``, in doubt since ``why``."""
    return InDoubt(f"{what}: the stage adapter at {path} is in doubt since {why}; its mirror "
                   "may be behind on writes nothing recorded. Fix: close it and open it again: "
                   "the open reconciles the mirror from the source of truth")


@dataclass(frozen=True)
class StageStatus:
    """What an adapter knows of its two stores' agreement: its ``stage``; ``queued``
    divergences; ``reconciled``, the records its open's reconcile wrote into the mirror;
    ``in_doubt``, why it is (None when it is not); ``fallbacks``, stage 3's reads served from
    SQLite."""

    stage: int
    readonly: bool
    queued: int
    reconciled: int
    in_doubt: str | None
    fallbacks: int


class StageReconcile:
    """The record, the reconcile and the doubt of ``staged.StagedStores`` (module
    docstring)."""

    # -- the host's (StagedStores') --
    plan: StagePlan
    path: str
    stage: int
    readonly: bool
    fallbacks: Counter[str]
    _env: Env
    _stores: dict[str, Any]
    _control: StageControl
    _write_lock: threading.RLock

    reconciled = 0
    """Records the reconcile at open wrote into the mirror (0: none, or nothing differed)."""
    in_doubt: str | None = None
    """Why the adapter is in doubt (module docstring); None when it is not."""

    def _start_writing(self) -> None:
        """A writer's open, its stores open: mark it open, and reconcile the mirror if the
        last writer did not close cleanly (marked first: a crash inside is seen again)."""
        clean = self._control.clean_shutdown()
        if clean is not False:
            self._control.set_clean_shutdown(False)
        if clean is not True:
            self.reconciled = self._reconcile()

    def _reconcile(self) -> int:
        """Make the mirror of this (dual-write) stage equal its truth; returns the records
        written. Nothing for a stage without a mirror."""
        r = self.plan.roles(self.stage)
        if r.mirror is None:
            return 0
        return sum(self.plan.syncs[data](self._stores[r.truth(data)], self._stores[r.mirror],
                                         self._reconcile_batch) for data in self.plan.data)

    def _reconcile_batch(self) -> None:
        self._env.failpoints.hit(self.plan.failpoint("reconcile-batch"))

    def _enter_doubt(self, why: str) -> None:
        """From now on, refuse writes until reopened; the first reason is kept."""
        if self.in_doubt is None:
            self.in_doubt = why

    def _check_doubt(self, what: str) -> None:
        if self.in_doubt is not None:
            raise in_doubt_error(self.path, what, self.in_doubt)

    def _end_writing(self) -> None:
        """A writer's clean close, every store closed: mark it clean unless in doubt."""
        if not self.readonly and self.in_doubt is None:
            self._control.set_clean_shutdown(True)

    def status(self) -> StageStatus:
        """The adapter's ``StageStatus`` (for tools and the soak)."""
        return StageStatus(self.stage, self.readonly, len(self._control.divergences()),
                           self.reconciled, self.in_doubt, int(sum(self.fallbacks.values())))
