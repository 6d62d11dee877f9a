"""ADR-0003's "Embedding model changes require reindex; store embed_model + embed_dim metadata",
over the backend under certification, through ADR-0003's ``VectorStore``.

Refusals: on a store indexed by model A (dimension 16), a query vector of another dimension,
a query naming another model, and a ``VectorStore`` embedding with another model are each
refused with an error naming both models or dimensions; every hit carries A and 16.

The reindex to model B (dimension 24), crashed throughout (``procedures_adr0003_crash``: crash
states on a disk store, server kills before each of the reindex's write calls on a server
store): each recovered store is indexed by A or by B, never both; every chunk is found, each
hit carrying the active model and dimension at its exact distance, as the same layer over
crashgate's ``memory`` store answers in that model; the uncrashed reindex ends on B.
"""

from __future__ import annotations

import contextlib
from typing import Any

from crashgate.backends import resolve
from crashgate.harness.crashspan import crash_throughout
from crashgate.harness.powerloss import DATA_DIR
from crashgate.harness.recovery import reopen_after_crash
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Evidence, Verdict, combine, first_line
from crashgate.scenarios.procedures_adr0003 import (
    PATH,
    adr0003,
    corpus,
    durable_enough,
    judge_retrieval,
)
from crashgate.scenarios.procedures_adr0003_crash import (
    KillBefore,
    _Abandoned,
    crash_points,
    kill_how,
    models_for,
)
from crashgate.scenarios.table import RowContext

__all__ = ["OLD", "NEW", "check_reindex", "reindex"]

OLD = ("det-a", 16)
NEW = ("det-b", 24)
_DOCS = 10


def _layer(store: Any, model: tuple[str, int]) -> Any:
    return adr0003("VectorStore")(store, adr0003("DeterministicEmbedder")(*model),
                                  slot_dim=NEW[1])


def _filled(store: Any, seed: int) -> Any:
    layer = _layer(store, OLD)
    for doc in corpus(seed, docs=_DOCS).documents:
        layer.ingest(doc)
    return layer


def _truths(seed: int) -> dict[str, Any]:
    """The corpus over ``memory`` indexed by each model: model name -> its VectorStore."""
    out = {}
    for model in (OLD, NEW):
        layer = _filled(resolve("memory").open(PATH, sim_env(SimDisk(DiskImage.empty(
            DATA_DIR)))), seed)
        if model == NEW:
            layer.reindex(adr0003("DeterministicEmbedder")(*NEW))
        out[model[0]] = layer
    return out


def _judge(store: Any, truths: dict[str, Any], seed: int, decl: Any,
           allowed: tuple[str, ...]) -> str | None:
    """The recovered ``store`` is indexed by one of ``allowed`` and answers as its truth."""
    info = _layer(store, OLD).active()
    if (info.model, info.dim) not in (OLD, NEW) or info.model not in allowed:
        return f"indexed by {info}, not by one of {allowed}"
    layer = _layer(store, (info.model, info.dim))
    for text, _k, where in corpus(seed, docs=_DOCS).queries[:4]:
        got = layer.retrieve(text, 10_000, where)
        truth = truths[info.model].retrieve(text, 10_000, where)
        mixed = {(h.embed_model, h.embed_dim) for h in got} - {(info.model, info.dim)}
        if mixed:
            return f"indexed by {info.model}, yet hits carry {sorted(mixed)}: a mix"
        problem, _f, _p = judge_retrieval(got, truth, 10_000, decl.recall is not None)
        if problem:
            return f"indexed by {info.model}: retrieve({text!r}, where={where}): {problem}"
    return None


def _refusals(spec: Any, seed: int) -> Evidence:
    embedding_mismatch = adr0003("EmbeddingMismatch")
    store = spec.open(PATH, sim_env(SimDisk(DiskImage.empty(DATA_DIR))))
    problems = []
    try:
        layer = _filled(store, seed)
        text = corpus(seed, docs=_DOCS).queries[0][0]
        attempts = {
            "a query vector of dimension 24": (lambda: layer.retrieve([0.1] * 24, 3), ("24",
                                                                                    "16")),
            "a query naming model det-b": (lambda: layer.retrieve(text, 3, embed_model="det-b"),
                                           ("det-b", "det-a")),
            "a VectorStore embedding with det-b": (
                lambda: _layer(store, NEW).retrieve(text, 3), ("det-b", "det-a")),
        }
        for what, (call, named) in attempts.items():
            try:
                call()
                problems.append(f"{what} against an index of det-a (16) was answered")
            except embedding_mismatch as exc:
                if not all(n in str(exc) for n in named):
                    problems.append(f"{what}: the refusal does not name {named}: {exc}")
        hits = layer.retrieve(text, 5)
        if not hits or any((h.embed_model, h.embed_dim) != OLD for h in hits):
            problems.append(f"hits do not carry embed_model det-a, embed_dim 16: {hits!r:.200}")
    finally:
        store.close()
    if problems:
        return Evidence(Verdict.FAIL, problems[0], {"refusals": 3}, tuple(problems[1:]),
                        conclusive=True)
    return Evidence(Verdict.PASS, "a wrong dimension, another model named, and another "
                    "model's VectorStore each refused naming both; every hit carries its "
                    "embed_model and embed_dim", {"refusals": 3})


def _on_disk(spec: Any, seed: int, budget: int, state: str | None) -> Evidence:
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    store = spec.open(PATH, sim_env(disk))
    decl = store.declaration
    try:
        layer = _filled(store, seed)
        start = disk.position
        layer.reindex(adr0003("DeterministicEmbedder")(*NEW))
        end = disk.position
    finally:
        store.close()
    truths = _truths(seed)

    def judge(_crash: Any, image: DiskImage) -> str | None:
        try:
            reopened = reopen_after_crash(spec.open, PATH, sim_env(SimDisk(image)), decl).store
        except Exception as exc:  # noqa: BLE001 - not reopening is the finding
            return f"did not reopen: {first_line(exc)}"
        try:
            return _judge(reopened, truths, seed, decl, (OLD[0], NEW[0]))
        except Exception as exc:  # noqa: BLE001
            return f"reading it back raised {first_line(exc)}"
        finally:
            reopened.close()
    return crash_throughout(disk.base, disk.trace, (start, end), judge,
                            what=f"reindex {OLD[0]} -> {NEW[0]}", models=models_for(decl),
                            budget=budget, seed=seed, state=state,
                            passed="indexed by one model, every chunk found")


def _on_server(spec: Any, seed: int, kills: int, point: int | None) -> Evidence:
    truths = _truths(seed)
    counted = _server_run(spec, seed, None, 0, truths)   # no crash: count the write calls
    if not isinstance(counted, int):
        return Evidence(Verdict.FAIL, f"the reindex without a crash: {counted}",
                        conclusive=True)
    points = crash_points(counted, kills) if point is None else [point]
    for turn, n in enumerate(points):
        why = _server_run(spec, seed, n, turn, truths)
        if isinstance(why, str):
            return Evidence(Verdict.FAIL, f"crash before write call {n} of {counted} of the "
                            f"reindex: {why}", {"crashes": turn + 1, "point": n},
                            conclusive=True)
    return Evidence(Verdict.PASS, f"the reindex crashed before each of {len(points)} of its "
                    f"{counted} write calls (server and session kills in turn): indexed by one "
                    "model each time, every chunk found", {"crashes": len(points)})


def _server_run(spec: Any, seed: int, n: int | None, turn: int, truths: dict[str, Any]
                ) -> int | str | None:
    """Reindex with a crash before write call ``n`` (None: no crash; returns the calls made),
    reopen, judge; the problem, or None."""
    disk = SimDisk(DiskImage.empty(DATA_DIR))
    store = spec.open(PATH, sim_env(disk))
    decl = store.declaration
    layer = _filled(store, seed)
    how, kill = kill_how(store, turn)
    wrapper = KillBefore(store, n, kill)
    layer.store = wrapper
    with contextlib.suppress(Exception, _Abandoned):
        layer.reindex(adr0003("DeterministicEmbedder")(*NEW))
    if n is None:
        store.close()
        return wrapper.calls
    with contextlib.suppress(Exception):
        if "client" not in how:
            store.close()
    try:
        reopened = spec.open(PATH, sim_env(disk))
    except Exception as exc:  # noqa: BLE001
        return f"{how}: did not reopen: {first_line(exc)}"
    try:
        why = _judge(reopened, truths, seed, decl, (OLD[0], NEW[0]))
        return f"{how}: {why}" if why else None
    finally:
        reopened.close()


def check_reindex(spec: Any, *, seed: int, budget: int, kills: int = 4,
                  state: str | None = None, point: int | None = None) -> Evidence:
    """The refusals and the reindex crashed throughout (module docstring)."""
    refusals = _refusals(spec, seed)
    probe = spec.open(PATH, sim_env(SimDisk(DiskImage.empty(DATA_DIR))))
    try:
        decl = probe.declaration
    finally:
        probe.close()
    not_durable = durable_enough(decl)
    if not_durable:
        crashed = Evidence.na(f"the reindex under crashes: {not_durable}")
    elif decl.server is None:
        crashed = _on_disk(spec, seed, budget, state)
    else:
        crashed = _on_server(spec, seed, kills, point)
    parts = [refusals, crashed]
    return combine([p for p in parts if p.verdict is not Verdict.NA] or parts,
                   f"{refusals.summary}; {crashed.summary}")


def reindex(ctx: RowContext) -> Evidence:
    from crashgate.harness.faults.repro import on_failure
    budget = max(40, ctx.budget.crash_states // 6)
    kills = 3 * ctx.budget.processes
    ev = check_reindex(ctx.spec, seed=ctx.seed, budget=budget, kills=kills)
    token = next((d.removeprefix("state ") for d in ev.details if d.startswith("state ")), None)
    return on_failure(ev, workdir=ctx.workdir, name="reproduce_adr0003_reindex.py",
                      spec=ctx.spec, check=check_reindex,
                      kwargs={"seed": ctx.seed, "budget": budget, "kills": kills,
                              "state": token, "point": ev.measured.get("point")})
