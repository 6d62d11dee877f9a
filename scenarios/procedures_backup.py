"""ADR-072's backup/restore cycle as a row, for stores that declare ``Capability.BACKUP``
(``Backupable``).

One recorded run on the simulated disk: a seeded workload (the first two thirds, ``before``),
``backup(DEST)``, the rest of it (``after``, plus one put or upsert that surely changes the
store), ``restore(DEST)``. Then four checks, each a part of the row (``PARTS``):

- ``cycle``: after the restore the store equals the model at the backup, and so does a reopen;
  written again (``after`` once more) it equals the model after ``after``, reopened too (the
  store stays usable);
- ``backup``: crashed after each disk operation of the backup (a process crash and each
  power-loss model), the store reopens equal to the model at the backup; brought to ``after``,
  its ``restore`` from whatever is at ``DEST`` refuses with ``CorruptStore`` (the store then
  unchanged) or gives the model at the backup. A crash after the backup returned must leave
  the whole backup: there, a refusal fails too;
- ``restore``: crashed after each disk operation of the restore, the store reopens with its
  old contents or the backup's, never a mix; after the restore returned, the backup's.

Where the store does not declare that kind of crash survivable (``Declaration.durability``,
``crashcheck.allowed_range``), its reopen may also show the model after fewer of the
acknowledged ops, as any row allows it: never anything else.
- ``damage``: the backup with one byte flipped (in the middle of the file, and in the middle of
  the longest acknowledged value where it lies in the backup) is refused with the store
  unchanged, or, when the byte is one nothing reads (free space), restores exactly the backup.
  No copy refused at all is ``unknown``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crashgate.backends import (
    BackendSpec,
    Backupable,
    Capability,
    CorruptStore,
    Declaration,
    VectorRecord,
)
from crashgate.harness.crashcheck import allowed_range
from crashgate.harness.crashspan import crash_throughout
from crashgate.harness.crashstates import CrashModel, CrashState
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.model import StoreState, prefix_states, read_state
from crashgate.harness.ops import Op, Put, Upsert
from crashgate.harness.powerloss import DATA_DIR, POWER_MODELS
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict, combine
from crashgate.harness.workload import PROFILES, random_workload
from crashgate.scenarios.table import RowContext

__all__ = ["DEST", "PARTS", "backup_restore", "check_backup", "needs_backup"]

PATH = f"{DATA_DIR}/store"
DEST = f"{DATA_DIR}/backup"
PARTS = ("cycle", "backup", "restore", "damage")
_MODELS = [CrashModel.PROCESS, *POWER_MODELS]


def needs_backup(decl: Declaration) -> str | None:
    if decl.has(Capability.BACKUP):
        return None
    return "declares no backup/restore (Capability.BACKUP): nothing to back up or restore"


@dataclass(frozen=True)
class _Run:
    """The recorded run: its disk, the trace spans of the backup and the restore, the ops
    written before and after the backup, and the model after each prefix of them
    (``states``; the backup was taken at ``states[len(before)]``)."""

    disk: SimDisk
    backup: tuple[int, int]
    restore: tuple[int, int]
    before: tuple[Op, ...]
    after: tuple[Op, ...]
    states: tuple[StoreState, ...]
    ids: frozenset[int]
    declaration: Declaration

    @property
    def at_backup(self) -> StoreState:
        return self.states[len(self.before)]

    @property
    def after_more(self) -> StoreState:
        return self.states[-1]

    def allowed(self, acknowledged: int, model: CrashModel) -> dict[str, int]:
        """Digest -> prefix length of each state a reopen may show once ``acknowledged``
        ops had returned (all of them, unless the store does not declare this crash
        survivable: ``crashcheck.allowed_range``)."""
        span = allowed_range(acknowledged, False, self.declaration.durability,
                             model is not CrashModel.PROCESS)
        return {self.states[j].digest: j for j in range(span.lo, span.hi + 1)}


def _surely_changes(decl: Declaration, seed: int) -> Op:
    """One op that no workload writes: the store after it differs from the backup."""
    if decl.has(Capability.KV):
        return Put(f"crashgate-after-backup-{seed}", b"written after the backup")
    return Upsert((VectorRecord.of(10**9 + seed, [0.5] * PROFILES["small"].dimension),))


def _backupable(store: object) -> bool:
    return isinstance(store, Backupable)


def _diff(got: StoreState, want: StoreState) -> str:
    return "; ".join(got.describe_diff(want, limit=3)) or "the contents differ"


def _record(spec: BackendSpec, seed: int, ops: int) -> _Run | Evidence:
    """Record the run (module docstring), checking the ``cycle`` part as it goes: its
    failure as ``Evidence``."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    store = spec.open(PATH, sim_env(disk))
    try:
        decl = store.declaration
        work = random_workload(decl, ops, seed, PROFILES["small"])
        cut = (2 * len(work)) // 3
        before, after = tuple(work[:cut]), (*work[cut:], _surely_changes(decl, seed))
        states = tuple(prefix_states([*before, *after]))
        at_backup, after_more = states[len(before)], states[-1]
        ids = frozenset(r.id for op in (*before, *after) if isinstance(op, Upsert)
                        for r in op.records)
        for op in before:
            op.run(store)
        if not _backupable(store):
            return Evidence(Verdict.FAIL, "declares backup but has no backup(dest) and "
                            "restore(src) (Backupable)", conclusive=True)
        start = disk.position
        store.backup(DEST)
        backup_span = (start, disk.position)
        for op in after:
            op.run(store)
        start = disk.position
        store.restore(DEST)
        restore_span = (start, disk.position)
        got = read_state(store, ids)
        if got.digest != at_backup.digest:
            return _cycle_fail("after restore", got, at_backup)
    except Exception as exc:  # noqa: BLE001 - the store's answer is the finding
        return Evidence(Verdict.FAIL, f"backup, write, restore raised {type(exc).__name__}: "
                        f"{exc}", conclusive=True)
    finally:
        store.close()
    run = _Run(disk, backup_span, restore_span, before, after, states, ids, decl)
    for when, ops_, want in (("reopened after restore", (), at_backup),
                             ("written after restore", after, after_more)):
        why = _reopened_equal(spec, run, ops_, want)
        if why is not None:
            return Evidence(Verdict.FAIL, f"backup/restore cycle: {when}: {why}",
                            conclusive=True)
    return run


def _cycle_fail(when: str, got: StoreState, want: StoreState) -> Evidence:
    return Evidence(Verdict.FAIL, f"backup/restore cycle: {when} the store is not the model "
                    f"at the backup: {_diff(got, want)}", conclusive=True)


def _reopened_equal(spec: BackendSpec, run: _Run, ops: Sequence[Op], want: StoreState
                    ) -> str | None:
    """Reopen the run's store, run ``ops``, close and reopen: why it is not ``want``."""
    for step in ("write", "reopen"):
        store = spec.open(PATH, sim_env(run.disk))
        try:
            if step == "write":
                for op in ops:
                    op.run(store)
            got = read_state(store, run.ids)
        except Exception as exc:  # noqa: BLE001
            return f"{step} raised {type(exc).__name__}: {exc}"
        finally:
            store.close()
        if got.digest != want.digest:
            return f"after {step}, not the model: {_diff(got, want)}"
    return None


def _reopen(spec: BackendSpec, run: _Run, image: DiskImage) -> tuple[Any, bool] | str:
    """The store reopened from ``image`` and whether it is read-only, or why it would not."""
    try:
        opened = reopen_after_crash(spec.open, PATH, sim_env(SimDisk(image)), run.declaration)
    except Exception as exc:  # noqa: BLE001 - not opening is the finding
        return f"did not reopen: {type(exc).__name__}: {exc}"
    return opened.store, opened.readonly


def _judge_backup(spec: BackendSpec, run: _Run, image: DiskImage, returned: bool,
                  model: CrashModel) -> str | None:
    """A crash during the backup (after it, when ``returned``): why ``image`` is wrong."""
    opened = _reopen(spec, run, image)
    if isinstance(opened, str):
        return opened
    store, readonly = opened
    try:
        got = read_state(store, run.ids)
        j = run.allowed(len(run.before), model).get(got.digest)
        if j is None:
            return f"the store reopened changed by the backup: {_diff(got, run.at_backup)}"
        if readonly:
            return None   # a reader cannot restore: the source check is what there is
        for op in run.after:
            op.run(store)
        try:
            store.restore(DEST)
        except CorruptStore as exc:
            if returned:
                return (f"the backup had returned, yet restore refused what is at {DEST}: "
                        f"{exc.detail}")
            got, want = read_state(store, run.ids), run.after_more
            if j < len(run.before):   # it reopened without some ops: those after ran on that
                want = prefix_states([*run.before[:j], *run.after])[-1]
            if got.digest != want.digest:
                return (f"restore refused the interrupted backup ({exc.detail}) but changed "
                        f"the store: {_diff(got, want)}")
            return None
        got = read_state(store, run.ids)
        if got.digest != run.at_backup.digest:
            return (f"restore accepted what the interrupted backup left at {DEST} and gave "
                    f"other data than the model at the backup: {_diff(got, run.at_backup)}")
        return None
    except Exception as exc:  # noqa: BLE001
        return f"raised {type(exc).__name__}: {exc}"
    finally:
        store.close()


def _judge_restore(spec: BackendSpec, run: _Run, image: DiskImage, returned: bool,
                   model: CrashModel) -> str | None:
    """A crash during the restore (after it, when ``returned``): why ``image`` is wrong."""
    opened = _reopen(spec, run, image)
    if isinstance(opened, str):
        return opened
    store = opened[0]
    try:
        got = read_state(store, run.ids)
    except Exception as exc:  # noqa: BLE001
        return f"reading it back raised {type(exc).__name__}: {exc}"
    finally:
        store.close()
    # the old contents (every op acknowledged) or, where the crash may cost acknowledged ops,
    # fewer of them; the backup's, unless the restore had returned and the crash is survivable
    allowed = set(run.allowed(len(run.states) - 1, model))
    if returned and len(allowed) == 1:
        if got.digest != run.at_backup.digest:
            return ("the restore had returned, and the store declares "
                    f"{run.declaration.durability.value} durability, yet it reopened without "
                    f"the backup's contents: {_diff(got, run.at_backup)}")
        return None
    if got.digest not in allowed | {run.at_backup.digest}:
        return (f"reopened with neither its old contents nor the backup's (a mix): old "
                f"{_diff(got, run.after_more)}; backup {_diff(got, run.at_backup)}")
    return None


def _crashes(spec: BackendSpec, run: _Run, part: str, budget: int, seed: int,
             state: str | None) -> Evidence:
    """``part`` ("backup" or "restore") crashed after each of its disk operations."""
    def judge(crash: CrashState, image: DiskImage) -> str | None:
        returned = crash.position == span[1]
        if part == "backup":
            return _judge_backup(spec, run, image, returned, crash.model)
        return _judge_restore(spec, run, image, returned, crash.model)

    span = run.backup if part == "backup" else run.restore
    return crash_throughout(run.disk.base, run.disk.trace, span, judge, what=part,
                            models=_MODELS, budget=budget, seed=seed, state=state,
                            upto_end=True, passed="as promised")


def _flip_offsets(data: bytes, want: StoreState) -> list[int]:
    """Where to flip a byte: the middle of the file, and the middle of the longest
    acknowledged value's last occurrence in it (a record, not free space, most likely)."""
    out = [len(data) // 2]
    longest = max((v for _, v in want.kv), key=len, default=b"")
    at = data.rfind(longest) if len(longest) >= 2 else -1
    if at >= 0:
        out.append(at + len(longest) // 2)
    return list(dict.fromkeys(out))


def _damage(spec: BackendSpec, run: _Run) -> Evidence:
    """The ``damage`` part (module docstring), on a copy of the recorded run's final disk."""
    disk = SimDisk(run.disk.cache_image())
    fs = sim_env(disk).fs
    f = fs.open(DEST, "r")
    try:
        data = f.read(0, f.size())
    finally:
        f.close()
    if not data:
        return Evidence(Verdict.FAIL, f"the backup at {DEST} is empty after backup returned",
                        conclusive=True)
    store = spec.open(PATH, sim_env(disk))
    refused = harmless = 0
    try:
        for op in run.after:   # so that an unchanged store is not the backup's contents
            op.run(store)
        for at in _flip_offsets(data, run.at_backup):
            bad = f"{DEST}.damaged-{at}"
            out = fs.open(bad, "w")
            out.write(0, data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1:])
            out.close()
            try:
                store.restore(bad)
            except CorruptStore:
                got = read_state(store, run.ids)
                if got.digest != run.after_more.digest:
                    return Evidence(Verdict.FAIL, f"damage: restore refused the backup with "
                                    f"byte {at} flipped but changed the store: "
                                    f"{_diff(got, run.after_more)}", conclusive=True)
                refused += 1
                continue
            got = read_state(store, run.ids)
            if got.digest != run.at_backup.digest:
                return Evidence(Verdict.FAIL, f"damage: restore accepted the backup with byte "
                                f"{at} of {len(data)} flipped and gave altered data: "
                                f"{_diff(got, run.at_backup)}", conclusive=True)
            harmless += 1
            for op in run.after:
                op.run(store)
    except Exception as exc:  # noqa: BLE001
        return Evidence(Verdict.FAIL, f"damage: raised {type(exc).__name__}: {exc}",
                        conclusive=True)
    finally:
        store.close()
    measured = {"damaged_backups": refused + harmless}
    if not refused:
        return Evidence(Verdict.UNKNOWN, f"damage: no damaged copy was refused; each of "
                        f"{harmless} flips landed where nothing is read", measured)
    return Evidence(Verdict.PASS, f"damage: {refused} damaged backup(s) refused with the store "
                    f"unchanged" + (f", {harmless} flip(s) in bytes nothing reads" if harmless
                                    else ""), measured)


def check_backup(spec: BackendSpec, *, seed: int, ops: int, part: str, budget: int,
                 state: str | None = None) -> Evidence:
    """One part of the row (``PARTS``) on the run recorded for ``seed`` and ``ops``; crash
    parts use ``budget`` crash states, or only the one ``state`` token names."""
    if part not in PARTS:
        raise ValueError(f"part {part!r} is not one of {list(PARTS)}")
    run = _record(spec, seed, ops)
    if isinstance(run, Evidence):
        return run if part == "cycle" else Evidence(
            Verdict.UNKNOWN, f"{part}: not checked, the cycle itself failed: {run.summary}")
    if part == "cycle":
        return Evidence(Verdict.PASS, "cycle: backup, write, restore gave the model at the "
                        "backup, reopened too, and the store took writes after it",
                        {"cycles": 1})
    if part == "damage":
        return _damage(spec, run)
    return _crashes(spec, run, part, budget, seed, state)


def backup_restore(ctx: RowContext) -> Evidence:
    """The row: every part, each failure with its reproduction."""
    ops = max(20, ctx.budget.workload_ops // 3)
    budget = max(30, ctx.budget.crash_states // 6)
    parts = []
    for part in PARTS:
        ctx.progress(f"backup/restore: {part}")
        ev = check_backup(ctx.spec, seed=ctx.seed, ops=ops, part=part, budget=budget)
        token = next((d.removeprefix("state ") for d in ev.details
                      if d.startswith("state ")), None)
        parts.append(on_failure(ev, workdir=ctx.workdir, name=f"reproduce_backup_{part}.py",
                                spec=ctx.spec, check=check_backup,
                                kwargs={"seed": ctx.seed, "ops": ops, "part": part,
                                        "budget": budget, "state": token}))
        if ev.verdict is Verdict.FAIL and part == "cycle":
            break   # the other parts build on the cycle
    return combine(parts, "backup/restore cycle: restored to the model at the backup, crashes "
                          "in the backup and the restore as promised, damaged backups refused")
