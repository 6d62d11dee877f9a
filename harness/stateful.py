"""The stateful model: a Hypothesis ``RuleBasedStateMachine`` for any backend, built from what
the backend declares.

``machine_for(spec)`` opens the backend once on a simulated disk to read its ``declaration``,
then returns a machine class with a rule for every operation the store supports (key-value,
batches, vectors, compaction, derive, witness verification) and the fault rules:

- ``reopen``: a clean close and open; nothing may change.
- ``process_crash``: the process dies (``SimDisk.crash()``), the store reopens on the page
  cache. With ``process-crash`` durability or better every acknowledged op must survive.
- ``power_loss(crash=...)``: a crash state drawn by Hypothesis (so it shrinks) over the trace
  since the last recovery; the store reopens on a new disk holding that image.
- ``failpoint_crash(failpoint=..., after_hits=..., op=...)``: one of the declared failpoints is
  armed and a mutation (or a compaction) run; if the failpoint fires, the op is indeterminate
  (``info``) and the next step is a recovery (process crash or power loss).
- ``crash_inside(op=..., at=..., model=..., keep=...)``: a mutation (or a compaction) runs to
  its end, then the store is crashed at a trace position inside that op's span (``at`` picks
  it among the positions between its first and last disk operation): the page cache there
  (``process``) or a prefix of what was pending there (``prefix`` power loss, ``keep`` ops
  kept). The op is judged as in flight. So a store is crashed between any two of its writes
  whether or not its author put failpoints there.
- for a stage adapter (``Capability.STAGES``), ``move_stage``, ``move_failpoint_crash`` and
  ``move_crash_inside``: promotion and rollback as ops of the history, with crashes at its
  transition failpoints and inside the move; the stage is checked as state
  (``stateful_stages``).
- for a store declaring ``Capability.RELATIONAL``, ``q_update``, ``plan_write`` and
  ``relational_read``: ADR-072's Q-value updates and GOAP plan stores and deletes as ops of the
  history (the crash rules run them too), their records part of the state every recovery is
  judged on (an update count short of the acknowledged calls is a lost write), and reads of
  ``q_value_get``, ``q_values`` and ``goap_retrieve`` checked against the model.
- for a store declaring ``Capability.MISSIONS``, ``mission_write``: ARCH-001's mission puts
  (``harness.missions.mission_documents``, over a few mission ids) and deletes as ops of the
  history (the crash rules run them too), part of the state every recovery is judged on, each
  read back at once, and every mission the store lists read after every step and compared
  with the model as canonical JSON.

Rule choice is swarm testing (Groce et al.): Hypothesis's ``RuleBasedStateMachine`` already
draws, per example, which rules are enabled (``FeatureFlags`` in its ``RuleStrategy``), so some
runs are all remove/upsert/compact/reopen and others all crashes. On top of that, keys, ids and
values are drawn half of the time from the last few the run used (``recent_*``), so a run
hammers a few ids with remove, re-insert, compaction and reopen instead of spreading over all.

A store whose writer lock names this live process after an in-process crash (it cannot tell
the crash from a live holder) is read back read-only, and the run goes on as a reader.

After every crash the recovered store must show a prefix state of the model's history
(``crashcheck.judge``: acknowledged ops kept as far as the declared durability promises, the
in-flight op all or nothing); the model then adopts the state the store shows. Invariants check
the vector count and a cheap read after every step. ``run_model`` (evidence for a certificate,
with a reproduction file on failure) and ``run_conformance_test`` (a one-line user test) run it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import hypothesis
from hypothesis import HealthCheck, Phase
from hypothesis import settings as Settings  # noqa: N812 - the class, as Hypothesis types it
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from crashgate.backends import (
    BadOption,
    BatchWrite,
    BulkFetch,
    Capability,
    Compactable,
    Declaration,
    Derivable,
    LockHeld,
    MissionStore,
    QValue,
    Recall,
    Relational,
    SimulatedCrash,
    Staged,
    StoreClosed,
    VectorRecord,
    WitnessVerifiable,
)
from crashgate.harness.clock import VirtualClock
from crashgate.harness.crashcheck import acknowledged_at, allowed_range, judge
from crashgate.harness.crashstates import (
    CrashModel,
    CrashState,
    crash_state_strategy,
    pending_at,
    sync_positions,
)
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.faults.server import KILLS, ServerKill, killable
from crashgate.harness.history import History
from crashgate.harness.interrupt import raise_if_interrupted
from crashgate.harness.missions import mission_documents
from crashgate.harness.model import (
    StoreState,
    block_disagreement,
    mission_seen,
    prefix_states,
    read_missions,
    read_state,
    relations,
)
from crashgate.harness.ops import (
    Batch,
    Delete,
    GoapDelete,
    GoapStore,
    MissionDelete,
    MissionPut,
    Op,
    Promote,
    Put,
    QUpdate,
    Relations,
    Remove,
    Rollback,
    Upsert,
)
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.reproduce import (
    Target,
    failing_steps,
    replay_reproduction,
    reproduction_source,
    target_for,
    write_reproduction,
)
from crashgate.harness.seeded_search import pinned_constants
from crashgate.harness.simdisk import DiskImage, DiskOp, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.stateful_stages import (
    MOVE_PROBES,
    MOVES,
    STAGE_RANGE,
    judge_stage,
    move_op,
    reads_problem,
    spread,
    stage_problem,
    stages_along,
)
from crashgate.harness.unsupported import cannot_answer
from crashgate.harness.vector_oracle import RecallTally, check_approximate, check_exact
from crashgate.harness.verdict import Evidence, Verdict

__all__ = ["DATA_DIR", "STORE_PATH", "StoreMachine", "machine_for", "run_conformance_test",
           "run_model"]

DATA_DIR = "/data"
STORE_PATH = f"{DATA_DIR}/store"
POWER_MODELS = (CrashModel.PREFIX, CrashModel.SUBSET, CrashModel.TORN, CrashModel.GARBAGE)
DIM = 4
KEYS = st.sampled_from(["a", "ab", "b", "b/1", "b/2", "c", "ünï", "z" * 40])
IDS = st.integers(min_value=0, max_value=9)
VECTORS = st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=DIM, max_size=DIM)

# The machine whose rules are being drawn: strategies that depend on a machine's state (crash
# states over its disk trace) or on its declaration read it here. Hypothesis draws a rule's
# arguments in the thread running that machine, right after building it.
_LIVE = threading.local()


def _live() -> StoreMachine:
    machine: StoreMachine | None = getattr(_LIVE, "machine", None)
    if machine is None:
        raise RuntimeError("a StoreMachine strategy was drawn outside a running machine")
    return machine


def _per_machine(build: Callable[[StoreMachine], st.SearchStrategy[Any]]
                 ) -> st.SearchStrategy[Any]:
    return st.composite(lambda draw: draw(build(_live())))()


# Metadata a filter can tell apart: a tag, and a number "n" (ints and floats, 1 and 1.0 among
# them, and now and then a bool, which equals no number and falls in no range)
TAGS = st.sampled_from(["x", "y"])
NUMBERS = st.one_of(st.integers(-2, 3), st.sampled_from([0.5, 1.0, 2.5]))
N_VALUES = st.one_of(NUMBERS, st.just(True))
METADATA = st.fixed_dictionaries({}, optional={"tag": TAGS, "n": N_VALUES})


@st.composite
def _ranges(draw: st.DrawFn) -> dict[str, Any]:
    """A numeric range of one to four bounds (``$gt``, ``$gte``, ``$lt``, ``$lte``)."""
    ops = draw(st.lists(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), min_size=1,
                        max_size=4, unique=True))
    return {op: draw(NUMBERS) for op in ops}


# Filters of the grammar (backends.search): equality, $in, $ne and ranges, on one key or both
TAG_CONDITIONS = st.one_of(
    TAGS, st.fixed_dictionaries({"$in": st.lists(st.sampled_from(["x", "y", "z"]),
                                                 max_size=2, unique=True)}),
    st.fixed_dictionaries({"$ne": TAGS}))
N_CONDITIONS = st.one_of(
    N_VALUES, _ranges(), st.fixed_dictionaries({"$in": st.lists(N_VALUES, max_size=3)}),
    st.fixed_dictionaries({"$eq": N_VALUES}))
WHERES = st.none() | st.fixed_dictionaries({}, optional={"tag": TAG_CONDITIONS,
                                                         "n": N_CONDITIONS})
BAD_WHERES = st.sampled_from([
    {"n": {"$regex": "1"}}, {"tag": {"$in": "x"}}, {"n": {"$gt": "1"}}, {"n": {}},
    {"n": {"$lte": True}}, {"tag": "x", "n": {"$gte": 0, "$between": [0, 1]}},
])

# A store that declares it keeps no metadata (``Declaration.metadata``) is sent none and
# queried without filters: what it cannot keep it cannot be held to, and every other promise
# (vectors, ids, distances, counts) is checked as for any store.
KEPT_METADATA = _per_machine(lambda m: METADATA if m.declaration.metadata else st.just({}))
KEPT_WHERES = _per_machine(lambda m: WHERES if m.declaration.metadata else st.none())


# Values that show up in a printed failing run are built by composites (printed by repr), not
# st.builds or .map (printed as the call that made them, which may not be importable).
@st.composite
def _values(draw: st.DrawFn) -> bytes:
    small = draw(st.binary(max_size=16))
    # now and then a value spanning two sectors, so that a torn write can tear it; drawn so
    # that it shrinks to the small one (a one_of would keep the big branch)
    return b"x" * 600 if draw(st.integers(0, 7)) == 7 else small


VALUES = _values()


@st.composite
def _batches(draw: st.DrawFn, min_puts: int) -> Batch:
    puts = draw(st.dictionaries(KEYS, VALUES, min_size=min_puts, max_size=3))
    deletes = draw(st.lists(KEYS, max_size=2, unique=True))
    return Batch(tuple(sorted(puts.items())), tuple(deletes))


def _records(min_size: int) -> st.SearchStrategy[list[VectorRecord]]:
    record = st.builds(VectorRecord, id=IDS, vector=VECTORS.map(tuple), metadata=KEPT_METADATA)
    return st.lists(record, min_size=min_size, max_size=3, unique_by=lambda r: r.id)


@st.composite
def _upserts(draw: st.DrawFn, min_size: int) -> Upsert:
    return Upsert(tuple(draw(_records(min_size))))


@st.composite
def _removes(draw: st.DrawFn) -> Remove:
    return Remove(tuple(draw(st.lists(IDS, min_size=1, max_size=3, unique=True))))


BATCHES = _batches(0)
RECORDS = _records(1)
# ADR-072's relational records: small pools, so that updates pile up on a few Q-values (their
# counts are state) and plans are replaced and deleted; one non-ASCII id, as for keys
Q_STATES = st.sampled_from(["s0", "ş/2"])
Q_ACTIONS = st.sampled_from(["a", "b"])
Q_VALUES = st.floats(-10, 10, allow_nan=False)   # -0.0 included: stores keep it as 0.0
PLAN_IDS = st.sampled_from(["p0", "plän"])
PLANS = st.fixed_dictionaries(
    {"goal": st.sampled_from(["eat", "rest", "ünï"]),
     "steps": st.lists(st.sampled_from(["go", "take", "use"]), max_size=3)},
    optional={"cost": st.sampled_from([0, 1.5, -2]),
              "pre": st.fixed_dictionaries({"have": st.booleans()})})


@st.composite
def _plan_writes(draw: st.DrawFn) -> GoapStore | GoapDelete:
    """A plan store, or one time in four a delete: a stale read needs a plan replaced."""
    plan_id = draw(PLAN_IDS)
    if draw(st.integers(0, 3)) == 3:
        return GoapDelete(plan_id)
    return GoapStore(plan_id, draw(PLANS))


PLAN_WRITES = _plan_writes()
# ARCH-001's missions: a few ids (one with a path separator and a non-ASCII letter: the JSON
# side names a file after it), so that puts replace and deletes hit; small documents of the
# generator's every shape, one now and then with a narrative spanning sectors
MISSION_IDS = st.sampled_from(["genesis", "mission-001", "mïssion/2"])
_MISSION_DOCS = mission_documents(max_items=3, max_text=12, large_text=600, max_depth=6)


@st.composite
def _mission_docs(draw: st.DrawFn) -> dict[str, Any]:
    """A mission document (``mission_documents``) under one of ``MISSION_IDS``."""
    doc = draw(_MISSION_DOCS)
    doc["mission_id"] = draw(MISSION_IDS)
    return doc


@st.composite
def _mission_writes(draw: st.DrawFn) -> MissionPut | MissionDelete:
    """A mission put, or one time in four a delete."""
    if draw(st.integers(0, 3)) == 3:
        return MissionDelete(draw(MISSION_IDS))
    return MissionPut(draw(MISSION_DOCS))


MISSION_DOCS = _mission_docs()
MISSION_WRITES = _mission_writes()
RECENT = 3   # how many of the last keys, ids and values a run re-uses
T = TypeVar("T")


@functools.cache
def _crash_mutations(kv: bool, batch: bool, vec: bool, compact: bool, stages: bool = False,
                     relational: bool = False, missions: bool = False
                     ) -> st.SearchStrategy[Op | str]:
    """What to run with a failpoint armed: a mutation, ``"compact"``, a stage move
    (``stateful_stages.MOVES``), a relational write or a mission write. Batches and upserts
    come with two parts or more: a crash between the parts of an op needs an op with parts."""
    parts: list[st.SearchStrategy[Op | str]] = []
    if batch:
        parts.append(_batches(2))
    if kv:
        parts += [st.builds(Put, KEYS, VALUES), st.builds(Delete, KEYS)]
    if vec:
        parts += [_upserts(2), _removes()]
    if compact:
        parts.append(st.just("compact"))
    if stages:
        parts.append(st.sampled_from(MOVES))
    if relational:   # last: the strategies of stores without relational records are unchanged
        parts += [st.builds(QUpdate, Q_STATES, Q_ACTIONS, Q_VALUES), PLAN_WRITES]
    if missions:   # after them, for the same reason
        parts.append(MISSION_WRITES)
    return st.one_of(parts)


def _mutations(m: StoreMachine) -> st.SearchStrategy[Op | str]:
    return _crash_mutations(m.has_kv, m.has_batch, m.has_vec, m.has_compact, m.has_stages,
                            m.has_relational, m.has_missions)


@functools.lru_cache(maxsize=2048)
def _reusing(plain: st.SearchStrategy[Any], recent: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    """``plain``, or half of the time one of ``recent`` (``plain`` first: it shrinks there)."""
    return st.one_of(plain, st.sampled_from(recent)) if recent else plain


def _recent(plain: st.SearchStrategy[Any], which: str) -> st.SearchStrategy[Any]:
    return _per_machine(lambda m: _reusing(plain, tuple(getattr(m, which))))


USED_KEYS = _recent(KEYS, "recent_keys")
USED_VALUES = _recent(VALUES, "recent_values")
USED_IDS = _recent(IDS, "recent_ids")
USED_RECORDS = st.lists(
    st.builds(VectorRecord, id=USED_IDS, vector=VECTORS.map(tuple), metadata=KEPT_METADATA),
    min_size=1, max_size=3, unique_by=lambda r: r.id)


def _crash_states(m: StoreMachine) -> st.SearchStrategy[CrashState]:
    return _crash_strategy(m.disk.base, tuple(m.disk.trace),
                           tuple(m.model.crash_positions(m.disk)))


@functools.lru_cache(maxsize=512)
def _crash_strategy(base: DiskImage, trace: tuple[DiskOp, ...], positions: tuple[int, ...]
                    ) -> st.SearchStrategy[CrashState]:
    # Keyed on content: shrinking replays the same prefixes many times, and building the
    # strategy walks the whole trace (and Hypothesis inspects the source of its composite).
    return crash_state_strategy(base, trace, positions, POWER_MODELS)


def _step(fn: Callable[..., None]) -> Callable[..., None]:
    """Count the step (for honest figures) and mark it in progress (see ``teardown``)."""

    @functools.wraps(fn)
    def wrapper(self: StoreMachine, **kwargs: Any) -> None:
        raise_if_interrupted()   # a Ctrl-C swallowed on the way (see harness.interrupt)
        stats = type(self).stats
        stats["steps"] += 1
        stats[f"rule:{fn.__name__}"] += 1
        self._in_step = True
        try:
            fn(self, **kwargs)
        except Exception as exc:
            self._note_failure(exc)
            raise
        self._in_step = False

    return wrapper


@dataclass
class _Model:
    """The oracle: ``ops`` is the linear history of mutations that leads to what the store
    shows (every op acknowledged, except an in-flight last one after a failpoint crash), and
    ``kv``/``vectors`` the state after the acknowledged ones. ``spans`` are the trace spans of
    ``ops[on_disk:]`` on the current disk since ``floor``, the last recovery."""

    ops: list[Op] = field(default_factory=list)
    kv: dict[str, bytes] = field(default_factory=dict)
    vectors: dict[int, VectorRecord] = field(default_factory=dict)
    relational: Relations = field(default_factory=dict)
    spans: list[tuple[int, int | None]] = field(default_factory=list)
    on_disk: int = 0
    floor: int = 0

    def begin(self, op: Op, position: int) -> None:
        self.ops.append(op)
        self.spans.append((position, None))

    def acknowledge(self, position: int) -> None:
        start, _ = self.spans[-1]
        self.spans[-1] = (start, position)
        self.ops[-1].apply(self.kv, self.vectors, self.relational)

    def at(self, position: int) -> tuple[int, bool]:
        """(ops acknowledged, whether one was in flight) at trace ``position``."""
        return acknowledged_at(self.spans, position, self.on_disk)

    def crash_positions(self, disk: SimDisk) -> list[int]:
        """Since the last recovery: before each sync, at each op's end, and now."""
        points = {self.floor, disk.position}
        points.update(self.floor + i for i in sync_positions(disk.trace[self.floor:]))
        points.update(end for _, end in self.spans if end is not None)
        return sorted(points)

    def adopt(self, ops: list[Op], floor: int) -> None:
        """After recovery: the store shows the state after ``ops``; history restarts there."""
        self.ops = list(ops)
        self.kv, self.vectors, self.relational = {}, {}, {}
        for op in self.ops:
            op.apply(self.kv, self.vectors, self.relational)
        self.spans, self.on_disk, self.floor = [], len(self.ops), floor



def _push(recent: list[T], new: Iterable[T]) -> None:
    """Move ``new`` to the end of ``recent`` (most recent last), keeping the last ``RECENT``."""
    for x in new:
        if x in recent:
            recent.remove(x)
        recent.append(x)
    del recent[:-RECENT]


def _vector_ids(ops: Iterable[Op]) -> set[int]:
    return {r.id for op in ops if isinstance(op, Upsert) for r in op.records}


class StoreMachine(RuleBasedStateMachine):
    """The rules; ``machine_for`` makes a subclass bound to one backend."""

    target: ClassVar[Target]
    declaration: ClassVar[Declaration]
    has_kv: ClassVar[bool] = False
    has_vec: ClassVar[bool] = False
    has_batch: ClassVar[bool] = False
    has_compact: ClassVar[bool] = False
    has_derive: ClassVar[bool] = False
    has_verify: ClassVar[bool] = False
    has_failpoints: ClassVar[bool] = False
    has_stages: ClassVar[bool] = False
    has_relational: ClassVar[bool] = False
    has_missions: ClassVar[bool] = False
    has_server: ClassVar[bool] = False
    """A server keeps the data (``Declaration.server``): nothing of it passes through the
    simulated disk, so power loss and crashes inside an op are not drawn (they would judge
    the marker file alone); a process crash is the client abandoning its connection, and
    ``_ServerMachine`` adds SIGKILLs of the server."""
    stats: ClassVar[Counter[str]]
    last: ClassVar[StoreMachine | None] = None
    first_failure: ClassVar[tuple[str, str] | None] = None
    """The first failure any run saw (message, history), kept for a failure Hypothesis
    cannot replay because the store does not behave the same way twice."""

    def __init__(self) -> None:
        super().__init__()
        _LIVE.machine = self
        cls = type(self)
        cls.last = self
        cls.stats["examples"] += 1
        self.clock = VirtualClock()
        self.failpoints = ArmedFailpoints()
        self.disk = SimDisk(DiskImage.empty(DATA_DIR))
        self.model = _Model()
        self.history = History()
        self.crashed = False
        self.reader = False   # reopened read-only after a crash (see _open_recovered)
        self.children = 0
        self.last_key: str | None = None
        self.recent_keys: list[str] = []
        self.recent_values: list[bytes] = []
        self.recent_ids: list[int] = []
        self.recall = RecallTally()   # an approximate store's neighbour slots, this run
        self._in_step = False
        self._failed = False   # a step or invariant failed: the run's recall is not judged
        self.store: Any = self.target.open(STORE_PATH, self._env())
        self.first_stage: int = self.store.stage if self.has_stages else 0
        first, last = getattr(self.store, "stage_range", STAGE_RANGE)
        self.stage_range: tuple[int, int] = (int(first), int(last))

    def _env(self) -> Any:
        return sim_env(self.disk, self.clock, self.failpoints)

    @property
    def readable(self) -> bool:
        return not self.crashed and self.store is not None

    @property
    def writable(self) -> bool:
        return self.readable and not self.reader

    # -- mutations ---------------------------------------------------------------------------

    def _remember(self, op: Op) -> None:
        """Note the keys, values and ids ``op`` touches, for the strategies that re-use them."""
        keys: list[str] = []
        values: list[bytes] = []
        ids: list[int] = []
        if isinstance(op, Put):
            keys, values = [op.key], [op.value]
        elif isinstance(op, Delete):
            keys = [op.key]
        elif isinstance(op, Batch):
            keys = [k for k, _ in op.puts] + list(op.deletes)
            values = [v for _, v in op.puts]
        elif isinstance(op, Upsert):
            ids = [r.id for r in op.records]
        elif isinstance(op, Remove):
            ids = list(op.ids)
        _push(self.recent_keys, keys)
        _push(self.recent_values, values)
        _push(self.recent_ids, ids)

    def _mutate(self, name: str, op: Op, args: Mapping[str, Any]) -> Any:
        self._remember(op)
        self.model.begin(op, self.disk.position)
        try:
            result = op.run(self.store)
        except SimulatedCrash as crash:
            self.history.record(name, args, "info", f"crashed at failpoint {crash.where}")
            self.crashed = True
            return None
        except (LockHeld, StoreClosed, BadOption) as exc:  # refused: it did not happen
            self.history.record(name, args, "fail", f"{type(exc).__name__}: {exc}")
            raise
        except Exception as exc:
            self.history.record(name, args, "info", f"{type(exc).__name__}: {exc}")
            raise
        self.model.acknowledge(self.disk.position)
        self.history.record(name, args, "ok")
        if isinstance(op, Put | Delete):
            self.last_key = op.key
        if isinstance(op, Promote | Rollback):   # it changed which store is read: read it all
            problem = reads_problem(self.store, self.model.ops, self._model_state())
            assert problem is None, f"{name}: {problem}"
        return result

    def _model_state(self) -> StoreState:
        """The state after the acknowledged ops, as ``read_state`` reads a store."""
        return StoreState.of(self.model.kv, self.model.vectors,
                             relational=self.model.relational)

    def _op_for(self, op: Op | str) -> Op | str:
        """A drawn move (``"move up"``/``"move down"``) as the op from the model's stage."""
        if op in MOVES:
            return move_op(self.stage, str(op), self.stage_range)
        return op

    @property
    def stage(self) -> int:
        """The stage the model says a stage adapter is in now."""
        return stages_along(self.first_stage, self.model.ops)[-1]

    @precondition(lambda self: self.has_kv and self.writable)
    @rule(key=USED_KEYS, value=USED_VALUES)
    @_step
    def put(self, key: str, value: bytes) -> None:
        self._mutate("put", Put(key, value), {"key": key, "value": value})

    @precondition(lambda self: self.has_kv and self.writable)
    @rule(key=USED_KEYS)
    @_step
    def delete(self, key: str) -> None:
        self._mutate("delete", Delete(key), {"key": key})

    @precondition(lambda self: self.has_batch and self.writable)
    @rule(batch=BATCHES)
    @_step
    def write_batch(self, batch: Batch) -> None:
        self._mutate("write_batch", batch, {"puts": dict(batch.puts), "deletes": batch.deletes})

    @precondition(lambda self: self.has_vec and self.writable)
    @rule(records=USED_RECORDS)
    @_step
    def upsert(self, records: list[VectorRecord]) -> None:
        self._mutate("upsert", Upsert(tuple(records)), {"records": records})

    @precondition(lambda self: self.has_vec and self.writable)
    @rule(ids=st.lists(USED_IDS, max_size=3, unique=True))
    @_step
    def remove(self, ids: list[int]) -> None:
        live = sum(i in self.model.vectors for i in ids)
        got = self._mutate("remove", Remove(tuple(ids)), {"ids": ids})
        assert got == live, f"remove({ids}) returned {got}, but {live} of those ids were live"

    # -- reads -------------------------------------------------------------------------------

    def _read(self, name: str, args: Mapping[str, Any], got: Any, want: Any) -> None:
        ok = got == want
        self.history.record(name, args, "ok", None if ok else f"returned {got!r}")
        assert ok, f"{name}({_args(args)}) returned {got!r}, the model says {want!r}"

    @precondition(lambda self: self.has_kv and self.readable)
    @rule(key=USED_KEYS)
    @_step
    def get(self, key: str) -> None:
        self._read("get", {"key": key}, self.store.get(key), self.model.kv.get(key))

    @precondition(lambda self: self.has_kv and self.readable)
    @rule(prefix=st.sampled_from(["", "a", "b/", "z", "q"]))
    @_step
    def scan(self, prefix: str) -> None:
        want = sorted((k, v) for k, v in self.model.kv.items() if k.startswith(prefix))
        self._read("scan", {"prefix": prefix}, self.store.scan(prefix), want)

    @precondition(lambda self: self.has_vec and self.readable)
    @rule(ids=st.lists(USED_IDS, max_size=4))
    @_step
    def fetch(self, ids: list[int]) -> None:
        got = self.store.fetch(ids)
        want = [self.model.vectors[i] for i in sorted(set(ids)) if i in self.model.vectors]
        self._read("fetch", {"ids": ids}, StoreState.of({}, {r.id: r for r in got}),
                   StoreState.of({}, {r.id: r for r in want}))
        assert [r.id for r in got] == [r.id for r in want], "fetch must order records by id"
        if isinstance(self.store, BulkFetch):
            # the harness reads recovered stores through the bulk path: it must not lie
            problem = block_disagreement(self.store, self.store.fetch_block(ids), got)
            self.history.record("fetch_block", {"ids": ids}, "ok",
                                None if problem is None else f"returned {problem}")
            assert problem is None, (
                f"fetch_block({ids}) disagrees with fetch({ids}): {problem}; the two must give "
                f"the same records (backends.BulkFetch)")

    @precondition(lambda self: self.has_vec and self.readable)
    @rule()
    @_step
    def count(self) -> None:
        self._read("count", {}, self.store.count(), len(self.model.vectors))

    @precondition(lambda self: self.has_vec and self.readable)
    @rule(vector=VECTORS, k=st.integers(0, 5), where=KEPT_WHERES)
    @_step
    def query(self, vector: list[float], k: int, where: dict[str, Any] | None) -> None:
        hits = self.store.query(vector, k, where)
        args = {"vector": vector, "k": k, "where": where}
        metric = self.declaration.metric or "l2"
        records = list(self.model.vectors.values())
        promise = self.declaration.recall
        if promise is None:
            problem = check_exact(hits, records, vector, k, metric, where)
        else:
            problem = check_approximate(hits, records, vector, k, metric, where)[0]
            if problem is None:
                problem = self._tally_recall(promise, vector, where, records, metric)
        self.history.record("query", args, "ok", None if problem is None else
                            f"{problem}; returned {[(h.id, h.distance) for h in hits]}")
        assert problem is None, f"query({_args(args)}): {problem}"

    def _tally_recall(self, promise: Recall, vector: list[float], where: dict[str, Any] | None,
                      records: list[VectorRecord], metric: str) -> str | None:
        """Ask again at the promised k and count its neighbour slots (judged at teardown)."""
        hits = self.store.query(vector, promise.k, where)
        problem, found, possible = check_approximate(hits, records, vector, promise.k, metric,
                                                     where)
        if possible:
            self.recall.add(found, possible)
            type(self).stats["recall_found"] += found
            type(self).stats["recall_possible"] += possible
        return None if problem is None else f"at k={promise.k}: {problem}"

    # -- capabilities ------------------------------------------------------------------------

    @precondition(lambda self: self.has_compact and self.writable)
    @rule()
    @_step
    def compact(self) -> None:
        self.store.compact()
        self.history.record("compact", {}, "ok")

    @precondition(lambda self: self.has_verify and self.readable)
    @rule()
    @_step
    def verify(self) -> None:
        problems = self.store.verify()
        self.history.record("verify", {}, "ok", None if not problems else problems[0])
        assert problems == [], f"witness chain does not verify: {problems}"

    @precondition(lambda self: self.has_derive and self.writable)
    @rule()
    @_step
    def derive(self) -> None:
        self.children += 1
        path = f"{DATA_DIR}/child-{self.children}"
        child = self.store.derive(path)
        try:
            seen = read_state(child, _vector_ids(self.model.ops))
            want = self._model_state()
            assert seen == want, ("a derived child does not show its parent's data: "
                                  + "; ".join(seen.describe_diff(want)))
            if self.has_kv:  # a child writes only to itself
                child.put("derived-only", b"child")
                assert self.store.get("derived-only") is None, (
                    "a write to a derived child reached the parent")
            if self.has_relational:   # relational records too (ADR-072's stage 4 gate)
                child.goap_store("derived-only", {"goal": "child"})
                assert self.store.goap_retrieve("derived-only") is None, (
                    "a GOAP plan stored in a derived child reached the parent")
        finally:
            child.close()
        self.history.record("derive", {"path": path}, "ok")

    # -- faults ------------------------------------------------------------------------------

    @precondition(lambda self: self.readable)
    @rule()
    @_step
    def reopen(self) -> None:
        self.store.close()
        extra = {"readonly": "true"} if self.reader else {}
        self.store = self.target.open(STORE_PATH, self._env(), **extra)
        self.history.record("reopen", {}, "info", detail="clean close and open")

    @rule()
    @_step
    def process_crash(self) -> None:
        if self.has_server:
            self._abandon()
        self.disk.crash()
        self.failpoints.disarm()
        # same disk: the page cache survives, and what was not yet synced may still be lost
        # to a later power loss
        self._recover("process crash", self.disk.position, power_loss=False)

    @precondition(lambda self: not self.has_server)
    @rule(crash=_per_machine(_crash_states))
    @_step
    def power_loss(self, crash: CrashState) -> None:
        self.disk.crash()
        self.failpoints.disarm()
        image = crash.image(self.disk.base, self.disk.trace)
        how = crash.describe(self.disk.trace)
        self.disk = SimDisk(image)
        self._recover(how, crash.position, power_loss=True)

    @precondition(lambda self: self.has_failpoints and self.writable)
    @rule(failpoint=_per_machine(lambda m: st.sampled_from(m.declaration.failpoints)),
          after_hits=st.just(0) | st.integers(1, 2), op=_per_machine(_mutations))
    @_step
    def failpoint_crash(self, failpoint: str, after_hits: int, op: Op | str) -> None:
        self._failpoint_crash(failpoint, after_hits, op)

    def _failpoint_crash(self, failpoint: str, after_hits: int, op: Op | str) -> None:
        args = {"op": op, "failpoint": failpoint, "after_hits": after_hits}
        op = self._op_for(op)
        name = f"{op if isinstance(op, str) else type(op).__name__.lower()} with {failpoint} armed"
        self.failpoints.arm(failpoint, after_hits=after_hits)
        try:
            if not isinstance(op, str):
                self._mutate(name, op, args)
                return
            try:  # compaction: no model op; everything acknowledged must come through it
                self.store.compact()
            except SimulatedCrash as crash:
                self.history.record(name, args, "info", f"crashed at failpoint {crash.where}")
                self.crashed = True
            else:
                self.history.record(name, args, "ok")
        finally:
            self.failpoints.disarm(failpoint)

    @precondition(lambda self: self.writable and not self.has_server)
    @rule(op=_per_machine(_mutations), at=st.integers(0, 255),
          model=st.sampled_from((CrashModel.PROCESS, CrashModel.PREFIX)), keep=st.integers(0, 255))
    @_step
    def crash_inside(self, op: Op | str, at: int, model: CrashModel, keep: int) -> None:
        self._crash_inside(op, at, model, keep)

    def _crash_inside(self, op: Op | str, at: int, model: CrashModel, keep: int,
                      probes: int = 0) -> None:
        start = self.disk.position
        args = {"op": op, "at": at, "model": model, "keep": keep}
        op = self._op_for(op)
        name = f"{op if isinstance(op, str) else type(op).__name__.lower()}, crashed inside"
        if isinstance(op, str):   # compaction: no model op; everything acknowledged must stay
            self.store.compact()
            self.history.record(name, args, "ok")
        else:
            self._mutate(name, op, args)
        end = self.disk.position
        if self.crashed or end == start:   # nothing was written: no position inside
            return
        # strictly between the op's first and last disk operation when there is such a point
        inside = range(start + 1, end) if end - start >= 2 else range(start, end + 1)
        position = inside[at % len(inside)]
        pending = tuple(pending_at(self.disk.base, self.disk.trace, position))
        kept = pending if model is CrashModel.PROCESS else pending[:keep % (len(pending) + 1)]
        crash = CrashState(position, model, kept, pending=pending)
        image = crash.image(self.disk.base, self.disk.trace)
        how = f"{crash.describe(self.disk.trace)}, inside {name.split(',')[0]}"
        self.disk.crash()
        self.failpoints.disarm()
        # after the crash: the store that ran the op is dead, so a probe can open a copy
        for probe in spread(inside, probes):
            if probe != position:
                self._probe_crash(probe, name.split(",")[0])
        self.disk = SimDisk(image)
        self._recover(how, position, power_loss=model is not CrashModel.PROCESS)

    def _abandon(self) -> None:
        """A server store's client dies: its connection ends (the server rolls back what it
        had not committed); nothing of the server is touched."""
        store, self.store = self.store, None
        if store is not None and not self.crashed:
            with contextlib.suppress(Exception):   # a dying client's close is not judged
                store.close()

    def _probe_crash(self, position: int, what: str) -> None:
        """Judge a process crash at trace ``position`` of ``self.disk`` (crashed: its store is
        dead) on a copy, then go on as before: the machine keeps its disk, store and model."""
        pending = tuple(pending_at(self.disk.base, self.disk.trace, position))
        crash = CrashState(position, CrashModel.PROCESS, pending, pending=pending)
        saved = self.disk, self.store, self.model, self.reader
        self.disk = SimDisk(crash.image(saved[0].base, saved[0].trace))
        self.model = replace(self.model)   # adopt() rebinds its fields: the saved one stays
        try:
            self._recover(f"{crash.describe(saved[0].trace)}, inside {what} (a probe)",
                          position, power_loss=False)
            self.store.close()
        finally:
            self.disk, self.store, self.model, self.reader = saved

    def _recover(self, how: str, position: int, *, power_loss: bool) -> None:
        """Reopen on ``self.disk`` and judge what the store shows against the model at the
        crash ``position`` (a position of the trace before this crash)."""
        type(self).stats["crash_states"] += 1
        done, in_flight = self.model.at(position)
        ops = self.model.ops[: done + in_flight]
        states = prefix_states(ops)
        index: dict[str, list[int]] = {}
        for j, s in enumerate(states):
            index.setdefault(s.digest, []).append(j)
        allowed = allowed_range(done, in_flight, self.declaration.durability, power_loss)
        self.store, self.crashed = None, False
        seen: StoreState | BaseException
        try:
            nothing = self._open_recovered()
            seen = nothing if nothing is not None else read_state(self.store, _vector_ids(ops))
        except Exception as exc:  # noqa: BLE001 - a store that cannot reopen is the finding
            seen = exc
        verdict = judge(seen, states, index, ops, allowed)
        name = "power_loss" if power_loss else "process_crash"
        self.history.record(name, {"at": position}, "info",
                            verdict.violation.value if verdict.violation else None,
                            f"{how}; {verdict.detail}")
        assert verdict.violation is None and verdict.matched is not None, (
            f"after a {how}: {verdict.violation.value if verdict.violation else 'no state'} "
            f"(declared durability: {self.declaration.durability.value}; {done} ops "
            f"acknowledged{', 1 in flight' if in_flight else ''}; allowed states "
            f"{allowed.lo}..{allowed.hi}): {verdict.detail}")
        matched = verdict.matched
        if self.has_stages:   # the stage is state too: it must come from the same point
            staged = judge_stage(self.store.stage, self.first_stage, ops, states, matched,
                                 allowed)
            assert staged.matched is not None, f"after a {how}: {staged.problem}"
            matched = staged.matched
        self.model.adopt(ops[:matched], self.disk.position)

    def _open_recovered(self) -> StoreState | None:
        """Open the store after a crash into ``self.store``, as a user would
        (``recovery.reopen_after_crash``: a dead writer's fresh lease is waited out on the
        virtual clock; a lock naming this live process leaves a reader, and the run goes on as
        one). Returns the empty state when there is nothing to open (a reader of a store never
        created), else None."""
        try:
            reopened = reopen_after_crash(self.target.open, STORE_PATH, self._env(),
                                          self.declaration)
        except FileNotFoundError:
            if not (self.declaration.has(Capability.WRITER_LOCK)
                    or self.declaration.has(Capability.LEASE)):
                raise
            self.reader = True   # the read-only attempt found no store: it was never created
            return StoreState()
        self.store, self.reader = reopened.store, reopened.readonly
        return None

    # -- invariants --------------------------------------------------------------------------

    @precondition(lambda self: self.readable)
    @invariant()
    def agrees_with_model(self) -> None:
        try:
            self._agrees_with_model()
        except Exception as exc:
            self._note_failure(exc)
            raise

    def _note_failure(self, exc: Exception) -> None:
        self._failed = True
        cls = type(self)
        if cls.first_failure is None:
            message = str(exc).splitlines()[0] if str(exc) else ""
            cls.first_failure = (f"{type(exc).__name__}: {message}".rstrip(": "),
                                 self.history.to_jsonl())

    def _agrees_with_model(self) -> None:
        if self.has_stages:
            problem = stage_problem(self.store, self.stage)
            assert problem is None, problem
        if self.has_vec:
            got = self.store.count()
            assert got == len(self.model.vectors), (
                f"count() is {got}, the model holds {len(self.model.vectors)} vectors")
        if self.has_kv and self.last_key is not None:
            got = self.store.get(self.last_key)
            want = self.model.kv.get(self.last_key)
            assert got == want, f"get({self.last_key!r}) returned {got!r}, the model says {want!r}"

    def teardown(self) -> None:
        _LIVE.machine = None
        if self.store is not None and not self.crashed:
            try:
                self.store.close()
            except Exception:
                if not self._in_step:  # a close that fails after a clean run is a finding
                    raise
        promise = self.declaration.recall
        if promise is not None and not self._failed:
            # an approximate store's promise, judged on this run's neighbour slots with their
            # interval: a failure only when even the interval's high end falls short
            status, text = self.recall.verdict(promise)
            if status is Verdict.FAIL:
                exc = AssertionError(f"recall: {text}")
                self._note_failure(exc)
                raise exc


class _VectorMachine(StoreMachine):
    """The machine for a vector store: ``StoreMachine`` and the rule that queries with a
    malformed filter. A class of its own, so that a store without vectors draws its rules as
    before."""

    # a store that keeps no metadata is never sent a filter, good or malformed
    @precondition(lambda self: self.has_vec and self.readable and self.declaration.metadata)
    @rule(vector=VECTORS, k=st.integers(0, 5), where=BAD_WHERES)
    @_step
    def query_bad_filter(self, vector: list[float], k: int, where: dict[str, Any]) -> None:
        args = {"vector": vector, "k": k, "where": where}
        try:
            hits = self.store.query(vector, k, where)
        except ValueError as exc:
            self.history.record("query", args, "fail", f"ValueError: {exc}")
            return
        self.history.record("query", args, "ok", f"returned {len(hits)} hits")
        raise AssertionError(f"query({_args(args)}) returned {len(hits)} hits; a malformed "
                             "filter must raise ValueError (backends.search.check_where)")


class _StagedMachine(StoreMachine):
    """The machine for a stage adapter: ``StoreMachine`` and the rules that move the stage.
    A class of its own, so that the machine of any other store draws its rules as before."""

    @precondition(lambda self: self.has_stages and self.writable)
    @rule(move=st.sampled_from(MOVES))
    @_step
    def move_stage(self, move: str) -> None:
        op = move_op(self.stage, move, self.stage_range)
        self._mutate(type(op).__name__.lower(), op, {"move": move})

    @precondition(lambda self: self.has_stages and self.writable)
    @rule(failpoint=_per_machine(lambda m: st.sampled_from(m.store.transition_failpoints)),
          after_hits=st.just(0) | st.integers(1, 2), move=st.sampled_from(MOVES))
    @_step
    def move_failpoint_crash(self, failpoint: str, after_hits: int, move: str) -> None:
        self._failpoint_crash(failpoint, after_hits, move)

    @precondition(lambda self: self.has_stages and self.writable and not self.has_server)
    @rule(move=st.sampled_from(MOVES), at=st.integers(0, 255),
          model=st.sampled_from((CrashModel.PROCESS, CrashModel.PREFIX)), keep=st.integers(0, 255))
    @_step
    def move_crash_inside(self, move: str, at: int, model: CrashModel, keep: int) -> None:
        # crash_inside draws a move as one op among many, at one position: a move's catch-up
        # window is where a stage adapter loses data, so a move has its own rule, and process
        # crashes spread over the whole move are judged too (``MOVE_PROBES``)
        self._crash_inside(move, at, model, keep, probes=MOVE_PROBES)


class _RelationalMachine(StoreMachine):
    """The machine for a store declaring ``Capability.RELATIONAL``: ``StoreMachine`` and
    ADR-072's relational records, driven and checked as key-value data is. Q-value updates and
    plan stores and deletes are ops of the history (the crash rules run them too, see
    ``_crash_mutations``), so a recovered store's records are judged with its other data; an
    update's count is state, so a lost update shows as a count short of the acknowledged
    calls. A class of its own, so that the machine of any other store draws its rules as
    before."""

    last_relational: tuple[str, ...] | None = None
    """The relational record the last relational write touched (checked after every step)."""

    def _mutate(self, name: str, op: Op, args: Mapping[str, Any]) -> Any:
        result = super()._mutate(name, op, args)
        if isinstance(op, QUpdate):
            self.last_relational = ("q", op.state, op.action)
        elif isinstance(op, GoapStore | GoapDelete):
            self.last_relational = ("plan", op.plan_id)
        return result

    # Few rules, each drawing what it does: every rule a machine has takes a share of its
    # steps, and the other rules' share is what finds their defects
    @precondition(lambda self: self.has_relational and self.writable)
    @rule(state=Q_STATES, action=Q_ACTIONS, value=Q_VALUES)
    @_step
    def q_update(self, state: str, action: str, value: float) -> None:
        args = {"state": state, "action": action, "value": value}
        got = self._mutate("q_value_update", QUpdate(state, action, value), args)
        want = self.model.relational[("q", state, action)]
        assert got == want, (f"q_value_update({_args(args)}) returned {got!r}; after "
                             f"{want.updates if isinstance(want, QValue) else '?'} acknowledged "
                             f"updates the model says {want!r}")

    @precondition(lambda self: self.has_relational and self.writable)
    @rule(op=PLAN_WRITES)
    @_step
    def plan_write(self, op: GoapStore | GoapDelete) -> None:
        args: dict[str, Any] = {"plan_id": op.plan_id}
        if isinstance(op, GoapStore):
            args["plan"] = op.plan
        self._mutate("goap_store" if isinstance(op, GoapStore) else "goap_delete", op, args)

    @precondition(lambda self: self.has_relational and self.readable)
    @rule(state=Q_STATES, action=Q_ACTIONS, plan_id=PLAN_IDS)
    @_step
    def relational_read(self, state: str, action: str, plan_id: str) -> None:
        records = self.model.relational
        self._read("q_value_get", {"state": state, "action": action},
                   self.store.q_value_get(state, action), records.get(("q", state, action)))
        want = {k[2]: q for k, q in sorted(records.items()) if k[0] == "q" and k[1] == state}
        self._read("q_values", {"state": state}, self.store.q_values(state), want)
        self._read("goap_retrieve", {"plan_id": plan_id}, self.store.goap_retrieve(plan_id),
                   _plan(records, plan_id))

    def _agrees_with_model(self) -> None:
        super()._agrees_with_model()
        key = self.last_relational
        if key is None:
            return
        want: Any
        if key[0] == "q":
            got: Any = self.store.q_value_get(key[1], key[2])
            want = self.model.relational.get(key)
            call = f"q_value_get({key[1]!r}, {key[2]!r})"
        else:
            got, want = self.store.goap_retrieve(key[1]), _plan(self.model.relational, key[1])
            call = f"goap_retrieve({key[1]!r})"
        assert got == want, f"{call} returned {got!r}, the model says {want!r}"


class _MissionMachine(StoreMachine):
    """The machine for a store declaring ``Capability.MISSIONS``: ``StoreMachine`` and
    ARCH-001's mission documents, driven and checked as key-value data is. Puts and deletes
    are ops of the history (the crash rules run them too, see ``_crash_mutations``), so a
    recovered store's missions are judged with its other data ("never lose mission state or
    audit trail"). A write is read back at once (``mission_get``: a deleted mission is None),
    and after every step every mission the store lists is read and compared with the model as
    canonical JSON (a dropped field or a lost tool call shows by its path). One rule, drawing
    a put or a delete (as ``plan_write`` does): every rule takes a share of a run's steps, and
    the other rules' share is what finds their defects. A class of its own, so that the
    machine of any other store draws its rules as before."""

    @precondition(lambda self: self.has_missions and self.writable)
    @rule(op=MISSION_WRITES)
    @_step
    def mission_write(self, op: MissionPut | MissionDelete) -> None:
        if isinstance(op, MissionPut):
            self._mutate("mission_put", op, {"doc": op.doc})
        else:
            self._mutate("mission_delete", op, {"mission_id": op.mission_id})
        if self.crashed:
            return
        # compared as canonical JSON: 1, 1.0 and True are equal to Python, not to JSON
        key = ("mission", op.mission_id)
        seen = mission_seen(self.store.mission_get(op.mission_id))
        want = self.model.relational.get(key)
        problem = None if seen == want else "; ".join(
            _missions_state({key: seen}).describe_diff(_missions_state({key: want})))
        self.history.record("mission_get", {"mission_id": op.mission_id}, "ok", problem)
        assert problem is None, (f"mission_get({op.mission_id!r}) right after it disagrees "
                                 f"with the model: {problem}")

    def _agrees_with_model(self) -> None:
        super()._agrees_with_model()
        seen = _missions_state(read_missions(self.store))
        want = _missions_state(self.model.relational)
        assert seen == want, ("the missions the store shows differ from the model: "
                              + "; ".join(seen.describe_diff(want)))


class _ServerMachine(StoreMachine):
    """The machine for a server-backed store: SIGKILL of every server process or of the
    store's session (``faults.server.ServerKill``), then the factory brings the server back
    and the recovered store is judged as after a process crash. A class of its own, so that
    other stores draw their rules as before."""

    @precondition(lambda self: self.readable and killable(self.store) is None)
    @rule(kind=st.sampled_from(KILLS))
    @_step
    def server_kill(self, kind: str) -> None:
        ServerKill(kind).fire(self.store)
        type(self).stats["server_kills"] += 1
        self._abandon()
        self._recover(f"SIGKILL of the {kind}", self.disk.position, power_loss=False)


def _missions_state(records: Mapping[tuple[str, ...], QValue | str | None]) -> StoreState:
    """The missions among ``records`` as a state (an absent one, None, left out)."""
    return StoreState(relational=relations({k: v for k, v in records.items()
                                            if k[0] == "mission" and v is not None}))


def _plan(relational: Relations, plan_id: str) -> dict[str, Any] | None:
    """The plan the model holds under ``plan_id`` as ``goap_retrieve`` gives it back."""
    text = relational.get(("plan", plan_id))
    return None if text is None else dict(json.loads(str(text)))


def _args(args: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def machine_for(spec: Any, *, options: Mapping[str, object] | None = None
                ) -> type[StoreMachine]:
    """A ``RuleBasedStateMachine`` class for the backend ``spec``: a name (``"sqlite"``,
    ``"sqlite?synchronous=NORMAL"``, ``"mypkg.mod:factory"``), a ``BackendSpec``, or a factory
    ``open(path, env, **options) -> store``. ``options`` (str values) are merged into it.

    The store is opened once, on a simulated disk, to read its declaration; the class gets a
    rule for exactly what it declares. Run it with ``run_state_machine_as_test(cls)`` or
    ``cls.TestCase`` under pytest.
    """
    target = target_for(spec, options)
    decl, store_type = _probe(target)
    flags = {
        "has_kv": decl.has(Capability.KV),
        "has_vec": decl.has(Capability.VECTOR),
        "has_batch": decl.has(Capability.BATCH) and _has_methods(store_type, BatchWrite),
        "has_compact": _capable(target, decl, store_type, Capability.COMPACT, Compactable),
        "has_derive": _capable(target, decl, store_type, Capability.DERIVE, Derivable),
        "has_verify": _capable(target, decl, store_type, Capability.WITNESS, WitnessVerifiable),
        "has_failpoints": bool(decl.failpoints),
        "has_stages": _capable(target, decl, store_type, Capability.STAGES, Staged),
        "has_relational": _capable(target, decl, store_type, Capability.RELATIONAL, Relational),
        "has_missions": _capable(target, decl, store_type, Capability.MISSIONS, MissionStore),
        "has_server": decl.server is not None,
    }
    attrs: dict[str, Any] = dict(flags, target=target, declaration=decl, stats=Counter(),
                                 __module__=__name__)
    # Hypothesis keys its example database on the class source, the same for every backend;
    # this attribute (read by hypothesis.internal.reflection.function_digest) tells them apart.
    attrs["_hypothesis_internal_add_digest"] = target.label.encode()
    # a subclass per extra set of rules: a store that lacks them draws its rules as before
    bases = tuple(b for b, on in ((_RelationalMachine, flags["has_relational"]),
                                  (_MissionMachine, flags["has_missions"]),
                                  (_StagedMachine, flags["has_stages"]),
                                  (_ServerMachine, flags["has_server"]),
                                  (_VectorMachine, flags["has_vec"])) if on)
    return type("StoreMachine", bases or (StoreMachine,), attrs)


def _probe(target: Target) -> tuple[Declaration, type]:
    """Open the backend once on a scratch disk: its declaration and its store's type."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    store = target.open(STORE_PATH, sim_env(disk, VirtualClock(), ArmedFailpoints()))
    try:
        decl = store.declaration
    finally:
        store.close()
    if not isinstance(decl, Declaration):
        raise TypeError(f"backend {target.label!r}: store.declaration must be a Declaration, "
                        f"got {type(decl).__name__}")
    if not (decl.has(Capability.KV) or decl.has(Capability.VECTOR)):
        raise TypeError(f"backend {target.label!r} declares neither 'kv' nor 'vector'; the "
                        "model has nothing to drive (add the capability it implements)")
    return decl, type(store)


def _capable(target: Target, decl: Declaration, store_type: type, capability: Capability,
             protocol: type) -> bool:
    if not decl.has(capability):
        return False
    if not _has_methods(store_type, protocol):
        raise TypeError(
            f"backend {target.label!r} declares {capability.value!r} but its store "
            f"{store_type.__name__} lacks {protocol.__name__}'s methods; implement them or drop "
            f"{capability.value!r} from the declaration")
    return True


def _has_methods(store_type: type, protocol: type) -> bool:
    names: Iterable[str] = [n for n in vars(protocol) if not n.startswith("_")]
    return all(callable(getattr(store_type, n, None)) for n in names)


# -- running it ------------------------------------------------------------------------------

_INVARIANTS = frozenset({"state.agrees_with_model()", "state.teardown()"})


INCONSISTENT_RETRIES = 2
"""Seeds tried after the first when Hypothesis finds the model's runs inconsistent before any
failure (see ``run_model``)."""


def run_model(spec: Any, *, seed: int, examples: int, steps: int, workdir: Path,
              options: Mapping[str, object] | None = None) -> Evidence:
    """Run the model on ``spec`` for ``examples`` runs of up to ``steps`` steps, seeded: the
    same seed gives the same verdict. PASS measures what ran (``examples`` machines built,
    ``steps`` rules executed, ``crash_states`` recoveries judged, ``seed``). FAIL writes the
    shrunk run as ``workdir/repro_<backend>_seed<seed>.py`` (``reproduce`` is the command to
    run it; ``replay()`` runs it again and returns its evidence) and attaches the history of
    the final failing run; a PASS attaches the history of its last run.

    A store that does not behave the same way twice (its disk operations depend on chance)
    makes the crash states the model draws depend on chance too, and Hypothesis may then stop
    with "inconsistent data generation" before any failure was seen: nothing was learnt, so
    the next seed is tried (up to ``INCONSISTENT_RETRIES`` more), and the evidence names the
    seeds that ran inconsistently. ``unknown`` if every one did."""
    inconsistent: list[int] = []
    for attempt in range(INCONSISTENT_RETRIES + 1):
        evidence = _run_model_seed(spec, seed=seed + attempt, examples=examples, steps=steps,
                                   workdir=workdir, options=options)
        if not evidence.measured.get("inconsistent"):
            break
        inconsistent.append(seed + attempt)
    if not inconsistent:
        return evidence
    note = (f" (Hypothesis found the runs of seed{'s' if len(inconsistent) > 1 else ''} "
            f"{', '.join(map(str, inconsistent))} inconsistent: the store does not behave the "
            "same way twice)")
    return replace(evidence, summary=evidence.summary + note,
                   measured={**evidence.measured, "inconsistent_seeds": inconsistent})


def _run_model_seed(spec: Any, *, seed: int, examples: int, steps: int, workdir: Path,
                    options: Mapping[str, object] | None) -> Evidence:
    """``run_model`` with one seed."""
    machine = machine_for(spec, options=options)
    hypothesis.seed(seed)(machine)
    run_settings = Settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
        suppress_health_check=list(HealthCheck), report_multiple_bugs=False, print_blob=False,
        # no explain phase: its comments in the printed run are noise in a reproduction file
        phases=[p for p in Phase if p is not Phase.explain],
    )
    label = machine.target.label
    try:
        with pinned_constants():   # the seed alone decides what is drawn
            run_state_machine_as_test(machine, settings=run_settings)
    except Flaky as exc:
        seen = machine.first_failure
        if seen is None:
            return Evidence(Verdict.UNKNOWN, f"{label}: the failure did not reproduce when "
                            f"Hypothesis replayed it ({type(exc).__name__})",
                            {**_measured(machine, seed), "inconsistent": True},
                            tuple(str(exc).splitlines()[:10]))
        # the store broke its promise in a run, but not again when Hypothesis replayed the
        # same steps: it does not behave the same way twice. The run's history is the evidence.
        message, history = seen
        return Evidence(
            Verdict.FAIL, f"{label}: {message} (Hypothesis could not replay it: "
            f"{type(exc).__name__}; the store does not behave the same way twice)",
            _measured(machine, seed), tuple(str(exc).splitlines()[:10]),
            replay=lambda: run_model(spec, seed=seed, examples=examples, steps=steps,
                                     workdir=workdir, options=options),
            attachments={f"history_{_slug(label)}_seed{seed}_first-failure.jsonl": history},
            conclusive=True)
    except Exception as exc:  # noqa: BLE001 - whatever the store raised is the finding
        raise_if_interrupted()   # not when it is a Ctrl-C that Hypothesis turned into another
        if (cannot := cannot_answer(exc)) is not None:
            # an op the store does not have (EUNSUPPORTED) broke no promise: the runs that
            # needed it checked nothing
            return Evidence(Verdict.UNKNOWN, f"{label}: {cannot}", _measured(machine, seed),
                            tuple(str(exc).splitlines()[:10]))
        return _failure(machine, exc, seed, workdir)
    stats = machine.stats
    history = machine.last.history.to_jsonl() if machine.last is not None else ""
    slug = _slug(label)
    return Evidence(
        Verdict.PASS,
        f"{label}: {stats['examples']} runs, {stats['steps']} steps, {stats['crash_states']} "
        "crash recoveries judged; the store always agreed with the model",
        _measured(machine, seed), _server_notes(machine),
        attachments={f"history_{slug}_seed{seed}_last-run.jsonl": history} if history else {},
    )


def _server_notes(machine: type[StoreMachine]) -> tuple[str, ...]:
    """What the model could not do to a server-backed store, and what it did instead."""
    if not machine.has_server:
        return ()
    kills = machine.stats["server_kills"]
    return (f"power loss and crashes inside an op: n/a (server-backed store: "
            f"{machine.declaration.server}; its data never passes through the simulated "
            "disk)",
            "process crash: the client abandons its connection; "
            + (f"{kills} SIGKILLs of the server or of the store's session judged"
               if kills else "no SIGKILL of the server drawn (not a server crashgate started, "
               "or no run drew one): see the server-crash row"))


def _slug(label: str) -> str:
    """A backend label made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_") or "backend"


def _measured(machine: type[StoreMachine], seed: int) -> dict[str, Any]:
    stats = machine.stats
    measured = {"examples": stats["examples"], "steps": stats["steps"],
                "crash_states": stats["crash_states"], "seed": seed}
    if machine.has_server:
        measured["server_kills"] = stats["server_kills"]
    if stats["recall_possible"]:   # an approximate store: its neighbour slots, every run
        measured["recall_found"] = stats["recall_found"]
        measured["recall_possible"] = stats["recall_possible"]
    return measured


def _failure(machine: type[StoreMachine], exc: Exception, seed: int, workdir: Path) -> Evidence:
    label = machine.target.label
    message = str(exc).splitlines()[0] if str(exc) else ""
    summary = f"{label}: {type(exc).__name__}: {message}".rstrip(": ")
    steps = failing_steps(exc)
    measured = _measured(machine, seed)
    if steps is None:  # Hypothesis itself gave up (health check, unsatisfiable ...)
        return Evidence(Verdict.UNKNOWN, summary, measured, tuple(str(exc).splitlines()[:10]))
    slug = _slug(label)
    name = f"repro_{slug}_seed{seed}.py"
    source = reproduction_source(machine.target, steps, summary=summary)
    path = write_reproduction(Path(workdir), name, source)
    measured["failing_steps"] = sum(s not in _INVARIANTS for s in steps[1:])
    history = machine.last.history.to_jsonl() if machine.last is not None else ""
    expect = type(exc).__name__
    return Evidence(
        Verdict.FAIL, summary, measured, tuple(steps), reproduce=f"python {path}",
        replay=lambda: replay_reproduction(path, expect=expect),
        attachments={name: source, f"history_{slug}_seed{seed}.jsonl": history},
        conclusive=True,
    )


def run_conformance_test(factory_or_spec: Any, *, settings: Settings | None = None,
                         options: Mapping[str, object] | None = None) -> None:
    """The one-liner for your own test suite, as Hypothesis's ``run_conformance_test`` is for
    providers::

        def test_my_store():
            run_conformance_test("mypkg.store:open_store")

    Raises the failure Hypothesis found, shrunk, with a runnable reproduction file's text
    attached as a note. ``settings`` default to 50 runs of up to 30 steps, no deadline.
    """
    machine = machine_for(factory_or_spec, options=options)
    if settings is None:
        settings = Settings(max_examples=50, stateful_step_count=30, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.filter_too_much,
                                                   HealthCheck.data_too_large])
    try:
        with pinned_constants():   # what a seed draws does not depend on the imports
            run_state_machine_as_test(machine, settings=settings)
    except Exception as exc:
        steps = failing_steps(exc)
        if steps is not None:
            source = reproduction_source(machine.target, steps, summary=str(exc))
            exc.add_note("\nA runnable reproduction (save as repro.py, run python repro.py):"
                         f"\n\n{source}")
        raise
