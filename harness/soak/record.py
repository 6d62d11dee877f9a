"""One op of a soak, as the history file holds it (``history.jsonl``, one JSON object a line,
appended as the soak goes, so a soak killed half-way keeps its evidence).

Times are ``time.monotonic()`` seconds: CLOCK_MONOTONIC is one clock for every process on the
machine, so the intervals of the writer's agents, the readers and the faults compare directly.

Registers and their tokens. Every write carries a token unique in the whole soak
(``"<run>.<process>.<agent>.<seq>"``), so a read names the one write whose value it returned:

=============== =============================== ============================================
op              args                            value (writes) / result (reads)
=============== =============================== ============================================
put             {"key": k}                      value: token
delete          {"key": k}                      value: None
get             {"key": k}                      result: token or None
scan            {"prefix": p}                   result: {key: token} for every key it listed
q_update        {"state": s, "action": a}       value: the float written; result: {"value",
                                                "updates"} the store returned
q_get           {"state": s, "action": a}       result: {"value", "updates"} or None
goap_store      {"plan": p}                     value: token
goap_delete     {"plan": p}                     value: None
goap_get        {"plan": p}                     result: token or None
upsert          {"ids": [i, ...]}               value: {str(id): token}
remove          {"ids": [i, ...]}               value: None
fetch           {"ids": [i, ...]}               result: {str(id): token or None}
query           {"k": k}                        result: {str(id): token} of the hits
=============== =============================== ============================================

A fault is recorded too, as ``op`` ``"fault"`` with ``args["name"]`` (e.g. ``kill-writer``),
``start``/``end`` its window, ``outcome`` ``info`` and what happened in ``detail``.

Outcomes follow Jepsen (``harness.history``): ``ok`` acknowledged, ``fail`` definitely did not
happen, ``info`` indeterminate. An op in flight when its process was killed is ``info`` with
``end`` the moment the kill was known (it took effect before then, or never).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["READS", "WRITES", "Outcome", "SoakOp", "read_history"]

Outcome = Literal["ok", "fail", "info"]
WRITES = frozenset({"put", "delete", "q_update", "goap_store", "goap_delete", "upsert",
                    "remove"})
READS = frozenset({"get", "scan", "q_get", "goap_get", "fetch", "query"})


@dataclass(frozen=True)
class SoakOp:
    """One line of ``history.jsonl``; the table in this module's docstring gives the shapes of
    ``args``, ``value`` and ``result`` per ``op``."""

    index: int
    process: str              # "writer#2" (the writer's 2nd incarnation), "reader-1", ...
    agent: int | None         # the agent within a writer; None for readers' sweeps and faults
    op: str
    args: Mapping[str, Any]
    start: float
    end: float
    outcome: Outcome
    value: Any = None
    result: Any = None
    error: str | None = None
    detail: str | None = None
    run: int = 0              # which run of the soak (``--runs``; shards split runs)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_line(self) -> str:
        doc = {k: v for k, v in asdict(self).items() if v not in (None, {}) or k == "result"}
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n"

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> SoakOp:
        return SoakOp(index=int(doc["index"]), process=str(doc["process"]),
                      agent=doc.get("agent"), op=str(doc["op"]), args=doc.get("args", {}),
                      start=float(doc["start"]), end=float(doc["end"]),
                      outcome=doc["outcome"], value=doc.get("value"),
                      result=doc.get("result"), error=doc.get("error"),
                      detail=doc.get("detail"), run=int(doc.get("run", 0)),
                      extra=doc.get("extra", {}))

    def describe(self) -> str:
        """``#12 writer#1/agent 3 put(key='k007') = 't.0.w1.3.17' -> ok [10.203, 10.205]``."""
        who = self.process + (f"/agent {self.agent}" if self.agent is not None else "")
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        what = (f" = {self.value!r}" if self.op in WRITES else
                f" -> {self.result!r}" if self.op in READS else "")
        tail = f": {self.error}" if self.error else (f" ({self.detail})" if self.detail else "")
        return (f"#{self.index} {who} {self.op}({args}){what} -> {self.outcome}{tail} "
                f"[{self.start:.3f}, {self.end:.3f}]")


def read_history(path: str | Path) -> Iterator[SoakOp]:
    """The ops of a history file in order; a torn last line (the soak was killed while writing
    it) is skipped, any other bad line is an error naming the line."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield SoakOp.from_json(json.loads(line))
        except (ValueError, KeyError) as exc:
            if n == len(lines):
                return
            raise ValueError(f"{path}, line {n}: not a soak op ({exc})") from None
