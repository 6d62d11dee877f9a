"""Issue 16: the process driver (``backends/proc_protocol.py``, ``harness/driver/``). The wire
codec and error mapping; ``proc:`` names; a child that answers garbage, another protocol, too
late or dies mid-op (indeterminate, killed, never a hang); SIGKILL through ``ServerKill`` and
reopen; two children on one store; and the issue's check: the same store certified in process
and through the Python host gets the same verdicts on the rows both can run."""

from __future__ import annotations

import errno
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from crashgate.backends import (
    BackendMissing,
    BadOption,
    BulkFetch,
    CorruptStore,
    KVStore,
    LockHeld,
    StoreClosed,
    Unsupported,
    VectorRecord,
    VectorStore,
    VersionTooNew,
    os_env,
    resolve,
)
from crashgate.backends import proc_protocol as wire
from crashgate.backends.errors import BadBackend
from crashgate.backends.pids import pid_exists
from crashgate.backends.proc_protocol import DriverError
from crashgate.harness.cli import main
from crashgate.harness.faults.server import ServerKill, disk_rows_reason
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.stateful import machine_for, run_model
from crashgate.harness.unsupported import cannot_answer
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.procedures_server import check_two_clients, one_writer

HOST = f"{shlex.quote(sys.executable)} -m crashgate.harness.driver.python_host"
FAKES = shlex.join([sys.executable, str(Path(__file__).with_name("proc_fakes.py"))])


def _sim() -> Any:
    return sim_env(SimDisk(DiskImage.empty("/data")))


# -- the codec -------------------------------------------------------------------------------


def test_values_round_trip_exactly() -> None:
    top = 2**64 - 1
    assert wire.id_to_wire(top) == "18446744073709551615"
    assert wire.id_from_wire("18446744073709551615") == top
    record = VectorRecord.of(top, [0.1, -2.5e-300, 1 / 3], {"tag": "x", "n": [1, 2]})
    line = wire.encode({"r": wire.record_to_wire(record)})
    assert wire.record_from_wire(wire.decode(line)["r"]) == record
    assert wire.bytes_from_wire(wire.bytes_to_wire(b"\x00\xff\n")) == b"\x00\xff\n"


@pytest.mark.parametrize("bad", [5, "-1", "1.0", "18446744073709551616", "١٢"])
def test_a_malformed_id_is_a_protocol_violation(bad: object) -> None:
    with pytest.raises(DriverError, match="id"):
        wire.id_from_wire(bad)


def test_nan_is_refused_before_sending_and_garbage_is_named() -> None:
    with pytest.raises(ValueError):
        wire.encode({"vector": [math.nan]})
    with pytest.raises(DriverError, match="log to stderr"):
        wire.decode(b"hello there\n")
    with pytest.raises(DriverError, match="base64"):
        wire.bytes_from_wire("not base64!")


def test_a_declaration_round_trips_less_what_the_protocol_cannot_carry() -> None:
    decl = resolve("rvf").open("/data/s", _sim()).declaration
    carried = wire.only_carried(decl)
    back = wire.decl_from_wire(json.loads(wire.encode(wire.decl_to_wire(carried))))
    assert back.capabilities == carried.capabilities == decl.capabilities & wire.CARRIED
    assert "derive" in carried.notes["driver"] and carried.failpoints == ()
    assert (back.durability, back.file_format, back.metric, back.wire_version, back.damage) == \
        (decl.durability, decl.file_format, decl.metric, decl.wire_version, decl.damage)
    doc = wire.decl_to_wire(carried)
    doc["capabilities"].append("derive")
    with pytest.raises(DriverError, match="derive"):
        wire.decl_from_wire(doc)


@pytest.mark.parametrize("exc, kind", [
    (LockHeld("/x", "pid 5"), LockHeld),
    (VersionTooNew("/x", found=3, supported=2, upgrade="npm update x"), VersionTooNew),
    (CorruptStore("/x", "bad sum"), CorruptStore),
    (StoreClosed("/x"), StoreClosed),
    (BadOption("b", "metric", "l3", ["l2", "cosine"]), BadOption),
    (OSError(errno.EIO, "I/O error"), OSError),
    (OSError(errno.ENOSPC, "full"), OSError),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/r/store"),
     FileNotFoundError),
    (NotImplementedError("no compact"), NotImplementedError),
    (ValueError("wrong dimension"), ValueError),
    (KeyError("boom"), DriverError),
])
def test_errors_map_to_codes_and_back(exc: Exception, kind: type) -> None:
    doc = json.loads(wire.encode(wire.error_to_wire(exc)))
    back = wire.error_from_wire(doc, path="/data/store")
    assert type(back) is kind
    if isinstance(exc, OSError):
        assert back.errno == exc.errno   # type: ignore[attr-defined]
        assert str(back).count("[Errno") == 1, str(back)   # the errno is not said twice
    if isinstance(exc, VersionTooNew):
        assert isinstance(back, VersionTooNew) and "npm update x" in str(back)
        assert (back.found, back.supported) == (3, 2)
    if isinstance(exc, LockHeld):
        assert back.holder == "pid 5"
    if kind is DriverError:
        assert "KeyError" in str(back)


def test_an_elock_without_a_holder_names_nobody() -> None:
    back = wire.error_from_wire({"code": "ELOCK", "message": "RVF error 0x0300: LockHeld"},
                                path="/data/store")
    assert isinstance(back, LockHeld) and back.holder == ""
    assert str(back) == "RVF error 0x0300: LockHeld"   # the child's words are the evidence


# -- proc: names -----------------------------------------------------------------------------


def test_options_after_the_last_question_mark_and_the_label_round_trips() -> None:
    spec = resolve(f"proc:{HOST} sqlite?timeout=20&metric=cosine")
    assert spec.name == f"proc:{HOST} sqlite"
    assert dict(spec.options) == {"timeout": "20", "metric": "cosine"}
    assert resolve(spec.label) == spec
    odd = resolve("proc:./drv --glob=a?b?")
    assert odd.name == "proc:./drv --glob=a?b" and resolve(odd.label) == odd
    with pytest.raises(BadBackend, match="no command"):
        resolve("proc:  ")


def test_a_missing_program_names_itself_and_path(tmp_path: Path) -> None:
    spec = resolve("proc:crashgate-no-such-driver --x")
    with pytest.raises(BackendMissing, match="crashgate-no-such-driver") as info:
        spec.open(str(tmp_path / "s"), os_env())
    assert "PATH=" in str(info.value)
    with pytest.raises(BadOption, match="timeout"):
        resolve(f"proc:{HOST} memory?timeout=-1").open(str(tmp_path / "s"), os_env())


def test_the_store_has_exactly_the_methods_its_capabilities_allow(tmp_path: Path) -> None:
    kv = resolve(f"proc:{HOST} json").open(str(tmp_path / "j"), os_env())
    vec = resolve(f"proc:{HOST} sqlite").open(str(tmp_path / "s.db"), os_env())
    try:
        assert isinstance(kv, KVStore) and not isinstance(kv, VectorStore)
        assert not hasattr(kv, "upsert") and not hasattr(kv, "write_batch")
        assert isinstance(vec, VectorStore) and hasattr(vec, "write_batch")
        assert vec.declaration.server is not None and "python_host" in vec.declaration.server
        assert disk_rows_reason(vec.declaration, "power loss") is not None
        vec.upsert([VectorRecord.of(7, [1.0, 0.0], {"t": "a"}),
                    VectorRecord.of(2**64 - 1, [0.0, 1.0])])
        assert [h.id for h in vec.query([1.0, 0.1], 5)] == [7, 2**64 - 1]
        assert [h.id for h in vec.query([1.0, 0.1], 5, {"t": "a"})] == [7]
        with pytest.raises(ValueError):   # a malformed filter: EINVAL from the child
            vec.query([1.0, 0.0], 5, {"t": {"$bogus": 1}})
        assert vec.count() == 2   # the error left the store usable
    finally:
        kv.close()
        vec.close()
    with pytest.raises(StoreClosed):
        vec.count()


def test_open_answers_the_declaration_its_options_give(tmp_path: Path) -> None:
    store = resolve(f"proc:{HOST} sqlite?synchronous=OFF").open(str(tmp_path / "s"), os_env())
    try:
        want = resolve("sqlite?synchronous=OFF").open(str(tmp_path / "t"), os_env())
        want.close()
        assert store.declaration.durability == want.declaration.durability
    finally:
        store.close()


# -- children that misbehave -----------------------------------------------------------------


@pytest.mark.parametrize("mode, words", [
    ("garbage-hello", "did not answer hello"),
    ("version-2", "protocol version 2"),
    ("silent", "did not answer hello"),
    ("derive", "derive"),
])
def test_a_child_that_cannot_say_hello_is_a_clear_error(tmp_path: Path, mode: str,
                                                        words: str) -> None:
    # hello gets the start's allowance (a minute by default: a loaded machine starts a child
    # slowly); a child that never answers is given 3 s here, not to wait that minute
    wait = "&start_timeout=3" if mode == "silent" else ""
    spec = resolve(f"proc:{FAKES} {mode}?timeout=1{wait}")
    with pytest.raises(DriverError, match=words):
        spec.open(str(tmp_path / "s"), os_env())


@pytest.mark.parametrize("mode, words", [
    ("hang-put", "did not answer 'put' within 1 s"),
    ("die-put", "died during 'put'"),
])
def test_a_child_that_hangs_or_dies_mid_op_is_indeterminate_and_killed(
        tmp_path: Path, mode: str, words: str) -> None:
    store = resolve(f"proc:{FAKES} {mode}?timeout=1").open(str(tmp_path / "s"), os_env())
    pid = store.session_pid()
    with pytest.raises(DriverError, match=words) as info:
        store.put("k", b"v")
    assert info.value.indeterminate and "indeterminate" in str(info.value)
    assert not pid_exists(pid)
    if mode == "die-put":   # its stderr is the evidence
        assert "dying in the middle of put" in str(info.value)
        assert "exit status 7" in str(info.value)
    with pytest.raises(DriverError, match="gone"):
        store.get("k")
    store.close()   # a dead child has nothing left to close


def test_a_response_to_another_request_is_a_protocol_violation(tmp_path: Path) -> None:
    store = resolve(f"proc:{FAKES} wrong-id").open(str(tmp_path / "s"), os_env())
    store.put("k", b"v")
    with pytest.raises(DriverError, match="response id 999") as info:
        store.get("k")
    assert info.value.indeterminate and not pid_exists(store.session_pid())


# -- process crash and two writers -----------------------------------------------------------


def test_sigkill_of_the_child_then_reopen_keeps_what_was_acknowledged() -> None:
    env = _sim()
    spec = resolve(f"proc:{HOST} sqlite")
    store = spec.open("/data/store", env)
    store.put("a", b"1")
    store.write_batch({"b": b"2", "c": b"3"}, ["a"])
    [pid] = ServerKill("server").fire(store)
    assert pid == store.session_pid() and not pid_exists(pid)
    with pytest.raises(DriverError, match="indeterminate|gone"):
        store.put("d", b"4")
    store.close()
    again = spec.open("/data/store", env)   # a new child on the same files (the marker)
    try:
        assert again.session_pid() != pid
        assert again.scan() == [("b", b"2"), ("c", b"3")]
    finally:
        again.close()
    fresh = spec.open("/data/store", _sim())   # a fresh disk is a fresh store
    try:
        assert fresh.scan() == []
    finally:
        fresh.close()


def test_a_second_child_on_one_store_gets_lockheld() -> None:
    env = _sim()
    spec = resolve(f"proc:{HOST} rvf")
    first = spec.open("/data/store", env)
    try:
        first.put("k", b"v")
        with pytest.raises(LockHeld):
            spec.open("/data/store", env)
        assert first.get("k") == b"v"   # the first is unharmed
    finally:
        first.close()


def test_the_model_runs_against_a_proc_store() -> None:
    machine = machine_for(f"proc:{HOST} sqlite")
    assert machine.has_server and machine.has_kv and machine.has_vec
    assert any(c.__name__ == "_ServerMachine" for c in machine.__mro__)


# -- the check: same seed, same verdicts ---------------------------------------------

ROWS = ("model", "adr032-3", "inv-1", "inv-3", "adr032-2", "adr032-6")


def _verdicts(tmp_path: Path, backend: str) -> dict[str, tuple[str, str]]:
    out = tmp_path / str(abs(hash(backend)))
    args = ["certify", backend, "--budget", "quick", "--seed", "11", "--out", str(out),
            "--quiet", "--jobs", "1"]
    for row in ROWS:
        args += ["--scenario", row]
    main(args)
    [path] = out.glob("*/*/certificate.json")
    return {r["key"]: (r["verdict"], r["summary"])
            for r in json.loads(path.read_text())["rows"]}


def test_the_python_host_certifies_as_the_store_in_process(tmp_path: Path, capsys) -> None:
    inproc = _verdicts(tmp_path, "rvf")
    driven = _verdicts(tmp_path, f"proc:{HOST} rvf")
    capsys.readouterr()
    assert sorted(inproc) == sorted(driven) == sorted(ROWS)
    compared = {}
    for key in ROWS:
        (want, _), (got, why) = inproc[key], driven[key]
        if got == "n/a" and want != "n/a":   # only a row that needs the simulated disk
            assert "simulated disk" in why, (key, why)
            continue
        assert got == want, (key, inproc[key], driven[key])
        compared[key] = got
    assert {k: compared.get(k) for k in ("model", "adr032-3", "inv-1")} == \
        dict.fromkeys(("model", "adr032-3", "inv-1"), "pass")
    assert driven["adr032-2"][0] == "n/a"   # crashes at the child's disk operations: unseen


# -- reading back through crashgate's reader; what a store cannot do --------------------------


def test_fetch_comes_from_the_declared_reader_of_the_file() -> None:
    # the fake serves rvf-ruvector, answers fetch with EUNSUPPORTED and names the reader
    # rvf-ruvector: every record below can only have come from reading the child's file
    env = _sim()   # the simulated disk holds a marker; the files are in a real directory
    store = resolve(f"proc:{FAKES} reader").open("/data/s.rvf", env)
    try:
        assert "rvf-ruvector" in store.declaration.notes["reader"]
        assert isinstance(store, BulkFetch)
        assert store.fetch([1]) == []   # no file yet: nothing stored
        store.upsert([VectorRecord.of(3, [0.5, 1.0], {"tag": "x"}),
                      VectorRecord.of(1, [0.25, -2.0]), VectorRecord.of(9, [1.0, 1.0])])
        assert store.remove([9]) == 1
        assert store.fetch([9, 3, 1, 4]) == [VectorRecord.of(1, [0.25, -2.0]),
                                             VectorRecord.of(3, [0.5, 1.0], {"tag": "x"})]
        block = store.fetch_block([3, 1])
        assert block.ids == (1, 3) and block.metadata == ({}, {"tag": "x"})
        assert block.vectors.tolist() == [[0.25, -2.0], [0.5, 1.0]]
        assert store.count() == 2   # the child's answer
    finally:
        store.close()
    with pytest.raises(StoreClosed):
        store.fetch([1])


def test_a_reader_no_backend_is_named_fails_the_open(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="no-such-reader"):
        resolve(f"proc:{FAKES} bad-reader").open(str(tmp_path / "s"), os_env())


def test_a_store_that_cannot_fetch_is_unknown_in_the_model_not_a_failure(
        tmp_path: Path) -> None:
    ev = run_model(f"proc:{FAKES} no-fetch", seed=3, examples=4, steps=12, workdir=tmp_path)
    assert ev.verdict is Verdict.UNKNOWN, ev.summary
    assert "the store cannot answer fetch: nothing could be checked" in ev.summary
    assert ev.reproduce is None


def test_only_the_store_saying_it_lacks_an_op_is_unsupported() -> None:
    store = resolve("memory").open("/data/m", _sim())

    class Lacking:
        declaration = store.declaration

        def fetch(self, ids: object) -> None:
            raise Unsupported("fetch", "fetch: no read-back")

    with pytest.raises(NotImplementedError) as info:
        Lacking().fetch([1])
    assert cannot_answer(info.value) == ("the store cannot answer fetch: nothing could be "
                                         "checked (fetch: no read-back)")
    with pytest.raises(NotImplementedError) as other:   # not the typed error: a failure
        _not_a_store()
    assert cannot_answer(other.value) is None
    assert cannot_answer(ValueError("fetch")) is None
    store.close()


def _not_a_store() -> None:
    raise NotImplementedError("a tool's own gap")


def test_two_clients_at_once_are_na_for_a_store_with_a_writer_lock(tmp_path: Path) -> None:
    spec = resolve(f"proc:{HOST} rvf")
    store = spec.open(str(tmp_path / "probe"), os_env())
    store.close()
    assert one_writer(store.declaration) is not None   # reference rvf declares writer-lock
    ev = check_two_clients(spec, workdir=str(tmp_path))
    assert ev.verdict is Verdict.NA
    assert "writer-lock" in ev.summary and "LockHeld" in ev.summary
