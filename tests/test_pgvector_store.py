"""The ``pgvector`` store (``reference/postgres/store.py``): the conformance machine, the
marker's identity (a fresh path is a fresh store, another process reaches the same one),
declarations per option, schema version, server crashes, atomic batches and filtered
queries through an index."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pgserver", reason="pip install 'crashgate[postgres]'")
psycopg = pytest.importorskip("psycopg", reason="pip install 'crashgate[postgres]'")

from conformance import conformance_test  # noqa: E402

from crashgate.backends import (  # noqa: E402
    BadOption,
    Durability,
    ServerBacked,
    VectorRecord,
    VersionTooNew,
    os_env,
)
from crashgate.reference.postgres import open_pgvector  # noqa: E402
from crashgate.reference.postgres.connect import drop_created_schemas  # noqa: E402
from crashgate.reference.vector_search import exact_search  # noqa: E402

TestPgvectorConformance = pytest.mark.usefixtures("postgres_server")(
    conformance_test("pgvector", max_examples=12))
TestPgvectorHnswConformance = pytest.mark.usefixtures("postgres_server")(
    conformance_test("pgvector?index=hnsw&metric=cosine", max_examples=8))


@pytest.fixture
def store_path(tmp_path: Path, postgres_server: Any) -> str:
    return str(tmp_path / "store")


def test_a_fresh_path_is_a_fresh_store_and_a_reopen_is_the_same(store_path: str,
                                                                 tmp_path: Path) -> None:
    env = os_env()
    a = open_pgvector(store_path, env)
    a.put("k", b"v")
    a.close()
    b = open_pgvector(str(tmp_path / "other"), env)
    assert b.scan() == [] and b.count() == 0
    b.close()
    c = open_pgvector(store_path, env)
    assert c.scan() == [("k", b"v")]
    c.close()


def test_another_process_reaches_the_same_schema_without_a_server_of_its_own(
        store_path: str) -> None:
    store = open_pgvector(store_path, os_env())
    store.put("from-parent", b"1")
    child = textwrap.dedent(f"""
        from crashgate.backends import os_env
        from crashgate.reference.postgres import open_pgvector, server
        s = open_pgvector({store_path!r}, os_env())
        s.put("from-child", b"2")
        print(s.get("from-parent"), len(server._LOCAL), s.server_pids())
        s.close()
    """)
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["b'1'", "0", "()"]
    assert store.get("from-child") == b"2"
    store.close()


def test_declarations_follow_the_options(store_path: str, tmp_path: Path) -> None:
    env = os_env()
    cases = {"": Durability.POWER_LOSS, "synchronous_commit=local": Durability.POWER_LOSS,
             "synchronous_commit=off": Durability.NONE, "fsync=off": Durability.PROCESS_CRASH}
    for i, (option, want) in enumerate(cases.items()):
        opts = dict([option.split("=")]) if option else {}
        store = open_pgvector(str(tmp_path / f"s{i}"), env, **opts)
        assert store.declaration.durability is want, option
        assert store.declaration.server and "pgserver" in store.declaration.server
        assert isinstance(store, ServerBacked) and store.session_pid() in store.server_pids()
        store.close()
    with pytest.raises(BadOption, match="index"):
        open_pgvector(store_path, env, index="btree")


def test_an_existing_server_by_url_is_never_killed_and_its_schema_is_dropped(
        store_path: str, postgres_server: Any, tmp_path: Path) -> None:
    env = os_env()
    url = postgres_server.url
    with pytest.raises(BadOption, match="fsync"):
        open_pgvector(store_path, env, url=url, fsync="off")
    store = open_pgvector(store_path, env, url=url)
    store.put("k", b"v")
    assert store.server_pids() == () and f"at {url}" in str(store.declaration.server)
    schema = store._c.schema
    store.close()
    with pytest.raises(ValueError, match="url="):
        open_pgvector(store_path, env)   # the marker says: not crashgate's own server
    reopened = open_pgvector(store_path, env, url=url)
    assert reopened.get("k") == b"v"
    reopened.close()
    drop_created_schemas()
    with psycopg.connect(url) as db:
        assert db.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                          (schema,)).fetchone() is None


def test_a_newer_schema_is_refused_unmodified(store_path: str) -> None:
    env = os_env()
    newer = open_pgvector(store_path, env, schema_version="2")
    newer.put("k", b"v2")
    newer.close()
    with pytest.raises(VersionTooNew, match="schema version 2.*supports version 1") as info:
        open_pgvector(store_path, env)
    assert "pip install" in str(info.value) and "not modified" in str(info.value)
    again = open_pgvector(store_path, env, schema_version="3")   # a newer reader opens it
    assert again.get("k") == b"v2"
    assert again._db.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
    again.close()


def test_acknowledged_writes_survive_killing_the_server(store_path: str,
                                                        postgres_server: Any) -> None:
    env = os_env()
    store = open_pgvector(store_path, env)
    store.write_batch({"a": b"1", "b": b"2"})
    store.upsert([VectorRecord.of(5, [1.0, 2.0], {"t": "x"})])
    postgres_server.kill_all()
    with pytest.raises(psycopg.OperationalError):
        store.get("a")
    with pytest.raises(psycopg.OperationalError):   # promptly, again
        store.count()
    store.close()
    back = open_pgvector(store_path, env)   # restarts the server, crash recovery
    assert back.scan() == [("a", b"1"), ("b", b"2")]
    assert back.fetch([5]) == [VectorRecord.of(5, [1.0, 2.0], {"t": "x"})]
    back.close()


def test_batches_are_all_or_nothing(store_path: str) -> None:
    store = open_pgvector(store_path, os_env())
    store.write_batch({"a": b"1"})
    with pytest.raises(ValueError, match="NUL"):
        store.write_batch({"b": b"2", "bad\x00": b"3"}, ["a"])
    store.upsert([VectorRecord.of(1, [0.0, 1.0])])
    with pytest.raises(ValueError, match="dimensions"):
        store.upsert([VectorRecord.of(2, [0.0, 1.0]), VectorRecord.of(3, [1.0])])
    with pytest.raises(ValueError, match="float32"):
        store.upsert([VectorRecord.of(4, [float("inf"), 1.0])])
    assert store.scan() == [("a", b"1")] and store.ids() == [1]
    store.close()


@pytest.mark.parametrize("index", ["hnsw", "ivfflat"])
def test_an_index_query_returns_min_k_matching_and_is_rescored(store_path: str,
                                                               index: str) -> None:
    rng = np.random.default_rng(15)
    vectors = rng.normal(size=(400, 16))
    metas = [{"n": int(i % 50), "tag": "rare" if i in (3, 77, 391) else "common"}
             for i in range(400)]
    store = open_pgvector(store_path, os_env(), index=index)
    store.upsert([VectorRecord.of(i, v, m)
                  for i, (v, m) in enumerate(zip(vectors, metas, strict=True))])
    ids = list(range(400))
    hits_found = 0
    for q in rng.normal(size=(20, 16)):
        for where in (None, {"tag": "rare"}, {"n": {"$in": [1, 2]}}):
            got = store.query(q, 10, where)
            want = exact_search(ids, vectors, metas, q, 10, "l2", where)
            assert len(got) == len(want), where
            for h in got:   # exact float64 distances of live, matching records
                assert h.distance == pytest.approx(
                    float(np.linalg.norm(vectors[h.id] - q)), abs=1e-12)
                assert h.metadata == metas[h.id]
            hits_found += len({h.id for h in got} & {h.id for h in want})
    assert hits_found >= 0.95 * 20 * (10 + 3 + 10)
    store.close()


def test_a_declaration_never_carries_the_url_s_password() -> None:
    """The declaration names the server and is written into certificates."""
    from crashgate.reference.postgres.connect import redacted
    assert redacted("postgresql://bob:s3cret@db.example:5433/app?sslmode=require") == \
        "postgresql://bob:***@db.example:5433/app?sslmode=require"
    assert redacted("postgresql://postgres:@/postgres?host=/tmp/x") == \
        "postgresql://postgres:@/postgres?host=/tmp/x"
