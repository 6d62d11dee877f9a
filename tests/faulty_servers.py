"""Server-backed test backends (``module:factory`` specs, e.g.
``faulty_servers:open_pgvector_claims_durable``; child processes and reproduction scripts find
this module through the run's ``sys.path``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from crashgate.backends import Durability, Env, VersionTooNew

__all__ = ["open_pgvector_accepts_newer", "open_pgvector_claims_durable"]


def open_pgvector_claims_durable(path: str, env: Env, **options: str) -> Any:
    """The real ``pgvector`` store (all its options, e.g. ``synchronous_commit=off``) that
    declares ``process-crash`` durability whatever its settings: with asynchronous commit it
    lies, and the server-crash row must catch the acknowledged commits it loses."""
    from crashgate.reference.postgres.store import open_pgvector

    store = open_pgvector(path, env, **options)
    declared = store.declaration
    if not declared.durability.covers(Durability.PROCESS_CRASH):
        store.declaration = dataclasses.replace(declared, durability=Durability.PROCESS_CRASH)
    return store


def open_pgvector_accepts_newer(path: str, env: Env, **options: str) -> Any:
    """On ``VersionTooNew`` it opens again claiming the schema's own version: a store that
    serves (and may write) a schema it does not understand."""
    from crashgate.reference.postgres.store import open_pgvector

    try:
        return open_pgvector(path, env, **options)
    except VersionTooNew as exc:
        return open_pgvector(path, env, **{**options, "schema_version": str(exc.found)})
