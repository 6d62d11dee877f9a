"""Issue 13: ARCH-001's phase, schema and round-trip rows (``scenarios/procedures_arch*.py``)
pass on every phase adapter they apply to and are n/a, with the reason, on the others; the
adapters with one defect each (``tests/defects_arch.py``) are caught by their row with a
reproduction that reproduces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crashgate.backends import canonical_mission, resolve
from crashgate.harness.cli import main
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.procedures_arch import (
    check_discrepancies,
    check_roundtrip,
    check_schema_newer,
    check_sqlite_fails,
)

ROWS = ("arch001-sqlite-fails", "arch001-discrepancies", "arch001-schema-newer",
        "arch001-schema-migration", "arch001-integrity-check", "arch001-roundtrip")
ONE_PHASE = {"arch001-sqlite-fails": 1, "arch001-discrepancies": 2}
"""Rows about one phase's behaviour: n/a on the other phases' adapters."""


def _certify(tmp_path: Path, backend: str, *scenarios: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / backend.replace(":", "_")
    args = ["certify", backend, "--budget", "quick", "--seed", "3", "--out", str(out), "--quiet"]
    for s in scenarios:
        args += ["--scenario", s]
    code = main(args)
    [path] = out.glob("*/*/certificate.json")
    return code, {row["key"]: row for row in json.loads(path.read_text())["rows"]}


@pytest.mark.parametrize("phase", [1, 2, 3, 4])
def test_every_phase_adapter_passes_the_rows_that_apply(tmp_path: Path, capsys,
                                                         phase: int) -> None:
    code, rows = _certify(tmp_path, f"arch-phase{phase}", *ROWS)
    capsys.readouterr()
    assert sorted(rows) == sorted(ROWS)
    for key, row in rows.items():
        only = ONE_PHASE.get(key)
        if only is not None and only != phase:
            assert row["verdict"] == "n/a", (key, row)
            assert f"phase {only}'s row" in row["summary"], (key, row["summary"])
            continue
        assert row["verdict"] == "pass", (key, row["summary"], row["details"])
        assert row["measured"], (key, row)
    assert code == 0
    if phase == 1:
        assert rows["arch001-sqlite-fails"]["measured"]["io_errors"] > 0
    if phase == 2:
        assert rows["arch001-discrepancies"]["measured"]["io_errors"] > 0
    assert rows["arch001-schema-migration"]["measured"]["crashes"] >= 24
    assert rows["arch001-roundtrip"]["measured"]["examples"] >= 15


@pytest.mark.parametrize(("backend", "row", "words"), [
    ("defects_arch:open_unrecorded_fallback", "arch001-discrepancies",
     "was served without counting it in fallbacks"),
    ("defects_arch:open_upgrading_reader", "arch001-schema-newer",
     "was opened: a newer schema must be refused"),
    ("defects_arch:open_bumps_version_first", "arch001-schema-migration", "did not reopen"),
    ("defects_arch:open_skips_integrity_check", "arch001-integrity-check",
     "opened instead of raising CorruptStore"),
    ("defects_arch:open_loses_empty_arrays", "arch001-roundtrip",
     "did not survive the round trip"),
])
def test_each_defect_is_caught_by_its_row_with_a_reproduction(tmp_path: Path, capsys,
                                                              backend: str, row: str,
                                                              words: str) -> None:
    code, rows = _certify(tmp_path, backend, row)
    capsys.readouterr()
    got = rows[row]
    assert code == 1 and got["verdict"] == "fail", got
    assert words in got["summary"], got["summary"]
    script = got["reproduce"].removeprefix("python ")
    ran = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 1 and words in ran.stdout, (ran.stdout, ran.stderr)


def test_a_newer_schema_is_refused_unchanged_whether_or_not_its_commit_was_checkpointed(
        tmp_path: Path) -> None:
    spec = resolve("arch-phase3")
    for in_wal in (False, True):
        ev = check_schema_newer(spec, seed=1, root=str(tmp_path), in_wal=in_wal)
        assert ev.verdict is Verdict.PASS, ev.summary
        assert ("still in its WAL" in ev.summary) == in_wal


def test_the_round_trip_shrinks_a_lost_empty_array_to_a_small_document() -> None:
    ev = check_roundtrip(resolve("defects_arch:open_loses_empty_arrays"), seed=7, examples=30)
    assert ev.verdict is Verdict.FAIL, ev.summary
    doc = json.loads(ev.attachments["roundtrip_document.json"])
    assert [] in doc.values() and len(doc) == 2, doc   # mission_id and one empty array
    assert ev.details == (f"shrunk document: {canonical_mission(doc).decode()}",)
    again = check_roundtrip(resolve("arch-phase1"), seed=7, examples=1, doc=doc)
    assert again.verdict is Verdict.PASS and again.measured["examples"] == 1


def test_stores_without_phases_or_missions_are_not_applicable() -> None:
    sqlite = resolve("sqlite")
    for ev in (check_sqlite_fails(sqlite, seed=1, missions=1, keys=1),
               check_discrepancies(sqlite, seed=1),
               check_roundtrip(sqlite, seed=1, examples=1)):
        assert ev.verdict is Verdict.NA and "mission documents" in ev.summary, ev.summary
