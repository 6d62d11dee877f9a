"""Random workloads for a store, seeded so a run can be replayed exactly.

A workload uses only what the store declares: key-value ops for a key-value store, batches for
a store with atomic batches, vector upserts and removes for a vector store.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from crashgate.backends import Capability, Declaration, VectorRecord
from crashgate.harness.ops import Batch, Delete, Op, Put, Remove, Upsert

__all__ = ["PROFILES", "Profile", "random_workload"]


@dataclass(frozen=True)
class Profile:
    """The shape of a workload: key pool, value sizes, vector batch sizes, delete share."""

    keys: int = 12
    max_value: int = 300
    big_value: int = 8192
    dimension: int = 8
    max_batch: int = 6
    delete_share: float = 0.2
    id_pool: int = 40


PROFILES = {
    "small": Profile(),
    # several-MiB segments and many deletes (issue: "also with large batches and many deletes")
    "large": Profile(keys=24, max_value=4096, big_value=1 << 20, dimension=384, max_batch=1200,
                     delete_share=0.45, id_pool=4000),
}


def _value(rng: random.Random, p: Profile, n: int) -> bytes:
    size = p.big_value if rng.random() < 0.05 else rng.randrange(0, p.max_value + 1)
    # a recognisable, per-op payload: torn data can never look like a value that was written
    stamp = f"op{n}:".encode()
    body = rng.randbytes(max(0, size - len(stamp)))
    return (stamp + body)[:size] if size else b""


def random_workload(decl: Declaration, ops: int, seed: int, profile: Profile) -> list[Op]:
    """``ops`` operations, deterministic for ``seed``."""
    rng = random.Random(seed)
    kv = decl.has(Capability.KV)
    vec = decl.has(Capability.VECTOR)
    batch = decl.has(Capability.BATCH)
    keys = [f"k{i:02d}" if i % 3 else f"dir/k{i:02d}" for i in range(profile.keys)]
    out: list[Op] = []
    live: set[int] = set()
    for n in range(ops):
        kinds: list[str] = []
        if kv:
            kinds += ["put", "put", "delete"] + (["batch"] if batch else [])
        if vec:
            kinds += ["upsert", "upsert"] + (["remove"] if live else [])
        kind = rng.choice(kinds)
        if kind == "put":
            out.append(Put(rng.choice(keys), _value(rng, profile, n)))
        elif kind == "delete":
            out.append(Delete(rng.choice(keys)))
        elif kind == "batch":
            chosen = rng.sample(keys, rng.randrange(2, min(6, len(keys)) + 1))
            split = rng.randrange(1, len(chosen))
            out.append(Batch(tuple((k, _value(rng, profile, n)) for k in chosen[:split]),
                             tuple(chosen[split:])))
        elif kind == "upsert":
            size = rng.randrange(1, profile.max_batch + 1)
            ids = rng.sample(range(profile.id_pool), min(size, profile.id_pool))
            recs = tuple(
                VectorRecord.of(i, [rng.uniform(-1, 1) for _ in range(profile.dimension)],
                                {"op": n, "tag": rng.choice("xyz")})
                for i in ids
            )
            live.update(ids)
            out.append(Upsert(recs))
        else:
            k = max(1, int(len(live) * profile.delete_share * rng.random()))
            gone = tuple(sorted(rng.sample(sorted(live), min(k, len(live)))))
            live.difference_update(gone)
            out.append(Remove(gone))
    return out
