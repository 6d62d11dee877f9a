"""Fault injectors (Jepsen's nemeses) as composable objects.

Each fault says what it needs from a backend (``needs``), what it acts through (``levers``:
``fs``, ``clock``, ``failpoints``, ``process``) and installs itself into the env a store is
opened with; ``compose`` refuses two faults on one lever. The checks that give these faults
meaning live in ``crashgate.scenarios.procedures_*``.
"""

from __future__ import annotations

from crashgate.harness.faults.base import LEVERS, Composed, Fault, compose, requires
from crashgate.harness.faults.corruption import (
    DAMAGE_KINDS,
    BitFlip,
    Corruption,
    MisdirectedSector,
    OverwrittenSector,
    StaleSector,
    Truncation,
    damage_strategy,
)
from crashgate.harness.faults.failpoint import FailpointCrash
from crashgate.harness.faults.faultyfs import MUTATING_OPS, FaultyFS, FsOp
from crashgate.harness.faults.ioerrors import IOErrors, count_mutating_ops
from crashgate.harness.faults.lease import STALE_AFTER, HolderRun, LeaseExpiry
from crashgate.harness.faults.powerloss import PowerLoss
from crashgate.harness.faults.process import ProcessCrash
from crashgate.harness.faults.skew import Versioning, VersionSkew, damage, probe_versioning
from crashgate.harness.faults.writers import DuplicateWriter, Outcome, WriterProcess

__all__ = [
    "DAMAGE_KINDS", "LEVERS", "MUTATING_OPS", "STALE_AFTER", "BitFlip", "Composed",
    "Corruption", "DuplicateWriter", "FailpointCrash", "Fault", "FaultyFS", "FsOp", "HolderRun",
    "IOErrors", "LeaseExpiry", "MisdirectedSector", "Outcome", "OverwrittenSector", "PowerLoss",
    "ProcessCrash", "StaleSector", "Truncation", "VersionSkew", "Versioning", "WriterProcess",
    "compose", "count_mutating_ops", "damage", "damage_strategy", "probe_versioning",
    "requires",
]
