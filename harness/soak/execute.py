"""Running one agent op on a store and saying what happened: the outcome (``ok``, ``fail``,
``info``), the result as the history holds it (tokens, ``record.py``) and the error."""

from __future__ import annotations

from typing import Any

from crashgate.backends import LockHeld, StoreClosed, VectorRecord, VersionTooNew
from crashgate.harness.soak import workload as w
from crashgate.harness.soak.record import READS

__all__ = ["REFUSED", "execute"]

REFUSED = (LockHeld, StoreClosed, VersionTooNew, PermissionError)
"""A write refused with one of these changed nothing: ``fail``. Any other exception leaves it
indeterminate (``info``): it may have landed before the error."""


def execute(store: Any, aop: w.AgentOp) -> tuple[str, Any, str | None]:
    """``(outcome, result, error)``; a read that raises is ``fail`` (it changed nothing and
    returned nothing), a write by the rule of ``REFUSED``."""
    try:
        result = _CALLS[aop.op](store, aop)
    except Exception as exc:  # noqa: BLE001 - the history records every way an op can end
        error = f"{type(exc).__name__}: {exc}"[:500]
        if aop.op in READS or isinstance(exc, REFUSED):
            return "fail", None, error
        return "info", None, error
    return "ok", result, None


def _put(store: Any, aop: w.AgentOp) -> None:
    store.put(aop.args["key"], w.value_for(aop.value))


def _delete(store: Any, aop: w.AgentOp) -> None:
    store.delete(aop.args["key"])


def _get(store: Any, aop: w.AgentOp) -> str | None:
    return w.token_of_value(store.get(aop.args["key"]))


def _scan(store: Any, aop: w.AgentOp) -> dict[str, str | None]:
    return {k: w.token_of_value(v) for k, v in store.scan(aop.args["prefix"])}


def _q_update(store: Any, aop: w.AgentOp) -> dict[str, Any]:
    q = store.q_value_update(aop.args["state"], aop.args["action"], aop.value)
    return {"value": q.value, "updates": q.updates}


def _q_get(store: Any, aop: w.AgentOp) -> dict[str, Any] | None:
    q = store.q_value_get(aop.args["state"], aop.args["action"])
    return None if q is None else {"value": q.value, "updates": q.updates}


def _goap_store(store: Any, aop: w.AgentOp) -> None:
    store.goap_store(aop.args["plan"], w.plan_for(aop.value))


def _goap_delete(store: Any, aop: w.AgentOp) -> None:
    store.goap_delete(aop.args["plan"])


def _goap_get(store: Any, aop: w.AgentOp) -> str | None:
    return w.token_of_plan(store.goap_retrieve(aop.args["plan"]))


def _upsert(store: Any, aop: w.AgentOp) -> None:
    store.upsert([VectorRecord.of(int(i), w.vector_for(t), {"token": t})
                  for i, t in aop.value.items()])


def _remove(store: Any, aop: w.AgentOp) -> None:
    store.remove(aop.args["ids"])


def _fetch(store: Any, aop: w.AgentOp) -> dict[str, str | None]:
    got = {r.id: w.token_of_vector(r.vector, r.metadata) for r in store.fetch(aop.args["ids"])}
    return {str(i): got.get(i) for i in aop.args["ids"]}


def _query(store: Any, aop: w.AgentOp) -> dict[str, str]:
    hits = store.query(w.query_vector(aop.args["seed"]), aop.args["k"])
    return {str(h.id): str(h.metadata.get("token")) for h in hits}


_CALLS = {"put": _put, "delete": _delete, "get": _get, "scan": _scan, "q_update": _q_update,
          "q_get": _q_get, "goap_store": _goap_store, "goap_delete": _goap_delete,
          "goap_get": _goap_get, "upsert": _upsert, "remove": _remove, "fetch": _fetch,
          "query": _query}
