"""The reference RVF store: key-value records and vectors in one append-only file of RVF
segments, with a witness chain, a writer lock and a wire-version gate (FORMAT.md)."""

from __future__ import annotations

from crashgate.reference.rvf.segments import SegmentInfo
from crashgate.reference.rvf.store import FAILPOINTS, OPTIONS, RvfStore, open_rvf

__all__ = ["FAILPOINTS", "OPTIONS", "RvfStore", "SegmentInfo", "open_rvf"]
