"""What each ADR-072 stage does with its two stores, as data: where reads and writes go, which
store a write also reaches, and what a promotion or rollback must catch up before it switches.

ADR-072's stages::

    0  SQLite only
    1  ADR-065's hybrid: key-value in SQLite, vectors in RVF
    2  dual-write, SQLite the source of truth, RVF the shadow (a failed shadow write is a
       recorded divergence, never a failed call); reads from SQLite only
    3  dual-write, RVF the source of truth, SQLite the fallback (a read that fails on RVF is
       served from SQLite and counted; a write RVF took and SQLite did not is recorded)
    4  RVF only; SQLite is the escape hatch, read-only, receiving no writes

ADR-072's relational records (Q-values, GOAP plans) go where the key-value data goes, in every
stage and every catch-up (``CARRIES``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ADR072", "CARRIES", "CATCH_UP", "RVF", "SQLITE", "STAGES", "Roles", "StagePlan",
           "catch_up", "roles"]

SQLITE = "sqlite"
RVF = "rvf"
Mirror = Literal["shadow", "fallback", "verified"]
Role = str
"""``kv`` or ``vectors`` (a ``Roles`` field), or a step of a plan's own (``StagePlan.carries``)."""
Data = str
"""A kind of data a sync copies: ``kv``, ``relational``, ``vectors``, ``missions`` ..."""

CARRIES: dict[Role, tuple[Data, ...]] = {
    # the rule: relational records live beside the key-value data (ADR-072 keeps both in
    # SQLite until RVF takes over both), so the store that is the key-value truth is theirs,
    # and whatever catches key-value data up catches them up too
    "kv": ("kv", "relational"),
    "vectors": ("vectors",),
}
"""The data each role covers."""


@dataclass(frozen=True)
class Roles:
    """``kv`` and ``vectors``: the store that is the source of truth for each kind of data
    (reads come from it, writes reach it first). ``mirror``: the store every write reaches
    second, and as what (``shadow``: never read; ``fallback``: read when the truth fails;
    ``verified``: read first, each answer checked against the truth's, which is served, and
    recorded, when the mirror fails or differs: ARCH-001's phase 2)."""

    kv: str
    vectors: str
    mirror: str | None = None
    mirror_as: Mirror | None = None

    @property
    def stores(self) -> frozenset[str]:
        """The stores this stage reads or writes."""
        return frozenset({self.kv, self.vectors} | ({self.mirror} if self.mirror else set()))

    def truth(self, data: Data) -> str:
        """The store that is the source of truth for ``data`` (``CARRIES``)."""
        return self.vectors if data in CARRIES["vectors"] else self.kv


STAGES: dict[int, Roles] = {
    0: Roles(SQLITE, SQLITE),
    1: Roles(SQLITE, RVF),
    2: Roles(SQLITE, SQLITE, RVF, "shadow"),
    3: Roles(RVF, RVF, SQLITE, "fallback"),
    4: Roles(RVF, RVF),
}

CATCH_UP: dict[tuple[int, int], tuple[tuple[Role, str, str], ...]] = {
    # (from, to): what must be copied, from which store into which, before the switch. Each is a
    # whole sync: it also covers writes a crash kept from reaching the other store (a crash
    # between the two writes of a dual write is not a recorded divergence). A role stands for
    # all the data it covers (CARRIES): see catch_up.
    (0, 1): (("vectors", SQLITE, RVF),),
    (1, 2): (("vectors", RVF, SQLITE), ("kv", SQLITE, RVF)),
    (2, 3): (("kv", SQLITE, RVF), ("vectors", SQLITE, RVF)),
    (3, 4): (),
    (4, 3): (("kv", RVF, SQLITE), ("vectors", RVF, SQLITE)),
    (3, 2): (("kv", RVF, SQLITE), ("vectors", RVF, SQLITE)),
    (2, 1): (("vectors", SQLITE, RVF),),
    (1, 0): (("vectors", RVF, SQLITE),),
}


Sync = Callable[[Any, Any, Callable[[], None]], int]
"""``sync(src, dst, checkpoint) -> records written``: make ``dst`` hold what ``src`` holds of
one kind of data, calling ``checkpoint()`` after each batch (``sync.py``)."""


@dataclass(frozen=True)
class StagePlan:
    """A migration's stages as data, for the one mechanism that runs them
    (``staged.StagedStores``): ``document`` names the design document; ``stages`` the roles of
    each stage; ``catch_up`` what each move copies before it switches, as (role, from store,
    into store), each role standing for the data ``carries`` gives it; ``syncs`` the sync of
    each kind of data; ``prefix`` starts every failpoint name (``stage`` ->
    ``stage2.after-sqlite-write``, ``stage.before-switch``); ``labels`` how messages name
    each store (its name when it has none)."""

    document: str
    stages: Mapping[int, Roles]
    catch_up: Mapping[tuple[int, int], tuple[tuple[Role, str, str], ...]]
    carries: Mapping[Role, tuple[Data, ...]]
    syncs: Mapping[Data, Sync]
    prefix: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def label(self, store: str) -> str:
        """How a message names ``store``."""
        return self.labels.get(store, store)

    @property
    def stage_range(self) -> tuple[int, int]:
        """(first stage, last stage)."""
        return min(self.stages), max(self.stages)

    @property
    def data(self) -> tuple[Data, ...]:
        """Every kind of data a store of a stage holds (what a reconcile syncs), in order."""
        return tuple(d for role in ("kv", "vectors") for d in self.carries.get(role, ()))

    def roles(self, stage: int) -> Roles:
        """The roles of ``stage``; ``ValueError`` naming the stages otherwise."""
        try:
            return self.stages[stage]
        except (KeyError, TypeError):
            first, last = self.stage_range
            raise ValueError(f"stage {stage!r} is not an {self.document} stage; the stages "
                             f"are {first}-{last}") from None

    def steps(self, here: int, to: int) -> tuple[tuple[Data, str, str], ...]:
        """What the move ``here`` -> ``to`` copies, as (data, from store, into store), in
        order: ``catch_up``'s entries with each role expanded into the data it covers.
        ``KeyError`` for a move that is not in ``catch_up``."""
        return tuple((data, src, dst) for role, src, dst in self.catch_up[(here, to)]
                     for data in self.carries[role])

    def write_failpoint(self, stage: int) -> str | None:
        """The failpoint between the two writes of a dual-write stage (None for the others)."""
        r = self.roles(stage)
        return f"{self.prefix}{stage}.after-{r.kv}-write" if r.mirror else None

    def failpoint(self, what: str) -> str:
        """A failpoint of a move or a reconcile: ``backfill-batch``, ``before-switch``,
        ``reconcile-batch``."""
        return f"{self.prefix}.{what}"


def _adr072() -> StagePlan:
    from crashgate.reference.stages.sync import SYNCS
    return StagePlan("ADR-072", STAGES, CATCH_UP, CARRIES, SYNCS, "stage",
                     {SQLITE: "SQLite", RVF: "RVF"})


ADR072 = _adr072()
"""ADR-072's stages 0-4."""


def catch_up(here: int, to: int) -> tuple[tuple[Data, str, str], ...]:
    """ADR-072's ``StagePlan.steps``: what the move ``here`` -> ``to`` copies, as (data, from
    store, into store), in order. ``KeyError`` for a move that is not in ``CATCH_UP``."""
    return ADR072.steps(here, to)


def roles(stage: int) -> Roles:
    """The roles of ADR-072's ``stage`` (0-4); ``ValueError`` naming the stages otherwise."""
    return ADR072.roles(stage)
