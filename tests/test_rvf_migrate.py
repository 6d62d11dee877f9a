"""``crashgate rvf migrate`` / ``rebuild``: dry run, verify, idempotent rerun, a crash half-way
then a rerun, refusals, and the source left byte for byte as it was."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import pytest

from crashgate.backends import SimulatedCrash, VectorRecord, os_env
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.reference.indexeddb import IndexedDB
from crashgate.reference.rvf.store import open_rvf
from crashgate.reference.rvf_migrate import FAILPOINT, PROGRESS_PREFIX, migrate, migrator
from crashgate.reference.rvlite import cache_path, open_rvlite
from crashgate.reference.rvlite_cli import add_migrate_commands, add_parser


def records(n: int, dim: int = 3) -> list[dict[str, object]]:
    return [{"id": 10 * i + 7, "vector": [i / 3, -i * 1.25, 1e-7 * i][:dim],
             "metadata": {"tag": "even" if i % 2 == 0 else "odd", "i": i}} for i in range(n)]


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="crashgate rvf")
    add_migrate_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.fixture
def json_source(tmp_path: Path) -> Path:
    src = tmp_path / "vectors.json"
    src.write_text(json.dumps(records(25)))
    return src


def dest_state(dest: Path) -> tuple[int, int, list[tuple[str, bytes]]]:
    rvf = open_rvf(str(dest), os_env(), readonly="true", lock="false")
    try:
        return rvf.epoch, rvf.count(), rvf.scan(PROGRESS_PREFIX)
    finally:
        rvf.close()


def test_migrate_verify_and_rerun_is_a_no_op(tmp_path: Path, json_source: Path, capsys) -> None:
    before = json_source.read_bytes()
    dest = tmp_path / "out.rvf"
    assert cli("migrate", "--from", str(json_source), "--to", str(dest), "--batch-size", "10",
               "--verify") == 0
    assert "verify: ok" in capsys.readouterr().out
    epoch, count, progress = dest_state(dest)
    assert (epoch, count, len(progress)) == (3, 25, 1)   # 3 batches, one commit each
    file_bytes = dest.read_bytes()
    assert cli("migrate", "--from", str(json_source), "--to", str(dest), "--verify") == 0
    assert "already migrated: nothing to do" in capsys.readouterr().out
    assert dest.read_bytes() == file_bytes        # nothing written, not even a commit
    assert json_source.read_bytes() == before
    rvf = open_rvf(str(dest), os_env(), readonly="true", lock="false")
    got = {r.id: r for r in rvf.fetch(range(300))}
    rvf.close()
    for want in records(25):
        rec = got[int(want["id"])]  # type: ignore[call-overload]
        assert list(rec.vector) == want["vector"] and dict(rec.metadata) == want["metadata"]


def test_dry_run_writes_nothing(tmp_path: Path, json_source: Path, capsys) -> None:
    dest = tmp_path / "out.rvf"
    assert cli("migrate", "--from", str(json_source), "--to", str(dest), "--dry-run",
               "--batch-size", "10") == 0
    assert "would migrate batches 1..3 of 3" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.json"]
    report = migrate(str(json_source), str(dest), os_env(), batch_size=10)
    assert report.written == 3
    listing, file_bytes = sorted(p.name for p in tmp_path.iterdir()), dest.read_bytes()
    again = migrate(str(json_source), str(dest), os_env(), dry_run=True, verify=True)
    assert again.already_done == again.batches == 3 and again.verified
    assert sorted(p.name for p in tmp_path.iterdir()) == listing   # no lock file either
    assert dest.read_bytes() == file_bytes


def test_crash_half_way_then_rerun_completes_without_duplicates(tmp_path: Path,
                                                                json_source: Path) -> None:
    before = json_source.read_bytes()
    dest = tmp_path / "out.rvf"
    fps = ArmedFailpoints()
    fps.arm(FAILPOINT, after_hits=1)   # crash right after the 2nd of 5 batches
    env = dataclasses.replace(os_env(), failpoints=fps)
    with pytest.raises(SimulatedCrash):
        migrate(str(json_source), str(dest), env, batch_size=5)
    epoch, count, progress = dest_state(dest)
    assert (epoch, count) == (2, 10)
    assert json.loads(progress[0][1])["done"] == 2
    # the crashed process is dead: its lock is recoverable (this test process is still alive,
    # so do by hand what the recovery does)
    os.remove(f"{dest}.lock")
    report = migrate(str(json_source), str(dest), os_env(), batch_size=50, verify=True)
    assert (report.already_done, report.written, report.batches) == (2, 3, 5)  # keeps size 5
    assert report.verified, report.problems
    epoch, count, progress = dest_state(dest)
    assert (epoch, count, len(progress)) == (5, 25, 1)
    assert migrate(str(json_source), str(dest), os_env()).written == 0
    assert json_source.read_bytes() == before


def test_the_migrator_contract_counts_records_and_maps_refusals_to_exit_codes(
        tmp_path: Path, json_source: Path) -> None:
    dest = tmp_path / "out.rvf"
    fps = ArmedFailpoints()
    fps.arm(FAILPOINT, after_hits=1)   # crash after 2 of 3 batches
    with pytest.raises(SimulatedCrash):
        migrator(str(json_source), str(dest), dataclasses.replace(os_env(), failpoints=fps),
                 batch_size=10)
    os.remove(f"{dest}.lock")   # the crashed "process" is this one: recover by hand
    done = migrator(str(json_source), str(dest), os_env(), batch_size=10)
    assert (done.read, done.written, done.skipped, done.status) == (25, 5, 20, 0)
    again = migrator(str(json_source), str(dest), os_env(), batch_size=10)
    assert (again.written, again.skipped, again.ok) == (0, 25, True)
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(records(24)))
    refused = migrator(str(changed), str(dest), os_env(), batch_size=10)
    assert refused.status == 1 and "different source" in refused.message
    missing = migrator(str(tmp_path / "missing.json"), str(dest), os_env(), batch_size=10)
    assert missing.status == 3 and "does not exist" in missing.message


def test_indexeddb_source_is_read_and_never_modified(tmp_path: Path) -> None:
    src = tmp_path / "rvlite.idb"
    db = IndexedDB(str(src), os_env(), stores=["vectors", "other"])
    with db.transaction("vectors", "readwrite") as t:
        for rec in records(12):
            t.put("vectors", int(rec["id"]), rec)  # type: ignore[call-overload]
    db.close()
    with src.open("ab") as f:
        f.write(b"\x40\x00\x00")   # a torn tail a crash left: a reader must not truncate it
    before = src.read_bytes()
    dest = tmp_path / "out.rvf"
    assert cli("migrate", "--from", str(src), "--to", str(dest), "--verify") == 0
    assert src.read_bytes() == before
    assert dest_state(dest)[1] == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.rvf", "rvlite.idb"]


def test_verify_finds_differences_both_ways(tmp_path: Path, json_source: Path, capsys) -> None:
    dest = tmp_path / "out.rvf"
    migrate(str(json_source), str(dest), os_env())
    rvf = open_rvf(str(dest), os_env())
    rvf.upsert([VectorRecord.of(7, [0.0, 0.0, 1e-5], {"tag": "even", "i": 0}),
                VectorRecord.of(999, [1.0, 1.0, 1.0])])
    rvf.close()
    assert cli("migrate", "--from", str(json_source), "--to", str(dest), "--verify") == 1
    out = capsys.readouterr().out
    assert "id 7: vector differs by more than 1e-06" in out
    assert "holds 1 records the source lacks (ids [999])" in out


def test_refusals_and_bad_sources(tmp_path: Path, json_source: Path, capsys) -> None:
    foreign = tmp_path / "foreign.rvf"
    rvf = open_rvf(str(foreign), os_env())
    rvf.upsert([VectorRecord.of(1, [1.0, 2.0, 3.0])])
    rvf.close()
    assert cli("migrate", "--from", str(json_source), "--to", str(foreign)) == 1
    assert "already holds 1 vectors and they did not come from it" in capsys.readouterr().err
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(records(26)))
    dest = tmp_path / "out.rvf"
    migrate(str(json_source), str(dest), os_env())
    assert cli("migrate", "--from", str(changed), "--to", str(dest)) == 1
    assert "different source or an earlier version" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": 1, "vector": [1.0]}, {"id": "x", "vector": [2.0]}]))
    assert cli("migrate", "--from", str(bad), "--to", str(tmp_path / "b.rvf")) == 3
    assert "record 1" in capsys.readouterr().err
    assert cli("migrate", "--from", str(tmp_path / "missing.json"), "--to", str(dest)) == 3
    assert not (tmp_path / "b.rvf").exists()


@pytest.mark.parametrize("text", [
    '[{"id": 1, "vector": [NaN, 1.0]}]',          # non-finite: was an untyped ValueError
    '[{"id": 1, "vector": [Infinity]}]',
    '[{"id": Infinity, "vector": [1.0]}]',         # was an untyped OverflowError
    "[" * 100_000,                                 # was an untyped RecursionError
    '[{"id": 1, "vector": 5}]',
])
def test_every_bad_json_source_is_a_bad_source_naming_it(tmp_path: Path, text: str,
                                                         capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    assert cli("migrate", "--from", str(bad), "--to", str(tmp_path / "b.rvf")) == 3
    assert str(bad) in capsys.readouterr().err
    assert not (tmp_path / "b.rvf").exists()


def test_rebuild_command(tmp_path: Path, capsys) -> None:
    path = str(tmp_path / "store.rvf")
    store = open_rvlite(path, os_env())
    store.upsert([VectorRecord.of(i, [float(i), 1.0], {"i": i}) for i in range(4)])
    store.close()
    os.remove(cache_path(path))
    assert cli("rebuild", path) == 0
    assert "4 records, epoch 1 (reconciliation on open: rebuilt)" in capsys.readouterr().out
    assert cli("rebuild", str(tmp_path / "nothing.rvf")) == 3


def test_commands_join_the_rvf_group(tmp_path: Path, json_source: Path) -> None:
    from crashgate.reference.rvf import cli as rvf_cli

    parser = argparse.ArgumentParser(prog="crashgate")
    sub = parser.add_subparsers()
    rvf_cli.add_parser(sub)
    add_parser(sub)
    args = parser.parse_args(["rvf", "migrate", "--from", str(json_source), "--to",
                              str(tmp_path / "x.rvf"), "--dry-run"])
    assert args.func(args) == 0
    args = parser.parse_args(["rvf", "status", str(tmp_path / "x.rvf")])   # still there
    assert args.func(args) == 3
