"""The crashgate pytest plugin: ``pytest --crashgate-backend SPEC`` adds one test per scenario
row for that backend; the ``crashgate_model`` fixture runs the stateful model on a factory of
your own.

Thin on purpose: nothing of crashgate is imported until the option or the fixture is used. The
rows are loaded by import path (the scenarios package sits above the harness). Works under
pytest-xdist: the seed is fixed by default (so every worker collects and runs the same thing)
and every row runs in its own temporary directory.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROWS = "crashgate.scenarios.adr032:all_rows"
DEFAULT_SEED = 20260214


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("crashgate", "crashgate certification")
    group.addoption("--crashgate-backend", action="append", default=[], metavar="SPEC",
                    help="certify this backend: one test per ADR-032 row (repeatable), e.g. "
                    "rvf, 'sqlite?synchronous=FULL', mypkg.store:open_store")
    group.addoption("--crashgate-budget", default="quick",
                    choices=["quick", "standard", "thorough"],
                    help="how hard each row looks (default quick)")
    group.addoption("--crashgate-seed", type=int, default=DEFAULT_SEED,
                    help=f"run seed (default {DEFAULT_SEED}: fixed, so xdist workers agree)")
    group.addoption("--crashgate-scenario", action="append", default=[], metavar="KEY",
                    help="only these rows (repeatable), by key as `crashgate certify --help` "
                    "lists them: adr032-1 .. adr032-7, inv-1 .. inv-4, model, io-errors, "
                    "damage, server-crash, adr072-*, arch001-*, patterns-*, adr0003-* ...")
    group.addoption("--crashgate-migrator", default=None, metavar="SPEC",
                    help="the migration tool ADR-032 row 4 certifies, e.g. mypkg.mod:migrate "
                    "(default crashgate's own rvf migrator, for backends that store RVF)")
    group.addoption("--crashgate-pattern-migrator", default=None, metavar="SPEC",
                    help="the pattern migrator the pattern migration guide's rows certify, "
                    "e.g. mypkg.mod:factory (default crashgate's own agentdb-to-rvf)")
    group.addoption("--crashgate-jobs", type=_jobs, default=None, metavar="N",
                    help="worker processes that check a row's crash states (default: every "
                    "core; under pytest-xdist a worker's share, cores // workers, at least 1, "
                    "so -n does not oversubscribe the machine; 1: in the test's process)")


def _jobs(text: str) -> int:
    from crashgate.harness.cli import jobs_option
    return jobs_option(text)


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


class CrashgateRowItem(pytest.Item):
    def __init__(self, *, spec: Any, row: Any, declaration: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.row = row
        self.declaration = declaration
        self.evidence: Any = None

    def runtest(self) -> None:
        from crashgate.harness.certify import certify, probe_declaration
        from crashgate.harness.verdict import Verdict

        config = self.config
        budget = _load("crashgate.scenarios.table:BUDGETS")[config.getoption("crashgate_budget")]
        context = _load("crashgate.scenarios.table:RowContext")
        tmp = Path(config._tmp_path_factory.mktemp("crashgate-row"))  # type: ignore[attr-defined]
        migrator = config.getoption("crashgate_migrator")
        if migrator is not None:
            migrator = _load("crashgate.backends:resolve_migrator")(migrator).label
        pattern_migrator = config.getoption("crashgate_pattern_migrator")
        if pattern_migrator is not None:
            pattern_migrator = _load("crashgate.backends:resolve_pattern_migrator")(
                pattern_migrator).label
        cert = certify(self.spec, [self.row], budget=budget,
                       seed=config.getoption("crashgate_seed"), workdir=tmp,
                       context_factory=functools.partial(
                           context, migrator=migrator, jobs=config.getoption("crashgate_jobs"),
                           pattern_migrator=pattern_migrator),
                       declaration=self.declaration or probe_declaration(self.spec))
        ev = cert.results[0].evidence
        self.evidence = ev
        self.user_properties.append(("crashgate_verdict", ev.verdict.value))
        if ev.verdict is Verdict.NA:
            pytest.skip(f"n/a: {ev.summary}")
        if ev.verdict is not Verdict.PASS:
            raise CrashgateRowFailed(self.row, ev)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
                     ) -> str | Any:
        if isinstance(excinfo.value, CrashgateRowFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[str, int | None, str]:
        return "crashgate", None, self.name


class CrashgateRowFailed(Exception):
    def __init__(self, row: Any, evidence: Any) -> None:
        lines = [f"{row.table} #{row.number}: {row.scenario}",
                 f"  expected: {row.expected}",
                 f"  verdict: {evidence.verdict.value}: {evidence.summary}",
                 f"  measured: {dict(evidence.measured)}"]
        lines += [f"  {d}" for d in evidence.details[:10]]
        if evidence.reproduce:
            lines.append(f"  reproduce: {evidence.reproduce}")
        super().__init__("\n".join(lines))


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    specs = config.getoption("crashgate_backend")
    if not specs:
        return
    from crashgate.backends import resolve

    rows = _load(ROWS)()
    wanted = config.getoption("crashgate_scenario")
    if wanted:
        unknown = sorted(set(wanted) - {r.key for r in rows})
        if unknown:
            raise pytest.UsageError(f"--crashgate-scenario: no rows {unknown}; rows are "
                                    f"{', '.join(r.key for r in rows)}")
        rows = [r for r in rows if r.key in wanted]
    migrator = config.getoption("crashgate_migrator")
    if migrator is not None:
        from crashgate.backends import resolve_migrator
        try:
            resolve_migrator(migrator).load()
        except Exception as exc:  # noqa: BLE001 - a bad name is a usage error for pytest
            raise pytest.UsageError(f"--crashgate-migrator: {_one_line(exc)}") from None
    pattern_migrator = config.getoption("crashgate_pattern_migrator")
    if pattern_migrator is not None:
        from crashgate.backends import resolve_pattern_migrator
        try:
            resolve_pattern_migrator(pattern_migrator).load()
        except Exception as exc:  # noqa: BLE001 - a bad name is a usage error for pytest
            raise pytest.UsageError(f"--crashgate-pattern-migrator: {_one_line(exc)}"
                                    ) from None
    from crashgate.harness.certify import probe_declaration

    for text in specs:
        try:
            spec = resolve(text)
            # once, here: a factory that does not import, raises or declares nothing is one
            # short error, not a traceback per row
            declaration = probe_declaration(spec)
        except Exception as exc:  # noqa: BLE001 - a bad backend is a usage error for pytest
            raise pytest.UsageError(f"--crashgate-backend {text}: {_one_line(exc)}") from None
        for row in rows:
            items.append(CrashgateRowItem.from_parent(
                session, name=f"crashgate[{spec.label}][{row.key}]", spec=spec, row=row,
                declaration=declaration))


def _one_line(exc: BaseException) -> str:
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


@pytest.fixture
def crashgate_model(tmp_path: Path) -> Callable[..., None]:
    """``crashgate_model("mypkg.store:open_store")`` runs the stateful model (reopen, process
    crash, power loss, failpoint crashes) on your factory and fails the test with a runnable
    reproduction when your store breaks its declared promises."""

    def run(spec: Any, **settings: Any) -> None:
        from crashgate.harness.stateful import run_conformance_test
        run_conformance_test(spec, **settings)

    return run
