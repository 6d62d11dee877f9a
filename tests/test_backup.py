"""Issue 10 item 5: backup and restore (``Backupable``) on the SQLite store (WAL and DELETE)
and the RVF store, and the ``adr072-backup`` row: the reference stores pass it, and stores
whose backup or restore skips what makes it safe (``tests/defects_backup.py``) are caught with
a reproduction."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crashgate.backends import Backupable, Capability, CorruptStore, VectorRecord
from crashgate.harness.cli import main
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference.rvf.store import open_rvf
from crashgate.reference.sqlite_store import open_sqlite

STORE, BACKUP = "/data/store", "/data/backup"
STORES: dict[str, Callable[..., Any]] = {
    "sqlite-wal": lambda path, env: open_sqlite(path, env, journal_mode="WAL"),
    "sqlite-delete": lambda path, env: open_sqlite(path, env, journal_mode="DELETE"),
    "rvf": open_rvf,
}
UNIQUE = b"unique-value:" + bytes(range(256)) * 4


def _contents(store: Any) -> tuple[object, ...]:
    """Everything a store shows: kv, vectors, a Q-value and a plan."""
    return (store.scan(""), store.fetch(range(10)), store.q_value_get("s", "a"),
            store.goap_retrieve("plan"))


def _filled(kind: str) -> tuple[SimDisk, Any]:
    disk = SimDisk(DiskImage.empty("/data"))
    store = STORES[kind](STORE, sim_env(disk))
    store.put("key", UNIQUE)
    store.put("other", b"1")
    store.upsert([VectorRecord.of(1, [1.0, 2.0], {"tag": "a"})])
    store.q_value_update("s", "a", 0.5)
    store.goap_store("plan", {"steps": ["a", "b"]})
    return disk, store


def _write_more(store: Any) -> None:
    store.put("other", b"2")
    store.delete("key")
    store.upsert([VectorRecord.of(2, [3.0, 4.0])])
    store.q_value_update("s", "a", 1.5)
    store.goap_delete("plan")


def _read(disk: SimDisk, path: str) -> bytes:
    f = sim_env(disk).fs.open(path, "r")
    try:
        return f.read(0, f.size())
    finally:
        f.close()


def _write(disk: SimDisk, path: str, data: bytes) -> None:
    f = sim_env(disk).fs.open(path, "w")
    f.write(0, data)
    f.close()


@pytest.mark.parametrize("kind", sorted(STORES))
def test_backup_write_restore_gives_the_backup_and_the_store_stays_usable(kind: str) -> None:
    disk, store = _filled(kind)
    assert isinstance(store, Backupable) and store.declaration.has(Capability.BACKUP)
    at_backup = _contents(store)
    store.backup(BACKUP)
    _write_more(store)
    assert _contents(store) != at_backup
    store.restore(BACKUP)
    assert _contents(store) == at_backup
    store.put("after", b"restore")   # still open and writable
    store.close()
    reopened = STORES[kind](STORE, sim_env(disk))
    seen = _contents(reopened)
    assert seen[1:] == at_backup[1:]
    assert dict(seen[0]) == {**dict(at_backup[0]), "after": b"restore"}   # type: ignore[call-overload]
    reopened.close()


def test_a_commit_still_in_the_wal_is_in_the_sqlite_backup() -> None:
    disk, store = _filled("sqlite-wal")
    store.put("late", UNIQUE[::-1])
    wal, main_file = _read(disk, STORE + "-wal"), _read(disk, STORE)
    assert UNIQUE[::-1] in wal and UNIQUE[::-1] not in main_file   # only in the WAL
    store.backup(BACKUP)
    store.put("late", b"changed")
    store.restore(BACKUP)
    assert store.get("late") == UNIQUE[::-1]
    store.close()
    assert UNIQUE[::-1] in _read(disk, BACKUP)   # the backup is one file, WAL included


@pytest.mark.parametrize("kind", sorted(STORES))
@pytest.mark.parametrize("damage", ["partial", "flipped", "empty", "missing"])
def test_a_partial_damaged_or_missing_backup_is_refused_and_the_store_unchanged(
        kind: str, damage: str) -> None:
    disk, store = _filled(kind)
    store.backup(BACKUP)
    data = _read(disk, BACKUP)
    bad = "/data/bad"
    if damage == "partial":
        _write(disk, bad, data[: len(data) // 2 + 100])
    elif damage == "flipped":
        assert data.count(UNIQUE) == 1   # the byte flipped is the live record's
        at = data.index(UNIQUE) + len(UNIQUE) // 2
        _write(disk, bad, data[:at] + bytes([data[at] ^ 1]) + data[at + 1:])
    elif damage == "empty":
        _write(disk, bad, b"")
    _write_more(store)
    before = _contents(store)
    with pytest.raises(CorruptStore) as caught:
        store.restore(bad)
    assert caught.value.path == bad
    assert _contents(store) == before
    store.put("after", b"refusal")   # still usable
    assert store.get("after") == b"refusal"
    store.close()


@pytest.mark.parametrize("kind", sorted(STORES))
def test_a_backup_leaves_no_temporary_file_and_changes_no_byte_of_the_store(kind: str) -> None:
    disk, store = _filled(kind)
    fs = sim_env(disk).fs
    files = {name: _read(disk, f"/data/{name}") for name in fs.listdir("/data")}
    store.backup(BACKUP)
    assert {n: _read(disk, f"/data/{n}") for n in files} == files
    assert sorted(fs.listdir("/data")) == sorted([*files, "backup"])
    store.close()


def _certify(backend: str, out: Path) -> tuple[int, dict[str, Any]]:
    code = main(["certify", backend, "--budget", "quick", "--seed", "3", "--scenario",
                 "adr072-backup", "--out", str(out), "--quiet"])
    [path] = out.glob("*/*/certificate.json")
    [row] = json.loads(path.read_text())["rows"]
    return code, dict(row)


@pytest.mark.parametrize("backend", ["sqlite", "rvf"])
def test_the_reference_stores_pass_the_backup_row(backend: str, tmp_path: Path,
                                                  capsys: Any) -> None:
    code, row = _certify(backend, tmp_path)
    capsys.readouterr()
    assert code == 0 and row["verdict"] == "pass", row
    assert row["measured"]["crashes"] > 0 and row["measured"]["damaged_backups"] > 0, row


def test_a_store_without_backup_is_not_applicable(tmp_path: Path, capsys: Any) -> None:
    code, row = _certify("sqlite?journal_mode=OFF", tmp_path)
    capsys.readouterr()
    assert row["verdict"] == "n/a" and "Capability.BACKUP" in row["summary"], row


@pytest.mark.parametrize("backend, part, words", [
    ("defects_backup:open_backup_renamed_first", "backup", "the backup had returned"),
    ("defects_backup:open_restore_in_place", "restore", "neither its old contents"),
])
def test_an_unsafe_backup_or_restore_is_caught_with_a_reproduction(
        backend: str, part: str, words: str, tmp_path: Path, capsys: Any) -> None:
    code, row = _certify(backend, tmp_path)
    capsys.readouterr()
    assert code == 1 and row["verdict"] == "fail", row
    assert row["summary"].startswith(f"{part}:") and words in row["summary"], row
    script = row["reproduce"].removeprefix("python ")
    ran = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 1 and words in ran.stdout, ran
