"""Partners by file format (``scenarios/procedures_format._partners``, ADR-032 row 5 and
invariant 4): each built-in backend is probed once per process, a failed probe included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crashgate.backends import (
    BackendMissing,
    BackendSpec,
    Capability,
    Declaration,
    Durability,
    resolve,
)
from crashgate.scenarios import procedures_format as pf
from crashgate.scenarios.procedures_version_gate import partner_gates
from crashgate.scenarios.table import BUDGETS, RowContext

FORMATS = {"rvf": "fmt/1", "json": None}
"""What the fake probe answers per name; any other name cannot be probed."""


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names probed, in order, with three built-ins: one sharing ``fmt/1``, one without a
    format and one whose probe fails (as rvf-node's does without node)."""
    probed: list[str] = []

    def fake(spec: BackendSpec) -> Declaration:
        probed.append(spec.name)
        if spec.name not in FORMATS:
            raise BackendMissing(spec.name, "apt-get install nodejs npm", "node is not on PATH")
        return Declaration(Durability.PROCESS_CRASH, frozenset({Capability.VECTOR}),
                           file_format=FORMATS[spec.name])

    monkeypatch.setattr(pf, "probe_declaration", fake)
    monkeypatch.setattr(pf, "BUILTIN_NAMES", ("rvf", "json", "rvf-node"))
    pf.probe_builtin.cache_clear()   # the real probes of other tests are not these
    yield probed
    pf.probe_builtin.cache_clear()   # nor are these the real ones, for the tests after


def _ctx(tmp_path: Path) -> RowContext:
    decl = Declaration(Durability.PROCESS_CRASH, frozenset({Capability.VECTOR}),
                       file_format="fmt/1")
    return RowContext(resolve("memory"), decl, BUDGETS["quick"], 1, tmp_path)


def test_each_builtin_is_probed_once_per_process(probes: list[str], tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    assert pf._partners(ctx) == ["rvf"]
    assert probes == ["rvf", "json", "rvf-node"]
    assert pf._partners(ctx) == ["rvf"]          # a second row: no probe again
    assert probes == ["rvf", "json", "rvf-node"]


def test_a_failed_probe_is_cached_as_no_partner_with_its_reason(probes: list[str],
                                                                 tmp_path: Path) -> None:
    first = pf.probe_builtin("rvf-node")
    assert first.declaration is None
    assert first.error == ("BackendMissing: Error: backend 'rvf-node' is not installed (node is "
                           "not on PATH).")
    assert pf.probe_builtin("rvf-node") is first and probes == ["rvf-node"]
    assert pf._partners(_ctx(tmp_path)) == ["rvf"] and probes == ["rvf-node", "rvf", "json"]


def test_the_version_gate_reads_its_partners_from_the_same_cache(probes: list[str],
                                                                 tmp_path: Path) -> None:
    checks, why = partner_gates(_ctx(tmp_path))
    # the partner's declaration (no wire version) comes from the cache: probed once
    assert checks == [] and why is not None and "rvf declares no wire version" in why
    assert probes == ["rvf", "json", "rvf-node"]
