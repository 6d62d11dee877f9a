"""ADR-032 invariant 4 across implementations: "Every `.rvf` file written by WASM must be
readable by Node N-API and vice versa for the same RVF wire version. If a file uses features
from a newer version, the header must declare it and the CLI must refuse with an upgrade path."

The store under test shares its file format with a partner (``procedures_format._partners``:
built-ins declaring the same ``file_format``) that can write other versions (a ``wire_version``
option, ``harness.faults.skew.probe_versioning``). On the real file system (``os_env``, a
scratch directory under the row's workdir) the partner writes the same records twice: at the
store's version (its declared ``wire_version``, else the partner's own: they share the format)
and at the next one. The store under test then opens each:

- the same-version file reads back: top-10 neighbours judged against exact search over what
  was written, and equal to the partner's own when both search exactly (as row 5 does);
- the newer file is refused with ``VersionTooNew`` naming an upgrade path, as a writer and, if
  it takes ``readonly=true``, as a reader; every file in its directory is left byte for byte.

Every open goes through the store's own factory, so this runs for process-driven and
server-backed stores too (the in-process half of invariant 4, on the simulated disk, does not).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from crashgate.backends import (
    BackendSpec,
    BadOption,
    Capability,
    Hit,
    Recall,
    VectorRecord,
    VersionTooNew,
    os_env,
    resolve,
)
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.faults.skew import Versioning, probe_versioning
from crashgate.harness.verdict import Evidence, Verdict, first_line
from crashgate.scenarios.procedures_format import (
    QUERIES,
    _compare,
    _partners,
    _Reader,
    _top10,
    probe_builtin,
)
from crashgate.scenarios.procedures_versions import hint_problem
from crashgate.scenarios.table import RowContext

__all__ = ["check_partner_gate", "partner_gates"]

DIM = 32
RECORDS = 100
STORE = "store.rvf"


def _snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative name -> bytes)."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _changes(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    out = [f"+{n} ({len(after[n])} bytes)" for n in after if n not in before]
    out += [f"-{n}" for n in before if n not in after]
    for n in before.keys() & after.keys():
        if before[n] != after[n]:
            first = next((i for i, (x, y) in enumerate(zip(before[n], after[n], strict=False))
                          if x != y), min(len(before[n]), len(after[n])))
            out.append(f"~{n} ({len(before[n])} -> {len(after[n])} bytes, first difference at "
                       f"offset {first})")
    return sorted(out)


def _refusal(spec: BackendSpec, path: str, what: str, notes: list[str], **extra: str
             ) -> list[str] | None:
    """Open ``path`` (a newer file): what is wrong with how the store took it ([] = refused with
    the upgrade hint, no file changed or removed; None = the store takes no such ``extra``
    option). Files the open created beside it (e.g. SQLite's -wal and -shm of a database the
    store opened before it saw the version) change nothing written: they go to ``notes``."""
    directory = Path(path).parent
    before = _snapshot(directory)
    problems: list[str] = []
    try:
        store = spec.open(path, os_env(), **extra)
    except BadOption:
        if not extra:
            raise
        return None
    except VersionTooNew as exc:
        if (lacking := hint_problem(exc)) is not None:
            problems.append(f"{what}: {lacking}")
    except Exception as exc:  # noqa: BLE001 - any other answer is the finding
        problems.append(f"{what} was refused with {first_line(exc)} instead of VersionTooNew")
    else:
        try:
            answered = f"count() = {store.count()}"
            hits = store.query(np.zeros(DIM), 3)
            answered += f", query(0-vector, k=3) -> ids {[h.id for h in hits]}"
        except Exception as exc:  # noqa: BLE001 - what it answered is evidence, not a verdict
            answered = f"then {first_line(exc)} when read"
        finally:
            store.close()
        problems.append(f"{what} was opened (no VersionTooNew) and answered {answered}: a file "
                        "whose headers declare a newer version must be refused")
    changed = _changes(before, _snapshot(directory))
    created = [c for c in changed if c.startswith("+")]
    if created:
        notes.append(f"{what}: the refused open left new files beside it, every written file "
                     "unchanged: " + "; ".join(created[:4]))
    if changed := [c for c in changed if not c.startswith("+")]:
        problems.append(f"{what}: the open changed {directory}: " + "; ".join(changed[:4]))
    return problems


def check_partner_gate(spec: BackendSpec, *, partner: str, version: int, newer: int, seed: int,
                       workdir: str) -> Evidence:
    """``partner`` (a backend spec) writes one file at ``version`` and one at ``newer`` under
    ``workdir``; ``spec`` must read the first as written and refuse the second, unchanged."""
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="gate-", dir=root))   # a replay gets fresh files
    other = resolve(partner)
    env = os_env()
    rng = np.random.default_rng(seed)
    # no metadata: this is the version gate, not a metadata round trip (row 5 does that)
    live = {i: VectorRecord.of(i, rng.standard_normal(DIM), {}) for i in range(RECORDS)}
    # enough neighbour slots to judge a recall promise; cheap for an exact store
    queries = rng.standard_normal((QUERIES[True], DIM))
    paths = {v: str(scratch / f"v{v}" / STORE) for v in (version, newer)}
    answers: dict[int, list[list[Hit]]] = {}
    recall = None
    for v, path in paths.items():
        Path(path).parent.mkdir()
        w = other.open(path, env, wire_version=str(v))
        try:
            w.upsert(list(live.values()))
            recall = w.declaration.recall
            answers[v] = _top10(w, queries)
        finally:
            w.close()
    same, new = (f"a v{v} file written by {partner} (wire_version={v})" for v in (version, newer))
    measured = {"files": 2, "opens": 1, "queries_compared": len(queries), "seed": seed}
    problems: list[str] = []
    notes = [f"files under {scratch}: v{version}/{STORE} and v{newer}/{STORE}, {RECORDS} "
             f"vectors of dimension {DIM} each; {partner} writes its wire_version into every "
             "header it writes"]
    read = _read_same(spec, paths[version], live, queries, answers[version], recall, same)
    (problems if read[0] else notes).append(read[1])
    as_writer = _refusal(spec, paths[newer], f"{new}, opened by {spec.label} as a writer",
                         notes)
    problems += as_writer or []
    as_reader = _refusal(spec, paths[newer], f"{new}, opened by {spec.label} with "
                         "readonly=true", notes, readonly="true")
    if as_reader is None:
        notes.append(f"{spec.label} takes no readonly=true option: only its writer open of the "
                     "newer file was checked")
    measured["opens"] += 1 if as_reader is None else 2
    problems += as_reader or []
    if problems:
        return Evidence(Verdict.FAIL, problems[0], measured, (*problems[1:], *notes))
    return Evidence(Verdict.PASS, f"{same} read back by {spec.label} (top-10 judged against "
                    f"exact search); {new} refused with the upgrade path, no file changed",
                    measured, tuple(notes))


def _read_same(spec: BackendSpec, path: str, live: dict[int, VectorRecord], queries: np.ndarray,
               theirs: list[list[Hit]], recall: Recall | None, same: str) -> tuple[bool, str]:
    """``spec`` reads the same-version file: (failed, what it showed). Its top-10 are judged
    against exact search over ``live`` (a recall promise by an interval) and, both exact,
    compared with the partner's own answers ``theirs``."""
    what = f"{spec.label} reading {same}"
    try:
        a = spec.open(path, os_env())
    except Exception as exc:  # noqa: BLE001 - failing to read it is the finding
        return True, f"{same} could not be opened by {spec.label}: {first_line(exc)}"
    try:
        ours = _Reader(spec.label, a.declaration.recall)
        got = _top10(a, queries)
    finally:
        a.close()
    problems = ours.judge(got, live, queries, "l2", what)
    if ours.recall is None and recall is None:
        problems += _compare(got, theirs, what)
    how = "equal to the partner's, exact"
    if ours.recall is not None:
        verdict, how = ours.tally.verdict(ours.recall)
        if verdict is Verdict.FAIL:
            problems.append(f"{what}: {how}")
    if problems:
        return True, "; ".join(problems[:3])
    return False, f"{what}: {len(queries)} queries' top-10 judged against exact search ({how})"


def _versioning(name: str, workdir: Path) -> tuple[Versioning, str | None]:
    """How ``name`` writes other versions, or why it cannot."""
    spec = resolve(name)
    decl = probe_builtin(name).declaration   # a partner: its probe answered
    assert decl is not None, name
    if not decl.has(Capability.WIRE_VERSION):
        return Versioning("none", None), f"{name} declares no wire version"
    scratch = Path(tempfile.mkdtemp(prefix=f"probe-{name}-", dir=workdir))
    v = probe_versioning(spec, decl, os_env, str(scratch / STORE))
    return v, (None if v.kind == "option" else f"{name}: {v.why or v.kind}")


def partner_gates(ctx: RowContext) -> tuple[list[Evidence], str | None]:
    """One check per partner that writes other versions, or (no checks, why none ran)."""
    fmt = ctx.declaration.file_format
    if not ctx.declaration.has(Capability.VECTOR):
        return [], "the gate across implementations writes vectors (declares no vector)"
    partners = _partners(ctx)
    if not partners:
        return [], (f"no other store shares its file format ({fmt})" if fmt
                    else "declares no shared file format")
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    out: list[Evidence] = []
    skipped: list[str] = []
    for name in partners:
        versioning, why = _versioning(name, ctx.workdir)
        if why is not None or versioning.current is None:
            skipped.append(why or f"{name} has no current version")
            continue
        version = ctx.declaration.wire_version
        version = versioning.current if version is None else version
        kwargs = {"partner": name, "version": version, "newer": version + 1, "seed": ctx.seed,
                  "workdir": str(ctx.workdir / f"gate-{name}")}
        try:
            ev = check_partner_gate(ctx.spec, **kwargs)  # type: ignore[arg-type]
        except BadOption as exc:   # the partner cannot write one of the two versions
            skipped.append(f"{name}: {first_line(exc)}")
            continue
        out.append(on_failure(ev, workdir=ctx.workdir, name=f"reproduce_gate_{name}.py",
                              spec=ctx.spec, check=check_partner_gate, kwargs=kwargs))
    why_none = None if out else (f"no partner sharing {fmt} writes other versions: "
                                 + "; ".join(skipped))
    return out, why_none
