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

from dataclasses import dataclass
from typing import Literal

__all__ = ["CARRIES", "CATCH_UP", "RVF", "SQLITE", "STAGES", "Roles", "catch_up", "roles"]

SQLITE = "sqlite"
RVF = "rvf"
Mirror = Literal["shadow", "fallback"]
Role = Literal["kv", "vectors"]
Data = Literal["kv", "relational", "vectors"]

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
    second, and as what (``shadow``: never read; ``fallback``: read when the truth fails)."""

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


def catch_up(here: int, to: int) -> tuple[tuple[Data, str, str], ...]:
    """What the move ``here`` -> ``to`` copies, as (data, from store, into store), in order:
    ``CATCH_UP``'s entries with each role expanded into the data it covers (``CARRIES``).
    ``KeyError`` for a move that is not in ``CATCH_UP``."""
    return tuple((data, src, dst) for role, src, dst in CATCH_UP[(here, to)]
                 for data in CARRIES[role])


def roles(stage: int) -> Roles:
    """The roles of ``stage`` (0-4); ``ValueError`` naming the stages otherwise."""
    try:
        return STAGES[stage]
    except KeyError:
        raise ValueError(f"stage {stage!r} is not an ADR-072 stage; the stages are 0-4") from None
