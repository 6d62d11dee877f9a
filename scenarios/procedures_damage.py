"""crashgate's damage-at-rest row: a closed store's files damaged on the simulated disk (bit
flips, overwritten, stale or misdirected sectors, truncation), then opened and read whole.

One recording: a seeded small workload runs on a fresh simulated disk, the image is kept after
every op (the history a lost write reverts a sector to), and the store is closed cleanly. Each
damage (``harness.faults.corruption``) is applied to a copy of the closed image; the store is
reopened as its user would (``recovery.reopen_after_crash``) and read three ways: everything at
once (``model.read_state``), every key ever written by ``get`` and every id ever written by
``fetch`` one at a time, so a store that fails on some keys only is seen. Every answer must be
the acknowledged one or a ``CorruptStore`` (on open, ``VersionTooNew`` too: a damaged version
field reads as a newer version, refused with nothing returned or changed); a store declaring
``damage=rollback`` may instead show the state after a prefix of the ops (an earlier commit,
judged by ``crashcheck.judge`` with lo=0), each key and id answering as in that state. Anything
else is a conclusive failure: an altered value, a value never written, a stale value, an
acknowledged value gone, another error type (untyped, or typed but not ``CorruptStore``). A
store that hangs on damage hangs the row: no timer decides a verdict here.

Damages are drawn by Hypothesis (``find`` with the run's seed) so the first failure found is
shrunk toward one bit flip in the first file at a low offset, and re-run alone by
``check_damage`` (the replay and the reproduction script).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from crashgate.backends import (
    BackendSpec,
    Capability,
    CorruptStore,
    DamagePromise,
    Declaration,
    VersionTooNew,
)
from crashgate.harness.crashcheck import Allowed, judge
from crashgate.harness.faults.corruption import (
    DAMAGE_KINDS,
    Corruption,
    Damage,
    damage_strategy,
    kind_of,
)
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.model import StoreState, fingerprint, prefix_states, read_state
from crashgate.harness.ops import Op
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.seeded_search import seeded_find
from crashgate.harness.simdisk import DiskImage, DiskOp, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.harness.workload import PROFILES, random_workload
from crashgate.scenarios.table import RowContext

__all__ = ["check_damage", "damage_at_rest", "record"]

DATA_DIR = "/data"
PATH = f"{DATA_DIR}/store"
OUTCOMES = ("acknowledged", "CorruptStore", "rollback", "refused-too-new")


@dataclass(frozen=True)
class Recording:
    """A closed store's ``image``, the ``past`` images of its files (one after each op, file by
    file: ``_same_files``) and what must be in
    it: ``states[j]`` after the first j ``ops`` (digest -> indices in ``index``), every key and
    vector id the ops ever touched."""

    declaration: Declaration
    ops: tuple[Op, ...]
    image: DiskImage
    past: tuple[DiskImage, ...]
    states: tuple[StoreState, ...]
    index: Mapping[str, list[int]]
    keys: tuple[str, ...]
    ids: tuple[int, ...]


def record(spec: BackendSpec, *, seed: int, ops: int) -> Recording:
    """Run ``ops`` seeded small-profile ops on a fresh simulated disk and close the store."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    store = spec.open(PATH, sim_env(disk))
    decl = store.declaration
    workload = random_workload(decl, ops, seed, PROFILES["small"])
    taken: list[tuple[int, DiskImage]] = []
    for op in workload:
        op.run(store)
        taken.append((disk.position, disk.cache_image()))
    store.close()
    image = disk.cache_image()
    past = tuple(_same_files(image, disk.trace, at, then) for at, then in taken)
    states = prefix_states(workload)
    index: dict[str, list[int]] = {}
    for j, s in enumerate(states):
        index.setdefault(s.digest, []).append(j)
    return Recording(decl, tuple(workload), image, past, tuple(states), index,
                     tuple(sorted({k for s in states for k, _ in s.kv})),
                     tuple(sorted({i for s in states for i, _ in s.vectors})))


def _same_files(image: DiskImage, trace: Sequence[DiskOp], at: int, then: DiskImage
                ) -> DiskImage:
    """``then`` (the image at trace position ``at``) seen file by file rather than name by name:
    each file of the final ``image`` with the bytes that same file held then.

    A lost write leaves a sector as that file (inode) last held it. A store that replaces a
    file by writing a new one and renaming it over the old name never writes the old file's
    sectors again, so its old contents are not what a lost write leaves: the file is followed
    back through the renames that gave it its name, and before its ``create`` it held nothing
    (its sectors read zeros)."""
    files: dict[str, bytes] = {}
    for path in image.files:
        name: str | None = path
        for op in reversed(trace[at:]):
            if op.kind == "rename" and op.dst == name:
                name = op.path
            elif op.kind == "create" and op.path == name:
                name = None
                break
        files[path] = then.files.get(name, b"") if name is not None else b""
    return DiskImage(files, image.dirs)


@dataclass(frozen=True)
class Answer:
    """What the store answered after one damage: ``outcome`` is one of ``OUTCOMES`` or
    ``"failed"`` (then ``problem`` says how, for a person)."""

    outcome: str
    problem: str | None = None


def _error(exc: BaseException) -> str:
    text = str(exc).splitlines()
    kind = type(exc).__name__ if isinstance(exc, CorruptStore) else \
        f"{type(exc).__module__}.{type(exc).__qualname__}"
    return f"{kind}: {text[0] if text else ''}"


def _values(states: Sequence[StoreState], j: int | None, rollback: bool,
            of: Callable[[StoreState], object]) -> list[object]:
    """The answers allowed for one key or id (``of`` reads it from a state): the acknowledged
    one; with a rollback, the one of the state shown (``j``), or of any earlier state when the
    whole-store read did not show one."""
    allowed = [of(states[-1])]
    if rollback:
        allowed += [of(s) for s in states] if j is None else [of(states[j])]
    return allowed


def _one_by_one(store: Any, rec: Recording, j: int | None, rollback: bool) -> tuple[int,
                                                                                    list[str]]:
    """Read every key by ``get`` and every id by ``fetch``: (CorruptStore count, problems)."""
    corrupt, problems = 0, []
    calls: list[tuple[str, Callable[[], object], Callable[[StoreState], object]]] = []
    if rec.declaration.has(Capability.KV):
        calls += [(f"get({key!r})", partial(store.get, key), partial(_kv_of, key))
                  for key in rec.keys]
    if rec.declaration.has(Capability.VECTOR):
        calls += [(f"fetch([{i}])", partial(_fetch_one, store, i), partial(_vector_of, i))
                  for i in rec.ids]
    for what, call, of in calls:
        try:
            got = call()
        except CorruptStore:
            corrupt += 1
            continue
        except Exception as exc:  # noqa: BLE001 - an untyped error is the finding
            problems.append(f"{what} raised {_error(exc)}")
            continue
        allowed = _values(rec.states, j, rollback, of)
        if got not in allowed:
            problems.append(f"{what} returned {_describe(got, rec.states, of)}, acknowledged "
                            f"{_short(allowed[0])}")
    return corrupt, problems


def _kv_of(key: str, state: StoreState) -> object:
    return dict(state.kv).get(key)


def _vector_of(i: int, state: StoreState) -> object:
    return dict(state.vectors).get(i)


def _fetch_one(store: Any, i: int) -> str | None:
    """The fingerprint of record ``i`` as ``fetch([i])`` returns it, None when absent."""
    return next((fingerprint(r) for r in store.fetch([i])), None)


def _short(v: object) -> str:
    if v is None:
        return "absent"
    if isinstance(v, bytes):
        return repr(v if len(v) <= 16 else v[:16] + b"...") + f" ({len(v)} bytes)"
    return f"record {v}"


def _describe(got: object, states: Sequence[StoreState],
              of: Callable[[StoreState], object]) -> str:
    """``got`` said for a person: absent, a value never written, or an earlier op's value."""
    earlier = [j for j, s in enumerate(states) if of(s) == got]
    if got is None:
        return "absent"
    if not earlier:
        return f"{_short(got)}, a value never written"
    return f"{_short(got)}, the value after op {earlier[-1]} (stale: later overwritten)"


def answer(spec: BackendSpec, rec: Recording, damaged: DiskImage) -> Answer:
    """Open ``damaged``, read it whole and one by one, and judge every answer."""
    rollback = rec.declaration.damage is DamagePromise.ROLLBACK
    env = sim_env(SimDisk(damaged))
    try:
        store = reopen_after_crash(spec.open, PATH, env, rec.declaration).store
    except CorruptStore:
        return Answer("CorruptStore")
    except VersionTooNew:
        # a damaged version field reads as a newer version, which no format without a header
        # checksum can tell apart; the refusal is typed, returns nothing and changes nothing
        return Answer("refused-too-new")
    except Exception as exc:  # noqa: BLE001 - any other refusal is the finding
        return Answer("failed", f"open raised {_error(exc)}, not CorruptStore")
    n = len(rec.ops)
    corrupt, matched, problems = 0, None, []
    try:
        try:
            seen = read_state(store, rec.ids)
        except CorruptStore:
            corrupt += 1
        except Exception as exc:  # noqa: BLE001
            problems.append(f"reading the whole store raised {_error(exc)}")
        else:
            verdict = judge(seen, rec.states, dict(rec.index), rec.ops,
                            Allowed(0 if rollback else n, n, n, False))
            if verdict.violation is None:
                matched = verdict.matched
            else:
                problems.append(f"the whole store shows {verdict.violation.value}: "
                                f"{verdict.detail}")
        more, also = _one_by_one(store, rec, matched, rollback)
        corrupt += more
        problems += also
    finally:
        with contextlib.suppress(Exception):  # closing the damaged copy decides nothing
            store.close()
    if problems:
        return Answer("failed", "; ".join(problems[:3])
                      + (f"; and {len(problems) - 3} more" if len(problems) > 3 else ""))
    if corrupt:
        return Answer("CorruptStore")
    return Answer("acknowledged" if matched in (None, n) else "rollback")


def _as_dict(damage: Damage) -> dict[str, Any]:
    """A literal for a reproduction script: ``{"kind": "bit-flip", "path": ..., ...}``."""
    return {"kind": kind_of(damage), **vars(damage)}


def check_damage(spec: BackendSpec, *, seed: int, ops: int, damage: Mapping[str, Any]
                 ) -> Evidence:
    """Re-run one damage (the replay and the reproduction script call this): ``damage`` is
    ``{"kind": <a DAMAGE_KINDS name>, <its fields>...}``."""
    fields = dict(damage)
    made = DAMAGE_KINDS[fields.pop("kind")](**fields)
    rec = record(spec, seed=seed, ops=ops)
    got = answer(spec, rec, made.apply(rec.image, rec.past))
    measured = {"damages": 1, "ops": ops, "seed": seed}
    if got.problem is not None:
        return Evidence(Verdict.FAIL, f"{made.describe()}: {got.problem}", measured,
                        conclusive=True)
    return Evidence(Verdict.PASS, f"{made.describe()}: answered {got.outcome}", measured)


def damage_at_rest(ctx: RowContext) -> Evidence:
    t0 = time.perf_counter()
    fault = Corruption()
    if (na := fault.needs(ctx.declaration)) is not None:
        return Evidence.na(na)
    n_ops = max(8, ctx.budget.workload_ops // 10)
    rec = record(ctx.spec, seed=ctx.seed, ops=n_ops)
    if not any(rec.image.files.values()):
        return Evidence.na(f"keeps nothing on disk: after {n_ops} ops and a clean close the "
                           "store left no non-empty file to damage")
    fault = Corruption(rec.past)
    budget = max(20, ctx.budget.crash_states // 4)
    kinds: dict[str, int] = dict.fromkeys(DAMAGE_KINDS, 0)
    outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
    tally = {"unchanged": 0, "shrink_runs": 0}
    found: list[tuple[Damage, Answer]] = []

    def fails(damage: Damage) -> bool:
        damaged = fault.apply(rec.image, damage)
        if damaged == rec.image:
            if not found:
                tally["unchanged"] += 1
            return False
        got = answer(ctx.spec, rec, damaged)
        if found:
            tally["shrink_runs"] += 1
        else:
            kinds[kind_of(damage)] += 1
            if got.outcome in outcomes:
                outcomes[got.outcome] += 1
        if got.problem is None:
            return False
        found.append((damage, got))
        return True

    declared = ctx.declaration.undetected_damage
    unknown = sorted(declared - set(DAMAGE_KINDS))
    if unknown:
        return Evidence(Verdict.UNKNOWN, f"the declaration's undetected_damage names unknown "
                        f"kinds {unknown}; the kinds are {list(DAMAGE_KINDS)}")
    drawn = [k for k in DAMAGE_KINDS if k not in declared]
    shrunk = _search(damage_strategy(rec.image, rec.past, drawn), fails, budget, ctx.seed)
    applied = sum(kinds.values())
    files = {p: len(b) for p, b in rec.image.files.items() if b}
    measured = {"damages": applied, "files": len(files), "ops": n_ops, "seed": ctx.seed,
                **{f"kind_{k}": v for k, v in kinds.items()},
                **{f"answered_{k}": v for k, v in outcomes.items()},
                "unchanged_skipped": tally["unchanged"], "shrink_runs": tally["shrink_runs"],
                "seconds": round(time.perf_counter() - t0, 3)}
    details = (f"promise: damage={ctx.declaration.damage.value}; files: "
               + ", ".join(f"{p} ({n} bytes)" for p, n in sorted(files.items())),
               "damages by kind: " + ", ".join(f"{k} x{v}" for k, v in kinds.items()),
               "answers: " + ", ".join(f"{k} x{v}" for k, v in outcomes.items()),
               *([f"not drawn, declared undetected: {', '.join(sorted(declared))} ("
                  f"{ctx.declaration.notes.get('damage', 'no reason given')})"]
                 if declared else []))
    if shrunk is None:
        if applied == 0:
            return Evidence(Verdict.UNKNOWN, "no damage changed the store's files: nothing "
                            "was tested", measured, details)
        return Evidence(Verdict.PASS, f"{applied} damages at rest: every answer was the "
                        "acknowledged data or CorruptStore"
                        + (" or an earlier commit" if outcomes["rollback"] else ""),
                        measured, details)
    got = next(a for d, a in reversed(found) if d == shrunk)
    kwargs = {"seed": ctx.seed, "ops": n_ops, "damage": _as_dict(shrunk)}
    ev = Evidence(Verdict.FAIL, f"after {applied} damages, {shrunk.describe()}: {got.problem}",
                  measured, (*details, f"shrunk from: {found[0][0].describe()}"),
                  conclusive=True)
    return on_failure(ev, workdir=ctx.workdir, name="reproduce_damage.py", spec=ctx.spec,
                      check=check_damage, kwargs=kwargs)


def _search(strategy: Any, fails: Callable[[Damage], bool], budget: int, seed: int
            ) -> Damage | None:
    """Draw up to ``budget`` damages until ``fails`` holds; that one shrunk, or None. The seed
    alone decides the draws, whatever else the process imported (``seeded_find``)."""
    found: Damage | None = seeded_find(strategy, fails, budget=budget, seed=seed)
    return found
