"""ARCH-001's end-to-end test, "Verify JSON matches original", as a property: a generated
mission document (``harness.missions.mission_documents``: nested, unicode, large narratives,
empty arrays) put in phase 1 (JSON), promoted to phase 3 (SQLite) and rolled back to phase 1
(the exporter's JSON) reads back with the same canonical JSON at every phase and after a
reopen. Hypothesis draws the documents (as many as the budget's examples, from the row's
seed) and shrinks a failing one, which the evidence carries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from crashgate.backends import BackendSpec, canonical_mission
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.missions import mission_documents
from crashgate.harness.powerloss import DATA_DIR
from crashgate.harness.seeded_search import seeded_find
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.scenarios.procedures_arch_common import (
    PATH,
    close_into,
    first_line,
    lacks,
    same_doc,
)
from crashgate.scenarios.table import RowContext

__all__ = ["check_roundtrip", "roundtrip"]


# -- arch001-roundtrip ----------------------------------------------------------------------


def _roundtrip_one(spec: BackendSpec, doc: dict[str, Any]) -> str | None:
    """Put ``doc`` in phase 1 (JSON), promote to 3 (SQLite), roll back to 1 (the exported
    JSON), reopen: why the document read at some step is not ``doc``, or None."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    mission_id = doc["mission_id"]
    problems: list[str] = []

    def compare(store: Any, where: str) -> bool:
        got = store.mission_get(mission_id)
        if not same_doc(got, doc):
            problems.append(f"{where}: read {canonical_mission(got)[:300]!r}" if isinstance(
                got, Mapping) else f"{where}: read {got!r:.100}")
            return False
        return True

    store = spec.open(PATH, sim_env(disk))
    try:
        while store.stage > 1:
            store.rollback()
        store.mission_put(doc)
        ok = compare(store, "phase 1 (JSON)")
        while ok and store.stage < 3:
            store.promote()
            ok = compare(store, f"promoted to phase {store.stage}"
                         + (" (SQLite)" if store.stage == 3 else ""))
        while ok and store.stage > 1:
            store.rollback()
            ok = compare(store, f"rolled back to phase {store.stage}"
                         + (" (the exported JSON)" if store.stage == 2 else ""))
    except Exception as exc:  # noqa: BLE001 - any failure of the round trip is the finding
        problems.append(f"raised {first_line(exc)}")
    finally:
        close_into(store, problems)
    if problems:
        return problems[0]
    try:
        store = spec.open(PATH, sim_env(disk))
    except Exception as exc:  # noqa: BLE001
        return f"did not reopen after the round trip: {first_line(exc)}"
    try:
        compare(store, "reopened in phase 1 (the exported JSON on disk)")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"reopened, reading raised {first_line(exc)}")
    finally:
        close_into(store, problems)
    return problems[0] if problems else None


def check_roundtrip(spec: BackendSpec, *, seed: int, examples: int,
                    doc: dict[str, Any] | None = None) -> Evidence:
    """``examples`` generated documents (Hypothesis, from ``seed``), or just ``doc``, each
    round-tripped (``_roundtrip_one``); the first failure shrunk to a smallest document."""
    store = spec.open(PATH, sim_env(SimDisk(DiskImage.empty(DATA_DIR))))
    try:
        lacking = lacks(store)
        if lacking is None:
            first, last = store.stage_range
            if not (first <= 1 and last >= 3):
                lacking = f"phases {first}-{last} do not include 1 (JSON) and 3 (SQLite)"
    finally:
        store.close()
    if lacking:
        return Evidence.na(lacking)
    if doc is not None:
        why = _roundtrip_one(spec, doc)
        return _roundtrip_evidence(doc, why, 1, seed)
    tried = 0
    found: dict[bytes, str] = {}

    def fails(candidate: dict[str, Any]) -> bool:
        nonlocal tried
        tried += 1
        why = _roundtrip_one(spec, candidate)
        if why is not None:
            found[canonical_mission(candidate)] = why
        return why is not None

    shrunk: dict[str, Any] | None = seeded_find(mission_documents(), fails, budget=examples,
                                                seed=seed)
    if shrunk is None:
        return _roundtrip_evidence(None, None, tried, seed)
    return _roundtrip_evidence(shrunk, found[canonical_mission(shrunk)], tried, seed)


def _roundtrip_evidence(doc: dict[str, Any] | None, why: str | None, tried: int,
                        seed: int) -> Evidence:
    measured = {"examples": tried, "seed": seed}
    if why is None or doc is None:
        if tried == 0:
            return Evidence(Verdict.UNKNOWN, "no document was generated", measured)
        return Evidence(Verdict.PASS, f"{tried} generated mission documents went JSON -> SQLite "
                        "-> JSON unchanged (canonical JSON equal at every phase)", measured)
    text = canonical_mission(doc).decode("utf-8")
    return Evidence(Verdict.FAIL, f"a mission document did not survive the round trip: {why}",
                    measured, (f"shrunk document: {text[:1000]}",),
                    attachments={"roundtrip_document.json": text}, conclusive=True)


def roundtrip(ctx: RowContext) -> Evidence:
    ev = check_roundtrip(ctx.spec, seed=ctx.seed, examples=max(1, ctx.budget.examples))
    shrunk = ev.attachments.get("roundtrip_document.json")
    kwargs: dict[str, Any] = {"seed": ctx.seed, "examples": max(1, ctx.budget.examples)}
    if shrunk is not None:
        kwargs["doc"] = json.loads(shrunk)
    return on_failure(ev, workdir=ctx.workdir, name="reproduce_roundtrip.py", spec=ctx.spec,
                      check=check_roundtrip, kwargs=kwargs)
