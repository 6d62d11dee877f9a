"""ADR-072's migration stages as stores: SQLite only (0), the ADR-065 hybrid (1), dual-write with
SQLite (2) or RVF (3) the source of truth, RVF only with SQLite the escape hatch (4); with
promotion, rollback, the divergence queue and the escape hatch."""

from __future__ import annotations

from crashgate.reference.stages.adapter import (
    FALLBACK_ERRORS,
    TRANSITION_FAILPOINTS,
    StageAdapter,
    write_failpoint,
)
from crashgate.reference.stages.control import Divergence, StageRecord
from crashgate.reference.stages.escape import ESCAPE_FAILPOINTS
from crashgate.reference.stages.factory import (
    OPTIONS,
    open_stage,
    open_stage0,
    open_stage1,
    open_stage2,
    open_stage3,
    open_stage4,
)
from crashgate.reference.stages.reconcile import RECONCILE_FAILPOINT, InDoubt, StageStatus
from crashgate.reference.stages.roles import CARRIES, CATCH_UP, STAGES, Roles, catch_up, roles
from crashgate.reference.stages.sync import RelationalData, relational_data

__all__ = ["CARRIES", "CATCH_UP", "ESCAPE_FAILPOINTS", "FALLBACK_ERRORS", "OPTIONS",
           "RECONCILE_FAILPOINT", "STAGES", "TRANSITION_FAILPOINTS", "Divergence", "InDoubt",
           "RelationalData", "Roles", "StageAdapter", "StageRecord", "StageStatus", "catch_up",
           "open_stage", "open_stage0", "open_stage1", "open_stage2", "open_stage3",
           "open_stage4", "relational_data", "roles", "write_failpoint"]
