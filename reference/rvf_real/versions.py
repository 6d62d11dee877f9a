"""The version gate of the real layout: which segment version a file declares, for a reader at
version N (``rvf-ruvector?wire_version=N``; the real runtime writes 1, FORMAT-ruvector.md).

A reader at version N reads segments of versions 0..N (forward-compatible reads of older files)
and refuses a file a newer writer wrote with ``VersionTooNew`` and its upgrade path, modifying
nothing. The layout's header has a version byte (0x04) but **no header check**: one flipped
byte (1 becomes 0xFE) makes a header claim version 254. So a claim counts only when

1. the header is intact as far as the layout can tell: the magic, a complete payload and a
   content hash that is set and holds (a header that is not intact claims nothing), and
2. it is corroborated: at least two intact headers claim a version above N, or every intact
   header of the file does (a file holding only a newer writer's first manifest). A newer
   writer's commit writes two segments or more at its version (data, witness, manifest), so a
   newer file always corroborates itself; damage to one version byte never does.

An uncorroborated claim is a damaged header: ``stray`` lists them, and the store refuses to read
such a segment (``CorruptStore``). The found version is the highest corroborated claim.
"""

from __future__ import annotations

from dataclasses import dataclass

from crashgate.backends import VersionTooNew
from crashgate.reference.rvf_real.reader import RealFile
from crashgate.reference.rvf_real.scan import Segment

__all__ = ["MAX_VERSION", "VersionClaims", "check_version", "claims", "upgrade_hint"]

MAX_VERSION = 255
"""The version byte is a u8."""


def _intact(s: Segment) -> bool:
    return s.complete and s.hash_ok is True


@dataclass(frozen=True)
class VersionClaims:
    """What the intact headers of one file declare, for a reader at ``supported``: ``newer``
    the intact segments whose version is above it, ``intact`` how many intact segments the file
    has."""

    supported: int
    newer: tuple[Segment, ...]
    intact: int

    @property
    def decisive(self) -> bool:
        """Whether the file is newer than the reader (rule 2 above)."""
        return len(self.newer) >= 2 or (len(self.newer) == 1 and self.intact == 1)

    @property
    def found(self) -> int | None:
        """The version a decisive claim declares (the highest), else None."""
        return max(s.header.version for s in self.newer) if self.decisive else None

    @property
    def stray(self) -> tuple[Segment, ...]:
        """Claims nothing corroborates: damaged headers, not a newer file."""
        return () if self.decisive else self.newer

    def describe(self) -> str:
        """``version 2: newer than this reader (1): 7 of 7 intact segments declare it``."""
        found = self.found
        if found is None:
            return f"no segment version above this reader's ({self.supported})"
        return (f"version {found}: newer than this reader ({self.supported}): {len(self.newer)} "
                f"of {self.intact} intact segments declare a version above "
                f"{self.supported}, the first at offset {self.newer[0].offset}")


def claims(rf: RealFile, supported: int) -> VersionClaims:
    """The version claims of every intact segment of ``rf`` (nothing is read again)."""
    intact = [s for s in rf.scan.segments if _intact(s)]
    return VersionClaims(supported, tuple(s for s in intact if s.header.version > supported),
                         len(intact))


def upgrade_hint(found: int) -> str:
    """The upgrade path for a file of segment version ``found``."""
    return (f"npm update @ruvector/rvf (a runtime that reads segment version {found}), or open "
            f"it with rvf-ruvector?wire_version={found}")


def check_version(rf: RealFile, supported: int) -> VersionClaims:
    """``claims(rf, supported)``, or ``VersionTooNew`` (with the upgrade path) when they are
    decisive."""
    got = claims(rf, supported)
    if got.found is not None:
        raise VersionTooNew(rf.path, found=got.found, supported=supported,
                            what="RVF segment version (rvf-ruvector layout)",
                            upgrade=upgrade_hint(got.found))
    return got
