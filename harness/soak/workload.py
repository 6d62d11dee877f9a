"""What a soak's agents do: a realistic mix of ADR-072's operations (key-value reads and writes,
scans, Q-value updates, GOAP plans, vector upserts, fetches and queries) over a small shared
space of keys, so that agents contend for the same records, as 15 agents of one swarm do.

Each agent's ops come from its own seeded generator, so an agent that resumes after its
process was killed picks up at the op after the last one it began (``agent_ops(..., start=n)``),
and the ops of a run are the same whatever the machine. Every write carries a token unique in
the soak (``record.py``); values, plans and vectors are built from it, and a read is decoded
back to the token it holds, or to ``"garbled:..."`` when what came back is not what any token
builds (a torn or altered record: the checker then finds it "never written").
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from crashgate.backends import Capability, Declaration

__all__ = ["DIM", "KEYS", "PLANS", "QVALUES", "VECTOR_IDS", "AgentOp", "agent_ops",
           "plan_for", "q_value_for", "query_vector", "token_of_plan", "token_of_value",
           "token_of_vector", "value_for", "vector_for"]

KEYS = tuple(f"k{i:03d}" for i in range(48))
QVALUES = tuple((f"s{s}", f"a{a}") for s in range(6) for a in range(4))
PLANS = tuple(f"p{i:02d}" for i in range(12))
VECTOR_IDS = tuple(range(96))
DIM = 16
QUERY_K = 5
PREFIXES = ("k0", "k1", "k2", "k3", "k4", "")

# (op, capability, weight): reads outnumber writes about 3:2, as in an agent swarm's memory
WRITER_MIX: tuple[tuple[str, Capability, int], ...] = (
    ("get", Capability.KV, 26), ("put", Capability.KV, 18), ("delete", Capability.KV, 3),
    ("scan", Capability.KV, 4),
    ("q_update", Capability.RELATIONAL, 12), ("q_get", Capability.RELATIONAL, 6),
    ("goap_store", Capability.RELATIONAL, 4), ("goap_delete", Capability.RELATIONAL, 1),
    ("goap_get", Capability.RELATIONAL, 4),
    ("upsert", Capability.VECTOR, 8), ("remove", Capability.VECTOR, 1),
    ("fetch", Capability.VECTOR, 6), ("query", Capability.VECTOR, 7),
)
READER_MIX = tuple(m for m in WRITER_MIX if m[0] in
                   ("get", "scan", "q_get", "goap_get", "fetch", "query"))


@dataclass(frozen=True)
class AgentOp:
    """One op an agent will run: ``op`` and ``args`` as ``record.SoakOp`` has them; ``value``
    what a write writes (a token, a float for ``q_update``, ``{id: token}`` for ``upsert``,
    None for deletes and reads)."""

    seq: int
    op: str
    args: Mapping[str, Any]
    value: Any = None


def _mix(decl: Declaration, reader: bool) -> tuple[list[str], list[int]]:
    mix = [(op, w) for op, cap, w in (READER_MIX if reader else WRITER_MIX) if decl.has(cap)]
    if not mix:
        raise ValueError("the store declares none of kv, relational, vector: a soak has "
                         "nothing to do with it")
    return [op for op, _ in mix], [w for _, w in mix]


def agent_ops(decl: Declaration, *, seed: int, run: int, agent: str, start: int = 0
              ) -> Iterator[AgentOp]:
    """The endless op sequence of ``agent`` (``"3"`` for a writer's agent, ``"r1"`` for a
    reader) in run ``run`` of a soak seeded ``seed``, from op number ``start`` on."""
    rng = random.Random(f"crashgate-soak:{seed}:{run}:{agent}")
    ops, weights = _mix(decl, reader=agent.startswith("r"))
    seq = 0
    while True:
        op = rng.choices(ops, weights)[0]
        token = f"{run}.{agent}.{seq}"
        made = _make(op, rng, token, seq, run, agent)
        if seq >= start:
            yield made
        seq += 1


def _make(op: str, rng: random.Random, token: str, seq: int, run: int, agent: str
          ) -> AgentOp:
    if op in ("get", "put", "delete"):
        key = rng.choice(KEYS)
        return AgentOp(seq, op, {"key": key}, token if op == "put" else None)
    if op == "scan":
        return AgentOp(seq, op, {"prefix": rng.choice(PREFIXES)})
    if op in ("q_update", "q_get"):
        state, action = rng.choice(QVALUES)
        value = q_value_for(run, agent, seq) if op == "q_update" else None
        return AgentOp(seq, op, {"state": state, "action": action}, value)
    if op in ("goap_store", "goap_delete", "goap_get"):
        plan = rng.choice(PLANS)
        return AgentOp(seq, op, {"plan": plan}, token if op == "goap_store" else None)
    if op == "upsert":
        ids = sorted(rng.sample(VECTOR_IDS, rng.randint(1, 4)))
        return AgentOp(seq, op, {"ids": ids}, {str(i): f"{token}.{i}" for i in ids})
    if op in ("remove", "fetch"):
        ids = sorted(rng.sample(VECTOR_IDS, rng.randint(1, 3)))
        return AgentOp(seq, op, {"ids": ids})
    if op == "query":
        return AgentOp(seq, op, {"k": QUERY_K, "seed": rng.randrange(1 << 30)})
    raise AssertionError(op)


def q_value_for(run: int, agent: str, seq: int) -> float:
    """A Q-value no other update of the soak writes (exact as a float and in JSON)."""
    digest = int.from_bytes(hashlib.blake2b(f"{run}.{agent}.{seq}".encode(),
                                            digest_size=6).digest(), "big")
    return float(digest) / 2**8


def _filler(token: str, n: int) -> bytes:
    return hashlib.blake2b(token.encode(), digest_size=n).digest()


def value_for(token: str) -> bytes:
    """The bytes a put of ``token`` writes: the token, a bar and 32 bytes derived from it."""
    return token.encode() + b"|" + _filler(token, 32)


def token_of_value(value: bytes | None) -> str | None:
    if value is None:
        return None
    token, bar, rest = value.partition(b"|")
    text = token.decode("utf-8", "replace")
    return text if bar and rest == _filler(text, 32) else f"garbled:{value[:40]!r}"


def plan_for(token: str) -> dict[str, Any]:
    return {"token": token, "steps": [f"step-{b}" for b in _filler(token, 3)]}


def token_of_plan(plan: Mapping[str, Any] | None) -> str | None:
    if plan is None:
        return None
    token = str(plan.get("token"))
    return token if dict(plan) == plan_for(token) else f"garbled:{str(plan)[:60]}"


def vector_for(token: str) -> list[float]:
    """The vector an upsert of ``token`` writes: DIM floats in [-1, 1) from its hash, exact
    in float32 (multiples of 1/128)."""
    return [(b - 128) / 128.0 for b in _filler(token, DIM)]


def token_of_vector(vector: Any, metadata: Mapping[str, Any]) -> str:
    token = str(metadata.get("token"))
    # exact: every component is a multiple of 1/128, which float32 and float64 both hold
    got = [float(x) for x in vector]
    return token if got == vector_for(token) else f"garbled:{token}"


def query_vector(seed: int) -> list[float]:
    return vector_for(f"query.{seed}")
