"""Benchmark: stateful steps per second of crashgate's model on the memory backend, next to a
bare Hypothesis ``RuleBasedStateMachine`` over a dict doing the same operations: the ratio is
the harness's own overhead (simulated disk, history, model checks, crash recovery, judging).

    python tests/benchmarks/bench_stateful.py [--examples N] [--steps N] [--rounds N] [backend ...]

Backends named on the command line (e.g. ``json sqlite rvf``) get a line of their own, each run
once after the comparison.

Runs alternate (bare, model, bare, model ...) in one process so that both see the same machine
load; the medians are printed. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from crashgate.backends import VectorRecord
from crashgate.harness.ops import Batch
from crashgate.harness.stateful import (
    BATCHES,
    KEYS,
    RECORDS,
    VALUES,
    VECTORS,
    machine_for,
)
from crashgate.reference.vector_search import distances, matches

IDS = st.integers(0, 9)


class BareDict(RuleBasedStateMachine):
    """The same key-value and vector operations on plain dicts: Hypothesis's own cost."""

    steps = 0

    def __init__(self) -> None:
        super().__init__()
        self.kv: dict[str, bytes] = {}
        self.vectors: dict[int, VectorRecord] = {}

    def _step(self) -> None:
        type(self).steps += 1

    @rule(key=KEYS, value=VALUES)
    def put(self, key: str, value: bytes) -> None:
        self._step()
        self.kv[key] = value

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self._step()
        self.kv.pop(key, None)

    @rule(batch=BATCHES)
    def write_batch(self, batch: Batch) -> None:
        self._step()
        for k in batch.deletes:
            self.kv.pop(k, None)
        self.kv.update(dict(batch.puts))

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        self._step()
        self.kv.get(key)

    @rule(prefix=st.sampled_from(["", "a", "b/", "z", "q"]))
    def scan(self, prefix: str) -> None:
        self._step()
        sorted((k, v) for k, v in self.kv.items() if k.startswith(prefix))

    @rule(records=RECORDS)
    def upsert(self, records: list[VectorRecord]) -> None:
        self._step()
        self.vectors.update({r.id: r for r in records})

    @rule(ids=st.lists(IDS, max_size=3, unique=True))
    def remove(self, ids: list[int]) -> None:
        self._step()
        for i in ids:
            self.vectors.pop(i, None)

    @rule(ids=st.lists(IDS, max_size=4))
    def fetch(self, ids: list[int]) -> None:
        self._step()
        [self.vectors[i] for i in sorted(set(ids)) if i in self.vectors]

    @rule()
    def count(self) -> None:
        self._step()
        len(self.vectors)

    @rule(vector=VECTORS, k=st.integers(0, 5),
          where=st.none() | st.fixed_dictionaries({"tag": st.sampled_from(["x", "y"])}))
    def query(self, vector: list[float], k: int, where: dict[str, Any] | None) -> None:
        self._step()
        live = [r for r in self.vectors.values() if matches(r.metadata, where)]
        if live and k:
            sorted(distances(np.array([r.vector for r in live]), vector, "l2"))[:k]

    @invariant()
    def agrees(self) -> None:
        len(self.vectors)


def _run(machine: Any, examples: int, steps: int, run_seed: int) -> float:
    seed(run_seed)(machine)
    t0 = time.perf_counter()
    run_state_machine_as_test(machine, settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
        suppress_health_check=list(HealthCheck)))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("backends", nargs="*", default=[])
    args = ap.parse_args()
    bare_rates: list[float] = []
    model_rates: list[float] = []
    crash_share: list[float] = []
    for r in range(args.rounds):
        BareDict.steps = 0
        seconds = _run(BareDict, args.examples, args.steps, r)
        bare_rates.append(BareDict.steps / seconds)
        model = machine_for("memory")
        seconds = _run(model, args.examples, args.steps, r)
        model_rates.append(model.stats["steps"] / seconds)
        crash_share.append(model.stats["crash_states"] / max(1, model.stats["steps"]))
    bare, mod = statistics.median(bare_rates), statistics.median(model_rates)
    print(f"{args.rounds} rounds of {args.examples} examples x up to {args.steps} steps "
          "(medians; rounds alternate bare / model)")
    print(f"{'machine':<44} {'steps/s':>9}   per round")
    print(f"{'bare RuleBasedStateMachine over a dict':<44} {bare:>9.0f}   "
          + " ".join(f"{x:.0f}" for x in bare_rates))
    print(f"{'crashgate model on memory (with faults)':<44} {mod:>9.0f}   "
          + " ".join(f"{x:.0f}" for x in model_rates))
    print(f"overhead: the model runs at 1/{bare / mod:.2f} of the bare machine's speed "
          f"({statistics.median(crash_share):.0%} of its steps are crash recoveries)")
    for name in args.backends:
        model = machine_for(name)
        seconds = _run(model, args.examples, args.steps, 0)
        print(f"{'crashgate model on ' + name:<44} {model.stats['steps'] / seconds:>9.0f}   "
              f"({model.stats['crash_states']} crash recoveries judged)")


if __name__ == "__main__":
    main()
