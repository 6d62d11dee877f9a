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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["CATCH_UP", "RVF", "SQLITE", "STAGES", "Roles", "roles"]

SQLITE = "sqlite"
RVF = "rvf"
Mirror = Literal["shadow", "fallback"]


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


STAGES: dict[int, Roles] = {
    0: Roles(SQLITE, SQLITE),
    1: Roles(SQLITE, RVF),
    2: Roles(SQLITE, SQLITE, RVF, "shadow"),
    3: Roles(RVF, RVF, SQLITE, "fallback"),
    4: Roles(RVF, RVF),
}

CATCH_UP: dict[tuple[int, int], tuple[tuple[Literal["kv", "vectors"], str, str], ...]] = {
    # (from, to): what must be copied, from which store into which, before the switch. Each is a
    # whole sync: it also covers writes a crash kept from reaching the other store (a crash
    # between the two writes of a dual write is not a recorded divergence).
    (0, 1): (("vectors", SQLITE, RVF),),
    (1, 2): (("vectors", RVF, SQLITE), ("kv", SQLITE, RVF)),
    (2, 3): (("kv", SQLITE, RVF), ("vectors", SQLITE, RVF)),
    (3, 4): (),
    (4, 3): (("kv", RVF, SQLITE), ("vectors", RVF, SQLITE)),
    (3, 2): (("kv", RVF, SQLITE), ("vectors", RVF, SQLITE)),
    (2, 1): (("vectors", SQLITE, RVF),),
    (1, 0): (("vectors", RVF, SQLITE),),
}


def roles(stage: int) -> Roles:
    """The roles of ``stage`` (0-4); ``ValueError`` naming the stages otherwise."""
    try:
        return STAGES[stage]
    except KeyError:
        raise ValueError(f"stage {stage!r} is not an ADR-072 stage; the stages are 0-4") from None
