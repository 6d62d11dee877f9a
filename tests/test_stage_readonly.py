"""Readers of a stage adapter (``readonly=true``): beside a writer in another OS process they see
what was committed before they opened; they refuse every write, transition, repair, escape
hatch, backup and restore and leave every file as it was; they never create an adapter; and
invariant 1 now checks readers for the stage adapters."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procedure_helpers import context

from crashgate.backends import QValue, VectorRecord, os_env, resolve
from crashgate.harness.faults.probe import accepts_readonly
from crashgate.harness.faults.writers import DuplicateWriter
from crashgate.harness.verdict import Verdict
from crashgate.reference.sqlite_store import open_sqlite
from crashgate.reference.stages import StageAdapter, open_stage
from crashgate.reference.stages.control import StageControl, StageRecord
from crashgate.scenarios.procedures_writers import single_writer_rule

STAGES = range(5)
TIMEOUT = 60.0
"""Seconds a child may take to start (cold imports of numpy and apsw on a busy 2-core box)."""


def _filled(path: Path, stage: int) -> StageAdapter:
    """A writer of a new adapter in ``stage`` holding a key, a vector, a Q-value and a plan."""
    w = open_stage(str(path), os_env(), stage)
    w.put("k", b"v")
    w.upsert([VectorRecord.of(1, [1.0, 0.0], {"t": "a"})])
    w.q_value_update("s", "a", 2.0)
    w.goap_store("p", {"steps": ["x"]})
    return w


def _files(path: Path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in sorted(os.listdir(path))
            if (path / name).is_file()}


@pytest.mark.parametrize("stage", STAGES)
def test_a_reader_in_another_process_sees_what_was_committed_before_it_opened(
        stage: int, tmp_path: Path) -> None:
    path = tmp_path / "adapter"
    _filled(path, stage).close()   # the directory exists; the writer process reopens it
    with DuplicateWriter(f"stage{stage}", str(path)) as dw:
        a = dw.writer("A")
        assert a.opened().kind == "READY", a.stderr_tail
        assert a.wait_acks(5, TIMEOUT), a.stderr_tail
        before = len(a.acks())
        r = dw.reader("R", options={"readonly": "true"})
        opened = r.opened()
        assert opened.kind == "READY", (opened, r.stderr_tail)
        line = r.wait_for(("READ ",), TIMEOUT)   # not READY
        assert line is not None, r.stderr_tail
        seen = int(line.split()[1])
        after = len(a.acks())
        # the writer still runs: the reader read beside it, without its writer lock
        assert a.proc.poll() is None
        assert a.stop(), a.stderr_tail
    # its scan counts the key "k" and A's puts: at least those acknowledged before it opened,
    # at most those acknowledged once it had read (plus one committed, not yet acknowledged)
    assert 1 + before <= seen <= 1 + after + 1, (before, seen, after)


@pytest.mark.parametrize("stage", STAGES)
def test_a_reader_reads_as_the_stage_reads(stage: int, tmp_path: Path) -> None:
    path = tmp_path / "adapter"
    w = _filled(path, stage)
    r = open_stage(str(path), os_env(), 0, readonly="true")   # the recorded stage wins
    try:
        assert r.readonly and r.stage == stage
        assert r.declaration == w.declaration
        assert r.get("k") == b"v" and r.scan("") == [("k", b"v")]
        assert r.fetch([1]) == [VectorRecord.of(1, [1.0, 0.0], {"t": "a"})]
        assert r.q_value_get("s", "a") == QValue(2.0, 1)
        assert r.goap_retrieve("p") == {"steps": ["x"]}
        assert r.divergences() == []
        # SQLite is read live: a commit after the reader opened is seen where SQLite is
        # the truth for key-value data (RVF loads its manifest once, at open: adapter.py)
        w.put("k2", b"v2")
        if stage in (0, 1, 2):
            assert r.get("k2") == b"v2"
    finally:
        r.close()
        w.close()


def _writes(r: StageAdapter, tmp_path: Path) -> dict[str, Callable[[], Any]]:
    return {
        "put": lambda: r.put("k", b"other"),
        "delete": lambda: r.delete("k"),
        "write_batch": lambda: r.write_batch({"k": b"other"}, ["x"]),
        "write_batch (empty)": lambda: r.write_batch({}),
        "upsert": lambda: r.upsert([VectorRecord.of(2, [0.0, 1.0], {})]),
        "upsert (empty)": lambda: r.upsert([]),
        "remove": lambda: r.remove([1]),
        "q_value_update": lambda: r.q_value_update("s", "a", 1.0),
        "q_value_put": lambda: r.q_value_put("s", "a", QValue(9.0, 9)),
        "q_value_delete": lambda: r.q_value_delete("s", "a"),
        "goap_store": lambda: r.goap_store("p", {"steps": []}),
        "goap_delete": lambda: r.goap_delete("p"),
        "repair": r.repair,
        "promote": r.promote,
        "rollback": r.rollback,
        "activate_escape_hatch": r.activate_escape_hatch,
        "backup": lambda: r.backup(str(tmp_path / "backup.cgstg")),
        "restore": lambda: r.restore(str(tmp_path / "backup.cgstg")),
    }


@pytest.mark.parametrize("stage", STAGES)
def test_every_write_is_refused_and_no_file_changes(stage: int, tmp_path: Path) -> None:
    path = tmp_path / "adapter"
    w = _filled(path, stage)
    w.backup(str(tmp_path / "backup.cgstg"))   # a real backup, so restore has one to refuse
    w.close()
    before = _files(path)
    assert {"control.db"} <= set(before)
    r = open_stage(str(path), os_env(), stage, readonly="true")
    try:
        for what, call in _writes(r, tmp_path).items():
            with pytest.raises(PermissionError, match="readonly=true") as info:
                call()
            assert what.split()[0] in str(info.value)   # it names what was refused
        # still a reader after all of it, reading what the writer left
        assert r.stage == stage and r.get("k") == b"v" and r.count() == 1
        assert r.q_value_get("s", "a") == QValue(2.0, 1)
    finally:
        r.close()
    after = _files(path)
    # every file the writer left is byte for byte the same; a reader of a WAL file may only
    # add SQLite's -wal (empty: nothing written) and -shm (the shared index, not data)
    assert {name: after[name] for name in before} == before
    added = set(after) - set(before)
    assert all(n.endswith(("-wal", "-shm")) and n[:-4] in before for n in added), added
    assert all(after[n] == b"" for n in added if n.endswith("-wal"))
    assert not (tmp_path / "backup.cgstg.part-sqlite").exists()


def test_a_missing_adapter_is_refused_and_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="its directory is missing") as info:
        open_stage(str(missing), os_env(), 3, readonly="true")
    assert "readonly=true" in str(info.value) and str(missing) in str(info.value)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="its control file is missing"):
        open_stage(str(empty), os_env(), 3, readonly="true")
    assert os.listdir(empty) == []


def test_a_control_file_without_a_stage_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "adapter"
    path.mkdir()
    open_sqlite(str(path / "control.db"), os_env()).close()   # a writer died before its record
    before = _files(path)
    with pytest.raises(FileNotFoundError, match="holds no stage record"):
        open_stage(str(path), os_env(), 3, readonly="true")
    assert {n: b for n, b in _files(path).items() if n in before} == before
    assert not (path / "sqlite.db").exists() and not (path / "store.rvf").exists()


def test_a_committed_restore_is_left_to_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "adapter"
    _filled(path, 3).close()
    control = StageControl(open_sqlite(str(path / "control.db"), os_env()),
                           str(path / "control.db"))
    control.set_stage(StageRecord(3, restoring=3))   # as after a crash past the commit point
    control.close()
    with pytest.raises(PermissionError, match="restore not yet finished"):
        open_stage(str(path), os_env(), 3, readonly="true")


@pytest.mark.parametrize("stage", STAGES)
def test_stage_adapters_accept_readonly(stage: int) -> None:
    assert accepts_readonly(resolve(f"stage{stage}"))


def test_invariant1_checks_readers_of_a_stage_adapter(tmp_path: Path) -> None:
    ev = single_writer_rule(context("stage3", tmp_path))
    assert ev.verdict is Verdict.PASS, ev.summary
    assert "readers not checked" not in ev.summary
    assert "readers alongside" in ev.summary
    assert "2 readers (readonly=true) read while A wrote" in "\n".join(ev.details)
