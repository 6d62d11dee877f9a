"""ADR-072's and ARCH-001's gates judged from evidence: a pass needs observations and, for
criteria over days, evidence that covers them; thin evidence is unknown with what is missing;
`crashgate gate` gathers evidence from a stage adapter and writes gate.json and gate.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crashgate.harness.cli import main
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.gate_cli import merge
from crashgate.scenarios.gates import ADR072, ARCH001, DAY, judge_gate

RATIO = {"point": 1.1, "low": 1.0, "high": 1.2, "n": [400, 400],
         "aa": {"point": 1.0, "low": 0.95, "high": 1.05}}


def _evidence(days: float, **over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "format": "crashgate-evidence/1", "started": 0.0, "ended": days * DAY,
        "divergence": {"compared": 40_000, "mismatches": 0},
        "fallbacks": {"reads": 10_000, "fallbacks": 0},
        "corruption": {"checks": 500, "incidents": 0},
        "witness": {"verified": 900, "invalid": 0},
        "backup": {"cycles": 2, "failures": 0}, "cow": {"checks": 3, "failures": 0},
        "dual_write": {"writes": 1000, "errors": 0},
        "peak_load": {"agents": 15, "violations": 0, "ops": 5000},
        "latency": {"read": RATIO, "write": RATIO, "query_p99_ms": 12.0, "query_n": 50}}
    ev.update(over)
    return ev


def test_whole_evidence_over_the_days_passes_every_gate() -> None:
    for gate in ((ADR072, 2, 3), (ADR072, 3, 4), (ARCH001, 1, 2), (ARCH001, 2, 3)):
        verdict, judged = judge_gate(*gate, _evidence(15))
        assert verdict is Verdict.PASS, [(c.words, j) for c, j in judged]
        assert all(j.n > 0 for _, j in judged)


def test_criteria_over_days_are_unknown_on_a_shorter_span_and_say_so() -> None:
    verdict, judged = judge_gate(ADR072, 2, 3, _evidence(3))
    assert verdict is Verdict.UNKNOWN
    [(_, shadow)] = [(c, j) for c, j in judged if "7 consecutive days" in c.words]
    assert shadow.verdict is Verdict.UNKNOWN and "3.0 days of the 7" in shadow.missing
    assert all(j.verdict is Verdict.PASS for c, j in judged if "days" not in c.words)


def test_thin_or_missing_evidence_is_unknown_and_bad_evidence_fails() -> None:
    few = _evidence(15, divergence={"compared": 1000, "mismatches": 0})
    verdict, judged = judge_gate(ADR072, 2, 3, few)
    assert verdict is Verdict.UNKNOWN and "more without a mismatch" in judged[0][1].missing
    verdict, judged = judge_gate(ADR072, 3, 4, {"format": "crashgate-evidence/1"})
    assert verdict is Verdict.UNKNOWN and all(j.n == 0 for _, j in judged)
    assert all(j.verdict is Verdict.UNKNOWN and j.missing for _, j in judged)
    bad = _evidence(15, fallbacks={"reads": 10_000, "fallbacks": 1},
                    latency={"read": RATIO, "write": {**RATIO, "low": 1.6, "high": 1.9,
                                                      "point": 1.7}})
    verdict, judged = judge_gate(ADR072, 3, 4, bad)
    assert verdict is Verdict.FAIL
    assert [c.words.split()[1] for c, j in judged if j.verdict is Verdict.FAIL] == [
        "serving", "write"]
    with pytest.raises(ValueError, match="no gate from 1 to 3"):
        judge_gate(ADR072, 1, 3, few)


def test_evidence_files_merge_counts_and_span() -> None:
    a = _evidence(2)
    b = _evidence(3, started=5 * DAY, ended=9 * DAY,
                  divergence={"compared": 10, "mismatches": 1})
    got = merge([a, b])
    assert got["divergence"] == {"compared": 40_010, "mismatches": 1}
    assert (got["started"], got["ended"]) == (0.0, 9 * DAY)
    # latency from the file with the most samples, a ratio per operation type or one for all
    per_op = {"read": {"get": {**RATIO, "n": [900, 900]}, "scan": {**RATIO, "n": [800, 800]}}}
    assert merge([a, _evidence(1, latency=per_op)])["latency"] == per_op
    assert merge([_evidence(1, latency=per_op), a])["latency"] == per_op


def test_the_gate_command_gathers_evidence_and_writes_its_reports(tmp_path: Path,
                                                                   capsys) -> None:
    code = main(["gate", "stage2", "--from", "2", "--to", "3", "--seed", "1", "--ops", "40",
                 "--samples", "30", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    [path] = tmp_path.glob("stage2/gate-2-3-*/gate.json")
    report = json.loads(path.read_text())
    assert code == {"pass": 0, "fail": 1, "unknown": 2}[report["verdict"]]
    assert len(report["criteria"]) == 5 and all(r["figure"] for r in report["criteria"])
    shadow = report["criteria"][0]
    assert shadow["verdict"] == "unknown" and "of the 7 days" in shadow["missing"]
    assert shadow["n"] > 0 and "Shadow divergence rate below 0.01%" in out
    assert (path.parent / "gate.md").exists() and (path.parent / "evidence.json").exists()
    faults = json.loads((path.parent / "evidence.json").read_text())["faults"]
    # the injected shadow-write errors were queued, and repaired before the shadow reads
    assert faults["divergences_queued"] > 0
    assert faults["divergences_repaired"] == faults["divergences_queued"]
    assert main(["gate", "stage2", "--from", "1", "--to", "3"]) == 3


def test_arch001_gates_gather_their_evidence_from_a_phase_adapter(tmp_path: Path,
                                                                   capsys) -> None:
    # phase 1 -> 2: the dual writes are counted (no vectors: the gatherer queries what the
    # store has); over a run of seconds the week-long criterion is unknown, with its figure
    code = main(["gate", "arch-phase1", "--document", "ARCH-001", "--from", "1", "--to", "2",
                 "--seed", "2", "--ops", "40", "--out", str(tmp_path)])
    capsys.readouterr()
    [path] = tmp_path.glob("arch-phase1/gate-1-2-*/gate.json")
    [dual] = json.loads(path.read_text())["criteria"]
    assert code == 2 and dual["verdict"] == "unknown" and "of the 7 days" in dual["missing"]
    assert dual["n"] > 0 and dual["figure"].startswith("0 errors in")
    # phase 2 -> 3: every read was checked against JSON, none fell back; mission reads timed
    code = main(["gate", "arch-phase2", "--document", "ARCH-001", "--from", "2", "--to", "3",
                 "--seed", "2", "--ops", "40", "--out", str(tmp_path)])
    capsys.readouterr()
    [path] = tmp_path.glob("arch-phase2/gate-2-3-*/gate.json")
    fallbacks, query = json.loads(path.read_text())["criteria"]
    assert code == 0 and fallbacks["verdict"] == "pass" and fallbacks["n"] > 40
    assert query["verdict"] == "pass" and "(mission_get)" in query["figure"]


def test_a_soak_judges_the_gate_of_the_document_its_adapter_declares() -> None:
    from crashgate.scenarios.soak_cli import gate_of
    evidence = _evidence(0.001)
    assert gate_of(evidence, 2)["gate"] == "ADR-072 2 -> 3"
    assert gate_of(evidence, 2, ARCH001)["gate"] == "ARCH-001 2 -> 3"
    assert gate_of(evidence, 3, ARCH001) is None   # ARCH-001 has no gate out of phase 3
