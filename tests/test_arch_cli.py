"""``crashgate arch import|export|status``: ARCH-001's data migration tools over real files, in
process (``crashgate.harness.cli.main``) and once as a subprocess; the importer over a list of
files (``arch/importer.py``) and the view that reads a database without creating anything
(``arch/status.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import apsw
import pytest

from crashgate.backends import Env, OsFS, canonical_mission, os_env, resolve
from crashgate.harness.cli import main
from crashgate.harness.missions import generate_missions
from crashgate.reference.arch import cli as arch_cli
from crashgate.reference.arch.json_state import JsonState, is_backup
from crashgate.reference.arch.missions_db import open_missions_db
from crashgate.reference.arch.status import open_view, read_status


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(["arch", *args])
    except SystemExit as exc:   # argparse's own errors (a bad --batch-size)
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative name -> bytes), and every directory (-> b"<dir>")."""
    out: dict[str, bytes] = {}
    for root, dirs, files in os.walk(path):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), path)] = b"<dir>"
        for f in files:
            full = os.path.join(root, f)
            out[os.path.relpath(full, path)] = Path(full).read_bytes()
    return out


def legacy_dir(path: Path, docs: list[dict[str, Any]]) -> list[Path]:
    """Write each document as a raw legacy file ``m<i>.json`` in ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    files = []
    for i, doc in enumerate(docs):
        f = path / f"m{i:03d}.json"
        f.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        files.append(f)
    return files


def db_docs(db: Path) -> dict[str, dict[str, Any]]:
    m = open_missions_db(str(db), os_env())
    try:
        return {i: m.mission_get(i) for i in m.mission_ids()}  # type: ignore[misc]
    finally:
        m.close()


def put_db(db: Path, docs: list[dict[str, Any]], memory: dict[str, bytes] | None = None) -> None:
    m = open_missions_db(str(db), os_env())
    for doc in docs:
        m.mission_put(doc)
    for k, v in (memory or {}).items():
        m.put(k, v)
    m.close()


def set_version(db: Path, version: int) -> None:
    """Stamp ``db`` with another schema version, as a newer crashgate would have."""
    c = apsw.Connection(str(db))
    c.execute(f"PRAGMA user_version = {version}")
    c.close()


# -- import -----------------------------------------------------------------------------------

def test_import_imports_by_id_reports_damaged_and_differing_and_is_idempotent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = generate_missions(6, 3)
    src = tmp_path / "state"
    legacy_dir(src, docs[:5])
    db = tmp_path / "missions.db"
    other = dict(docs[5], mission_id=docs[0]["mission_id"], status="other")
    put_db(db, [other])                         # the database holds m000's id, another doc
    put_db(db, [docs[1]])                       # and m001's, the same doc
    (src / "broken.json").write_text('{"mission_id": ', encoding="utf-8")
    code, out, _ = run(capsys, "import", str(src), "--db", str(db))
    assert code == 1   # a person must look: one damaged, one differing
    assert "imported 3, already there 1, differing 1, damaged 1 (of 6 legacy files)" in out
    assert f"differing: {src / 'm000.json'}" in out and repr(docs[0]["mission_id"]) in out
    assert f"damaged: {src / 'broken.json'}" in out
    held = db_docs(db)
    assert held[docs[0]["mission_id"]] == other           # never overwritten
    for doc in docs[1:5]:
        assert canonical_mission(held[doc["mission_id"]]) == canonical_mission(doc)
    names = sorted(os.listdir(src))
    assert names[0] == "broken.json"                       # left where it is
    assert len([n for n in names if is_backup(n)]) == 5    # imported, same and differing
    # a rerun: nothing new; the damaged file is still there and still reported
    code, out, _ = run(capsys, "import", str(src), "--db", str(db))
    assert code == 1 and "imported 0, already there 0, differing 0, damaged 1" in out
    assert sorted(os.listdir(src)) == names
    assert db_docs(db) == held


def test_import_renames_a_file_only_after_its_transaction_committed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    docs = generate_missions(5, 4)
    files = legacy_dir(tmp_path / "s", docs)
    seen: list[list[bool]] = []

    class Spy:
        def __init__(self, db: Any) -> None:
            self.db = db

        def mission_import(self, batch: list[dict[str, Any]]) -> Any:
            seen.append([f.exists() for f in files])      # before this batch commits
            counts = self.db.mission_import(batch)
            assert not self.db.readonly
            return counts

        def close(self) -> None:
            self.db.close()

    monkeypatch.setattr(arch_cli, "open_missions_db",
                        lambda path, env: Spy(open_missions_db(path, env)))
    code, _, _ = run(capsys, "import", str(tmp_path / "s"), "--db", str(tmp_path / "m.db"),
                     "--batch-size", "2")
    assert code == 0
    # batches of 2: each sees its own files and every later one still under the legacy name
    assert seen == [[True] * 5, [False, False, True, True, True],
                    [False, False, False, False, True]]
    assert not any(f.exists() for f in files)


def test_dry_run_writes_nothing_and_reports_what_a_run_would_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = generate_missions(4, 5)
    legacy_dir(tmp_path / "s", docs)
    (tmp_path / "s" / "bad.json").write_bytes(b"\xff\xfe not utf-8")
    before = tree(tmp_path)
    code, out, _ = run(capsys, "import", str(tmp_path / "s"), "--db",
                       str(tmp_path / "missions.db"), "--dry-run")
    assert code == 1 and "would import 4, already there 0, differing 0, damaged 1" in out
    assert "nothing was written" in out
    assert tree(tmp_path) == before                      # no database, no rename, no sidecar
    # against an existing database: its answers, read without a byte changed
    db = tmp_path / "missions.db"
    put_db(db, [docs[0], dict(docs[1], status="changed")])
    before = tree(tmp_path)
    code, out, _ = run(capsys, "import", str(tmp_path / "s"), "--db", str(db), "--dry-run")
    assert code == 1 and "would import 2, already there 1, differing 1, damaged 1" in out
    assert tree(tmp_path) == before
    # and what it said is what a run does
    code, real, _ = run(capsys, "import", str(tmp_path / "s"), "--db", str(db))
    assert real.splitlines()[0] == out.splitlines()[0].replace("would import", "imported")


def test_keep_leaves_files_and_explicit_files_and_backups(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = generate_missions(3, 6)
    files = legacy_dir(tmp_path / "s", docs)
    backup = tmp_path / "s" / "old_migrated_20250101T000000Z.json"
    backup.write_text(json.dumps(docs[2]), encoding="utf-8")
    db = tmp_path / "m.db"
    code, out, _ = run(capsys, "import", str(files[0]), str(files[1]), str(files[0]),
                       str(backup), "--db", str(db), "--keep")
    assert code == 0 and "imported 2, already there 0" in out and "(of 2 legacy files)" in out
    assert "skipped (backups of files already imported)" in out and str(backup) in out
    assert "--keep" in out and all(f.exists() for f in files)
    assert sorted(db_docs(db)) == sorted(d["mission_id"] for d in docs[:2])


def test_progress_goes_to_stderr_with_verbose(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    legacy_dir(tmp_path / "s", generate_missions(5, 7))
    monkeypatch.setattr(arch_cli, "_PROGRESS_EVERY", 2)
    code, out, err = run(capsys, "import", str(tmp_path / "s"), "--db", str(tmp_path / "m.db"),
                         "--verbose")
    assert code == 0
    assert err.splitlines() == ["crashgate arch import: 2/5 files",
                                "crashgate arch import: 4/5 files"]
    assert "crashgate arch import:" not in out and "m000.json -> m000_migrated_" in out


@pytest.mark.parametrize(("args", "says"), [
    (["import", "{t}/nope", "--db", "{t}/m.db"], "SOURCE {t}/nope: no such file or directory"),
    (["import", "{t}", "--db", "{t}/no/dir/m.db"], "--db {t}/no/dir/m.db: its directory"),
    (["import", "{t}", "--db", "{t}"], "it is a directory"),
    (["import", "{t}", "--db", "{t}/m.db", "--batch-size", "0"], "1 or more"),
    (["export", "--db", "{t}/none.db", "--out", "{t}/o"], "--db {t}/none.db: no mission "
     "database there"),
    (["export", "--db", "{t}/m.db", "--out", "{t}/x.json"], "give exactly one --mission"),
    (["export", "--db", "{t}/m.db", "--out", "{t}/no/x.json", "--mission", "a"],
     "its directory"),
    (["status", "{t}/nope"], "{t}/nope: no such directory"),
])
def test_usage_errors_name_the_argument_and_exit_3(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str) -> None:
    before = tree(tmp_path)
    code, out, err = run(capsys, *[a.format(t=tmp_path) for a in args])
    assert code == 3 and says.format(t=tmp_path) in err and out == ""
    assert tree(tmp_path) == before


def test_a_newer_schema_is_refused_with_the_upgrade_hint_and_not_modified(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "m.db"
    put_db(db, generate_missions(1, 8))
    set_version(db, 3)
    legacy_dir(tmp_path / "s", generate_missions(1, 9))
    before = tree(tmp_path)
    # the readers (a dry run, an export) leave every byte as it was ...
    for args in (["import", str(tmp_path / "s"), "--db", str(db), "--dry-run"],
                 ["export", "--db", str(db), "--out", str(tmp_path / "o")],
                 ["import", str(tmp_path / "s"), "--db", str(db)]):
        code, _, err = run(capsys, *args)
        assert code == 1 and "schema version 3" in err and "pip install -U crashgate" in err
        if "import" in args and "--dry-run" not in args:
            # ... and the writer's refused open leaves the file and the legacy files as they
            # were (SQLite's -wal/-shm beside it, which it does not checkpoint, aside)
            after = {k: v for k, v in tree(tmp_path).items() if not k.endswith(("-wal", "-shm"))}
            assert after == before
        else:
            assert tree(tmp_path) == before


# -- export -----------------------------------------------------------------------------------

def test_export_writes_the_json_state_of_the_database(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = generate_missions(4, 10)
    db = tmp_path / "m.db"
    put_db(db, docs, {"session_handoff": b'{"next": "x"}'})
    out_dir = tmp_path / "json"
    stale = JsonState(str(out_dir), os_env())
    stale.mission_put({"mission_id": "gone"})        # not in the database: deleted
    stale.close()
    code, out, _ = run(capsys, "export", "--db", str(db), "--out", str(out_dir))
    assert code == 0 and "exported 4 missions and 1 agent_memory keys" in out
    js = JsonState(str(out_dir), os_env())
    try:
        assert js.mission_ids() == sorted(d["mission_id"] for d in docs)
        for d in docs:
            assert canonical_mission(js.mission_get(d["mission_id"]) or {}) == \
                canonical_mission(d)
        assert js.scan("") == [("session_handoff", b'{"next": "x"}')]
    finally:
        js.close()
    # only the missions asked for
    code, out, _ = run(capsys, "export", "--db", str(db), "--out", str(tmp_path / "two"),
                       "--mission", docs[0]["mission_id"], "--mission", docs[2]["mission_id"])
    js = JsonState(str(tmp_path / "two"), os_env())
    assert code == 0 and js.mission_ids() == sorted([docs[0]["mission_id"],
                                                     docs[2]["mission_id"]])
    assert js.scan("") == []
    js.close()


def test_export_one_mission_round_trips_through_import(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = generate_missions(3, 11)
    db = tmp_path / "m.db"
    put_db(db, docs)
    target = tmp_path / "out" / "active_mission_rollback.json"
    target.parent.mkdir()
    target.write_text("old", encoding="utf-8")      # replaced, atomically
    mid = docs[1]["mission_id"]
    code, out, _ = run(capsys, "export", "--db", str(db), "--mission", mid, "--out", str(target))
    assert code == 0 and f"exported mission {mid!r}" in out
    assert os.listdir(target.parent) == [target.name]   # no temporary file left
    assert canonical_mission(json.loads(target.read_text("utf-8"))) == canonical_mission(docs[1])
    code, out, _ = run(capsys, "import", str(target), "--db", str(tmp_path / "new.db"))
    assert code == 0 and canonical_mission(db_docs(tmp_path / "new.db")[mid]) == \
        canonical_mission(docs[1])
    code, _, err = run(capsys, "export", "--db", str(db), "--mission", mid + "x", "--out",
                       str(target))
    assert code == 3 and f"did you mean {mid!r}" in err


def test_export_file_is_written_to_a_temporary_file_fsynced_then_renamed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    class Recording(OsFS):
        def open(self, path: str, mode: Any = "r") -> Any:
            f = super().open(path, mode)
            if mode == "r":
                return f
            calls.append(("open", path))

            class Synced:
                def __getattr__(self, name: str) -> Any:
                    return getattr(f, name)

                def sync(self) -> None:
                    calls.append(("sync", path))
                    f.sync()
            return Synced()

        def rename(self, src: str, dst: str) -> None:
            calls.append(("rename", f"{src} -> {dst}"))
            super().rename(src, dst)

        def sync_dir(self, path: str) -> None:
            calls.append(("sync_dir", path))
            super().sync_dir(path)

    docs = generate_missions(1, 12)
    put_db(tmp_path / "m.db", docs)
    monkeypatch.setattr(arch_cli, "os_env", lambda: Env(fs=Recording()))
    out = str(tmp_path / "one.json")
    code, _, _ = run(capsys, "export", "--db", str(tmp_path / "m.db"), "--mission",
                     docs[0]["mission_id"], "--out", out)
    assert code == 0
    kinds = [k for k, _ in calls]
    assert kinds == ["open", "sync", "rename", "sync_dir"]
    tmp = calls[0][1]
    assert tmp != out and calls[2][1] == f"{tmp} -> {out}" and calls[3][1] == str(tmp_path)


# -- status -----------------------------------------------------------------------------------

def test_status_reports_an_adapter_directory_and_changes_no_byte(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "state"
    docs = generate_missions(3, 13)
    a = resolve("arch-phase2").open(str(d), os_env())
    a.mission_put(docs[0])
    a.mission_put(docs[1])
    a.close()
    legacy_dir(d, [docs[2]])                           # waits for phase 3's importer
    before = tree(d)
    code, out, _ = run(capsys, "status", str(d))
    assert code == 0, out
    lines = out.splitlines()
    for want in ("phase: 2", "last writer: closed cleanly", "divergences queued: 0",
                 "legacy files waiting: 1", "backups: 0", "archive: 0 files",
                 "missions.db schema version: 2", "missions.db integrity_check: ok",
                 "missions: 2"):
        assert want in lines, (want, out)
    assert tree(d) == before
    # phase 3 imports it and renames the file; phase 4 archives the JSON side
    a = resolve("arch-phase2").open(str(d), os_env())
    a.promote()
    a.promote()
    a.close()
    before = tree(d)
    code, out, _ = run(capsys, "status", str(d))
    assert code == 0 and "phase: 4" in out and "missions: 3" in out
    assert "legacy files waiting: 0" in out and "archive: 3 files" in out   # 2 JSON, 1 backup
    assert tree(d) == before


def test_status_beside_an_open_writer_creates_no_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "state"
    a = resolve("arch-phase3").open(str(d), os_env())
    try:
        a.mission_put(generate_missions(1, 14)[0])
        names = sorted(tree(d))
        code, out, _ = run(capsys, "status", str(d))
        assert code == 0 and "phase: 3" in out and "missions: 1" in out
        assert "last writer: open now, or died" in out
        assert sorted(tree(d)) == names
    finally:
        a.close()


def test_status_of_a_newer_or_damaged_database_exits_1_and_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "state"
    a = resolve("arch-phase3").open(str(d), os_env())
    a.mission_put(generate_missions(1, 15)[0])
    a.close()
    set_version(d / "missions.db", 7)
    before = tree(d)
    code, out, _ = run(capsys, "status", str(d))
    assert code == 1 and "missions.db schema version: 7" in out
    assert "pip install -U crashgate" in out and "was not modified" in out
    assert tree(d) == before
    st = read_status(str(d))
    assert st.phase == 3 and not st.sound and st.missions_db.missions is None


def test_view_reads_without_creating_side_files(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    put_db(db, generate_missions(2, 16))
    before = tree(tmp_path)
    view = open_view(str(db))
    try:
        assert view.sound and len(view.mission_ids()) == 2 and not view.maybe_torn()
        with pytest.raises(PermissionError, match="readonly"):
            view.mission_put({"mission_id": "x"})
    finally:
        view.close()
    assert tree(tmp_path) == before


def test_help_says_what_each_command_does_and_never_does(
        capsys: pytest.CaptureFixture[str]) -> None:
    for command, words in (("import", ("never does", "overwrite", "--dry-run")),
                           ("export", ("atomically", "never changes the database")),
                           ("status", ("Read-only", "without creating"))):
        with pytest.raises(SystemExit) as exit_:
            main(["arch", command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert exit_.value.code == 0 and all(w in out for w in words), (command, out)


def test_the_command_runs_as_a_process(tmp_path: Path) -> None:
    legacy_dir(tmp_path / "s", generate_missions(2, 17))
    r = subprocess.run([sys.executable, "-m", "crashgate.harness.cli", "arch", "import",
                        "s", "--db", "m.db"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "imported 2" in r.stdout, r.stderr
    assert r.stderr == ""   # not a terminal, no --verbose: no progress lines


def test_a_view_without_locks_knows_when_a_writer_ran_under_it(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    docs = generate_missions(2, 18)
    put_db(db, docs[:1])
    view = open_view(str(db))               # no -wal/-shm: read without locks (immutable)
    try:
        assert not view.maybe_torn()
        put_db(db, docs[1:])                # a writer opens, commits, checkpoints, closes
        assert view.maybe_torn()
    finally:
        view.close()
