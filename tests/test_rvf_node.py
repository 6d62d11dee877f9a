"""The real ``@ruvector/rvf`` packages behind ``rvf_driver.js``: the npm cache, the driver on
its own (JSON lines on a pipe), the ``rvf-node`` / ``rvf-sdk`` backends through the process
client, and a few certificate rows. Everything that needs node and npm skips, with the reason,
where they are missing; the npm install itself needs the registry (an offline machine skips
with npm's error)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from node import requires_node

from crashgate.backends import (
    BackendMissing,
    BadOption,
    LockHeld,
    Unsupported,
    VectorRecord,
    os_env,
)
from crashgate.backends.registry import resolve
from crashgate.harness.driver.npm_cache import NpmTarget, install
from crashgate.harness.driver.rvf_node import (
    DRIVER_JS,
    node_target,
    open_rvf_node,
    open_rvf_sdk,
    sdk_target,
)


def _installed(target: NpmTarget) -> Path:
    try:
        return install(target, backend="test")
    except BackendMissing as exc:   # offline, or the registry refused: not this code's fault
        pytest.skip(f"npm could not install {target.name}: {exc}")


class Driver:
    """``rvf_driver.js`` on its own, spoken to over pipes: ``d(op, **args)`` is one request
    line, and the parsed response line is returned."""

    def __init__(self, target: str, prefix: Path) -> None:
        self.proc = subprocess.Popen(
            ["node", str(DRIVER_JS), "--target", target, "--prefix", str(prefix)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        self.n = 0

    def __call__(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.n += 1
        self.proc.stdin.write(json.dumps({"id": self.n, "op": op, "args": args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the driver exited (code {self.proc.poll()}) instead of answering {op}"
        reply: dict[str, Any] = json.loads(line)
        assert reply["id"] == self.n
        return reply

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def driver() -> Iterator[Any]:
    started: list[Driver] = []

    def start(target: str = "native", version: str = "0.2.3") -> Driver:
        npm = node_target(version) if target == "native" else sdk_target("0.1.8")
        d = Driver(target, _installed(npm))
        started.append(d)
        return d
    yield start
    for d in started:
        d.stop()


def _rec(i: int, *v: float) -> dict[str, Any]:
    return {"id": str(i), "vector": list(v), "metadata": {}}


# -- the npm cache ----------------------------------------------------------------------------

def test_missing_node_names_the_install_command(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))   # an empty directory: no node, no npm
    with pytest.raises(BackendMissing, match="apt-get install nodejs npm") as info:
        install(node_target("0.2.3"), backend="rvf-node")
    assert "node and npm not found" in str(info.value)


@requires_node
def test_install_pins_versions_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRASHGATE_CACHE", str(tmp_path))
    where = _installed(sdk_target("0.2.3"))   # the SDK with the engine pinned by `overrides`
    assert where == tmp_path / "npm" / "rvf-sdk-0.2.3-native-0.2.3"
    engine = json.loads((where / "node_modules/@ruvector/rvf-node/package.json").read_text())
    assert engine["version"] == "0.2.3"
    assert [p.name for p in (tmp_path / "npm").iterdir() if p.name.startswith(".")] == []
    marker = next(where.glob(".crashgate-installed.json"))
    stamp = marker.stat().st_mtime_ns
    assert install(sdk_target("0.2.3"), backend="test") == where   # cached: not reinstalled
    assert marker.stat().st_mtime_ns == stamp


@requires_node
def test_npm_failure_is_backend_missing_with_npms_words(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setenv("CRASHGATE_CACHE", str(tmp_path))
    bad = NpmTarget("nope", {"@ruvector/rvf-node": "0.0.0-no-such-version"})
    with pytest.raises(BackendMissing, match="npm install exited"):
        install(bad, backend="rvf-node")
    assert not (tmp_path / "npm" / "nope").exists()


# -- the driver on its own --------------------------------------------------------------------

@requires_node
@pytest.mark.parametrize("version", ["0.2.3", "0.1.8"])
def test_native_driver_round_trip(driver: Any, tmp_path: Path, version: str) -> None:
    d = driver("native", version)
    hello = d("hello", protocol=1)["ok"]
    assert hello["name"] == f"@ruvector/rvf-node {version}"
    assert hello["declaration"]["metric"] == "l2"
    path = str(tmp_path / "a.rvf")
    assert d("open", path=path, options={}) == {"id": 2, "ok": None}
    assert not os.path.exists(path)   # no dimension yet: created by the first upsert
    d("upsert", records=[_rec(3, 0, 3, 0, 0), _rec(1, 1, 0, 0, 0)])
    hits = d("query", vector=[0, 0, 0, 0], k=5, where=None)["ok"]
    # the package reports squared l2 (9 and 1): the driver sends the true distance
    assert [(h["id"], h["distance"]) for h in hits] == [("1", 1.0), ("3", 3.0)]
    assert d("remove", ids=["1", "2"])["ok"] == 1
    assert d("count")["ok"] == 1
    assert d("fetch", ids=["3"])["error"]["code"] == "EUNSUPPORTED"
    assert d("verify")["ok"] == []
    assert d("close")["ok"] is None


@requires_node
def test_native_driver_refuses_what_it_cannot_pass_on(driver: Any, tmp_path: Path) -> None:
    d = driver()
    d("hello", protocol=1)
    d("open", path=str(tmp_path / "a.rvf"), options={"dimension": "2"})
    # 2^53 + 1 would be rounded by the package's JS numbers to another id
    big = d("upsert", records=[_rec(2**53 + 1, 1, 1)])["error"]
    assert big["code"] == "EINVAL" and "2^53" in big["message"]
    assert d("upsert", records=[_rec(1, 1, 1, 1)])["error"]["code"] == "EINVAL"
    meta = d("upsert", records=[{"id": "1", "vector": [1, 1], "metadata": {"tag": "x"}}])
    assert meta["error"]["code"] == "EUNSUPPORTED"
    assert d("count")["ok"] == 0   # none of the refused records was written
    assert d("open", path=str(tmp_path / "b"), options={"nope": "1"})["error"]["code"] == "EINVAL"


@requires_node
@pytest.mark.parametrize("target", ["native", "sdk"])
def test_second_writer_gets_elock(driver: Any, tmp_path: Path, target: str) -> None:
    path = str(tmp_path / "a.rvf")
    first, second = driver(target), driver(target)
    for d in (first, second):
        d("hello", protocol=1)
    first("open", path=path, options={"dimension": "2"})
    first("upsert", records=[_rec(7, 1, 2)])
    refused = second("open", path=path, options={})["error"]
    assert refused["code"] == "ELOCK", refused
    assert "0x0300" in refused["message"]
    assert first("count")["ok"] == 1   # the first writer is unharmed


@requires_node
def test_sdk_driver_keeps_u64_ids_and_its_side_file(driver: Any, tmp_path: Path) -> None:
    d = driver("sdk")
    assert "@ruvector/rvf 0.2.3" in d("hello", protocol=1)["ok"]["name"]
    path = tmp_path / "s.rvf"
    d("open", path=str(path), options={})
    top = str(2**64 - 1)
    d("upsert", records=[_rec(2**64 - 1, 0, 2), _rec(0, 1, 0)])
    hits = d("query", vector=[0, 0], k=3, where=None)["ok"]
    assert [(h["id"], h["distance"]) for h in hits] == [("0", 1.0), (top, 2.0)]
    assert Path(f"{path}.idmap.json").is_file()
    assert d("close")["ok"] is None


@requires_node
def test_a_file_that_is_not_rvf_is_ecorrupt(driver: Any, tmp_path: Path) -> None:
    path = tmp_path / "junk.rvf"
    path.write_bytes(b"this is not an RVF file" * 10)
    d = driver()
    d("hello", protocol=1)
    assert d("open", path=str(path), options={})["error"]["code"] == "ECORRUPT"
    assert path.read_bytes() == b"this is not an RVF file" * 10


# -- the backends through the process client --------------------------------------------------

def test_unknown_version_is_bad_option(tmp_path: Path) -> None:
    with pytest.raises(BadOption, match="0.2.3, 0.1.8"):
        open_rvf_node(str(tmp_path / "a.rvf"), os_env(), version="0.3.0")
    with pytest.raises(BadOption, match="dimension"):
        open_rvf_sdk(str(tmp_path / "a.rvf"), os_env(), dimensoin="4")


def test_builtin_names_resolve() -> None:
    spec = resolve("rvf-node?version=0.1.8")
    assert spec.target == "crashgate.harness.driver.rvf_node:open_rvf_node"
    assert dict(spec.options) == {"version": "0.1.8"}
    assert resolve("rvf-sdk").target == "crashgate.harness.driver.rvf_node:open_rvf_sdk"


@requires_node
@pytest.mark.parametrize("name", ["rvf-node", "rvf-node?version=0.1.8", "rvf-sdk"])
def test_backend_round_trip_and_second_writer(name: str, tmp_path: Path) -> None:
    spec = resolve(name)
    factory = spec.factory()
    path = str(tmp_path / "store.rvf")
    try:
        store = factory(path, os_env(), **dict(spec.options))
    except BackendMissing as exc:
        pytest.skip(f"npm could not install {name}: {exc}")
    try:
        store.upsert([VectorRecord.of(4, [0.0, 3.0]), VectorRecord.of(9, [4.0, 0.0])])
        hits = store.query([0.0, 0.0], 1)
        assert [(h.id, h.distance) for h in hits] == [(4, 3.0)]
        assert store.count() == 2
        with pytest.raises(LockHeld):
            factory(path, os_env(), **dict(spec.options))
        assert store.remove([9, 10]) == 1
    finally:
        store.close()
    again = factory(path, os_env(), **dict(spec.options))   # the lock went with the close
    try:
        assert again.count() == 1
    finally:
        again.close()


@requires_node
@pytest.mark.parametrize("name", ["rvf-node", "rvf-sdk"])
def test_certify_runs_the_writer_rows(name: str, tmp_path: Path) -> None:
    """The duplicate-writer rows run against the real package and decide (whatever the verdict
    is: the certificate reports what it finds)."""
    from crashgate.harness.cli import main

    out = tmp_path / "out"
    code = main(["certify", name, "--budget", "quick", "--seed", "3", "--out", str(out),
                 "--scenario", "adr032-3", "--scenario", "inv-1"])
    assert code in (0, 1, 2)
    cert = json.loads(next(out.rglob("certificate.json")).read_text())
    verdicts = {r["key"]: r["verdict"] for r in cert["rows"]}
    assert set(verdicts) == {"adr032-3", "inv-1"}
    assert verdicts["adr032-3"] != "n/a", cert["rows"]


@requires_node
@pytest.mark.parametrize("name", ["rvf-node", "rvf-node?version=0.1.8"])
def test_native_fetch_reads_the_file_with_crashgates_reader(name: str, tmp_path: Path) -> None:
    """The engine has no read-back (its driver answers fetch with EUNSUPPORTED): the native
    target names the reader rvf-ruvector, so fetch reads the file the engine wrote."""
    spec = resolve(name)
    try:
        store = spec.open(str(tmp_path / "store.rvf"), os_env())
    except BackendMissing as exc:
        pytest.skip(f"npm could not install {name}: {exc}")
    try:
        decl = store.declaration
        assert decl.metadata is False and "rvf-ruvector" in decl.notes["reader"]
        store.upsert([VectorRecord.of(4, [0.5, 3.0]), VectorRecord.of(9, [4.0, -0.25])])
        store.upsert([VectorRecord.of(4, [1.0, 2.0])])   # replaced by id
        assert store.remove([9]) == 1
        assert store.fetch([9, 4, 5]) == [VectorRecord.of(4, [1.0, 2.0])]
        block = store.fetch_block([4])
        assert block.ids == (4,) and block.vectors.tolist() == [[1.0, 2.0]]
    finally:
        store.close()


@requires_node
def test_the_sdk_names_no_reader_and_keeps_no_metadata(tmp_path: Path) -> None:
    try:
        store = resolve("rvf-sdk").open(str(tmp_path / "s.rvf"), os_env())
    except BackendMissing as exc:
        pytest.skip(f"npm could not install rvf-sdk: {exc}")
    try:
        assert store.declaration.metadata is False and "reader" not in store.declaration.notes
        store.upsert([VectorRecord.of(1, [1.0, 0.0])])
        with pytest.raises(Unsupported, match="fetch") as info:   # the op it lacks, named
            store.fetch([1])
        assert info.value.op == "fetch"
    finally:
        store.close()


@requires_node
@pytest.mark.parametrize("name", ["rvf-node", "rvf-sdk"])
def test_the_package_declares_that_it_reads_the_real_clock(name: str, tmp_path: Path) -> None:
    """open's clock_offset cannot reach the package: the rows about time wait for real."""
    try:
        store = resolve(name).open(str(tmp_path / "c.rvf"), os_env())
    except BackendMissing as exc:
        pytest.skip(f"npm could not install {name}: {exc}")
    try:
        assert store.declaration.real_clock is True
        assert "real_clock: true" in store.declaration.notes["clock"]
    finally:
        store.close()


@requires_node
@pytest.mark.parametrize("name", ["rvf-node", "rvf-sdk"])
def test_a_reader_of_a_store_never_created_is_file_not_found(name: str, tmp_path: Path) -> None:
    """As for a store in process: the recoveries that read a store back take it as empty."""
    path = str(tmp_path / "never.rvf")
    try:
        with pytest.raises(FileNotFoundError) as info:
            resolve(name).open(path, os_env(), readonly="true")
    except BackendMissing as exc:
        pytest.skip(f"npm could not install {name}: {exc}")
    assert "does not exist" in str(info.value)
    assert not os.path.exists(path)
