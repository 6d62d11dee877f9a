"""The run's model states, built op by op (``PrefixModel``, which shares work between states),
equal the states computed from scratch for every prefix of the ops."""

from __future__ import annotations

import pytest

from crashgate.backends import resolve
from crashgate.harness.model import PrefixModel, StoreState
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.workload import PROFILES, random_workload


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_prefix_states_equal_the_states_of_each_prefix(seed: int) -> None:
    store = resolve("memory").open("/data/store", sim_env(SimDisk(DiskImage.empty("/data"))))
    ops = random_workload(store.declaration, 120, seed, PROFILES["small"], history=True)
    model = PrefixModel()
    kv: dict = {}
    vectors: dict = {}
    relational: dict = {}   # memory's missions (workloads draw them for Capability.MISSIONS)
    for op in ops:
        got = model.apply(op)
        op.apply(kv, vectors, relational)
        want = StoreState.of(kv, vectors, relational=relational)
        assert got == want and got.digest == want.digest
    assert len(model.states) == len(ops) + 1
    kinds = {type(op).__name__ for op in ops}
    assert {"Upsert", "Remove", "Put"} <= kinds, kinds   # both paths of apply were taken
