"""Damage at rest: what a disk does to a closed store's files while nobody is looking.

Five kinds, each a small frozen value that says in one line what it did and applies itself to
a ``DiskImage`` (the files of a closed store on the simulated disk), leaving every other byte
as it was:

- ``BitFlip``: one bit of one file inverted (media decay);
- ``OverwrittenSector``: one 512-byte sector replaced by random bytes (a bad sector remapped,
  a stray write of garbage);
- ``StaleSector``: one sector as it was in an earlier image of the same file from the
  workload's history (a lost write: the disk acknowledged it but kept the old sector). The
  caller gives those images file by file (the same inode under the file's current name, empty
  before it was created), not name by name: see ``scenarios.procedures_damage``;
- ``MisdirectedSector``: one sector of a file written at another sector's place, in the same
  file or another file of the store (the right data at the wrong address);
- ``Truncation``: a file cut short.

A sector past a file's end is read as zeros, and no damage changes a file's length except a
truncation (a misdirected or stale sector over the last, partial sector is clipped to it).

``damage_strategy`` draws them with Hypothesis so that a failure shrinks toward the simplest
damage: a bit flip, in the first file, at a low offset. ``Corruption`` is the fault object
(``harness.faults.base``): it acts on the image between a clean close and the next open, so it
needs no env wrapper; it claims the ``fs`` lever because it changes the file system's bytes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crashgate.backends import DamagePromise, Declaration
from crashgate.harness.faults.base import Fault
from crashgate.harness.simdisk import SECTOR_SIZE, DiskImage

if TYPE_CHECKING:  # Hypothesis is imported only when a strategy is built
    from hypothesis.strategies import DrawFn, SearchStrategy

__all__ = ["DAMAGE_KINDS", "BitFlip", "Corruption", "Damage", "MisdirectedSector",
           "OverwrittenSector", "StaleSector", "Truncation", "damage_strategy", "kind_of",
           "stale_sectors"]


def _sector(data: bytes, index: int) -> bytes:
    """Sector ``index`` of ``data``, zero-padded to a full sector (past the end reads zeros)."""
    chunk = data[index * SECTOR_SIZE:(index + 1) * SECTOR_SIZE]
    return chunk + bytes(SECTOR_SIZE - len(chunk))


def _put_sector(data: bytes, index: int, sector: bytes) -> bytes:
    """``data`` with sector ``index`` replaced by ``sector``, clipped to ``data``'s length."""
    start = index * SECTOR_SIZE
    end = min(len(data), start + SECTOR_SIZE)
    return data[:start] + sector[:end - start] + data[end:]


def _file(image: DiskImage, path: str, kind: str) -> bytes:
    data = image.files.get(path)
    if data is None:
        raise ValueError(f"{kind}: path={path!r} is not a file of the image; its files are "
                         f"{sorted(image.files)}")
    return data


def _sector_index(data: bytes, sector: int, path: str, kind: str) -> None:
    count = -(-len(data) // SECTOR_SIZE)
    if not 0 <= sector < count:
        raise ValueError(f"{kind}: sector={sector} is outside {path} ({len(data)} bytes, "
                         f"sectors 0..{count - 1}); give a sector in that range")


def _replace(image: DiskImage, path: str, data: bytes) -> DiskImage:
    return DiskImage({**image.files, path: data}, image.dirs)


@dataclass(frozen=True)
class BitFlip:
    """Invert bit ``bit`` (0 = least significant) of byte ``offset`` of ``path``."""

    path: str
    offset: int
    bit: int = 0

    def describe(self) -> str:
        return f"bit {self.bit} of byte {self.offset} of {self.path} flipped"

    def apply(self, image: DiskImage, past: Sequence[DiskImage] = ()) -> DiskImage:
        data = _file(image, self.path, "BitFlip")
        if not 0 <= self.offset < len(data) or not 0 <= self.bit < 8:
            raise ValueError(f"BitFlip: offset={self.offset} bit={self.bit} is outside "
                             f"{self.path} ({len(data)} bytes); give 0 <= offset < "
                             f"{len(data)} and 0 <= bit < 8")
        flipped = bytes([data[self.offset] ^ (1 << self.bit)])
        return _replace(image, self.path,
                        data[:self.offset] + flipped + data[self.offset + 1:])


@dataclass(frozen=True)
class OverwrittenSector:
    """Sector ``sector`` of ``path`` overwritten with random bytes drawn from ``seed``."""

    path: str
    sector: int
    seed: int = 0

    def describe(self) -> str:
        return (f"sector {self.sector} (bytes {self.sector * SECTOR_SIZE}..) of {self.path} "
                f"overwritten with random bytes (seed {self.seed})")

    def apply(self, image: DiskImage, past: Sequence[DiskImage] = ()) -> DiskImage:
        data = _file(image, self.path, "OverwrittenSector")
        _sector_index(data, self.sector, self.path, "OverwrittenSector")
        noise = random.Random(self.seed).randbytes(SECTOR_SIZE)
        return _replace(image, self.path, _put_sector(data, self.sector, noise))


@dataclass(frozen=True)
class StaleSector:
    """Sector ``sector`` of ``path`` as it was in ``past[version]`` (an earlier image of the
    store): the write that changed it was lost."""

    path: str
    sector: int
    version: int

    def describe(self) -> str:
        return (f"sector {self.sector} (bytes {self.sector * SECTOR_SIZE}..) of {self.path} "
                f"as it was in earlier image {self.version} (a lost write)")

    def apply(self, image: DiskImage, past: Sequence[DiskImage] = ()) -> DiskImage:
        data = _file(image, self.path, "StaleSector")
        _sector_index(data, self.sector, self.path, "StaleSector")
        if not 0 <= self.version < len(past):
            raise ValueError(f"StaleSector: version={self.version} but {len(past)} earlier "
                             "images were given; pass the workload's images as past=")
        old = past[self.version].files.get(self.path, b"")
        return _replace(image, self.path, _put_sector(data, self.sector, _sector(old,
                                                                                 self.sector)))


@dataclass(frozen=True)
class MisdirectedSector:
    """Sector ``sector`` of ``path`` written at sector ``to_sector`` of ``to_path`` (which may be
    ``path``) instead of its own place; its own place keeps what it had."""

    path: str
    sector: int
    to_path: str
    to_sector: int

    def describe(self) -> str:
        where = "" if self.to_path == self.path else f" of {self.to_path}"
        return (f"sector {self.sector} of {self.path} misdirected: written over sector "
                f"{self.to_sector}{where}")

    def apply(self, image: DiskImage, past: Sequence[DiskImage] = ()) -> DiskImage:
        src = _file(image, self.path, "MisdirectedSector")
        _sector_index(src, self.sector, self.path, "MisdirectedSector")
        dst = _file(image, self.to_path, "MisdirectedSector")
        _sector_index(dst, self.to_sector, self.to_path, "MisdirectedSector")
        return _replace(image, self.to_path,
                        _put_sector(dst, self.to_sector, _sector(src, self.sector)))


@dataclass(frozen=True)
class Truncation:
    """``path`` cut to its first ``size`` bytes."""

    path: str
    size: int

    def describe(self) -> str:
        return f"{self.path} truncated to {self.size} bytes"

    def apply(self, image: DiskImage, past: Sequence[DiskImage] = ()) -> DiskImage:
        data = _file(image, self.path, "Truncation")
        if not 0 <= self.size < len(data):
            raise ValueError(f"Truncation: size={self.size} does not shorten {self.path} "
                             f"({len(data)} bytes); give 0 <= size < {len(data)}")
        return _replace(image, self.path, data[:self.size])


Damage = BitFlip | OverwrittenSector | StaleSector | MisdirectedSector | Truncation

# In shrink order: Hypothesis's sampled_from shrinks toward the first.
DAMAGE_KINDS: Mapping[str, type[Damage]] = {
    "bit-flip": BitFlip, "overwritten-sector": OverwrittenSector,
    "stale-sector": StaleSector, "misdirected-sector": MisdirectedSector,
    "truncation": Truncation,
}


def kind_of(damage: Damage) -> str:
    """The ``DAMAGE_KINDS`` name of ``damage``, e.g. ``"bit-flip"``."""
    return next(k for k, t in DAMAGE_KINDS.items() if isinstance(damage, t))


def stale_sectors(image: DiskImage, past: Sequence[DiskImage]) -> list[StaleSector]:
    """Every lost write that changes ``image``: (file, sector, earlier image) whose earlier
    sector differs from the current one, ordered by file, earliest image, sector; an old
    sector already listed from an earlier image is not listed again."""
    out: list[StaleSector] = []
    for path in sorted(image.files):
        data = image.files[path]
        seen: set[tuple[int, bytes]] = set()   # one per distinct old sector: no duplicates
        for version, old_image in enumerate(past):
            old = old_image.files.get(path, b"")
            for s in range(-(-len(data) // SECTOR_SIZE)):
                sector = _sector(old, s)
                if (s, sector) not in seen and _put_sector(data, s, sector) != data:
                    seen.add((s, sector))
                    out.append(StaleSector(path, s, version))
    return out


def damage_strategy(image: DiskImage, past: Sequence[DiskImage] = (),
                    kinds: Sequence[str] = tuple(DAMAGE_KINDS)) -> SearchStrategy[Damage]:
    """Draw one damage to ``image``'s non-empty files (``past``: earlier images, for stale
    sectors). Shrinks toward a bit flip, in the first file (sorted by path), at low offsets.
    ``ValueError`` when the image has no non-empty file or ``kinds`` names an unknown kind."""
    from hypothesis import strategies as st

    unknown = sorted(set(kinds) - set(DAMAGE_KINDS))
    if unknown or not kinds:
        raise ValueError(f"damage_strategy kinds={list(kinds)}: give one or more of "
                         f"{list(DAMAGE_KINDS)}")
    paths = sorted(p for p, b in image.files.items() if b)
    if not paths:
        raise ValueError("damage_strategy: the image has no non-empty file to damage "
                         f"(files: {sorted(image.files)})")
    stale: dict[str, list[StaleSector]] = {}
    if "stale-sector" in kinds:
        for lost in stale_sectors(image, past):
            stale.setdefault(lost.path, []).append(lost)
    wanted = [k for k in DAMAGE_KINDS if k in kinds and (k != "stale-sector" or stale)]

    def sectors(path: str) -> int:
        return -(-len(image.files[path]) // SECTOR_SIZE)

    # Hypothesis prefers fewer choices, then smaller ones: a bit flip (kind, file, bit position)
    # makes as few as any kind, and the lowest, so every failure shrinks toward one
    @st.composite
    def draw(d: DrawFn) -> Damage:
        kind = d(st.sampled_from(wanted))
        if kind == "stale-sector":
            return d(st.sampled_from(stale[d(st.sampled_from(sorted(stale)))]))
        path = d(st.sampled_from(paths))
        size = len(image.files[path])
        if kind == "bit-flip":
            at = d(st.integers(0, size * 8 - 1))
            return BitFlip(path, at // 8, at % 8)
        if kind == "overwritten-sector":
            return OverwrittenSector(path, d(st.integers(0, sectors(path) - 1)),
                                     d(st.integers(0, 2**32 - 1)))
        if kind == "misdirected-sector":
            sector = d(st.integers(0, sectors(path) - 1))
            to_path = d(st.sampled_from(paths))
            # may land on its own place (no damage): the caller skips an unchanged image
            return MisdirectedSector(path, sector, to_path,
                                     d(st.integers(0, sectors(to_path) - 1)))
        return Truncation(path, d(st.integers(0, size - 1)))

    return draw()


class Corruption(Fault):
    """Damage applied to a closed store's image before it is opened again. n/a for a store that
    declares ``damage=none``; ``fired`` lists each damage applied, one line each."""

    levers = frozenset({"fs"})

    def __init__(self, past: Sequence[DiskImage] = ()) -> None:
        self.past = tuple(past)
        self._fired: list[str] = []

    def needs(self, decl: Declaration) -> str | None:
        if decl.damage is DamagePromise.NONE:
            return ("the backend makes no promise about damaged files (declares damage=none), "
                    "so there is nothing to hold it to")
        return None

    def apply(self, image: DiskImage, damage: Damage) -> DiskImage:
        """``image`` with ``damage`` done to it (and recorded in ``fired``)."""
        out = damage.apply(image, self.past)
        self._fired.append(damage.describe())
        return out

    @property
    def fired(self) -> tuple[str, ...]:
        return tuple(self._fired)
