"""``crashgate certify``: the issue's acceptance lines, the certificate's files, exit codes, and
a hybrid with a deliberate crash-ordering defect caught by the right rows."""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from crashgate.backends import Capability, Declaration, Durability
from crashgate.harness.certify import SCHEMA_VERSION, Certificate, RowResult
from crashgate.harness.cli import main
from crashgate.harness.report import render_markdown, write_certificate
from crashgate.harness.verdict import Evidence, Verdict


def _certificate(out: Path) -> dict:
    [path] = out.glob("*/*/certificate.json")
    return json.loads(path.read_text())


def test_reference_backends_certify_with_every_row_passing_or_na(tmp_path: Path, capsys) -> None:
    code = main(["certify", "memory", "json", "--budget", "quick", "--seed", "3",
                 "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    for name in ("memory", "json"):
        [path] = (tmp_path / name).glob("*/certificate.json")
        cert = json.loads(path.read_text())
        assert cert["schema_version"] == SCHEMA_VERSION == 2 and cert["verdict"] == "pass"
        # where it came from: the command that regenerates it, and what it ran on
        assert cert["command"] == f"crashgate certify {name} --seed 3 --budget quick"
        assert set(cert["environment"]) == {"crashgate", "python", "apsw", "sqlite",
                                            "hypothesis", "numpy", "os"}
        assert all(cert["environment"].values())
        for row in cert["rows"]:
            assert row["verdict"] in ("pass", "n/a"), row
            if row["verdict"] == "n/a":
                assert row["summary"], row          # n/a always says why
            else:
                assert row["measured"], row         # a pass always says what it measured
        [history] = path.parent.glob("history_*.jsonl")   # the model's last run, op by op
        assert '"outcome": "ok"' in history.read_text()
        md = (path.parent / "certificate.md").read_text()
        assert "| 1 | Power loss during ingest |" in md
        assert "## ADR-032 Key Invariants" in md
        assert f"Regenerate: `{cert['command']}`" in md and "Ran on: crashgate " in md
        # coverage by crash model for every row that built crash states; the others that ran
        # are named as building none
        built = [r for r in cert["rows"]
                 if r["verdict"] != "n/a" and "states_by_model" in r["measured"]]
        assert built and md.count("crash states by model:") == len(built), md
        assert "these rows build no crash states" in md
        # the selection rule binds crashgate's registry: nothing of the store is tested
        rows = {r["key"]: r for r in cert["rows"]}
        assert rows["inv-3"]["verdict"] == "n/a", rows["inv-3"]
        assert "not a property of the store" in rows["inv-3"]["summary"]


def test_same_seed_same_verdicts(tmp_path: Path) -> None:
    runs = []
    for n in (1, 2):
        out = tmp_path / str(n)
        assert main(["certify", "json", "--budget", "quick", "--seed", "9", "--out", str(out),
                     "--quiet"]) == 0
        cert = _certificate(out)
        runs.append([(r["key"], r["verdict"], r["summary"],
                      {k: v for k, v in r["measured"].items() if k != "seconds"})  # wall time
                     for r in cert["rows"]])
    assert runs[0] == runs[1]


def test_synchronous_off_fails_the_power_loss_row_with_a_reproduction(tmp_path: Path,
                                                                      capsys) -> None:
    code = main(["certify", "sqlite?synchronous=OFF", "--scenario", "adr032-1", "--seed", "42",
                 "--out", str(tmp_path), "--quiet"])
    capsys.readouterr()
    assert code == 1
    [row] = _certificate(tmp_path)["rows"]
    assert row["verdict"] == "fail" and "replayed: failed again" in row["details"]
    command = shlex.split(row["reproduce"])
    assert command[:2] == ["crashgate", "powerloss"]
    again = subprocess.run([sys.executable, "-m", "crashgate.harness.cli", *command[1:]],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "VIOLATION" in again.stdout


def test_usage_errors_exit_3(tmp_path: Path, capsys) -> None:
    assert main(["certify", "sqlit", "--out", str(tmp_path)]) == 3
    assert "Did you mean 'sqlite'" in capsys.readouterr().err
    assert main(["certify", "json", "--scenario", "adr032-9", "--out", str(tmp_path)]) == 3
    assert main(["certify", "sqlite?journal_mode=WALL", "--out", str(tmp_path)]) == 3
    assert not list(tmp_path.glob("*/*/certificate.json"))


def test_metadata_before_rvf_is_caught_by_the_crash_ordering_rows(tmp_path: Path,
                                                                   capsys) -> None:
    code = main(["certify", "defects_crashpoints:open_metadata_first_with_failpoints",
                 "--scenario", "adr032-2", "--scenario", "inv-2", "--seed", "1", "--out",
                 str(tmp_path), "--quiet"])
    capsys.readouterr()
    assert code == 1
    rows = {r["key"]: r for r in _certificate(tmp_path)["rows"]}
    assert rows["adr032-2"]["verdict"] == "fail", rows["adr032-2"]
    assert rows["inv-2"]["verdict"] == "fail", rows["inv-2"]
    # the first crash between the early metadata and the vectors shows a record no op wrote
    assert "torn or garbage data visible" in rows["adr032-2"]["summary"]


def _cert_with(evidence: Evidence) -> Certificate:
    row = SimpleNamespace(key="adr032-1", table="ADR-032 Failure Modes to Test", number="1",
                          scenario="Power loss during ingest", expected="no torn commit")
    decl = Declaration(Durability.POWER_LOSS, frozenset({Capability.KV}))
    cert = Certificate("x", "run", 1, "quick", decl, "now", command="crashgate certify x")
    cert.results.append(RowResult(row, evidence, 1, 0.1))
    return cert


def test_long_failure_texts_keep_the_table_well_formed(tmp_path: Path) -> None:
    long = "a | b `c` " + "very long failure text " * 40 + "\nsecond line | with a pipe"
    cert = _cert_with(Evidence(Verdict.FAIL, long, {"crash_states": 3},
                               details=("detail | one",), reproduce="crashgate powerloss x"))
    md = render_markdown(cert)
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 3, table   # header, rule, one row: the row did not break
    cells = [line.replace("\\|", "").count("|") for line in table]
    assert len(set(cells)) == 1, table
    assert len(table[2]) < 600, table[2]   # the cell is short; the whole text is below
    details = md[md.index("## Details"):]
    assert "very long failure text " * 40 in details and "crashgate powerloss x" in details


def test_certificate_json_is_valid_json_even_with_non_finite_figures(tmp_path: Path) -> None:
    cert = _cert_with(Evidence(Verdict.PASS, "ok", {"rate": math.nan, "ratio": math.inf,
                                                    "nested": {"low": -math.inf}}))
    folder = write_certificate(cert, tmp_path, "x")

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in certificate.json")

    doc = json.loads((folder / "certificate.json").read_text(), parse_constant=refuse)
    assert doc["rows"][0]["measured"] == {"rate": "nan", "ratio": "inf",
                                          "nested": {"low": "-inf"}}


def test_a_rows_own_output_goes_into_its_details_not_the_console(tmp_path: Path,
                                                                 capsys) -> None:
    code = main(["certify", "rvlite", "--scenario", "inv-4", "--budget", "quick", "--seed", "1",
                 "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured
    assert "metadata epoch" not in captured.err + captured.out
    [row] = _certificate(tmp_path)["rows"]
    assert any(d.startswith("output of the row's procedure: warning: rvlite")
               and "metadata epoch" in d for d in row["details"]), row["details"]
    # each result once: the summary in the table at the end, not also in the progress lines
    assert captured.out.count(row["summary"]) == 1 and row["summary"] not in captured.err


def test_a_recall_promise_is_checked_and_written_into_the_certificate() -> None:
    from crashgate.backends import Recall
    from crashgate.harness.certify import _declaration_problem
    decl = Declaration(Durability.POWER_LOSS, frozenset({Capability.VECTOR}),
                       recall=Recall(10, 0.95))
    assert _declaration_problem(decl) is None
    bad = Declaration(Durability.POWER_LOSS, frozenset({Capability.VECTOR}),
                      recall=0.95)
    assert "recall is 0.95, of the wrong type" in str(_declaration_problem(bad))
    cert = Certificate("x", "run", 1, "quick", decl, "now", command="crashgate certify x")
    assert cert.to_json()["declaration"]["recall"] == {"k": 10, "at_least": 0.95}
