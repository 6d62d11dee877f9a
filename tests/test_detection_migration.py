"""ADR-032 row 4 with a migrator of one's own (``--migrator``): crashed at batch boundaries and
inside batches, rerun, checked exactly-once; rerun after the source changed with the same size.
The defect migrators of ``defects_migration`` are caught at the standard budget with a
reproduction that fails again; crashgate's own migrator passes for ``rvf`` and ``rvlite``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crashgate.backends import (
    MigratorMissing,
    UnknownMigrator,
    os_env,
    resolve,
    resolve_migrator,
)
from crashgate.harness.cli import main
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.procedures_migration import check_migration

TESTS = str(Path(__file__).parent)


def certify_row(tmp_path: Path, backend: str, *extra: str) -> tuple[int, dict[str, object]]:
    out = tmp_path / "reports"
    code = main(["certify", backend, "--scenario", "adr032-4", "--budget", "standard",
                 "--seed", "42", "--out", str(out), "--quiet", *extra])
    (cert,) = out.glob("*/*/certificate.json")
    row: dict[str, object] = json.loads(cert.read_text())["rows"][0]
    return code, row


def assert_reproduces(row: dict[str, object]) -> None:
    """The row's reproduction is a file beside the certificate that fails again on its own."""
    command = str(row["reproduce"])
    assert command.startswith("python "), command
    script = command.removeprefix("python ")
    assert Path(script).is_file(), script
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}   # the script says where
    done = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=120,
                          env=env, cwd="/", check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("fail:")


def test_progress_written_before_its_batch_is_caught_by_a_crash_inside_a_batch(
        tmp_path: Path) -> None:
    code, row = certify_row(tmp_path, "rvf", "--migrator", "defects_migration:progress_first")
    assert code == 1 and row["verdict"] == "fail", row
    summary = str(row["summary"])
    assert "process crash" in summary and "inside batch" in summary, summary
    assert "records lost" in summary
    failing = row["measured"]["failing"]  # type: ignore[index]
    assert failing["kind"] == "crash"
    assert_reproduces(row)


def test_already_migrated_judged_by_size_is_caught_when_the_source_changes(
        tmp_path: Path) -> None:
    code, row = certify_row(tmp_path, "rvf", "--migrator", "defects_migration:size_check")
    assert code == 1 and row["verdict"] == "fail", row
    summary = str(row["summary"])
    assert "the source changed with the same size" in summary, summary
    assert "after a rerun that exited 0 (0 written" in summary
    # it survives every crash: only the changed source shows the defect
    measured = row["measured"]
    assert measured["crash_states"] > 0  # type: ignore[index, operator]
    assert measured["failing"] == {"kind": "changed-source"}  # type: ignore[index]
    assert_reproduces(row)


@pytest.mark.parametrize("migrator", ["defects_migration:progress_first",
                                      "defects_migration:size_check"])
def test_the_defect_migrators_work_when_nothing_goes_wrong(migrator: str) -> None:
    ev = check_migration(resolve("rvf"), migrator=migrator, seed=3, records=50, batch_size=16,
                         process_states=0, power_states=0, only={"kind": "first-run"})
    assert ev.verdict is Verdict.PASS, ev


@pytest.mark.parametrize("backend", ["rvf", "rvlite"])
def test_crashgate_s_own_migrator_passes_for_rvf_stores(tmp_path: Path, backend: str) -> None:
    code, row = certify_row(tmp_path, backend)
    assert code == 0 and row["verdict"] == "pass", row
    measured = row["measured"]
    assert isinstance(measured, dict)
    assert measured["migrator"] == "rvf"
    assert measured["crash_states_process"] > 0 and measured["crash_states"] > \
        measured["crash_states_process"]   # power loss states too
    assert measured["source_changes"] == 1 and measured["cli_runs"] == 2
    assert "refused it (exit 1" in str(row["summary"])   # a different source: refused loudly


@pytest.mark.parametrize("backend", ["memory", "json", "sqlite"])
def test_row_4_is_na_without_a_migrator_for_stores_not_in_rvf(tmp_path: Path,
                                                             backend: str) -> None:
    out = tmp_path / "reports"
    code = main(["certify", backend, "--scenario", "adr032-4", "--seed", "1", "--out",
                 str(out), "--quiet"])
    (cert,) = out.glob("*/*/certificate.json")
    row = json.loads(cert.read_text())["rows"][0]
    assert code == 2 and row["verdict"] == "n/a", row   # nothing certified: unknown overall
    assert "--migrator" in row["summary"]


def test_a_migrator_writing_a_format_the_backend_cannot_read_fails(tmp_path: Path) -> None:
    code, row = certify_row(tmp_path, "sqlite", "--migrator", "rvf")
    assert code == 1 and "sqlite cannot open" in str(row["summary"]), row


@pytest.mark.parametrize(("name", "hint"), [
    ("rvff", "Did you mean 'rvf'?"),
    ("defects_migration:progres_first", "Did you mean 'progress_first'?"),
    ("no_such_module_for_crashgate:migrate", "Run: pip install no_such_module_for_crashgate"),
])
def test_bad_migrator_names_are_usage_errors(tmp_path: Path, capsys, name: str,
                                             hint: str) -> None:
    code = main(["certify", "rvf", "--migrator", name, "--scenario", "adr032-4", "--out",
                 str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert hint in err[-1] and err[-1].startswith("crashgate: ")   # one line
    assert not list(tmp_path.iterdir())


def test_migrator_names_resolve_like_backend_names() -> None:
    spec = resolve_migrator("rvf?metric=cosine")
    assert spec.is_default and spec.label == "rvf?metric=cosine"
    assert not resolve_migrator("defects_migration:size_check").is_default
    with pytest.raises(UnknownMigrator):
        resolve_migrator("?x=1")
    with pytest.raises(MigratorMissing):
        resolve_migrator("no_such_module_for_crashgate:m").load()


def test_the_default_migrator_through_the_contract(tmp_path: Path) -> None:
    src = tmp_path / "v.json"
    src.write_text(json.dumps([{"id": i, "vector": [i, 1.0]} for i in range(5)]))
    named = resolve_migrator("rvf")
    first = named.run(str(src), str(tmp_path / "out.rvf"), os_env(), batch_size=2)
    assert (first.read, first.written, first.skipped, first.status) == (5, 5, 0, 0)
    again = named.run(str(src), str(tmp_path / "out.rvf"), os_env(), batch_size=2)
    assert (again.written, again.skipped, again.ok) == (0, 5, True)


def test_the_pytest_plugin_carries_the_migrator(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": TESTS}
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir",
            str(tmp_path), "--crashgate-backend", "rvf", "--crashgate-scenario", "adr032-4",
            str(tmp_path)]
    done = subprocess.run([*base, "--crashgate-migrator", "defects_migration:size_check"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the source changed with the same size" in done.stdout
    bad = subprocess.run([*base, "--crashgate-migrator", "rvff"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path, env=env)
    assert bad.returncode == 4 and "Did you mean 'rvf'" in bad.stdout + bad.stderr
