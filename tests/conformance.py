"""A Hypothesis conformance test for any store: random sequences of every operation the store
declares, with close-and-reopen among them, checked step by step against a dict model.

Used by each reference store's test module::

    TestJson = conformance_test("json")

``make_env(tmpdir)`` gives the env the store is opened with (real files by default).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from crashgate.backends import BatchWrite, Capability, Env, VectorRecord, os_env, resolve
from crashgate.harness.vector_oracle import check_hits

KEYS = st.sampled_from(["a", "ab", "abc", "b", "b/1", "b/2", "c", "z" * 40, "ünï"])
VALUES = st.binary(max_size=64) | st.sampled_from([b"", b"x" * 3000])
IDS = st.integers(min_value=0, max_value=12) | st.just(2**64 - 1)
DIM = 4
VECTORS = st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=DIM, max_size=DIM)
METADATA = st.fixed_dictionaries({}, optional={"tag": st.sampled_from(["x", "y"]),
                                                "n": st.integers(0, 3)})


def conformance_test(
    spec: str, make_env: Callable[[str], Env] | None = None, max_examples: int = 40,
    stateful_step_count: int = 30, path_name: str = "store",
) -> Any:
    backend = resolve(spec)
    env_for = make_env or (lambda _tmp: os_env())

    class Conformance(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self._tmp = tempfile.TemporaryDirectory(prefix="crashgate-conf-")
            self.env = env_for(self._tmp.name)
            self.path = f"{self._tmp.name}/{path_name}"
            self.store = backend.open(self.path, self.env)
            self.kv: dict[str, bytes] = {}
            self.vectors: dict[int, VectorRecord] = {}
            decl = self.store.declaration
            self.has_kv = decl.has(Capability.KV)
            self.has_vec = decl.has(Capability.VECTOR)
            self.has_batch = isinstance(self.store, BatchWrite) and decl.has(Capability.BATCH)
            self.metric = decl.metric or "l2"

        @initialize()
        def started(self) -> None:
            assert self.has_kv or self.has_vec, "a store must be a key-value or a vector store"

        # -- key-value --------------------------------------------------------------------
        @precondition(lambda self: self.has_kv)
        @rule(key=KEYS, value=VALUES)
        def put(self, key: str, value: bytes) -> None:
            self.store.put(key, value)
            self.kv[key] = value

        @precondition(lambda self: self.has_kv)
        @rule(key=KEYS)
        def delete(self, key: str) -> None:
            self.store.delete(key)
            self.kv.pop(key, None)

        @precondition(lambda self: self.has_kv)
        @rule(key=KEYS)
        def get(self, key: str) -> None:
            assert self.store.get(key) == self.kv.get(key)

        @precondition(lambda self: self.has_kv)
        @rule(prefix=st.sampled_from(["", "a", "b/", "z", "q"]))
        def scan(self, prefix: str) -> None:
            expected = sorted((k, v) for k, v in self.kv.items() if k.startswith(prefix))
            assert self.store.scan(prefix) == expected

        @precondition(lambda self: self.has_batch)
        @rule(puts=st.dictionaries(KEYS, VALUES, max_size=4), deletes=st.lists(KEYS, max_size=3))
        def write_batch(self, puts: dict[str, bytes], deletes: list[str]) -> None:
            self.store.write_batch(puts, deletes)
            for k in deletes:
                self.kv.pop(k, None)
            self.kv.update(puts)

        # -- vectors ----------------------------------------------------------------------
        @precondition(lambda self: self.has_vec)
        @rule(records=st.lists(st.tuples(IDS, VECTORS, METADATA), max_size=4,
                               unique_by=lambda r: r[0]))
        def upsert(self, records: list[tuple[int, list[float], dict[str, Any]]]) -> None:
            recs = [VectorRecord.of(i, v, m) for i, v, m in records]
            self.store.upsert(recs)
            for r in recs:
                self.vectors[r.id] = r

        @precondition(lambda self: self.has_vec)
        @rule(ids=st.lists(IDS, max_size=3))
        def remove(self, ids: list[int]) -> None:
            live = len({i for i in ids if i in self.vectors})
            assert self.store.remove(ids) == live
            for i in ids:
                self.vectors.pop(i, None)

        @precondition(lambda self: self.has_vec)
        @rule(vector=VECTORS, k=st.integers(0, 6),
              where=st.none() | st.fixed_dictionaries({}, optional={
                  "tag": st.sampled_from(["x", "y"]) | st.fixed_dictionaries(
                      {"$in": st.lists(st.sampled_from(["x", "y"]), max_size=2)}),
                  "n": st.fixed_dictionaries({"$gte": st.integers(0, 3)},
                                             optional={"$lt": st.integers(0, 4)})}))
        def query(self, vector: list[float], k: int, where: dict[str, Any] | None) -> None:
            hits = self.store.query(vector, k, where)
            records = list(self.vectors.values())
            problem, _, _ = check_hits(hits, records, vector, k, self.metric, where,
                                       self.store.declaration.recall)
            assert problem is None, f"query(k={k}, where={where}): {problem}"

        @precondition(lambda self: self.has_vec)
        @rule()
        def count_and_fetch(self) -> None:
            assert self.store.count() == len(self.vectors)
            got = self.store.fetch(list(self.vectors) + [99])
            assert [r.id for r in got] == sorted(self.vectors)
            for r in got:
                want = self.vectors[r.id]
                np.testing.assert_allclose(r.vector, want.vector, rtol=1e-6, atol=1e-6)
                assert dict(r.metadata) == dict(want.metadata)

        # -- lifecycle --------------------------------------------------------------------
        @rule()
        def reopen(self) -> None:
            self.store.close()
            self.store = backend.open(self.path, self.env)

        @invariant()
        def sizes_agree(self) -> None:
            if self.has_vec:
                assert self.store.count() == len(self.vectors)

        def teardown(self) -> None:
            try:
                self.store.close()
            finally:
                self._tmp.cleanup()

    Conformance.TestCase.settings = settings(
        max_examples=max_examples, stateful_step_count=stateful_step_count, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    return Conformance.TestCase
