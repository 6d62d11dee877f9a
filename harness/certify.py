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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crashgate.backends import (
    BackendSpec,
    Capability,
    CorruptStore,
    CrashgateError,
    DamagePromise,
    Declaration,
    Durability,
    Recall,
    os_env,
)
from crashgate.backends.errors import BadBackend
from crashgate.harness.interrupt import raise_if_interrupted
from crashgate.harness.provenance import environment, regenerate_command
from crashgate.harness.reproduce import pythonpath_for
from crashgate.harness.row_output import captured_output
from crashgate.harness.unsupported import cannot_answer
from crashgate.harness.verdict import Evidence, Verdict

__all__ = ["SCHEMA_VERSION", "Certificate", "RowResult", "certify", "probe_declaration",
           "row_seed"]

# 2: ``command`` and ``environment`` (where the run came from) beside the verdicts
SCHEMA_VERSION = 2


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
    command: str = ""
    """The shell command that regenerates this run."""
    environment: dict[str, str] = field(default_factory=environment)

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
            "verdict": self.verdict.value, "command": self.command,
            "environment": dict(self.environment),
            "declaration": {
                "durability": d.durability.value,
                "capabilities": sorted(c.value for c in d.capabilities),
                "file_format": d.file_format, "wire_version": d.wire_version,
                "failpoints": list(d.failpoints), "metric": d.metric, "notes": dict(d.notes),
                "damage": d.damage.value, "metadata": d.metadata, "server": d.server,
                "real_clock": d.real_clock, "injects_io_errors": d.injects_io_errors,
                "recall": None if d.recall is None else {"k": d.recall.k,
                                                         "at_least": d.recall.at_least},
            },
            "rows": [r.to_json() for r in self.results],
        }


def probe_declaration(spec: BackendSpec) -> Declaration:
    """Open the backend once in a scratch directory to read what it declares.

    Every way a named backend can fail to be one is a ``BadBackend`` (or the registry's own
    ``BackendMissing``/``BadOption``) here, before any row runs: a factory that raises, a store
    without a ``declaration``, a declaration of the wrong shape."""
    factory = spec.factory()
    with tempfile.TemporaryDirectory(prefix="crashgate-probe-") as tmp:
        try:
            store = factory(f"{tmp}/store", os_env(), **dict(spec.options))
        except CrashgateError:
            raise   # BadOption, BackendMissing ...: already the user's story
        except Exception as exc:  # noqa: BLE001 - a user's factory may raise anything
            raise BadBackend(spec.label, f"its factory {spec.target} raised "
                             f"{type(exc).__name__}: {_first_line(exc)} when opening a fresh "
                             "store in an empty directory",
                             "make open(path, env, **options) create a store at a path that "
                             "does not exist yet") from exc
        try:
            decl = getattr(store, "declaration", None)
            problem = _declaration_problem(decl)
        finally:
            close = getattr(store, "close", None)
            if callable(close):
                close()
    if problem is not None:
        raise BadBackend(spec.label, problem, "give the store a `declaration = Declaration("
                         "durability=Durability..., capabilities=frozenset({Capability...}))` "
                         "(crashgate.backends)")
    assert isinstance(decl, Declaration)
    return decl


def _declaration_problem(decl: object) -> str | None:
    """What is wrong with a store's ``declaration``, or None when it is well formed."""
    if decl is None:
        return "the store its factory returns has no `declaration` (what it promises)"
    if not isinstance(decl, Declaration):
        return (f"the store's declaration is a {type(decl).__name__}, not a "
                "crashgate.backends.Declaration")
    checks: list[tuple[str, object, type | tuple[type, ...]]] = [
        ("durability", decl.durability, Durability), ("damage", decl.damage, DamagePromise),
        ("capabilities", decl.capabilities, (frozenset, set)),
        ("file_format", decl.file_format, (str, type(None))),
        ("wire_version", decl.wire_version, (int, type(None))),
        ("failpoints", decl.failpoints, (tuple, list)),
        ("metric", decl.metric, (str, type(None))), ("notes", decl.notes, Mapping),
        ("recall", decl.recall, (Recall, type(None))), ("metadata", decl.metadata, bool)]
    for name, value, want in checks:
        if not isinstance(value, want):
            return f"its declaration's {name} is {value!r}, of the wrong type"
    bad = [c for c in decl.capabilities if not isinstance(c, Capability)]
    if bad:
        return (f"its declaration's capabilities hold {bad[0]!r}, not a Capability (one of "
                f"{', '.join(c.value for c in Capability)})")
    if not all(isinstance(f, str) for f in decl.failpoints):
        return f"its declaration's failpoints {decl.failpoints!r} are not all names (str)"
    if not decl.metadata and decl.has(Capability.METADATA_FILTER):
        # a filter over metadata the store does not keep can match nothing: the two contradict
        return ("its declaration says it keeps no metadata (metadata=False) and declares "
                "metadata-filter: a store that keeps no metadata cannot filter on it")
    return None


REPLAYS = 5   # how often a conclusive failure that did not come back at once is replayed


def _run_row(row: Any, ctx: Any) -> Evidence:
    reason = row.needs(ctx.declaration)
    if reason is not None:
        return Evidence.na(reason)
    try:
        evidence: Evidence = row.procedure(ctx)
    except CorruptStore as exc:
        raise_if_interrupted()   # see below
        # the store itself says its data is damaged: a finding about the store, not a check
        # that could not run
        tb = traceback.format_exc()
        return Evidence(Verdict.FAIL, f"integrity lost: the store raised CorruptStore during the "
                        f"check: {_first_line(exc)}", {"seed": ctx.seed},
                        attachments={f"{row.key}-corrupt.txt": tb},
                        replay=lambda: _run_row(row, ctx), conclusive=True)
    except Exception as exc:  # noqa: BLE001 - the check itself broke
        raise_if_interrupted()   # a Ctrl-C that a library turned into another error
        tb = traceback.format_exc()
        # an op the store does not have (Unsupported) broke no promise: say which, not "broke"
        summary = cannot_answer(exc) or f"the check could not run: {type(exc).__name__}: {exc}"
        return Evidence(Verdict.UNKNOWN, summary, {"seed": ctx.seed},
                        attachments={f"{row.key}-error.txt": tb})
    raise_if_interrupted()   # a Ctrl-C swallowed during the row: the row's verdict is not one
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
    scenarios: Sequence[str] = (),
) -> Certificate:
    """Run ``rows`` against ``spec``. ``context_factory(spec=, declaration=, budget=, seed=,
    workdir=, progress=)`` builds each row's context (scenarios.table.RowContext);
    ``scenarios`` the row keys the user asked for (empty: all), for the command that
    regenerates the run."""
    decl = declaration or probe_declaration(spec)
    pythonpath = pythonpath_for(spec.target)
    started = datetime.now(UTC)
    run_id = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{seed}"
    cert = Certificate(spec.label, run_id, seed, budget.name, decl, started.isoformat(),
                       command=regenerate_command(spec.label, seed=seed, budget=budget.name,
                                                  scenarios=scenarios, pythonpath=pythonpath))
    t0 = time.perf_counter()
    for n, row in enumerate(rows, 1):
        progress(f"[{n}/{len(rows)}] {row.table} #{row.number}: {row.scenario}")
        rseed = row_seed(seed, row.key)
        rdir = workdir / row.key
        rdir.mkdir(parents=True, exist_ok=True)
        ctx = context_factory(spec=spec, declaration=decl, budget=budget, seed=rseed,
                              workdir=rdir, progress=progress)
        if n == 1 and (getattr(ctx, "migrator", None)
                       or getattr(ctx, "pattern_migrator", None)):
            cert.command = regenerate_command(
                spec.label, seed=seed, budget=budget.name, scenarios=scenarios,
                migrator=getattr(ctx, "migrator", None), pythonpath=pythonpath,
                pattern_migrator=getattr(ctx, "pattern_migrator", None))
        t = time.perf_counter()
        with captured_output() as said:
            evidence, first = _confirm(row, _run_row(row, ctx))
        if said:
            # the procedure's own output (e.g. a store logging the recovery it was made to
            # do): evidence about the row, not a problem of the run
            shown = said[:5] + ([f"... and {len(said) - 5} more lines"] if len(said) > 5 else [])
            evidence = replace(evidence, details=(
                *evidence.details, *(f"output of the row's procedure: {line}" for line in shown)))
        row_command = regenerate_command(spec.label, seed=seed, budget=budget.name,
                                         scenarios=[row.key],
                                         migrator=getattr(ctx, "migrator", None),
                                         pythonpath=pythonpath,
                                         pattern_migrator=getattr(ctx, "pattern_migrator",
                                                                  None))
        evidence = _runnable(evidence, rdir, row_command, pythonpath)
        cert.results.append(RowResult(row, evidence, rseed, time.perf_counter() - t, first))
        progress(f"      {evidence.verdict.value} ({time.perf_counter() - t:.1f} s)")
    cert.seconds = time.perf_counter() - t0
    return cert


def _runnable(evidence: Evidence, rdir: Path, row_command: str, pythonpath: str | None
              ) -> Evidence:
    """A failed row's ``reproduce`` made to run from a clean shell anywhere: a script in the
    row's scratch directory is attached (the report points at the copy beside the
    certificate); a command that still names the scratch directory (gone after the run) gives
    way to the row's own command, kept in the details; a ``crashgate`` command gets the
    ``PYTHONPATH`` a user's backend module needs."""
    if evidence.verdict is not Verdict.FAIL and evidence.verdict is not Verdict.UNKNOWN:
        return evidence
    text = evidence.reproduce
    if text is None:
        return (replace(evidence, reproduce=row_command)
                if evidence.verdict is Verdict.FAIL else evidence)
    words = text.split()
    attachments = dict(evidence.attachments)
    if len(words) == 2 and words[0] == "python" and Path(words[1]).is_file():
        script = Path(words[1])
        attachments.setdefault(script.name, script.read_text())
        return replace(evidence, attachments=attachments)
    scratch = str(rdir.resolve().parent)
    if scratch in text or str(rdir.parent) in text:
        return replace(evidence, reproduce=row_command, details=(
            *evidence.details, f"inner reproduction (names files of the run's scratch "
            f"directory, removed after the run): {text}"))
    if pythonpath and words[0] == "crashgate":
        return replace(evidence, reproduce=f"PYTHONPATH={shlex.quote(pythonpath)} {text}")
    return evidence
