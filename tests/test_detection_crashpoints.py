"""Crashes between any two writes (issue 7, points 1 and 6): the defect stores of
``defects_crashpoints`` are caught at the standard budget with a reproduction that fails again,
and the reference stores pass the rows with every crash model counted."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crashgate.harness.cli import main

MODELS = ["process", "prefix", "subset", "torn", "garbage"]


def _certify(tmp_path: Path, backend: str, *rows: str, seed: int = 42) -> tuple[int, dict]:
    args = ["certify", backend, "--budget", "standard", "--seed", str(seed), "--out",
            str(tmp_path), "--quiet"]
    for row in rows:
        args += ["--scenario", row]
    code = main(args)
    [path] = tmp_path.glob("*/*/certificate.json")
    return code, json.loads(path.read_text())


def _rows(cert: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in cert["rows"]}


def test_a_file_rewritten_in_place_is_caught_between_its_truncate_and_its_write(
        tmp_path: Path, capsys) -> None:
    code, cert = _certify(tmp_path, "defects_crashpoints:open_in_place", "adr032-1")
    capsys.readouterr()
    assert code == 1
    row = _rows(cert)["adr032-1"]
    assert row["verdict"] == "fail", row
    assert "acknowledged write lost" in row["summary"]
    # the first violation is a process crash inside an op: between the truncate and the write
    assert any("first: acknowledged write lost: process crash at op" in d
               for d in row["details"]), row["details"]
    assert "replayed: failed again" in row["details"]
    counts = row["measured"]["states_by_model"]
    assert list(counts) == MODELS and all(counts.values()), counts
    md = next(tmp_path.glob("*/*/certificate.md")).read_text()
    assert "- #1 crash states by model: process " in md
    command = shlex.split(row["reproduce"])
    command = command[next(i for i, a in enumerate(command) if "=" not in a):]  # PYTHONPATH=
    assert command[:2] == ["crashgate", "powerloss"] and ":process:" in command[-1]
    assert main(command[1:]) == 1
    assert "VIOLATION: acknowledged write lost" in capsys.readouterr().out


def test_metadata_before_vectors_without_failpoints_is_caught_by_row_2_and_invariant_2(
        tmp_path: Path, capsys) -> None:
    code, cert = _certify(tmp_path, "defects_crashpoints:open_metadata_first", "adr032-2",
                          "inv-2")
    capsys.readouterr()
    assert code == 1
    assert cert["declaration"]["failpoints"] == []
    rows = _rows(cert)
    for key in ("adr032-2", "inv-2"):
        row = rows[key]
        assert row["verdict"] == "fail", row
        assert "crash inside a write" in row["summary"]
        assert "torn or garbage data visible" in row["summary"]   # new metadata, old vector
        assert "replayed: failed again" in row["details"]
        command = shlex.split(row["reproduce"])
        assert command[0] == "python" and Path(command[1]).is_file(), command
        # the reproduction sits beside the certificate and fails again on its own
        assert Path(command[1]).parent == next(tmp_path.glob("*/*"))
        again = subprocess.run([sys.executable, command[1]], capture_output=True, text=True,
                               timeout=120)
        assert again.returncode == 1, again.stdout + again.stderr
        assert again.stdout.startswith("fail: ")


def test_a_store_that_is_not_a_hybrid_stays_not_applicable(tmp_path: Path, capsys) -> None:
    code, cert = _certify(tmp_path, "defects_crashpoints:open_in_place", "adr032-2", "inv-2")
    capsys.readouterr()
    assert code == 2   # nothing passed: nothing certified
    for row in cert["rows"]:
        assert row["verdict"] == "n/a" and "not a two-store hybrid" in row["summary"], row


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["json", "sqlite", "rvf", "rvlite"])
def test_reference_stores_pass_the_crash_rows_with_every_model_counted(
        tmp_path: Path, capsys, backend: str) -> None:
    code, cert = _certify(tmp_path, backend, "adr032-1", "adr032-2", "inv-2")
    capsys.readouterr()
    assert code == 0, cert
    rows = _rows(cert)
    for row in rows.values():
        assert row["verdict"] in ("pass", "n/a"), row
    counts = rows["adr032-1"]["measured"]["states_by_model"]
    assert list(counts) == MODELS
    for model, n in counts.items():
        if n == 0:
            # json fsyncs between any two of its writes: no fsync window holds two ops whose
            # reordering shows an image the prefix model does not; the row says so
            assert (backend, model) == ("json", "subset"), counts
            assert any(d.startswith("subset: no crash state (each reordering")
                       for d in rows["adr032-1"]["details"])
    md = next(tmp_path.glob("*/*/certificate.md")).read_text()
    shown = " · ".join(f"{m} **0**" if counts[m] == 0 else f"{m} {counts[m]}" for m in MODELS)
    assert f"- #1 crash states by model: {shown}" in md
    if backend in ("rvf", "rvlite"):   # two-store hybrids and rvf declare an epoch
        inside = rows["adr032-2"]["measured"]["states_by_model"]
        assert all(inside[m] > 0 for m in MODELS), inside
