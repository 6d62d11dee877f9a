"""ADR-032 invariant 3, the backend selection rule: an explicitly named backend is exactly the
one that opens, and a named backend that is not installed fails loud with an install hint."""

from __future__ import annotations

import tempfile

from crashgate.backends import BackendMissing, BackendSpec, os_env
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.scenarios.table import RowContext

__all__ = ["backend_selection_rule"]


def backend_selection_rule(ctx: RowContext) -> Evidence:
    checks = 0
    problems: list[str] = []
    # 1. the name opens exactly the factory it names, with the declaration probed before
    with tempfile.TemporaryDirectory(prefix="crashgate-select-", dir=ctx.workdir) as tmp:
        store = ctx.spec.open(f"{tmp}/store", os_env())
        checks += 1
        module = type(store).__module__
        want = ctx.spec.target.partition(":")[0]
        if store.declaration != ctx.declaration:
            problems.append("two opens of the same name declared different things")
        store.close()
    # 2. the same name pointing at a module that is not installed must fail loud, not fall back
    missing = BackendSpec(ctx.spec.name, ctx.spec.options,
                          "crashgate_missing_backend_for_selection_test:open",
                          ctx.spec.install)
    try:
        missing.factory()
    except BackendMissing as exc:
        checks += 1
        text = str(exc)
        if "Run:" not in text or ctx.spec.install not in text:
            problems.append(f"the error does not carry the install hint: {text!r}")
    else:
        problems.append("a backend that is not installed resolved to something else")
    measured = {"checks": checks, "seed": ctx.seed}
    if problems:
        return Evidence(Verdict.FAIL, "; ".join(problems), measured,
                        replay=lambda: backend_selection_rule(ctx))
    # n/a, not pass: the rule binds the code that picks a backend by name (crashgate's
    # registry, checked above and in its own tests), and nothing of the store is tested by it
    return Evidence(
        Verdict.NA,
        f"not a property of the store: the rule binds the code that selects a backend by name "
        f"(crashgate's registry: '{ctx.spec.label}' opened its own factory ({module}, from "
        f"{want}); an uninstalled backend failed loud with '{ctx.spec.install}')", measured)
