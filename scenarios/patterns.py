"""The pattern migration guide's promises (AgentDB to RuVector), as rows. The texts are the
guide's own words: its CLI reference ("Dry-run (validate without writing)", "Rollback last
migration"), its troubleshooting ("Migration incomplete: X patterns remaining" answered by
"Re-run migration (idempotent)"), its rollback section ("Automatic Backup"), its dual-write
pattern ("Monitor logs for \\"Secondary store write failed\\"") and its key benefits ("Native
HNSW indexing for optimal similarity search").

The migration rows apply to the backend under certification as the migration's **target**: a
vector store that keeps what it acknowledged (``needs_pattern_target``); the source is an
``agentdb`` file; the migrator is crashgate's ``agentdb-to-rvf`` unless ``--pattern-migrator``
names another, so a team certifies its own migration script with the same rows. The proxy
and recall rows' procedures say n/a themselves for a store they do not apply to.
"""

from __future__ import annotations

from crashgate.backends import Capability, Declaration, Durability
from crashgate.harness.ops import metadata_rows_reason
from crashgate.scenarios.adr032 import _on_disk, _proc
from crashgate.scenarios.table import Row

__all__ = ["PATTERN_ROWS", "TABLE", "needs_pattern_target"]

TABLE = "Pattern Migration Guide - AgentDB to RuVector"
P = "crashgate.scenarios.procedures_patterns:"
C = "crashgate.scenarios.procedures_patterns_crash:"


def needs_pattern_target(decl: Declaration) -> str | None:
    """A migration target: a vector store that keeps what it acknowledged across a reopen."""
    if not decl.has(Capability.VECTOR):
        return "not a vector store: test patterns (embeddings) cannot be migrated into it"
    if decl.durability is Durability.NONE:
        return ("keeps nothing across a reopen (durability none): a pattern migration target "
                "is a file-backed vector store")
    # a pattern is its embedding and its fields (name, category, ...): all must arrive
    return metadata_rows_reason(decl, "a migration of patterns with their fields (metadata)")


def _needs_vectors(decl: Declaration) -> str | None:
    return None if decl.has(Capability.VECTOR) else "not a vector store (declares no vector)"


PATTERN_ROWS = [
    Row(TABLE, "patterns-dry-run", "CLI", "`migrate-patterns.ts --dry-run` into this backend, "
        "of a sound source and of one whose embeddings are not of --dimension",
        "Dry-run (validate without writing). (No file or directory changes anywhere; the "
        "invalid source is reported.)",
        _on_disk(needs_pattern_target, "a dry run's writes looked for in its files"),
        _proc(P + "dry_run")),
    Row(TABLE, "patterns-rerun", "Troubleshooting", "Migration incomplete: X patterns "
        "remaining (patterns missing from the target), then `--status` and the migration "
        "run again",
        "Re-run migration (idempotent). (`--status` names exactly the missing ids; each rerun "
        "leaves exactly the source's patterns.)",
        needs_pattern_target, _proc(P + "rerun")),
    Row(TABLE, "patterns-crash", "Batch Migration", "Migrate in smaller chunks "
        "(--batch-size), with a process crash or power loss at every batch boundary and in "
        "the middle of a batch, then the migration run again",
        "Re-run migration (idempotent). (No pattern lost or duplicated: the target holds "
        "exactly the source's patterns; a failed run is never reported as success.)",
        _on_disk(needs_pattern_target, "crashes at batch boundaries on its files"),
        _proc(C + "crashes")),
    Row(TABLE, "patterns-rollback", "Rollback", "`--rollback` after the application changed "
        "the source, with a crash anywhere in the rollback",
        "Rollback last migration. Automatic Backup: migrations create automatic backups with "
        "timestamps. (The backup holds the commits in the source's WAL; the source is restored "
        "exactly; what the migration wrote is removed.)",
        _on_disk(needs_pattern_target, "crashes anywhere in the rollback"),
        _proc(P + "rollback")),
    Row(TABLE, "patterns-proxy-secondary", "Dual-Write", "The dual-write proxy's secondary "
        "(AgentDB) write or delete fails",
        "Monitor logs for \"Secondary store write failed\". (A failed secondary write or "
        "delete is recorded and queued for reconciliation, never only logged.)",
        _needs_vectors, _proc("crashgate.scenarios.procedures_proxy:secondary_failures")),
    Row(TABLE, "patterns-recall", "Key Benefits", "Queries on an approximate index, held to "
        "the recall it declares (exact search: exact, tie-aware results)",
        "Native HNSW indexing for optimal similarity search. (recall@k at least the declared "
        "bound, with its confidence interval.)",
        _needs_vectors, _proc("crashgate.scenarios.procedures_recall:recall")),
]
