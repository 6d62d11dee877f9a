"""What a ``pgvector`` store takes and promises: its options, and its declaration, made from
the settings the server really has (``SHOW``), not from the options asked for."""

from __future__ import annotations

from collections.abc import Mapping

from crashgate.backends import Capability, Declaration, Durability, Option, Recall
from crashgate.reference.postgres.connect import Connection, redacted
from crashgate.reference.postgres.schema import SCHEMA_VERSION
from crashgate.reference.vector_search import METRICS

__all__ = ["OPTIONS", "declaration_for"]

OPTIONS = {
    "synchronous_commit": Option("on", ("on", "off", "local"),
                                 help="Postgres session setting: off acknowledges before the "
                                      "commit's WAL is flushed"),
    "fsync": Option("on", ("on", "off"), help="server setting (crashgate's own server only)"),
    "index": Option("none", ("none", "hnsw", "ivfflat"), help="pgvector ANN index"),
    "url": Option("", help="an existing server (libpq URL); default: crashgate starts its own"),
    "metric": Option("l2", METRICS, help="distance for vector queries"),
    "m": Option("16", convert=int, help="HNSW m"),
    "ef_construction": Option("64", convert=int, help="HNSW ef_construction"),
    "ef_search": Option("40", convert=int, help="HNSW ef_search (candidates per query)"),
    "lists": Option("10", convert=int, help="IVFFlat lists"),
    "probes": Option("0", convert=int, help="IVFFlat probes; 0: all lists (exhaustive)"),
    "schema_version": Option(str(SCHEMA_VERSION), convert=int,
                             help="newest schema version this code reads and writes"),
}


def declaration_for(conn: Connection, opts: Mapping[str, object]) -> Declaration:
    """What the store promises, from the settings the server really has (``SHOW``)."""
    fsync = conn.setting("fsync")
    sync_commit = conn.setting("synchronous_commit")
    if sync_commit == "off":
        durability = Durability.NONE
        why = ("synchronous_commit=off: a commit is acknowledged before its WAL is flushed, "
               "so a server crash can lose the last acknowledged commits (Postgres docs, "
               "'Asynchronous Commit'); it never leaves a transaction half applied")
    elif fsync == "off":
        durability = Durability.PROCESS_CRASH
        why = ("fsync=off: commits reach the OS page cache, which survives the server's "
               "processes dying but not a power loss or an OS crash")
    else:
        durability = Durability.POWER_LOSS
        why = (f"fsync=on and synchronous_commit={sync_commit}: a commit is acknowledged "
               "after its WAL is flushed to disk")
    index = str(opts["index"])
    where = "crashgate's own server (pgserver)" if conn.server is not None else \
        f"the server at {redacted(conn.url)}"
    return Declaration(
        durability=durability,
        capabilities=frozenset({Capability.KV, Capability.VECTOR, Capability.BATCH,
                                Capability.METADATA_FILTER, Capability.SCHEMA_VERSION}),
        metric=str(opts["metric"]),
        recall=None if index == "none" else Recall(10, 0.95),
        server=f"Postgres {conn.setting('server_version')} + pgvector {conn.pgvector}, "
               f"{where}",
        notes={
            "durability": why,
            "server": "the data lives in a Postgres server's files, not in env.fs: the rows "
                      "that need crashgate's simulated disk (power loss, crash states at disk "
                      "operations, I/O errors, damage at rest) cannot act on it; a process "
                      "crash is a SIGKILL of the server's processes (server_pids), or of this "
                      "store's session (session_pid)",
            "options": " ".join(f"{k}={opts[k]}" for k in ("synchronous_commit", "fsync",
                                                           "index", "metric")),
            "batch": "write_batch, upsert and remove each run in one transaction",
            "vectors": "kept exactly as float64 bytes beside pgvector's float32 copy; every "
                       "answer is re-scored in float64 and filtered in Python "
                       "(backends.search); an index only proposes candidates, and a query "
                       "whose candidates hold fewer than k matches is searched exactly. "
                       "The recall an index declares (recall@10 >= 0.95) depends on the "
                       "data: with the default parameters it holds on clustered embeddings "
                       "like the pattern guide's, not on independent Gaussian vectors "
                       "(tests/benchmarks/bench_pgvector.py prints both); raise ef_search "
                       "for such data",
            "schema": "each store is a Postgres schema of its own, named by the marker file "
                      "at its path; its schema_version table holds the version that made it "
                      f"(this code reads up to {opts['schema_version']})",
        },
    )
