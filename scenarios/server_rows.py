"""What process crash, duplicate writers and version skew mean for a store kept by a server
(``Declaration.server``, e.g. Postgres), as rows: issue 15's words ("Process crash is a SIGKILL
of the server (all processes, and separately one backend), then a restart and recovery.
Duplicate writers and version skew mean what they mean for a server (two clients; a schema
version table newer than the code)"). The rows that need crashgate's simulated disk say n/a
for such a store (``harness.faults.server.disk_rows_reason``)."""

from __future__ import annotations

from crashgate.backends import Declaration
from crashgate.scenarios.adr032 import _proc
from crashgate.scenarios.table import Row

__all__ = ["SERVER_ROWS", "TABLE"]

TABLE = "crashgate faults for a server"
P = "crashgate.scenarios.procedures_server:"


def _needs_server(decl: Declaration) -> str | None:
    from crashgate.scenarios.procedures_server import needs_server
    return needs_server(decl)


def _needs_server_version(decl: Declaration) -> str | None:
    from crashgate.backends import Capability
    from crashgate.harness.faults.base import requires
    return _needs_server(decl) or requires(decl, Capability.SCHEMA_VERSION,
                                           Capability.WIRE_VERSION, what="schema version")


SERVER_ROWS = [
    Row(TABLE, "server-crash", "S1", "Process crash of the server: SIGKILL of every server "
        "process, and of one session's process, with ops in flight; restart and recovery",
        "After recovery the store shows every acknowledged commit (as far as its declared "
        "durability promises) and a prefix of the ops: no batch torn, the op in flight all or "
        "nothing.",
        _needs_server, _proc(P + "server_crash")),
    Row(TABLE, "server-clients", "S2", "Two clients in two OS processes writing the same store "
        "at once, in atomic batches; one SIGKILLed mid-batch",
        "Every acknowledged write of either client is there; no batch torn.",
        _needs_server, _proc(P + "server_clients")),
    Row(TABLE, "server-versions", "S3", "The store's schema version (kept in the server) newer "
        "than the code's",
        "Refused with VersionTooNew and the upgrade hint; nothing modified. A store of the "
        "current version reads forward.",
        _needs_server_version,
        _proc("crashgate.scenarios.procedures_server_versions:server_versions")),
]
