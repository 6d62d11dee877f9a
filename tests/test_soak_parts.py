"""The soak's pure parts (issue 12): the schedule, the workload's tokens, merging shards'
documents, and the verdict."""

from __future__ import annotations

from typing import Any

import pytest

from crashgate.backends import resolve
from crashgate.harness.certify import probe_declaration
from crashgate.harness.histogram import LatencyHistogram
from crashgate.harness.soak import workload as w
from crashgate.harness.soak.schedule import FAULTS, parse_schedule
from crashgate.harness.soak.session import Shard, parse_shard, runs_of
from crashgate.harness.soak.summary import merge_docs, union, verdict_of


def test_a_schedule_cycles_its_faults_one_every_interval() -> None:
    s = parse_schedule("all", 10.0)
    assert s.at(9.9) is None
    assert s.at(10.0) == (0, FAULTS[0]) and s.at(25.0) == (1, FAULTS[1])
    assert s.at(10.0 * (len(FAULTS) + 1)) == (len(FAULTS), FAULTS[0])
    assert parse_schedule("none", 1.0).at(100.0) is None
    assert parse_schedule("io-error,kill-writer", 2.0).at(4.0) == (1, "kill-writer")
    lines = s.describe(30.0)
    assert len(lines) == 1 + 3 and "kill-writer" in lines[1] and "30.0 s" in lines[3]


@pytest.mark.parametrize("text", ["bogus", "kill-writer,bogus", ""])
def test_an_unknown_schedule_names_the_known_ones(text: str) -> None:
    with pytest.raises(ValueError, match="faults: kill-writer"):
        parse_schedule(text, 1.0)


def test_shards_split_the_runs_disjointly() -> None:
    assert [runs_of(5, Shard(i, 2)) for i in (1, 2)] == [[0, 2, 4], [1, 3]]
    assert parse_shard("2/3") == Shard(2, 3)
    for bad in ("0/2", "3/2", "1", "a/b"):
        with pytest.raises(ValueError, match="1 <= i <= n"):
            parse_shard(bad)


def test_every_written_value_decodes_to_its_token_and_a_garbled_one_does_not() -> None:
    assert w.token_of_value(w.value_for("0.3.17")) == "0.3.17"
    assert w.token_of_value(None) is None
    bad = bytearray(w.value_for("0.3.17"))
    bad[-1] ^= 1
    assert w.token_of_value(bytes(bad)).startswith("garbled:")
    assert w.token_of_plan(w.plan_for("t")) == "t"
    assert w.token_of_plan({"token": "t", "steps": []}).startswith("garbled:")
    v = w.vector_for("0.1.2.5")
    assert w.token_of_vector(v, {"token": "0.1.2.5"}) == "0.1.2.5"
    assert w.token_of_vector(v, {"token": "0.1.2.6"}).startswith("garbled:")


def test_an_agent_resumes_at_the_op_after_the_last_it_began() -> None:
    decl = probe_declaration(resolve("stage3"))
    ops = w.agent_ops(decl, seed=1, run=0, agent="3")
    first = [next(ops) for _ in range(40)]
    again = w.agent_ops(decl, seed=1, run=0, agent="3", start=25)
    assert [next(again) for _ in range(15)] == first[25:]
    assert {op.op for op in first} <= {m[0] for m in w.WRITER_MIX}
    tokens = [op.value for op in first if op.op in ("put", "goap_store")]
    assert len(tokens) == len(set(tokens))   # every write's token is its own


def _doc(runs: list[int], started: float, ended: float, *, violations: int = 0,
         reads: int = 10, samples: tuple[float, ...] = (0.001, 0.002)) -> dict[str, Any]:
    h = LatencyHistogram()
    h.extend(samples)
    return {"format": "crashgate-soak/1", "target": "stage3", "seed": 7, "runs": runs,
            "agents": 15, "started": started, "ended": ended, "spans": [[started, ended]],
            "ops": {"total": 100, "ok": 100, "agents": 90, "by_op": {"get": {"ok": 100}}},
            "checks": {"reads": reads, "recoveries": 1}, "divergence": {"compared": 5,
                                                                        "mismatches": 0},
            "corruption": {"checks": 5, "incidents": 0}, "fallbacks": {"reads": 5,
                                                                     "fallbacks": 0},
            "counts": {"violations": violations, "problems": 0, "leaks": 0},
            "faults": [{"name": "kill-writer"}], "violations": [], "problems": [],
            "leaks": [], "resources": [], "histograms": {"get": h.to_json()},
            "timeline": {"bucket_s": 1.0, "t": [0.0, 1.0],
                         "throughput": {"ok": [50.0, 50.0]},
                         "latency_ms": {"get": {"p50": [1.0, None], "p99": [2.0, 3.0]}}}}


def test_merging_adds_counts_and_histograms_and_unions_spans() -> None:
    a = _doc([0], 100.0, 200.0, samples=(0.001,) * 3)
    b = _doc([1], 150.0, 260.0, samples=(0.004,) * 5)
    m = merge_docs([a, b], "crashgate merge a b")
    assert m["runs"] == [0, 1] and m["spans"] == [[100.0, 260.0]] and m["elapsed"] == 160.0
    assert m["ops"]["total"] == 200 and m["ops"]["agents"] == 180
    assert m["checks"]["reads"] == 20 and m["divergence"]["compared"] == 10
    assert LatencyHistogram.from_json(m["histograms"]["get"]).count == 8
    assert m["timeline"]["throughput"]["ok"] == [100.0, 100.0]
    assert m["verdict"] == "pass"
    bad = merge_docs([a, _doc([1], 300.0, 400.0, violations=2)], "m")
    assert bad["verdict"] == "fail" and bad["counts"]["violations"] == 2
    assert union([[0, 1], [3, 4], [0.5, 2]]) == [[0.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize("change, words", [
    ({"runs": [0]}, "more than one shard"),
    ({"seed": 8}, "different seeds"),
    ({"target": "stage2"}, "different targets"),
])
def test_merging_refuses_documents_that_are_not_shards_of_one_soak(change: dict[str, Any],
                                                                  words: str) -> None:
    with pytest.raises(ValueError, match=words):
        merge_docs([_doc([0], 0.0, 1.0), {**_doc([1], 0.0, 1.0), **change}], "m")


def test_a_soak_that_checked_nothing_is_unknown() -> None:
    verdict, summary = verdict_of(_doc([0], 0.0, 1.0, reads=0))
    assert verdict.value == "unknown" and "no read was checked" in summary
