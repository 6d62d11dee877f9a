"""The pattern migration guide's stores (``seeds/pattern-migration-agentdb-to-ruvector.md``):
the AgentDB pattern store (``agentdb``), the dual-write proxy (``pattern-proxy``) and the
pattern migrator's reference (``migrate.py``).

Nothing is imported here: each backend is reached by name through the registry, so importing
one never imports another's dependencies.
"""

from __future__ import annotations

__all__: list[str] = []
