"""The rows of a server-backed store (``scenarios/server_rows.py``, ``procedures_server``):
every row that needs crashgate's simulated disk says n/a for a server, the server-crash row
catches a store that lies about its durability (with a reproduction that runs against the
real server again) and passes the honest default, two clients and version skew for a server,
and the stateful model on a server store."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from procedure_helpers import assert_caught, context

from crashgate.backends import Capability, Declaration, Durability
from crashgate.harness.faults.server import ServerKill, disk_rows_reason, killable
from crashgate.harness.stateful import run_model
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.adr032 import all_rows
from crashgate.scenarios.procedures_server import (
    check_server_crash,
    server_clients,
    server_crash,
)
from crashgate.scenarios.procedures_server_versions import server_versions

LIAR = "faulty_servers:open_pgvector_claims_durable?synchronous_commit=off"

# -- which rows apply to a server store: every row decided ---------------------------------

EVERYTHING = frozenset(Capability)
SERVER = Declaration(Durability.POWER_LOSS, EVERYTHING, server="Postgres (a test)",
                     failpoints=("fp",), baseline="sqlite", migration="ADR-072",
                     file_format="rvf", metric="l2")
NO_SERVER = dataclasses.replace(SERVER, server=None)

ON_DISK = {"adr032-1", "adr032-2", "adr032-4", "adr032-6", "adr032-7", "inv-2",
           "io-errors", "damage", "adr072-reversible", "adr072-escape", "adr072-backup",
           "patterns-dry-run", "patterns-crash", "patterns-rollback"}
"""Rows whose procedure crashes, fails or damages the simulated disk, or compares its files."""
MEASURED_FOR_A_SERVER = {
    "adr032-3": "real processes open the store; LockHeld is asked of the store itself",
    "adr032-5": "another store reads what this one wrote, through the stores",
    "inv-1": "real processes, as adr032-3",
    "inv-3": "backend selection: no store data involved",
    "inv-4": "a partner writes files on the real file system, the store opens them (the "
             "in-process half is n/a inside the procedure)",
    "model": "process crash = the client abandons its connection; server kills; no power loss",
    "server-crash": "SIGKILL of the server's processes",
    "server-clients": "two client processes",
    "server-versions": "the schema version kept in the server",
    "adr072-read-latency": "timings of real calls",
    "adr072-write-latency": "timings of real calls",
    "patterns-rerun": "the target's contents read through the store",
    "patterns-proxy-secondary": "the proxy's reads and its failure records",
    "patterns-recall": "queries",
    "adr0003-e2e": "queries through ADR-0003's VectorStore",
    "adr0003-provenance": "the retrieved chunks' evidence entries",
    "adr0003-memory": "the memory layer's answers through the store",
    "adr0003-retention": "server and session kills inside memory ops (crash states on a disk)",
    "adr0003-reindex": "server and session kills inside the reindex (crash states on a disk)",
    "adr0003-migration": "client crashes at the stage adapter's failpoints",
}
"""Rows that apply to a server store (or that decide from the open store), with why their
measurement does not need the simulated disk. A new row must be added to one of the two."""


def _arch(key: str) -> bool:
    return key.startswith("arch001-")


def test_every_row_is_decided_for_a_server_store() -> None:
    keys = {r.key for r in all_rows()}
    undecided = keys - ON_DISK - set(MEASURED_FOR_A_SERVER) - {k for k in keys if _arch(k)}
    assert not undecided, f"decide whether these rows apply to a server store: {undecided}"


def test_disk_rows_are_na_for_a_server_with_the_reason() -> None:
    arch = dataclasses.replace(SERVER, migration="ARCH-001")
    for row in all_rows():
        if row.key in ON_DISK or _arch(row.key):
            reason = row.needs(arch if _arch(row.key) else SERVER)
            assert reason is not None and "server-backed store (Postgres (a test))" in reason, \
                (row.key, reason)
            assert "simulated disk" in reason


def test_disk_rows_still_apply_without_a_server() -> None:
    # the server check adds a reason only for a server: a file store is held to the row
    for row in all_rows():
        if row.key in ON_DISK:
            reason = row.needs(NO_SERVER)
            assert reason is None or "server" not in reason, (row.key, reason)
    assert next(r for r in all_rows() if r.key == "adr032-1").needs(NO_SERVER) is None


def test_server_rows_apply_only_to_a_server() -> None:
    rows = {r.key: r for r in all_rows()}
    for key in ("server-crash", "server-clients", "server-versions"):
        assert rows[key].needs(SERVER) is None
        assert "not a server-backed store" in (rows[key].needs(NO_SERVER) or "")


def test_disk_rows_reason_and_kill_need_a_server(tmp_path: Path) -> None:
    assert disk_rows_reason(NO_SERVER, "x") is None
    assert "not a server-backed store" in (ServerKill("server").needs(NO_SERVER) or "")
    with pytest.raises(ValueError, match="kind='power'"):
        ServerKill("power")
    from crashgate.backends import os_env, resolve
    store = resolve("memory").open(str(tmp_path / "m"), os_env())
    assert "does not implement ServerBacked" in (killable(store) or "")
    with pytest.raises(RuntimeError, match="ServerBacked"):
        ServerKill("session").fire(store)


def test_file_store_rows_say_na(tmp_path: Path) -> None:
    ctx = context("sqlite", tmp_path)
    assert server_crash(ctx).verdict is Verdict.NA
    assert server_clients(ctx).verdict is Verdict.NA
    assert server_versions(ctx).verdict is Verdict.NA


# -- against the real server ----------------------------------------------------------------


def test_server_crash_passes_the_default(postgres_server: Any, tmp_path: Path) -> None:
    ev = server_crash(context("pgvector", tmp_path))
    assert ev.verdict is Verdict.PASS, ev
    assert ev.measured["rounds"] >= 2 and ev.measured["kills"] >= 2
    assert ev.measured["lost_acknowledged"] == 0


def test_server_crash_catches_async_commit_declared_durable(postgres_server: Any,
                                                            tmp_path: Path) -> None:
    ctx = context(LIAR, tmp_path)
    assert ctx.declaration.durability is Durability.PROCESS_CRASH   # the lie
    ev = server_crash(ctx)
    assert "acknowledged write lost" in ev.summary, ev
    assert ev.measured["lost_acknowledged"] > 0
    assert_caught(ev)   # replayed, and its reproduction script fails again on a new server


def test_async_commit_declared_honestly_passes(postgres_server: Any, tmp_path: Path) -> None:
    ctx = context("pgvector?synchronous_commit=off", tmp_path)
    assert ctx.declaration.durability is Durability.NONE
    ev = server_crash(ctx)
    assert ev.verdict is Verdict.PASS, ev   # loses commits, as it says, but never tears one


def test_one_round_kills_the_session_only(postgres_server: Any) -> None:
    from crashgate.backends import resolve
    ev = check_server_crash(resolve("pgvector"), seed=5, ops=40, kill="session")
    assert ev.verdict is Verdict.PASS, ev
    assert ev.measured["kill"] == "session" and ev.measured["acknowledged"] > 0


def test_two_clients(postgres_server: Any, tmp_path: Path) -> None:
    ev = server_clients(context("pgvector", tmp_path))
    assert ev.verdict is Verdict.PASS, ev
    assert ev.measured["acknowledged_batches"] >= 16


def test_server_versions(postgres_server: Any, tmp_path: Path) -> None:
    ev = server_versions(context("pgvector", tmp_path))
    assert ev.verdict is Verdict.PASS, ev
    assert "refused twice with the upgrade hint" in ev.details[0]
    assert ev.measured["opens"] >= 5


def test_server_versions_catches_a_store_that_opens_a_newer_schema(postgres_server: Any,
                                                                   tmp_path: Path) -> None:
    ev = server_versions(context("faulty_servers:open_pgvector_accepts_newer", tmp_path))
    assert "a newer schema must be refused" in ev.summary, ev
    assert_caught(ev)


def test_model_on_a_server_store(postgres_server: Any, tmp_path: Path) -> None:
    ev = run_model("pgvector", seed=3, examples=6, steps=20, workdir=tmp_path)
    assert ev.verdict is Verdict.PASS, ev
    assert ev.measured["crash_states"] > 0
    assert any("power loss and crashes inside an op: n/a" in d for d in ev.details)
