"""``crashgate rvf ...``: ADR-032's acceptance test across processes, and every command's
output and exit code in process."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crashgate.backends import os_env
from crashgate.reference.rvf import open_rvf
from crashgate.reference.rvf.cli import add_parser, main, rvf_subparsers
from crashgate.reference.rvf.segments import HEADER_SIZE


def crashgate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crashgate.harness.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def vectors_json(path: Path, n: int, dim: int, seed: int = 1) -> list[dict[str, object]]:
    rng = random.Random(seed)
    doc = [{"id": i, "vector": [rng.uniform(-1, 1) for _ in range(dim)],
            "metadata": {"group": i % 3}} for i in range(n)]
    path.write_text(json.dumps(doc))
    return doc


def test_adr032_acceptance_create_ingest_query_restart_query(tmp_path: Path) -> None:
    doc = vectors_json(tmp_path / "vectors.json", 200, 384)
    q = [random.Random(9).uniform(-1, 1) for _ in range(384)]
    qtext = ",".join(repr(x) for x in q)
    r = crashgate("rvf", "create", "test.rvf", "--dimension", "384", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = crashgate("rvf", "ingest", "test.rvf", "--input", "vectors.json", cwd=tmp_path)
    assert r.returncode == 0 and "ingested 200 vectors" in r.stdout, r.stderr
    first = crashgate("rvf", "query", "test.rvf", "--vector", qtext, "--k", "10", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 10
    # a new process (the restart) gives the same results
    again = crashgate("rvf", "query", "test.rvf", "--vector", qtext, "--k", "10", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == first.stdout
    # and they are the exact top 10, within 1e-6
    m = np.array([d["vector"] for d in doc])
    dist = np.sqrt(((m - np.array(q)) ** 2).sum(axis=1))
    want = sorted(zip(dist, [d["id"] for d in doc], strict=True))[:10]
    got = [(float(line.split("\t")[1]), int(line.split("\t")[0])) for line in lines]
    assert [i for _, i in got] == [i for _, i in want]
    assert np.allclose([d for d, _ in got], [d for d, _ in want], rtol=0, atol=1e-6)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["rvf", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_commands_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, child = str(tmp_path / "s.rvf"), str(tmp_path / "child.rvf")
    doc = vectors_json(tmp_path / "in.json", 20, 4)
    assert run(capsys, "create", store, "--dimension", "4", "--metric", "cosine")[0] == 0
    code, out, _ = run(capsys, "ingest", store, "--input", str(tmp_path / "in.json"))
    assert code == 0 and "ingested 20 vectors" in out
    code, out, _ = run(capsys, "query", store, "--vector", "[1, 0, 0, 0]", "--k", "3", "--json",
                       "--where", '{"group": 1}')
    hits = json.loads(out)
    assert code == 0 and len(hits) == 3 and all(h["metadata"] == {"group": 1} for h in hits)
    code, out, _ = run(capsys, "status", store, "--json")
    status = json.loads(out)
    assert code == 0 and status["count"] == 20 and status["metric"] == "cosine"
    code, out, _ = run(capsys, "segments", store)
    assert code == 0 and "VEC" in out and "MANIFEST" in out
    code, out, _ = run(capsys, "segments", store, "--json")
    assert code == 0 and {s["type_name"] for s in json.loads(out)} >= {"VEC", "WITNESS"}
    assert run(capsys, "verify", store)[:2] == (0, "ok: 2 witness entries and 5 segments "
                                                   "verify (epoch 1)\n")
    assert run(capsys, "compact", store)[0] == 0
    code, out, _ = run(capsys, "derive", store, child)
    assert code == 0 and "depth 1" in out and "20 vectors" in out
    # export -> ingest round-trips
    code, _, _ = run(capsys, "export", child, "--output", str(tmp_path / "out.json"))
    assert code == 0 and json.loads((tmp_path / "out.json").read_text()) == doc
    copy = str(tmp_path / "copy.rvf")
    run(capsys, "create", copy, "--dimension", "4")
    assert run(capsys, "ingest", copy, "--input", str(tmp_path / "out.json"))[0] == 0
    with open_rvf(store, os_env(), readonly="true") as a, \
            open_rvf(copy, os_env(), readonly="true") as b:
        assert a.fetch(a.ids()) == b.fetch(b.ids())


def test_csv_ingest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "s.rvf")
    (tmp_path / "in.csv").write_text("id,x,y\n1,0.5,1\n2,-1,2.25\n")
    run(capsys, "create", store, "--dimension", "2")
    assert run(capsys, "ingest", store, "--input", str(tmp_path / "in.csv"))[0] == 0
    with open_rvf(store, os_env(), readonly="true") as s:
        assert [r.vector for r in s.fetch([1, 2])] == [(0.5, 1.0), (-1.0, 2.25)]


@pytest.mark.parametrize(("content", "name", "expected"), [
    ('[{"id": 1, "vector": [1, 2]}, {"id": 2, "vector": [1]}]', "in.json", "item 1 (id 2)"),
    ('[{"id": 1, "vector": [1, "a"]}]', "in.json", "item 0 (id 1) vector[1]"),
    ('[{"id": -4, "vector": [1, 2]}]', "in.json", "item 0: id -4"),
    ('[{"id": 1, "vector": [1, 2]},\n {"id": 1, "vector": [3, 4]}]', "in.json", "already"),
    ('[{"id": 1, "vector": [1, 2]}\n {"id": 2}]', "in.json", "line 2 column 2"),
    ("id,x,y\n1,0.5,1\n2,zz,2\n", "in.csv", "line 3 column 'x'"),
    ("id,x,y\n1,0.5\n", "in.csv", "line 2: 2 fields"),
    ("x,y\n1,2\n", "in.csv", "line 1"),
])
def test_bad_input_names_the_item_and_exits_3(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, name: str,
        expected: str) -> None:
    store = str(tmp_path / "s.rvf")
    run(capsys, "create", store, "--dimension", "2")
    (tmp_path / name).write_text(content)
    code, _, err = run(capsys, "ingest", store, "--input", str(tmp_path / name))
    assert code == 3 and expected in err, err
    with open_rvf(store, os_env(), readonly="true") as s:
        assert s.count() == 0  # nothing of a rejected input is ingested


def test_errors_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "s.rvf")
    assert run(capsys, "query", store, "--vector", "1,2")[0] == 3  # no such store
    run(capsys, "create", store, "--dimension", "2")
    assert run(capsys, "create", store, "--dimension", "2")[0] == 3  # exists
    code, _, err = run(capsys, "query", store, "--vector", "1,2,3")
    assert code == 3 and "dimension 2" in err
    assert run(capsys, "query", store, "--vector", "1,x")[0] == 3
    with open_rvf(store, os_env()):  # a writer holds it
        code, _, err = run(capsys, "compact", store)
        assert code == 1 and "ELOCK" in err
        assert run(capsys, "query", store, "--vector", "1,2")[0] == 0  # readers still can
    v2 = str(tmp_path / "v2.rvf")
    open_rvf(v2, os_env(), wire_version="2").close()
    code, _, err = run(capsys, "status", v2)
    assert code == 1 and "requires RVF wire version 2" in err and "npm update" in err
    with open_rvf(store, os_env()) as s:
        s.put("a", b"1")
        wit = [x.offset for x in s.segments() if x.type_name == "WITNESS"][1]
    data = bytearray(Path(store).read_bytes())
    data[wit + HEADER_SIZE + 50] ^= 1
    Path(store).write_bytes(bytes(data))
    code, out, _ = run(capsys, "verify", store)
    assert code == 1 and out.startswith("FAIL witness entry #1")
    Path(store).write_bytes(b"junk" * 100)
    code, _, err = run(capsys, "status", store)
    assert code == 1 and "is damaged" in err
    assert main(["rvf"]) == 3


def test_other_modules_can_add_rvf_commands() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_parser(sub)
    cmds = rvf_subparsers(sub)
    assert rvf_subparsers(sub) is cmds
    cmds.add_parser("migrate").set_defaults(func=lambda a: 0)
    args = parser.parse_args(["rvf", "migrate"])
    assert args.func(args) == 0
    assert parser.parse_args(["rvf", "status", "x"]).path == "x"
