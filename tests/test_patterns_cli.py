"""``crashgate patterns migrate|status|rollback`` over real files: exit codes, what each
command writes and removes, one-line usage errors, and ``--pattern-migrator`` on
``crashgate certify``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from crashgate.backends import os_env, resolve
from crashgate.harness.cli import main
from crashgate.harness.patterns import generate_patterns
from crashgate.harness.provenance import regenerate_command

DIM = 8


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "agentic-qe.db"
    store = resolve("agentdb").open(str(path), os_env())
    store.upsert(generate_patterns(120, DIM, 4))
    store.close()
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(["patterns", *args])
    except SystemExit as exc:   # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_migrate_status_rerun_rollback(source: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "patterns.rvf"
    paths = ("--source", str(source), "--target", str(target))
    before = files(tmp_path)
    code, out, _ = run(capsys, "migrate", *paths, "--dimension", str(DIM), "--dry-run")
    assert code == 0 and "nothing was written" in out and files(tmp_path) == before
    code, out, err = run(capsys, "migrate", *paths, "--dimension", str(DIM), "--batch-size",
                         "25", "--verbose")
    assert code == 0 and "migrated 120 patterns" in out, out + err
    assert "batch 5/5" in err   # --verbose: a progress line per batch
    backups = list(tmp_path.glob("agentic-qe.backup-*.db"))
    assert len(backups) == 1 and f"backup: {backups[0]}" in out
    code, out, _ = run(capsys, "status", *paths)
    assert code == 0 and "coverage: complete" in out
    store = resolve("rvf").open(str(target), os_env())
    gone = sorted(store.ids())[:2]
    store.remove(gone)
    store.close()
    code, out, _ = run(capsys, "status", *paths)
    assert code == 1 and "missing from the target: 2" in out and str(gone[0]) in out
    code, out, _ = run(capsys, "migrate", *paths, "--dimension", str(DIM))
    assert code == 0 and "migrated 2 patterns, 118 already there" in out
    code, out, _ = run(capsys, "rollback", *paths)
    assert code == 0 and f"restored {source} from {backups[0]}" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["agentic-qe.db", backups[0].name])
    code, _, err = run(capsys, "rollback", *paths)
    assert code == 1 and "nothing to roll back" in err


def test_a_pattern_of_another_dimension_is_named_and_nothing_written(
        source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = files(tmp_path)
    code, _, err = run(capsys, "migrate", "--source", str(source), "--target",
                       str(tmp_path / "t.rvf"))   # default --dimension 384
    assert code == 1 and "has an embedding of dimension 8, not 384" in err
    assert "pattern " in err and files(tmp_path) == before


@pytest.mark.parametrize(("args", "words"), [
    (("migrate", "--migrator", "agentdb-to-rfv"), "Did you mean 'agentdb-to-rvf'"),
    (("migrate", "--target-backend", "rfv"), "Did you mean 'rvf'"),
    (("migrate", "--batch-size", "0"), "1 or more"),
    (("status", "--source", "/nonexistent/agentic-qe.db"), "no such file"),
])
def test_usage_errors_are_one_line_exit_3(args: tuple[str, ...], words: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *args)
    assert code == 3 and words in err and len(err.strip().splitlines()) == 1, err


def test_help_answers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["patterns", "migrate", "--help"])
    out = capsys.readouterr().out
    for option in ("--source", "--target", "--target-backend", "--migrator", "--dry-run",
                   "--batch-size", "--no-backup", "--dimension", "--verbose",
                   "backup API", "Exit 0"):
        assert option in out


def test_certify_takes_a_pattern_migrator(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["certify", "rvf", "--scenario", "patterns-dry-run", "--budget", "quick",
                 "--seed", "3", "--quiet", "--out", str(tmp_path),
                 "--pattern-migrator", "defects_patterns:writes_in_dry_run"])
    out = capsys.readouterr().out
    assert code == 1 and "writes_in_dry_run" in out and "a dry run must write nothing" in out
    code = main(["certify", "rvf", "--scenario", "patterns-dry-run", "--quiet", "--out",
                 str(tmp_path), "--pattern-migrator", "nosuch"])
    assert code == 3 and "unknown pattern migrator 'nosuch'" in capsys.readouterr().err
    assert "--pattern-migrator m:f" in regenerate_command("rvf", seed=1, budget="quick",
                                                          pattern_migrator="m:f")
