"""The store contract: what every backend's store does, and what it declares it promises.

A backend is a factory ``open(path, env, **options) -> store``. A store is a key-value store, a
vector store, or both; optional capabilities are separate protocols the harness probes with
``isinstance`` and that the store also lists in its ``declaration``.

Every store is always held to atomicity and integrity (no batch partly applied, nothing torn
visible, it still opens after any crash). What it declares as ``durability`` decides only whether
acknowledged writes must survive a process crash or power loss.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from crashgate.backends.env import Env
from crashgate.backends.search import Recall

__all__ = [
    "BatchWrite",
    "BulkFetch",
    "Capability",
    "Compactable",
    "DamagePromise",
    "Declaration",
    "Derivable",
    "Durability",
    "Factory",
    "Hit",
    "KVStore",
    "ServerBacked",
    "Store",
    "VectorBlock",
    "VectorRecord",
    "VectorStore",
    "WitnessVerifiable",
]


class Durability(enum.StrEnum):
    """What an acknowledged call promises (ordered: each level includes the one before)."""

    NONE = "none"
    """Nothing survives a crash; only atomicity and integrity are promised."""
    PROCESS_CRASH = "process-crash"
    """An acknowledged write survives the process dying (page cache kept)."""
    POWER_LOSS = "power-loss"
    """An acknowledged write survives losing power (it was fsynced)."""

    @property
    def rank(self) -> int:
        return [Durability.NONE, Durability.PROCESS_CRASH, Durability.POWER_LOSS].index(self)

    def covers(self, other: Durability) -> bool:
        return self.rank >= other.rank


class DamagePromise(enum.StrEnum):
    """What a store promises when its files are damaged at rest (bit flips, overwritten or
    stale sectors, misdirected writes, truncation of a closed store's files)."""

    DETECTED = "detected"
    """Every answer is the acknowledged data or a typed ``CorruptStore``: never an altered
    value, never data that was never written, never an untyped exception. The default: the
    design holds every store to it."""
    ROLLBACK = "rollback"
    """As ``detected``, and the store may instead show an earlier commit (a documented rollback
    to the last commit that verifies): the state after a prefix of the acknowledged writes."""
    NONE = "none"
    """No promise (e.g. a cache that is rebuilt from elsewhere): the damage row is n/a."""


class Capability(enum.StrEnum):
    KV = "kv"
    VECTOR = "vector"
    BATCH = "batch"                    # write_batch / upsert of many records is all-or-nothing
    COMPACT = "compact"
    DERIVE = "derive"                  # copy-on-write child with lineage
    WITNESS = "witness"                # witness-chain verification
    WRITER_LOCK = "writer-lock"        # one writer across processes; LockHeld for the second
    LEASE = "lease"                    # heartbeat lease on the env clock (browser model)
    WIRE_VERSION = "wire-version"      # option wire_version=N; newer files refused
    SCHEMA_VERSION = "schema-version"
    METADATA_FILTER = "metadata-filter"
    EPOCH = "epoch"                    # epoch reconciliation across two stores
    FAILPOINTS = "failpoints"          # names the failpoints it hits (Declaration.failpoints)
    RELATIONAL = "relational"          # ADR-072's Q-values and GOAP plans (``Relational``)
    STAGES = "stages"                  # a migration's stages: promote / rollback (``Staged``)
    BACKUP = "backup"                  # backup to one file, atomic restore (``Backupable``)
    MISSIONS = "missions"              # ARCH-001's mission documents (``MissionStore``)


@dataclass(frozen=True)
class Declaration:
    """What a store promises; the certificate holds it to exactly this."""

    durability: Durability
    capabilities: frozenset[Capability]
    file_format: str | None = None
    """Stores that name the same format read and write each other's files."""
    wire_version: int | None = None
    failpoints: tuple[str, ...] = ()
    """The names this store passes to ``env.failpoints.hit``, in the order it hits them."""
    metric: str | None = None
    """``l2`` (Euclidean distance) or ``cosine`` (1 - cosine similarity), for vector stores."""
    notes: Mapping[str, str] = field(default_factory=dict)
    damage: DamagePromise = DamagePromise.DETECTED
    """What answers a store gives when its files are damaged at rest (``DamagePromise``)."""
    undetected_damage: frozenset[str] = frozenset()
    """Kinds of damage at rest the promise does not cover, by the harness's names
    (``bit-flip``, ``overwritten-sector``, ``stale-sector``, ``misdirected-sector``,
    ``truncation``), with the reason in ``notes["damage"]``: e.g. a format whose checksums
    cannot tell a lost write (an older, self-consistent sector) from the current one."""
    baseline: str | None = None
    """A backend name (options allowed: ``sqlite?synchronous=FULL``) whose latency this one is
    held to, per operation type, e.g. ADR-072's RVF against SQLite; None: no latency rows."""
    candidate: str | None = None
    """With ``baseline``: the backend (a name, options allowed) measured against it in this
    one's place, e.g. a stage adapter's RVF store (ADR-072's criteria are about RVF, not the
    adapter's dual write); None: this backend itself."""
    migration: str | None = None
    """With ``Capability.STAGES``: the design document whose stages the adapter implements
    (``ADR-072``, ``ARCH-001``), which decides whose rows it is held to."""
    recall: Recall | None = None
    """For vector stores, what ``query`` promises about which records it returns: None is
    exact search (the true ``k`` nearest, ties at equal distance interchangeable); a
    ``Recall`` is approximate search held to recall@k >= ``at_least`` (measured with its
    confidence interval). Either way every hit is live, matches the filter, carries its
    record's metadata and exact distance, and ``min(k, matching)`` hits come back."""

    server: str | None = None
    """None: the store does its I/O through ``env.fs`` (every byte crashgate's simulated disk
    can crash, damage or fail). Otherwise the store's data is kept by a server in other
    processes (e.g. ``Postgres 16.2 (pgserver)``): its files never pass through ``env.fs``, so
    the rows that need the simulated disk (power loss, crash states at disk operations, I/O
    errors, damage at rest) are n/a with this as the reason, and a process crash is a SIGKILL
    of the server's processes (``ServerBacked``)."""

    real_clock: bool = False
    """True: the store reads the real clock, not ``env.clock`` (e.g. a package behind a process
    driver, which ``open``'s ``clock_offset`` cannot reach). A row about time (a stale lock or
    lease recovered after 30 s) then waits that time for real instead of moving ``env.clock``."""

    injects_io_errors: bool = False
    """With ``server`` set: the store's own process injects I/O errors into its file
    operations when opened with the option ``io_error`` (``backends/PROTOCOL.md``), so the
    I/O-error row runs through it (checking what is left on the real disk) instead of n/a."""

    metadata: bool = True
    """False: the store keeps no metadata (e.g. an engine that takes only numbered typed fields
    and never returns them): records are upserted with ``{}`` and come back with ``{}``. Rows do
    not write metadata to it, and the rows that are about metadata (filters, metadata kept
    across a crash or a rebuild) are n/a with this as the reason. Such a store cannot declare
    ``metadata-filter``."""

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities


@dataclass(frozen=True)
class VectorRecord:
    """One vector: ``id`` a u64, ``vector`` a sequence of floats, ``metadata`` JSON-able."""

    id: int
    vector: tuple[float, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def of(id: int, vector: Iterable[float], metadata: Mapping[str, Any] | None = None
           ) -> VectorRecord:
        # ndarray.tolist() then map(float) is a C loop: this sits on the hot path of every fetch
        tolist = getattr(vector, "tolist", None)
        if tolist is not None and getattr(getattr(vector, "dtype", None), "kind", "") == "f":
            # a float array's tolist() already gives Python floats: no second pass
            return VectorRecord(int(id), tuple(tolist()), dict(metadata or {}))
        values = tolist() if tolist is not None else vector
        return VectorRecord(int(id), tuple(map(float, values)), dict(metadata or {}))


@dataclass(frozen=True)
class Hit:
    """One query result. Results are ordered by (distance, id)."""

    id: int
    distance: float
    metadata: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Store(Protocol):
    declaration: Declaration

    def close(self) -> None: ...


@runtime_checkable
class KVStore(Protocol):
    """Keys are str, values bytes. ``delete`` of a missing key is not an error."""

    declaration: Declaration

    def put(self, key: str, value: bytes) -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def delete(self, key: str) -> None: ...

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, sorted by key."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class BatchWrite(Protocol):
    def write_batch(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> None:
        """All of it or none of it, after any crash."""
        ...


@runtime_checkable
class VectorStore(Protocol):
    declaration: Declaration

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or replace by id. Atomic as a whole when the store declares ``batch``."""
        ...

    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        """The ``k`` nearest live records whose metadata matches ``where``, as
        ``min(k, matching)`` hits ordered by (distance, id), each with its record's metadata
        and exact distance (``Declaration.recall`` says whether they are the true ``k``
        nearest or an approximation). ``where`` is None or a filter of
        ``backends.search``: ``{"tag": "x"}`` (equal as JSON values), ``{"n": {"$in": [1, 2]}}``,
        ranges ``{"n": {"$gte": 0, "$lt": 5}}`` (numbers only), ``$eq``/``$ne``; a malformed
        filter is a ``ValueError`` naming the key (``search.check_where``), even on an empty
        store."""
        ...

    def remove(self, ids: Iterable[int]) -> int:
        """Delete by id; returns how many were live."""
        ...

    def count(self) -> int: ...

    def fetch(self, ids: Iterable[int]) -> list[VectorRecord]:
        """The live records among ``ids`` (missing ones are left out), ordered by id. A store
        may also offer the same answer as arrays (``BulkFetch``)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class VectorBlock:
    """Records as arrays: row i of ``vectors`` and ``metadata[i]`` belong to ``ids[i]``; ids
    ascending."""

    ids: tuple[int, ...]
    vectors: np.ndarray          # shape (len(ids), dimension), a float dtype
    metadata: tuple[Mapping[str, Any], ...]


@runtime_checkable
class BulkFetch(Protocol):
    """Optional: ``fetch`` as arrays, for reading back a store of thousands of vectors without a
    Python float per component (the harness reads every recovered crash state whole).

    ``fetch_block(ids)`` holds exactly the records ``fetch(ids)`` returns (live ids only,
    ascending, each once), row for row: the same metadata, and vectors equal to the fetched
    ones at the store's own precision (a float32 store may hand its float32 rows). With no
    live id among ``ids`` it is an empty block (``vectors`` of shape ``(0, d)``, any ``d``).
    The stateful model checks it against ``fetch`` wherever it checks ``fetch``."""

    def fetch_block(self, ids: Iterable[int]) -> VectorBlock: ...


@runtime_checkable
class Compactable(Protocol):
    def compact(self) -> None: ...


@runtime_checkable
class Derivable(Protocol):
    def derive(self, child_path: str) -> Store:
        """A copy-on-write child at ``child_path`` that sees this store's data and writes only to
        itself; the child is returned open for writing."""
        ...


@runtime_checkable
class WitnessVerifiable(Protocol):
    def verify(self) -> list[str]:
        """Recompute the witness chain; the problems found (empty when it verifies), the first
        bad entry named first."""
        ...


@runtime_checkable
class Staged(Protocol):
    """Optional: a migration stage adapter (ADR-072's stages 0-4, ARCH-001's phases 1-4).
    ``stage`` is the stage it is in, one of ``stage_range`` (first, last), durable: after any
    crash it reopens in exactly one stage. ``promote``/``rollback`` move one stage up or down,
    after catching up whatever the new stage reads, and return the new stage; a move past the
    ends is a ``ValueError``. ``transition_failpoints`` are the failpoints a move hits (a plain
    write never does), for the harness to crash there."""

    stage: int
    stage_range: tuple[int, int]
    transition_failpoints: tuple[str, ...]

    def promote(self) -> int: ...

    def rollback(self) -> int: ...


@runtime_checkable
class ServerBacked(Protocol):
    """Optional, for a store whose ``Declaration.server`` is set: the server processes the
    harness may kill from outside (SIGKILL, as a crash would) to certify what survives.

    ``server_pids()``: every process of the server (the postmaster first), or ``()`` when the
    server is not one crashgate started (e.g. an existing server named by URL): crashgate
    never kills a server it did not start, and the crash rows are n/a then.
    ``session_pid()``: the server process serving this store's own connection (killing only
    it is a crash of one session, which the server survives).
    After a kill the harness reopens the store with the backend's factory, which must bring
    the server back (and wait for its recovery) before it answers."""

    def server_pids(self) -> tuple[int, ...]: ...

    def session_pid(self) -> int: ...


class Factory(Protocol):
    def __call__(self, path: str, env: Env, **options: str) -> Any: ...
