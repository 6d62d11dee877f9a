"""``Declaration.metadata``: a vector store may declare that it keeps no metadata, and every
row honours it, as rows honour capabilities. The model draws no metadata and no filter for
such a store; the rows about metadata are n/a with the reason; the process protocol carries
the field; the certificate shows it.

The store under test is ``memory`` wrapped so that it refuses metadata and filters outright
(``ValueError``): whatever the harness sends it that it declared it cannot keep shows up as a
failure, so a pass proves nothing was sent."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from crashgate.backends import Capability, Declaration, Durability, Env, VectorRecord
from crashgate.backends.proc_protocol import DriverError, decl_from_wire, decl_to_wire
from crashgate.harness.certify import _declaration_problem
from crashgate.harness.ops import Upsert, metadata_rows_reason, op_for, records_for
from crashgate.harness.stateful import run_model
from crashgate.harness.verdict import Verdict
from crashgate.harness.workload import PROFILES, random_workload
from crashgate.reference.memory import open_memory
from crashgate.scenarios.adr032 import FAILURE_MODES, INVARIANTS
from crashgate.scenarios.patterns import needs_pattern_target
from crashgate.scenarios.procedures_recall import dataset

SENT: list[Mapping[str, Any]] = []
"""The metadata of every record the wrapped stores were asked to upsert (this process)."""


def _keeping_none(path: str, env: Env, *, declares: bool) -> Any:
    """``memory`` that keeps no metadata: it refuses a record with metadata and a filtered
    query (ValueError), and declares ``metadata=declares`` (and never metadata-filter)."""
    store = open_memory(path, env)
    decl = store.declaration
    store.declaration = replace(decl, metadata=declares,
                                capabilities=decl.capabilities - {Capability.METADATA_FILTER})
    upsert, query = store.upsert, store.query

    def refusing_upsert(records: Sequence[VectorRecord]) -> None:
        records = list(records)
        SENT.extend(r.metadata for r in records)
        if bad := [r.id for r in records if r.metadata]:
            raise ValueError(f"record {bad[0]} has metadata: this store keeps none")
        upsert(records)

    def refusing_query(vector: Sequence[float], k: int,
                       where: Mapping[str, Any] | None = None) -> Any:
        if where is not None:
            raise ValueError(f"where={where!r}: this store keeps no metadata to filter on")
        return query(vector, k, where)

    store.upsert = refusing_upsert
    store.query = refusing_query
    return store


def open_declaring_none(path: str, env: Env, **options: str) -> Any:
    return _keeping_none(path, env, declares=False)


def open_declaring_some(path: str, env: Env, **options: str) -> Any:
    return _keeping_none(path, env, declares=True)


# -- the model -------------------------------------------------------------------------------


def test_the_model_sends_no_metadata_to_a_store_that_declares_it_keeps_none(
        tmp_path: Path) -> None:
    SENT.clear()
    ev = run_model(open_declaring_none, seed=5, examples=12, steps=25, workdir=tmp_path)
    assert ev.verdict is Verdict.PASS, f"{ev.summary}\n" + "\n".join(ev.details)
    assert SENT, "the model upserted nothing: the test proves nothing"
    assert all(m == {} for m in SENT)


def test_the_same_store_declaring_metadata_fails_the_model(tmp_path: Path) -> None:
    # only the declaration differs: it is what keeps the model from sending metadata
    SENT.clear()
    ev = run_model(open_declaring_some, seed=5, examples=12, steps=25, workdir=tmp_path)
    assert ev.verdict is Verdict.FAIL, ev.summary
    assert "metadata" in ev.summary + "\n".join(ev.details)
    assert any(SENT)


# -- workloads and rows ----------------------------------------------------------------------


def _bare_decl(**changes: Any) -> Declaration:
    return Declaration(durability=Durability.POWER_LOSS,
                       capabilities=frozenset({Capability.VECTOR, Capability.EPOCH}),
                       metadata=False, **changes)


def _upserted(ops: Iterable[object]) -> list[VectorRecord]:
    return [r for op in ops if isinstance(op, Upsert) for r in op.records]


def test_a_workload_for_a_store_keeping_no_metadata_is_the_same_ops_without_it() -> None:
    kept = replace(_bare_decl(), metadata=True)
    with_meta = random_workload(kept, 60, 7, PROFILES["small"], history=True)
    without = random_workload(_bare_decl(), 60, 7, PROFILES["small"], history=True)
    assert any(r.metadata for r in _upserted(with_meta))
    assert [(r.id, r.vector) for r in _upserted(without)] == \
        [(r.id, r.vector) for r in _upserted(with_meta)]
    assert all(r.metadata == {} for r in _upserted(without))
    assert [type(op) for op in without] == [type(op) for op in with_meta]


def test_records_for_and_op_for_strip_only_for_a_store_keeping_none() -> None:
    rec = VectorRecord.of(3, [1.0, 2.0], {"tag": "x"})
    kept = replace(_bare_decl(), metadata=True)
    assert records_for(kept, [rec]) == (rec,)
    assert records_for(_bare_decl(), [rec]) == (VectorRecord.of(3, [1.0, 2.0]),)
    assert op_for(_bare_decl(), Upsert((rec,))) == Upsert((VectorRecord.of(3, [1.0, 2.0]),))
    assert op_for(kept, Upsert((rec,))) == Upsert((rec,))


@pytest.mark.parametrize("key", ["adr032-2", "inv-2"])
def test_the_rows_about_rebuilt_metadata_are_na_with_the_reason(key: str) -> None:
    row = next(r for r in [*FAILURE_MODES, *INVARIANTS] if r.key == key)
    assert row.needs(replace(_bare_decl(), metadata=True)) is None
    reason = row.needs(_bare_decl())
    assert reason is not None and "declares it keeps no metadata" in reason


def test_pattern_migration_rows_are_na_for_a_target_keeping_no_metadata() -> None:
    assert needs_pattern_target(replace(_bare_decl(), metadata=True)) is None
    reason = needs_pattern_target(_bare_decl())
    assert reason is not None and "declares it keeps no metadata" in reason
    assert metadata_rows_reason(replace(_bare_decl(), metadata=True), "x") is None


def test_the_recall_data_for_a_store_keeping_no_metadata_has_no_filters() -> None:
    kept, bare = dataset(4, 300, 30, 10), dataset(4, 300, 30, 10, metadata=False)
    assert any(p.where for p in kept.probes)
    assert not any(p.where for p in bare.probes)
    assert all(r.metadata == {} for r in bare.live.values())
    assert sorted(bare.live) == sorted(kept.live)
    assert [p.vector for p in bare.probes] == [p.vector for p in kept.probes]


# -- the declaration: checked, carried, shown ------------------------------------------------


def test_keeping_no_metadata_contradicts_a_metadata_filter() -> None:
    ok = _bare_decl()
    assert _declaration_problem(ok) is None
    both = replace(ok, capabilities=ok.capabilities | {Capability.METADATA_FILTER})
    problem = _declaration_problem(both)
    assert problem is not None and "metadata-filter" in problem
    wrong = replace(ok, metadata="no")  # type: ignore[arg-type]
    assert "metadata" in (_declaration_problem(wrong) or "")


def test_the_protocol_carries_the_field() -> None:
    decl = _bare_decl(metric="l2")
    wire = decl_to_wire(decl)
    assert wire["metadata"] is False
    assert decl_from_wire(wire).metadata is False
    assert decl_from_wire({**wire, "metadata": True}).metadata is True
    del wire["metadata"]
    assert decl_from_wire(wire).metadata is True    # optional: drivers before it kept metadata
    with pytest.raises(DriverError, match="metadata"):
        decl_from_wire({**wire, "metadata": None})
