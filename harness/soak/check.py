"""The soak's checker: reads judged against the history of writes, Jepsen-style, never touching
a store.

Registers: a key-value key (``put`` token, ``delete`` None; read by ``get`` and ``scan``), a
GOAP plan (``goap_store``/``goap_delete``; ``goap_get``), a vector id (``upsert`` token,
``remove`` None; ``fetch``, and ``query`` for the ids it returned) and a Q-value (state,
action) (``q_update``; ``q_get`` and each update's own result). Registers of different runs
(``SoakOp.run``) are different stores and never mix. Every ``ok`` read R over
[R.start, R.end] of a token t is held to:

- **written**: an ok/info write of t on that register began before R ended (else
  ``never-written``, ``failed-write-visible`` when the write of t failed, or
  ``read-before-write`` when it began only after R ended);
- **not stale**: some candidate C (the write of t; for None, the initial absence and every
  ok/info delete begun before R ended) is not older than the last acknowledged write: there is
  no ok W' with W'.end < R.start and W'.start > C.end (``stale``);
- Q-values: the count is at least the ok updates acknowledged before R began (``lost-update``),
  at most the ok/info updates begun before R ended (``overcount``), no two ok updates returned
  one count (``duplicate-count``), and the value is one an update wrote (``never-written``).

Ops arrive roughly in completion order; ``check_until(t)`` judges reads with end < t, where
the caller passes ``now - margin`` so every op that ended before t has arrived. An op still in
flight at t (a slow write a read already saw, a delete that may explain an absence) can only
clear a read, so a finding it could clear is held until ``R.end + settle`` and judged again
(``finish`` judges everything left with what arrived). Each read costs O(log n) per register
it reads (a scan: per key under its prefix).
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from crashgate.harness.soak.record import READS, WRITES, SoakOp

__all__ = ["Checker", "Violation"]

_NAMED_MAX = 8          # writes named by a lost-update violation (the latest ones)


@dataclass(frozen=True)
class Violation:
    """One contradiction: ``read`` returned what ``writes`` rule out. ``register`` reads
    ``key 'k007'``, ``plan 'p3'``, ``vector 4``, ``q-value ('s1','a2')`` (``in run 2`` added
    when the run is not 0)."""

    kind: str
    register: str
    message: str
    read: SoakOp
    writes: tuple[SoakOp, ...]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "register": self.register, "message": self.message,
                "read": self.read.describe(), "writes": [w.describe() for w in self.writes]}


class _PrefixMax:
    """Ops sorted by ``key``, with the op of greatest ``score`` in every prefix: "the latest
    starting acked write among those ended before t" in O(log n). Arrival is nearly sorted, so
    an insert moves few entries and repairs the running maximum only until it stops changing."""

    def __init__(self, key: Callable[[SoakOp], float], score: Callable[[SoakOp], float]):
        self._key, self._score = key, score
        self.keys: list[float] = []
        self.ops: list[SoakOp] = []
        self._best: list[SoakOp] = []

    def add(self, op: SoakOp) -> None:
        i = bisect_right(self.keys, self._key(op))
        self.keys.insert(i, self._key(op))
        self.ops.insert(i, op)
        prev = self._best[i - 1] if i else None
        self._best.insert(i, op if prev is None or self._score(op) > self._score(prev) else prev)
        s = self._score(op)
        for j in range(i + 1, len(self._best)):     # stops at the first prefix it does not beat
            if self._score(self._best[j]) >= s:
                break
            self._best[j] = op

    def count_below(self, t: float) -> int:
        return bisect_left(self.keys, t)

    def best_below(self, t: float) -> SoakOp | None:
        """The op of greatest score among those with key < t."""
        j = bisect_left(self.keys, t)
        return self._best[j - 1] if j else None


def _by_end(op: SoakOp) -> float:
    return op.end


def _by_start(op: SoakOp) -> float:
    return op.start


class _Register:
    """A key, plan or vector id: its writes by token, acked writes by end (max start), ok/info
    deletes by start (max end)."""

    def __init__(self, name: str):
        self.name = name
        self.tokens: dict[str, SoakOp] = {}
        self.acked = _PrefixMax(_by_end, _by_start)
        self.deletes = _PrefixMax(_by_start, _by_end)


class _QRegister:
    """A Q-value: ok updates by end, ok/info updates by start, updates by value and count."""

    def __init__(self, name: str):
        self.name = name
        self.acked = _PrefixMax(_by_end, _by_start)
        self.made: list[float] = []
        self.by_value: dict[float, SoakOp] = {}
        self.by_count: dict[int, SoakOp] = {}




@dataclass(frozen=True)
class _Finding:
    """A violation before reporting; ``rescuable`` when an op still in flight could clear it."""

    kind: str
    register: str
    message: str
    read: SoakOp
    writes: tuple[SoakOp, ...]
    rescuable: bool = False

_Family = tuple[int, str, str]                             # run, "key"/"plan"/"vector", name


class Checker:
    """Feed it every op with ``add``; ``check_until(now - margin)`` returns new violations;
    ``finish()`` the rest. At most ``cap`` violations are kept per kind and one per (kind,
    register); ``found`` counts them all. ``settle``: seconds an op may still be in flight
    after a read that it could clear (see the module docstring)."""

    def __init__(self, settle: float = 60.0, cap: int = 20):
        self.settle, self.cap = settle, cap
        self.reads_checked = self.q_reads_checked = self.writes_seen = 0
        self.observations_checked = self.faults_seen = self.ops_ignored = 0
        self.found: Counter[str] = Counter()
        self.violations: list[Violation] = []
        self._registers: dict[_Family, _Register] = {}
        self._keys: dict[int, list[str]] = {}        # run -> sorted keys, for scans
        self._q: dict[tuple[int, str, str], _QRegister] = {}
        self._reads: list[tuple[float, int, SoakOp]] = []
        self._held: list[tuple[float, int, Callable[[], list[_Finding]]]] = []
        self._ready: list[_Finding] = []
        self._seq = itertools.count()
        self._reported: set[tuple[str, str]] = set()
        self._kept: Counter[str] = Counter()

    # -- arrival --------------------------------------------------------------------------
    def add(self, op: SoakOp) -> None:
        if op.op == "fault":
            self.faults_seen += 1
        elif op.op == "q_update":
            self.writes_seen += 1
            try:
                self._add_q_update(op)
            except (KeyError, TypeError) as exc:
                raise _malformed(op, exc) from None
        elif op.op in WRITES:
            self.writes_seen += 1
            for family, token in _writes_of(op):
                self._add_write(self._register(family), op, token)
        elif op.op in READS and op.outcome == "ok":
            heapq.heappush(self._reads, (op.end, next(self._seq), op))
        else:                                       # fail/info reads carry nothing
            self.ops_ignored += 1

    def _register(self, family: _Family) -> _Register:
        reg = self._registers.get(family)
        if reg is None:
            run, kind, name = family
            label = f"{kind} {name}" if kind == "vector" else f"{kind} {name!r}"
            reg = self._registers[family] = _Register(label + (f" in run {run}" if run else ""))
            if kind == "key":
                insort(self._keys.setdefault(run, []), name)
        return reg

    @staticmethod
    def _add_write(reg: _Register, op: SoakOp, token: str | None) -> None:
        if token is not None:
            reg.tokens[token] = op
        if op.outcome == "ok":
            reg.acked.add(op)
        if token is None and op.outcome != "fail":
            reg.deletes.add(op)

    def _add_q_update(self, op: SoakOp) -> None:
        q = self._qreg(op)
        q.by_value[float(op.value)] = op
        if op.outcome == "fail":
            return
        insort(q.made, op.start)
        if op.outcome != "ok":
            return
        q.acked.add(op)
        count = int(op.result["updates"])
        other = q.by_count.setdefault(count, op)
        if other is not op:
            self._ready.append(_Finding(
                "duplicate-count", q.name,
                f"updates #{other.index} and #{op.index} both returned count {count}: one "
                f"read-modify-write overwrote the other", op, (other, op)))
        heapq.heappush(self._reads, (op.end, next(self._seq), op))   # its result is a read

    def _qreg(self, op: SoakOp) -> _QRegister:
        key = (op.run, str(op.args["state"]), str(op.args["action"]))
        q = self._q.get(key)
        if q is None:
            name = f"q-value ({key[1]!r},{key[2]!r})" + (f" in run {op.run}" if op.run else "")
            q = self._q[key] = _QRegister(name)
        return q

    # -- checking -------------------------------------------------------------------------
    def check_until(self, t: float) -> list[Violation]:
        """Judge every read with end < t not judged yet; the new violations."""
        new = self._report(self._ready)
        self._ready = []
        while self._reads and self._reads[0][0] < t:
            new += self._judge(heapq.heappop(self._reads)[2], final=False)
        while self._held and self._held[0][0] < t:
            new += self._report(heapq.heappop(self._held)[2]())
        return new

    def finish(self) -> list[Violation]:
        """Judge everything left, as if every op had arrived."""
        new = self.check_until(float("inf"))
        while self._held:
            new += self._report(heapq.heappop(self._held)[2]())
        return new

    def counts(self) -> dict[str, int]:
        """The counters, for the soak's evidence and its progress line."""
        return {"reads_checked": self.reads_checked, "q_reads_checked": self.q_reads_checked,
                "observations_checked": self.observations_checked,
                "writes_seen": self.writes_seen, "faults_seen": self.faults_seen,
                "ops_ignored": self.ops_ignored, "violations": sum(self.found.values())}

    def _judge(self, read: SoakOp, final: bool) -> list[Violation]:
        checks: list[Callable[[], list[_Finding]]]
        if read.op in ("q_get", "q_update"):
            self.q_reads_checked += 1
            checks = [partial(self._check_q, read, read.result, read.op == "q_update")]
        else:
            self.reads_checked += 1
            checks = [partial(self._check_value, reg, read, token)
                      for reg, token in self._observations(read)]
        out: list[Violation] = []
        for check in checks:
            self.observations_checked += 1
            findings = check()
            firm = [f for f in findings if final or not f.rescuable]
            out += self._report(firm)
            if len(firm) < len(findings):           # an op still in flight may clear it
                def recheck(check: Callable[[], list[_Finding]] = check) -> list[_Finding]:
                    return [f for f in check() if f.rescuable]
                heapq.heappush(self._held, (read.end + self.settle, next(self._seq), recheck))
        return out

    def _observations(self, read: SoakOp) -> Iterator[tuple[_Register, str | None]]:
        run, args, result = read.run, read.args, read.result
        if read.op == "get":
            yield self._register((run, "key", str(args["key"]))), result
        elif read.op == "goap_get":
            yield self._register((run, "plan", str(args["plan"]))), result
        elif read.op in ("fetch", "query"):
            found = dict(result or {})
            if read.op == "fetch":                  # an id asked for and not returned: absent
                found = {str(i): found.get(str(i)) for i in args["ids"]} | found
            for vid, token in found.items():
                yield self._register((run, "vector", str(vid))), token
        elif read.op == "scan":
            listed = dict(result or {})
            for key, token in listed.items():
                yield self._register((run, "key", str(key))), token
            prefix = str(args["prefix"])
            keys = self._keys.get(run, [])
            for key in itertools.islice(keys, bisect_left(keys, prefix), None):
                if not key.startswith(prefix):
                    break
                if key not in listed:               # a known key the scan did not list: absent
                    yield self._registers[(run, "key", key)], None

    def _check_value(self, reg: _Register, read: SoakOp, token: str | None) -> list[_Finding]:
        latest = reg.acked.best_below(read.start)   # acked before R began, latest to start
        if token is None:
            gone = reg.deletes.best_below(read.end)  # begun before R ended, latest to end
            if latest is not None and latest.start > (gone.end if gone else float("-inf")):
                what = f"#{gone.index} deleted it" if gone else "it was never deleted"
                return [_Finding("stale", reg.name,
                         f"read #{read.index} found nothing, but #{latest.index} was "
                         f"acknowledged before the read began and {what} after that "
                         f"write began: the read is older than the last acknowledged write",
                         read, (gone, latest) if gone else (latest,), rescuable=True)]
            return []
        write = reg.tokens.get(token)
        if write is None:
            return [_Finding("never-written", reg.name,
                             f"read #{read.index} returned {token!r}, a value never written to "
                             f"{reg.name}", read, (), rescuable=True)]
        if write.outcome == "fail":
            return [_Finding("failed-write-visible", reg.name,
                             f"read #{read.index} returned {token!r}, the value of write "
                             f"#{write.index}, which failed: the value of a write that failed "
                             f"is visible", read, (write,))]
        if write.start >= read.end:
            return [_Finding("read-before-write", reg.name,
                             f"read #{read.index} returned {token!r}, but write #{write.index} "
                             f"of that value began only after the read ended", read, (write,))]
        if latest is not None and latest.start > write.end:
            return [_Finding("stale", reg.name,
                             f"read #{read.index} returned the value of #{write.index}, but "
                             f"#{latest.index} began after #{write.index} finished and was "
                             f"acknowledged before the read began: the read is older than the "
                             f"last acknowledged write", read, (write, latest))]
        return []

    def _check_q(self, read: SoakOp, result: Any, own: bool) -> list[_Finding]:
        q = self._qreg(read)
        count = 0 if result is None else int(result["updates"])
        value = None if result is None else float(result["value"])
        before = q.acked.count_below(read.start)
        acked = q.acked.ops[max(0, before - _NAMED_MAX):before]
        out: list[_Finding] = []
        what = f"update #{read.index} returned" if own else f"read #{read.index} found"
        if count < before + own:
            out.append(_Finding("lost-update", q.name,
                        f"{what} the update count {count}, but {before + own} updates were "
                        f"acknowledged before it began" + (" counting itself" if own else "")
                        + ": an update was lost", read,
                        tuple(acked) + ((read,) if own else ())))
        made = (bisect_right if own else bisect_left)(q.made, read.end)
        if count > made:
            out.append(_Finding("overcount", q.name,
                        f"{what} the update count {count}, but only {made} updates began "
                        f"before it ended: more updates counted than were made", read,
                        tuple(acked), rescuable=True))
        write = None if value is None else q.by_value.get(value)
        if value is not None and write is None:
            out.append(_Finding("never-written", q.name,
                                f"{what} the value {value!r}, which no update wrote", read, (),
                                rescuable=True))
        elif write is not None and write.outcome == "fail":
            out.append(_Finding("failed-write-visible", q.name,
                        f"{what} the value {value!r} of update #{write.index}, which failed: "
                        f"the value of a write that failed is visible", read, (write,)))
        elif write is not None and write.start >= read.end:
            out.append(_Finding("read-before-write", q.name,
                        f"{what} the value {value!r}, but update #{write.index} of that value "
                        f"began only after it ended", read, (write,)))
        return out

    def _report(self, findings: list[_Finding]) -> list[Violation]:
        out = []
        for f in findings:
            self.found[f.kind] += 1
            if (f.kind, f.register) in self._reported or self._kept[f.kind] >= self.cap:
                continue                            # counted, not repeated
            self._reported.add((f.kind, f.register))
            self._kept[f.kind] += 1
            out.append(Violation(f.kind, f.register, f.message, f.read, f.writes))
        self.violations += out
        return out


def _writes_of(op: SoakOp) -> Iterator[tuple[_Family, str | None]]:
    """The registers a write sets and the token each gets (None: deleted)."""
    run, args = op.run, op.args
    try:
        if op.op in ("put", "delete"):
            yield (run, "key", str(args["key"])), op.value if op.op == "put" else None
        elif op.op in ("goap_store", "goap_delete"):
            yield (run, "plan", str(args["plan"])), op.value if op.op == "goap_store" else None
        elif op.op == "upsert":
            for vid in args["ids"]:
                yield (run, "vector", str(vid)), op.value[str(vid)]
        else:                                       # remove
            for vid in args["ids"]:
                yield (run, "vector", str(vid)), None
    except (KeyError, TypeError) as exc:
        raise _malformed(op, exc) from None


def _malformed(op: SoakOp, exc: Exception) -> ValueError:
    return ValueError(f"op {op.describe()} is not shaped as record.py's table says ({exc!r}): "
                      f"fix the recorder of {op.process}")
