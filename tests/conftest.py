from __future__ import annotations

import sys
from pathlib import Path

# tests/ holds shared helpers (conformance.py) imported by the test modules.
sys.path.insert(0, str(Path(__file__).parent))
