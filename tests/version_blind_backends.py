"""A store that ignores file versions, for the version gate's tests: the reference
``rvf-ruvector`` store reading every version (``wire_version=255``) while declaring version 1,
as a runtime that never checks the header's version byte does."""

from __future__ import annotations

import dataclasses

from crashgate.backends import Env
from crashgate.reference.rvf_real.store import RuvectorStore, open_rvf_ruvector

__all__ = ["open_version_blind"]


def open_version_blind(path: str, env: Env, **options: str) -> RuvectorStore:
    """``rvf-ruvector`` that opens any version; a ``wire_version`` option is ignored."""
    options.pop("wire_version", None)
    store = open_rvf_ruvector(path, env, wire_version="255", **options)
    store.declaration = dataclasses.replace(store.declaration, wire_version=1)
    return store
