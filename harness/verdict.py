"""Verdicts and the evidence behind them: what a certificate is made of."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["first_line", "Evidence", "Verdict", "combine"]


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"
    NA = "n/a"


@dataclass(frozen=True)
class Evidence:
    """What one scenario row concluded and what it measured.

    ``measured`` always says how much was looked at (crash states, steps, examples, processes,
    seed): a pass that measured nothing is not a pass. ``reproduce`` is a shell command or the
    path of a Python file that replays a failure. ``replay`` re-runs the failing check; the
    certifier calls it before reporting a failure, and a failure that does not come back is
    ``unknown`` with both runs attached.
    """

    verdict: Verdict
    summary: str
    measured: Mapping[str, Any] = field(default_factory=dict)
    details: tuple[str, ...] = ()
    reproduce: str | None = None
    replay: Callable[[], Evidence] | None = field(default=None, compare=False, repr=False)
    attachments: Mapping[str, str] = field(default_factory=dict)
    """File name -> text, written beside the certificate (histories, reproductions)."""
    conclusive: bool = False
    """A failure seen in the store itself (a judged history that violates the model, a store
    left unopenable, acknowledged data missing): when a replay does not bring it back, it is
    replayed a few more times and reported as a failure with its reproduction rate. A failure
    without such evidence (a timeout, a check that broke) that does not come back is
    ``unknown``."""

    @staticmethod
    def na(reason: str) -> Evidence:
        return Evidence(Verdict.NA, reason)

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "summary": self.summary,
            "measured": dict(self.measured),
            "details": list(self.details),
            "reproduce": self.reproduce,
            "attachments": sorted(self.attachments),
        }


def combine(parts: list[Evidence], summary: str) -> Evidence:
    """One row's evidence from several checks: any fail fails, else any unknown is unknown,
    else pass if anything passed; all n/a stays n/a. ``summary`` says what a pass is; a fail
    or an unknown is summed up by its first such part (an unknown never reads as a pass)."""
    verdicts = {p.verdict for p in parts}
    if Verdict.FAIL in verdicts:
        verdict = Verdict.FAIL
    elif Verdict.UNKNOWN in verdicts:
        verdict = Verdict.UNKNOWN
    elif Verdict.PASS in verdicts:
        verdict = Verdict.PASS
    else:
        verdict = Verdict.NA
    measured: dict[str, Any] = {}
    for p in parts:
        for k, v in p.measured.items():
            measured[k] = measured.get(k, 0) + v if isinstance(v, int | float) and not isinstance(
                v, bool) and k != "seed" else v
    failing = next((p for p in parts if p.verdict is verdict), None)
    attachments: dict[str, str] = {}
    for p in parts:
        attachments.update(p.attachments)
    return Evidence(
        verdict, failing.summary if verdict in (Verdict.FAIL, Verdict.UNKNOWN) and failing
        else summary,
        measured, tuple(d for p in parts for d in (p.summary, *p.details)),
        failing.reproduce if failing else None, failing.replay if failing else None, attachments,
        conclusive=failing.conclusive if failing else False,
    )


def first_line(exc: BaseException) -> str:
    """``Type: the first line of its message``: an error as evidence quotes it."""
    text = str(exc).splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
