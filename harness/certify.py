"""Certification: run every row of the failure-mode tables against one backend and collect the
verdicts into a certificate.

A failure is replayed before it is reported; one that does not come back is ``unknown`` with
both runs attached. Each row gets its own seed derived from the run's seed and the row's key, so
``--scenario`` alone gives the verdict the full run gives.
"""

from __future__ import annotations

import hashlib
import shlex
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crashgate.backends import BackendSpec, CorruptStore, Declaration, os_env
from crashgate.harness.verdict import Evidence, Verdict

__all__ = ["SCHEMA_VERSION", "Certificate", "RowResult", "certify", "probe_declaration",
           "row_seed"]

SCHEMA_VERSION = 1


def row_seed(seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass(frozen=True)
class RowResult:
    row: Any                      # scenarios.table.Row (the harness does not import scenarios)
    evidence: Evidence
    seed: int
    seconds: float
    first_run: Evidence | None = None   # when a failure did not reproduce: the first run

    def to_json(self) -> dict[str, Any]:
        out = {
            "key": self.row.key, "table": self.row.table, "number": self.row.number,
            "scenario": self.row.scenario, "expected": self.row.expected, "seed": self.seed,
            "seconds": round(self.seconds, 3), **self.evidence.to_json(),
        }
        if self.first_run is not None:
            out["first_run"] = self.first_run.to_json()
        return out


@dataclass
class Certificate:
    backend: str
    run_id: str
    seed: int
    budget: str
    declaration: Declaration
    started: str
    results: list[RowResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def verdict(self) -> Verdict:
        verdicts = {r.evidence.verdict for r in self.results}
        if Verdict.FAIL in verdicts:
            return Verdict.FAIL
        if Verdict.UNKNOWN in verdicts or Verdict.PASS not in verdicts:
            return Verdict.UNKNOWN  # nothing passed: nothing was certified
        return Verdict.PASS

    def to_json(self) -> dict[str, Any]:
        d = self.declaration
        return {
            "schema": "crashgate.certificate", "schema_version": SCHEMA_VERSION,
            "backend": self.backend, "run_id": self.run_id, "seed": self.seed,
            "budget": self.budget, "started": self.started, "seconds": round(self.seconds, 3),
            "verdict": self.verdict.value,
            "declaration": {
                "durability": d.durability.value,
                "capabilities": sorted(c.value for c in d.capabilities),
                "file_format": d.file_format, "wire_version": d.wire_version,
                "failpoints": list(d.failpoints), "metric": d.metric, "notes": dict(d.notes),
                "damage": d.damage.value,
            },
            "rows": [r.to_json() for r in self.results],
        }


def probe_declaration(spec: BackendSpec) -> Declaration:
    """Open the backend once in a scratch directory to read what it declares."""
    with tempfile.TemporaryDirectory(prefix="crashgate-probe-") as tmp:
        store = spec.open(f"{tmp}/store", os_env())
        try:
            decl: Declaration = store.declaration
        finally:
            store.close()
    return decl


REPLAYS = 5   # how often a conclusive failure that did not come back at once is replayed


def _run_row(row: Any, ctx: Any) -> Evidence:
    reason = row.needs(ctx.declaration)
    if reason is not None:
        return Evidence.na(reason)
    try:
        evidence: Evidence = row.procedure(ctx)
    except CorruptStore as exc:
        # the store itself says its data is damaged: a finding about the store, not a check
        # that could not run
        tb = traceback.format_exc()
        return Evidence(Verdict.FAIL, f"integrity lost: the store raised CorruptStore during the "
                        f"check: {_first_line(exc)}", {"seed": ctx.seed},
                        attachments={f"{row.key}-corrupt.txt": tb},
                        replay=lambda: _run_row(row, ctx), conclusive=True)
    except Exception as exc:  # noqa: BLE001 - the check itself broke
        tb = traceback.format_exc()
        return Evidence(Verdict.UNKNOWN, f"the check could not run: {type(exc).__name__}: {exc}",
                        {"seed": ctx.seed}, attachments={f"{row.key}-error.txt": tb})
    if evidence.verdict is not Verdict.NA and not evidence.measured:
        return replace(evidence, verdict=Verdict.UNKNOWN,
                       summary=f"{evidence.summary} (measured nothing: not a pass)")
    return evidence


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()
    return text[0] if text else type(exc).__name__


def _replay(evidence: Evidence) -> Evidence:
    assert evidence.replay is not None
    try:
        return evidence.replay()
    except Exception as exc:  # noqa: BLE001
        return Evidence(Verdict.UNKNOWN, f"replay broke: {type(exc).__name__}: {exc}")


def _confirm(row: Any, evidence: Evidence) -> tuple[Evidence, Evidence | None]:
    """Replay a failure before reporting it. One that comes back at once is a failure. One
    whose evidence is conclusive (``Evidence.conclusive``: the store was seen breaking its
    promise) is replayed up to ``REPLAYS`` times and stays a failure, with its reproduction
    rate. Any other failure that does not come back is unknown, with both runs attached."""
    if evidence.verdict is not Verdict.FAIL:
        return evidence, None
    if evidence.replay is None:
        return replace(evidence, verdict=Verdict.UNKNOWN,
                       summary=f"{evidence.summary} (could not be replayed: unknown)"), evidence
    again = _replay(evidence)
    if again.verdict is Verdict.FAIL:
        return replace(evidence, details=(*evidence.details, "replayed: failed again"),
                       measured={**evidence.measured, "replays_failed": "1 of 1"}), None
    if evidence.conclusive:
        runs = [again] + [_replay(evidence) for _ in range(REPLAYS - 1)]
        failed = sum(r.verdict is Verdict.FAIL for r in runs)
        rate = f"{failed} of {len(runs)}"
        others = sorted({f"{r.verdict.value}: {r.summary}" for r in runs
                         if r.verdict is not Verdict.FAIL})
        note = (f"reproduced in {rate} replays" if failed else
                f"seen once, not reproduced in {len(runs)} replays (the evidence of the first "
                "run is conclusive and attached)")
        return replace(
            evidence, summary=f"{evidence.summary} ({note})",
            measured={**evidence.measured, "replays_failed": rate},
            details=(*evidence.details, note, *(f"replay: {o}" for o in others[:3]))), None
    return replace(
        evidence, verdict=Verdict.UNKNOWN,
        summary=f"{evidence.summary} -- but the replay did not fail ({again.summary}): unknown",
        details=(*evidence.details, f"replay: {again.verdict.value}: {again.summary}"),
    ), evidence


def certify(
    spec: BackendSpec, rows: Sequence[Any], *, budget: Any, seed: int, workdir: Path,
    context_factory: Callable[..., Any],
    progress: Callable[[str], None] = lambda _m: None,
    declaration: Declaration | None = None,
) -> Certificate:
    """Run ``rows`` against ``spec``. ``context_factory(spec=, declaration=, budget=, seed=,
    workdir=, progress=)`` builds each row's context (scenarios.table.RowContext)."""
    decl = declaration or probe_declaration(spec)
    started = datetime.now(UTC)
    run_id = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{seed}"
    cert = Certificate(spec.label, run_id, seed, budget.name, decl, started.isoformat())
    t0 = time.perf_counter()
    for n, row in enumerate(rows, 1):
        progress(f"[{n}/{len(rows)}] {row.table} #{row.number}: {row.scenario}")
        rseed = row_seed(seed, row.key)
        rdir = workdir / row.key
        rdir.mkdir(parents=True, exist_ok=True)
        ctx = context_factory(spec=spec, declaration=decl, budget=budget, seed=rseed,
                              workdir=rdir, progress=progress)
        t = time.perf_counter()
        evidence, first = _confirm(row, _run_row(row, ctx))
        if evidence.verdict is Verdict.FAIL and evidence.reproduce is None:
            # the row as a whole is the reproduction: the same run seed gives the same row seed
            migrator = getattr(ctx, "migrator", None)
            evidence = replace(evidence, reproduce=shlex.join(
                ["crashgate", "certify", spec.label, "--scenario", row.key, "--seed", str(seed),
                 "--budget", budget.name, *(["--migrator", migrator] if migrator else [])]))
        cert.results.append(RowResult(row, evidence, rseed, time.perf_counter() - t, first))
        progress(f"      {evidence.verdict.value}: {evidence.summary}")
    cert.seconds = time.perf_counter() - t0
    return cert
