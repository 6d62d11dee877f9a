from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conformance import conformance_test
from hypothesis import given
from hypothesis import strategies as st

from crashgate.backends import (
    BadOption,
    Capability,
    CorruptStore,
    Durability,
    Env,
    File,
    KVStore,
    OpenMode,
    OsFS,
    StoreClosed,
    VersionTooNew,
    os_env,
    resolve,
)
from crashgate.reference.json_store import (
    TEMP_PREFIX,
    JsonStore,
    document_sum,
    file_name_for,
    key_for_file_name,
    open_json,
)

TestJsonConformance = conformance_test("json", max_examples=30)


def _open(tmp_path: Path) -> JsonStore:
    return open_json(str(tmp_path / "state"), os_env())


def test_declaration_is_power_loss_kv_without_batch(tmp_path: Path) -> None:
    store = _open(tmp_path)
    assert isinstance(store, KVStore)
    assert store.declaration.durability is Durability.POWER_LOSS
    assert store.declaration.capabilities == frozenset({Capability.KV})
    assert not hasattr(store, "write_batch")
    store.close()


def test_registry_name_opens_it(tmp_path: Path) -> None:
    store = resolve("json").open(str(tmp_path / "s"), os_env())
    assert isinstance(store, JsonStore)
    store.close()


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadOption, match="no option 'fsync'"):
        open_json(str(tmp_path / "s"), os_env(), fsync="off")


@given(st.text(max_size=300))
def test_file_names_round_trip_and_are_safe(key: str) -> None:
    name = file_name_for(key)
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".") and len(name.encode()) <= 255
    decoded = key_for_file_name(name)
    assert decoded is None or decoded == key
    assert (decoded is None) == name.startswith("h")


def test_keys_differing_in_case_get_names_differing_beyond_case() -> None:
    assert file_name_for("A").lower() != file_name_for("a").lower()


@pytest.mark.parametrize("key", ["", "a/b/../c", "ünï", "\ud800", "x" * 500, ".tmp-x", "k.json"])
def test_awkward_keys_round_trip(tmp_path: Path, key: str) -> None:
    store = _open(tmp_path)
    store.put(key, b"v")
    store.put("other", b"o")
    store.close()
    store = _open(tmp_path)
    assert store.get(key) == b"v"
    assert (key, b"v") in store.scan()
    assert store.scan(key) == sorted([(key, b"v")] + ([("other", b"o")] if key == "" else []))
    store.delete(key)
    assert store.get(key) is None
    store.close()


def test_values_are_text_when_utf8_else_base64(tmp_path: Path) -> None:
    store = _open(tmp_path)
    store.put("t", "héllo".encode())
    store.put("b", b"\xff\x00\xfe")
    store.close()
    docs = {p.name: json.loads(p.read_text()) for p in (tmp_path / "state").iterdir()}
    assert docs[file_name_for("t")] == {"schema": 2, "key": "t", "encoding": "utf-8",
                                        "value": "héllo",
                                        "sum": document_sum("t", "héllo".encode())}
    assert docs[file_name_for("b")]["encoding"] == "base64"
    store = _open(tmp_path)
    assert store.get("b") == b"\xff\x00\xfe"
    assert store.get("t") == "héllo".encode()
    store.close()


def test_temp_files_are_ignored_on_read_and_removed_on_open(tmp_path: Path) -> None:
    store = _open(tmp_path)
    store.put("a", b"1")
    # what a crash mid-put leaves: a temp file, possibly half written
    leftover = tmp_path / "state" / (TEMP_PREFIX + file_name_for("b"))
    leftover.write_bytes(b'{"schema": 1, "key": "b", "enc')
    assert store.get("b") is None
    assert store.scan() == [("a", b"1")]
    store.close()
    store = _open(tmp_path)
    assert not leftover.exists()
    assert store.scan() == [("a", b"1")]
    store.close()


def test_foreign_files_in_the_directory_are_ignored(tmp_path: Path) -> None:
    store = _open(tmp_path)
    store.put("a", b"1")
    (tmp_path / "state" / "notes.json").write_text("{}")
    (tmp_path / "state" / "kA.json").write_text("{}")  # not a canonical name of ours
    assert store.scan() == [("a", b"1")]
    store.close()


def test_damaged_document_raises_corrupt_store(tmp_path: Path) -> None:
    store = _open(tmp_path)
    store.put("a", b"1")
    (tmp_path / "state" / file_name_for("a")).write_bytes(b'{"schema": 1, "ke')
    with pytest.raises(CorruptStore, match="does not parse"):
        store.get("a")
    with pytest.raises(CorruptStore):
        store.scan()
    store.close()


def test_document_under_the_wrong_name_raises_corrupt_store(tmp_path: Path) -> None:
    store = _open(tmp_path)
    store.put("a", b"1")
    d = tmp_path / "state"
    os.replace(d / file_name_for("a"), d / file_name_for("b"))
    with pytest.raises(CorruptStore, match="does not belong"):
        store.get("b")
    store.close()


def test_newer_schema_raises_version_too_new(tmp_path: Path) -> None:
    store = _open(tmp_path)
    store.put("a", b"1")
    f = tmp_path / "state" / file_name_for("a")
    f.write_text(json.dumps({"schema": 3, "key": "a", "encoding": "utf-8", "value": "1"}))
    before = f.read_bytes()
    with pytest.raises(VersionTooNew, match="pip install -U crashgate"):
        store.get("a")
    assert f.read_bytes() == before
    store.close()


def test_a_schema_1_document_without_a_sum_still_reads(tmp_path: Path) -> None:
    store = _open(tmp_path)
    f = tmp_path / "state" / file_name_for("old")
    f.write_text(json.dumps({"schema": 1, "key": "old", "encoding": "utf-8", "value": "v1"}))
    assert store.get("old") == b"v1" and store.scan() == [("old", b"v1")]
    store.put("old", b"v2")   # rewritten: now with its sum
    assert json.loads(f.read_text())["sum"] == document_sum("old", b"v2")
    store.close()


@pytest.mark.parametrize("damaged", [
    b'{"schema": 2, "key": "a", "enc',                                     # JSONDecodeError
    b'{"schema": 2, "key": "a", "encoding": "utf-8", "value": "\xff"}',    # UnicodeDecodeError
    b'{"schema": 2, "key": "a", "encoding": "base64", "value": "!!", "sum": "0"}',  # base64
    b'{"schema": 2, "key": "a", "encoding": ["utf-8"], "value": "1", "sum": "0"}',  # a list
    b'{"schema": 2, "key": "a", "encoding": "utf-8", "value": "1"}',       # no sum
    b'{"schema": 1, "key": "a", "encoding": "utf-8", "value": "2", "sum": "%s"}',   # 1 -> 2
    b'{"schema": 2, "key": "a", "encoding": "utf-8", "value": "1", "sum": 7}',
    b'{"schema": true, "key": "a", "encoding": "utf-8", "value": "1"}',
    b'{"schema": 2, "value": "1"}',                                         # KeyError
    b"[" * 100_000,                                                         # RecursionError
    b"null",
])
def test_every_damaged_document_is_corrupt_store_naming_key_and_file(tmp_path: Path,
                                                                     damaged: bytes) -> None:
    store = _open(tmp_path)
    store.put("a", b"1")
    f = tmp_path / "state" / file_name_for("a")
    f.write_bytes(damaged.replace(b"%s", document_sum("a", b"1").encode()))
    for call in (lambda: store.get("a"), lambda: store.scan("")):
        with pytest.raises(CorruptStore) as info:
            call()
        assert file_name_for("a") in str(info.value)
        assert "key 'a'" in str(info.value)
    store.close()


def test_a_damaged_schema_digit_is_corrupt_not_too_new(tmp_path: Path) -> None:
    store = _open(tmp_path)
    store.put("a", b"1")
    f = tmp_path / "state" / file_name_for("a")
    f.write_bytes(f.read_bytes().replace(b'"schema": 2', b'"schema": 3'))   # bit 0 of "2"
    with pytest.raises(CorruptStore, match="schema number was damaged"):
        store.get("a")
    store.close()


def test_calls_after_close_raise_store_closed(tmp_path: Path) -> None:
    store = _open(tmp_path)
    store.close()
    with pytest.raises(StoreClosed):
        store.put("a", b"1")


class _RecordingFile:
    def __init__(self, f: File, calls: list[tuple[str, str]]) -> None:
        self._f = f
        self._calls = calls
        self.path = f.path

    def read(self, offset: int, size: int) -> bytes:
        return self._f.read(offset, size)

    def write(self, offset: int, data: bytes) -> None:
        self._f.write(offset, data)

    def size(self) -> int:
        return self._f.size()

    def truncate(self, size: int) -> None:
        self._f.truncate(size)

    def sync(self) -> None:
        self._calls.append(("sync", os.path.basename(self.path)))
        self._f.sync()

    def close(self) -> None:
        self._f.close()


class _RecordingFS(OsFS):
    """OsFS that records the calls that matter for durability, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def open(self, path: str, mode: OpenMode = "r") -> File:
        return _RecordingFile(super().open(path, mode), self.calls)

    def rename(self, src: str, dst: str) -> None:
        self.calls.append(("rename", os.path.basename(dst)))
        super().rename(src, dst)

    def remove(self, path: str) -> None:
        self.calls.append(("remove", os.path.basename(path)))
        super().remove(path)

    def sync_dir(self, path: str) -> None:
        self.calls.append(("sync_dir", os.path.basename(path)))
        super().sync_dir(path)


def test_put_and_delete_sync_file_then_directory(tmp_path: Path) -> None:
    fs = _RecordingFS()
    store = open_json(str(tmp_path / "state"), Env(fs=fs))
    fs.calls.clear()
    store.put("a", b"1")
    name = file_name_for("a")
    assert fs.calls == [("sync", TEMP_PREFIX + name), ("rename", name), ("sync_dir", "state")]
    fs.calls.clear()
    store.delete("a")
    assert fs.calls == [("remove", name), ("sync_dir", "state")]
    fs.calls.clear()
    store.delete("a")  # missing: nothing to make durable
    assert fs.calls == [("remove", name)]
    store.close()


def test_open_creates_directory_durably(tmp_path: Path) -> None:
    fs = _RecordingFS()
    open_json(str(tmp_path / "new" / "state"), Env(fs=fs)).close()
    assert ("sync_dir", "new") in fs.calls
    assert fs.calls[-1] == ("sync_dir", "state")
