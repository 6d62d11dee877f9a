"""The design documents' failure-mode tables as data, and the procedure behind each row."""

from __future__ import annotations

from crashgate.scenarios.adr032 import CRASHGATE_ROWS, FAILURE_MODES, INVARIANTS, all_rows
from crashgate.scenarios.table import BUDGETS, Budget, Row, RowContext

__all__ = ["BUDGETS", "CRASHGATE_ROWS", "FAILURE_MODES", "INVARIANTS", "Budget", "Row",
           "RowContext", "all_rows"]
