"""The pattern migration guide's dual-write proxy row: "Monitor logs for 'Secondary store write
failed'" made a promise that can be checked. A secondary write or delete that fails never fails
the call, is queued for reconciliation (never only logged), and once the secondary heals the
queue's repair makes both sides equal.

The fault is ARCH-001's "If SQLite fails" fault (``procedures_arch``): ``EIO`` on every
mutating operation on one file, its journal and its WAL, through a ``FaultyFS`` on a simulated
disk. Here the file is the proxy's secondary (``SecondaryProxy.secondary_file``); the primary
and the queue never see the errors. A store is a proxy when it has what ``SecondaryProxy``
names; any other store's row is ``n/a``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from crashgate.backends import BackendSpec, VectorRecord, VectorStore, resolve
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.patterns import generate_patterns
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict, first_line
from crashgate.scenarios.procedures_arch import _faulty_open
from crashgate.scenarios.procedures_arch_common import PATH, close_into
from crashgate.scenarios.table import RowContext

__all__ = ["SecondaryProxy", "check_secondary_failures", "secondary_failures"]

_DIM = 8


@runtime_checkable
class SecondaryProxy(Protocol):
    """A dual-write proxy as the row probes it: ``secondary_file`` is the secondary's file
    (its journal and WAL are named after it), ``secondary_backend`` the backend name that
    opens it alone; ``stats()`` reads both sides (``primary_count``, ``secondary_count``,
    ``queued``); ``divergences()`` is the queue of writes the secondary missed and
    ``repair()`` replays it."""

    secondary_file: str
    secondary_backend: str

    def stats(self) -> Any: ...

    def divergences(self) -> list[Any]: ...

    def repair(self) -> int: ...


def _lacks(store: Any) -> str | None:
    if not isinstance(store, VectorStore):
        return "not a vector store: the proxy row writes patterns"
    if not isinstance(store, SecondaryProxy):
        return ("not a dual-write proxy (no secondary_file, secondary_backend, stats(), "
                "divergences() and repair(): nothing names a secondary to fail)")
    return None


def _read_back(store: Any, want: Mapping[int, VectorRecord], ids: Iterable[int], when: str,
               problems: list[str]) -> None:
    """``fetch`` of ``ids`` answers exactly ``want``'s records among them."""
    ids = sorted(set(ids))
    try:
        got = {r.id: r for r in store.fetch(ids)}
    except Exception as exc:  # noqa: BLE001 - a failed read is the finding
        problems.append(f"{when}: fetch of {len(ids)} ids raised {first_line(exc)}")
        return
    for i in ids:
        w, g = want.get(i), got.get(i)
        if w is None and g is not None:
            problems.append(f"{when}: pattern {i} reads back after its acknowledged remove")
        elif w is not None and (g is None or g.vector != w.vector
                                or dict(g.metadata) != dict(w.metadata)):
            problems.append(f"{when}: pattern {i} read {g!r:.120} where {w!r:.120} was "
                            "acknowledged")


def _counts(stats: Any) -> tuple[object, object, object]:
    return (getattr(stats, "primary_count", None), getattr(stats, "secondary_count", None),
            getattr(stats, "queued", None))


def check_secondary_failures(spec: BackendSpec, *, seed: int, before: int = 6,
                             during: int = 4) -> Evidence:
    """``before`` patterns written healthy, then, with every write to the secondary failing,
    ``during`` upserts of new patterns, an update and two removes, each its own call: every
    call succeeds and reads back, and the queue holds one entry per call the secondary failed;
    healed and repaired, the queue is empty, both sides count the same, and the secondary
    opened alone holds exactly the acknowledged patterns."""
    disk, trigger, store = _faulty_open(spec)
    problems: list[str] = []
    records = generate_patterns(before + during, _DIM, seed)
    model: dict[int, VectorRecord] = {}
    calls = failed_calls = queued = repaired = 0
    try:
        lacking = _lacks(store)
        if lacking:
            return Evidence.na(lacking)
        trigger.prefix = posixpath.normpath(store.secondary_file)
        store.upsert(records[:before])
        model.update((r.id, r) for r in records[:before])
        old = records[0]
        newer = VectorRecord(old.id, old.vector, {**old.metadata, "usage_count": 1 + int(
            old.metadata.get("usage_count", 0)), "proxy_row": [seed, None, 2.5]})
        writes: list[tuple[str, Any]] = [("upsert", [r]) for r in records[before:]]
        writes += [("upsert", [newer]), ("remove", [records[1].id]),
                   ("remove", [records[2].id, records[before].id])]
        with trigger.failing():
            for op, arg in writes:
                fired = len(trigger.fired)
                calls += 1
                try:
                    if op == "upsert":
                        store.upsert(arg)
                        model.update((r.id, r) for r in arg)
                    else:
                        store.remove(arg)
                        for i in arg:
                            model.pop(i, None)
                except Exception as exc:  # noqa: BLE001 - a failed call is the finding
                    problems.append(f"{op} of {[getattr(r, 'id', r) for r in arg]} failed "
                                    f"while the secondary failed: {first_line(exc)}")
                failed_calls += len(trigger.fired) > fired
            _read_back(store, model, [r.id for r in records], "while the secondary failed",
                       problems)
            queued = len(store.divergences())
            stats = store.stats()
        if queued != failed_calls:
            problems.append(f"{failed_calls} calls failed on the secondary and the queue holds "
                            f"{queued} entries")
        if _counts(stats)[0] != len(model) or _counts(stats)[2] != queued:
            problems.append(f"stats() while failing read (primary, secondary, queued) = "
                            f"{_counts(stats)}; want the primary at {len(model)} and "
                            f"{queued} queued")
        if not problems:
            repaired = store.repair()
            left = len(store.divergences())
            primary, secondary, still = _counts(store.stats())
            if left or still:
                problems.append(f"repair() after healing left {left} divergences queued")
            if primary != len(model) or secondary != len(model):
                problems.append(f"after repair stats() counts {primary} on the primary and "
                                f"{secondary} on the secondary; {len(model)} were acknowledged")
            _read_back(store, model, [r.id for r in records], "after repair", problems)
    except Exception as exc:  # noqa: BLE001 - the row's store broke: the finding
        problems.append(f"raised {first_line(exc)}")
    finally:
        close_into(store, problems)
    measured = {"patterns": len(records), "calls": calls, "failed_calls": failed_calls,
                "io_errors": len(trigger.fired), "queued": queued, "repaired": repaired,
                "seed": seed}
    if not problems and failed_calls == 0:
        return Evidence(Verdict.UNKNOWN, f"no write reached {trigger.prefix}: the secondary "
                        "never failed, nothing was tested", measured)
    if not problems:
        _secondary_alone(spec, disk, store, model, records, problems)
    what = (f"{calls} writes with every write to the secondary failing ({len(trigger.fired)} "
            f"I/O errors, {failed_calls} calls failed there)")
    if problems:
        return Evidence(Verdict.FAIL, f"{what}: " + "; ".join(problems[:3]), measured,
                        tuple(problems[3:10]), conclusive=True)
    return Evidence(Verdict.PASS, f"{what}: every call succeeded and read back, the queue held "
                    f"{queued} entries, one per failed call, and after healing repair() "
                    f"brought the secondary to the {len(model)} acknowledged patterns",
                    measured)


def _secondary_alone(spec: BackendSpec, disk: Any, proxy: Any, model: Mapping[int, VectorRecord],
                     records: list[VectorRecord], problems: list[str]) -> None:
    """The secondary's file opened alone (``secondary_backend``, read-only) holds exactly the
    acknowledged patterns; then the proxy reopens and reads them back."""
    env = sim_env(disk)
    try:
        alone = resolve(f"{proxy.secondary_backend}?readonly=true").open(proxy.secondary_file,
                                                                          env)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"the secondary did not open alone: {first_line(exc)}")
        return
    try:
        _read_back(alone, model, [r.id for r in records], "the secondary alone", problems)
        if alone.count() != len(model):
            problems.append(f"the secondary alone counts {alone.count()} patterns; "
                            f"{len(model)} were acknowledged")
    finally:
        close_into(alone, problems)
    try:
        again = spec.open(PATH, sim_env(disk))
    except Exception as exc:  # noqa: BLE001
        problems.append(f"the healed proxy did not reopen: {first_line(exc)}")
        return
    try:
        _read_back(again, model, [r.id for r in records], "reopened", problems)
    finally:
        close_into(again, problems)


def secondary_failures(ctx: RowContext) -> Evidence:
    kwargs = {"seed": ctx.seed}
    return on_failure(check_secondary_failures(ctx.spec, **kwargs), workdir=ctx.workdir,
                      name="reproduce_secondary_failures.py", spec=ctx.spec,
                      check=check_secondary_failures, kwargs=kwargs)
