"""Reference implementations of every backend the design documents describe.

Each factory is ``open_X(path, env, **options) -> store``; the registry reaches them by name
(``crashgate certify rvf``). They are re-exported here lazily, so that importing one backend
never imports another's dependencies (a broken optional backend fails only when it is used).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "open_memory": "crashgate.reference.memory",
    "open_json": "crashgate.reference.json_store",
    "open_sqlite": "crashgate.reference.sqlite_store",
    "open_rvf": "crashgate.reference.rvf.store",
    "open_rvlite": "crashgate.reference.rvlite",
    "IndexedDB": "crashgate.reference.indexeddb",
    "exact_search": "crashgate.reference.vector_search",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
