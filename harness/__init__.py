"""The engine: simulated disk, crash states, virtual clock, armed failpoints, and the rest.

Only light modules are re-exported here (importing ``crashgate.harness`` stays cheap); the CLI
and heavier pieces are imported from their own modules.
"""

from __future__ import annotations

from crashgate.harness.clock import VirtualClock
from crashgate.harness.crashenum import enumerate_crash_states
from crashgate.harness.crashstates import (
    CrashModel,
    CrashState,
    crash_state_strategy,
    durable_image,
    pending_at,
    sync_positions,
)
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.simdisk import SECTOR_SIZE, DiskImage, DiskOp, SimDisk, SimFile, SimFS
from crashgate.harness.simenv import sim_env

__all__ = [
    "SECTOR_SIZE", "ArmedFailpoints", "CrashModel", "CrashState", "DiskImage", "DiskOp",
    "SimDisk", "SimFS", "SimFile", "VirtualClock", "crash_state_strategy", "durable_image",
    "enumerate_crash_states", "pending_at", "sim_env", "sync_positions",
]
