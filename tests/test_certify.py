"""``crashgate certify``: the issue's acceptance lines, the certificate's files, exit codes, and
a hybrid with a deliberate crash-ordering defect caught by the right rows."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from crashgate.harness.cli import main


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
        assert cert["schema_version"] == 1 and cert["verdict"] == "pass"
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
