"""The history of one run: every op and fault in order, with its outcome.

Outcomes follow Jepsen: ``ok`` the call returned (acknowledged), ``fail`` it definitely did not
happen (the store refused it with a typed error before changing anything), ``info`` nobody knows
(a crash or an unexpected exception hit it; it may or may not have taken effect). Faults are
recorded as ``info`` too, with what recovery found in ``detail``.

Checkers read a history; they never touch the store. ``to_jsonl`` is the form attached to a
certificate: one JSON object per line.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["History", "OpRecord", "Outcome"]

Outcome = Literal["ok", "fail", "info"]
_OUTCOMES = ("ok", "fail", "info")


@dataclass(frozen=True)
class OpRecord:
    """One entry: ``args`` maps argument names to values whose ``repr`` a person can read."""

    index: int
    name: str
    args: Mapping[str, Any]
    outcome: Outcome
    error: str | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in _OUTCOMES:
            raise ValueError(f"OpRecord.outcome must be one of {_OUTCOMES}, got "
                             f"{self.outcome!r}")

    def to_json(self) -> dict[str, Any]:
        # reprs, not values: bytes, vectors and crash states are not JSON, and a repr is what a
        # person pastes back into a reproduction
        out: dict[str, Any] = {
            "index": self.index, "name": self.name,
            "args": {k: _short_repr(v) for k, v in self.args.items()},
            "outcome": self.outcome,
        }
        if self.error is not None:
            out["error"] = self.error
        if self.detail is not None:
            out["detail"] = self.detail
        return out

    def describe(self) -> str:
        """``#3 put(key='a', value=b'x') -> ok``, with the error or detail when there is one."""
        args = ", ".join(f"{k}={_short_repr(v)}" for k, v in self.args.items())
        tail = f": {self.error}" if self.error else (f" ({self.detail})" if self.detail else "")
        return f"#{self.index} {self.name}({args}) -> {self.outcome}{tail}"


def _short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class History:
    """An append-only list of ``OpRecord``; the index of a record is its position."""

    records: list[OpRecord] = field(default_factory=list)

    def record(self, name: str, args: Mapping[str, Any], outcome: Outcome,
               error: str | None = None, detail: str | None = None) -> OpRecord:
        rec = OpRecord(len(self.records), name, dict(args), outcome, error, detail)
        self.records.append(rec)
        return rec

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[OpRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> OpRecord:
        return self.records[index]

    def outcomes(self) -> Counter[str]:
        """How many records of each outcome: ``Counter({'ok': 40, 'info': 3})``."""
        return Counter(r.outcome for r in self.records)

    def to_jsonl(self) -> str:
        """One JSON object per line (empty string for an empty history)."""
        return "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in self.records)

    def tail(self, n: int = 10) -> list[str]:
        """The last ``n`` records, one line each, for a failure message."""
        return [r.describe() for r in self.records[-n:]]
