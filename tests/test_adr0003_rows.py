"""ADR-0003's rows: listed in ADR-0003's own words, n/a with the reason where a store lacks what
ADR-0003's layers need, passing on the reference stores (SQLite on the simulated disk, pgvector
on crashgate's own server, the SQLite -> Postgres stage adapter), and failing stores that break
what they check (a query that ignores its filter, a batch that commits in two parts)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from crashgate.backends import Capability, Declaration, Durability, Env, resolve
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.adr032 import all_rows
from crashgate.scenarios.procedures_adr0003 import check_end_to_end
from crashgate.scenarios.procedures_adr0003_crash import check_retention_crash
from crashgate.scenarios.procedures_adr0003_memory import check_memory_tables
from crashgate.scenarios.procedures_adr0003_reindex import check_reindex
from crashgate.scenarios.procedures_adr0003_stages import check_migration

ROWS = {r.key: r for r in all_rows() if r.key.startswith("adr0003-")}


# -- faulty stores: each breaks one thing a row checks ---------------------------------------


class _Wrapped:
    """A SQLite store with one method replaced; the rest passes through."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _IgnoresFilters(_Wrapped):
    def query(self, vector: Any, k: int, where: Mapping[str, Any] | None = None) -> Any:
        return self._inner.query(vector, k)


class _BatchInTwoParts(_Wrapped):
    def write_batch(self, puts: Mapping[str, bytes], deletes: Iterable[str] = ()) -> None:
        deletes = list(deletes)
        if deletes:
            self._inner.write_batch({}, deletes)   # committed alone: a crash splits the batch
        if puts:
            self._inner.write_batch(puts, [])


def open_ignores_filters(path: str, env: Env, **options: str) -> Any:
    return _IgnoresFilters(resolve("sqlite").open(path, env, **options))


def open_batch_in_two_parts(path: str, env: Env, **options: str) -> Any:
    return _BatchInTwoParts(resolve("sqlite").open(path, env, **options))


# -- the rows as data ------------------------------------------------------------------------


def test_the_rows_quote_adr0003() -> None:
    texts = {key: row.expected for key, row in ROWS.items()}
    assert texts["adr0003-e2e"].startswith(
        "End-to-end local: ingest -> embed -> upsert -> retrieve with metadata filters.")
    assert texts["adr0003-provenance"].startswith(
        "Evidence manifest includes provenance for retrieved chunks.")
    for key in ("adr0003-memory", "adr0003-retention"):
        assert texts[key].startswith("Long-term memory tables support tenant_id, retention "
                                     "fields, and deletion audit events.")
    assert texts["adr0003-reindex"].startswith(
        "Embedding model changes require reindex; store embed_model + embed_dim metadata.")
    assert texts["adr0003-migration"].startswith("We must implement migrations")


def test_rows_say_why_they_do_not_apply() -> None:
    kv_only = Declaration(Durability.POWER_LOSS, frozenset({Capability.KV}))
    reason = ROWS["adr0003-e2e"].needs(kv_only)
    assert reason is not None and "vector" in reason and "metadata-filter" in reason
    assert "batch" in (ROWS["adr0003-memory"].needs(kv_only) or "")
    volatile = Declaration(Durability.NONE, frozenset({Capability.KV, Capability.BATCH}))
    assert ROWS["adr0003-memory"].needs(volatile) is None
    assert "durability none" in (ROWS["adr0003-retention"].needs(volatile) or "")
    stages = Declaration(Durability.POWER_LOSS, frozenset({Capability.STAGES}),
                         migration="ADR-072")
    assert "ADR-072" in (ROWS["adr0003-migration"].needs(stages) or "")
    ours = Declaration(Durability.POWER_LOSS, frozenset({Capability.STAGES}),
                       migration="ADR-0003")
    assert ROWS["adr0003-migration"].needs(ours) is None


# -- on the simulated disk -------------------------------------------------------------------


@pytest.mark.parametrize("manifest", [False, True])
def test_end_to_end_passes_on_sqlite_and_attaches_the_manifest(manifest: bool) -> None:
    ev = check_end_to_end(resolve("sqlite"), seed=4, manifest=manifest)
    assert ev.verdict is Verdict.PASS, ev.summary
    assert ev.measured["queries"] > 0 and ev.measured["chunks"] > ev.measured["documents"]
    assert ("evidence-manifest.json" in ev.attachments) is manifest
    if manifest:
        assert '"doc_id"' in ev.attachments["evidence-manifest.json"]


def test_a_query_that_ignores_its_filter_fails_end_to_end() -> None:
    ev = check_end_to_end(resolve(f"{__name__}:open_ignores_filters"), seed=4)
    assert ev.verdict is Verdict.FAIL and "where=" in ev.summary


def test_memory_tables_pass_on_sqlite_and_on_memory() -> None:
    for name in ("sqlite", "memory"):
        ev = check_memory_tables(resolve(name), seed=2, steps=60)
        assert ev.verdict is Verdict.PASS, (name, ev.summary)
        assert ev.measured["audited"] > 0 and ev.measured["expired_hidden"] > 0


def test_retention_under_crash_states_passes_on_sqlite() -> None:
    ev = check_retention_crash(resolve("sqlite"), seed=3, steps=24, budget=30)
    assert ev.verdict is Verdict.PASS, ev.summary
    assert ev.measured["crashes"] == 30


def test_a_batch_committed_in_two_parts_loses_the_audit_trail() -> None:
    spec = resolve(f"{__name__}:open_batch_in_two_parts")
    ev = check_retention_crash(spec, seed=3, steps=40, budget=200)
    assert ev.verdict is Verdict.FAIL, ev.summary
    token = next(d.removeprefix("state ") for d in ev.details if d.startswith("state "))
    again = check_retention_crash(spec, seed=3, steps=40, budget=200, state=token)
    assert again.verdict is Verdict.FAIL   # the one crash state replays the failure


def test_reindex_passes_on_sqlite_and_a_mix_is_caught() -> None:
    ev = check_reindex(resolve("sqlite"), seed=1, budget=30)
    assert ev.verdict is Verdict.PASS, ev.summary
    assert ev.measured["refusals"] == 3 and ev.measured["crashes"] == 30
    bad = check_reindex(resolve(f"{__name__}:open_ignores_filters"), seed=1, budget=30)
    assert bad.verdict is Verdict.FAIL


# -- on crashgate's own Postgres -------------------------------------------------------------


def test_the_rows_pass_on_pgvector(postgres_server: Any) -> None:
    spec = resolve("pgvector")
    for ev in (check_end_to_end(spec, seed=4, manifest=True),
               check_memory_tables(spec, seed=2, steps=40)):
        assert ev.verdict is Verdict.PASS, ev.summary


def test_retention_and_reindex_survive_server_kills(postgres_server: Any) -> None:
    spec = resolve("pgvector")
    ev = check_retention_crash(spec, seed=3, steps=16, budget=30, kills=2)
    assert ev.verdict is Verdict.PASS, ev.summary
    assert ev.measured["crashes"] == 2
    ev = check_reindex(spec, seed=1, budget=30, kills=2)
    assert ev.verdict is Verdict.PASS, ev.summary
    assert ev.measured["crashes"] == 2


def test_the_migration_row_passes_on_the_stage_adapter(postgres_server: Any) -> None:
    ev = check_migration(resolve("pg-stage1"), seed=5, ops=30)
    assert ev.verdict is Verdict.PASS, ev.summary
    assert ev.measured["crashes"] >= 4 and ev.measured["shadow_reads"] > 0
    assert ev.measured["mismatches"] == 0
