"""A reader for the files the real ``@ruvector/rvf`` runtime writes (``rvf-ruvector/1``): parse,
verify and export them without writing to them (FORMAT-ruvector.md)."""

from __future__ import annotations

from crashgate.reference.rvf_real.layout import FILE_FORMAT, is_real_file, looks_real
from crashgate.reference.rvf_real.reader import Problem, RealFile, read
from crashgate.reference.rvf_real.verify import Report, verify

__all__ = ["FILE_FORMAT", "Problem", "RealFile", "Report", "is_real_file", "looks_real", "read",
           "verify"]
