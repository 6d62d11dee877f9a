"""ADR-032 invariant 4 across implementations (``scenarios/procedures_version_gate``): a partner
sharing the file format writes the store's version and a newer one; the store reads the first
and refuses the second, unchanged. Two in-process stores, a store that ignores versions, and
(with node) the real runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
from node import requires_node
from procedure_helpers import assert_caught, context

from crashgate.backends import BackendMissing, resolve
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.procedures_version_gate import check_partner_gate, partner_gates
from crashgate.scenarios.procedures_versions import cross_platform_rule

BLIND = "version_blind_backends:open_version_blind"


def test_the_reference_reads_its_version_and_refuses_the_next(tmp_path: Path) -> None:
    ev = check_partner_gate(resolve("rvf-ruvector"), partner="rvf-ruvector", version=1,
                            newer=2, seed=5, workdir=str(tmp_path))
    assert ev.verdict is Verdict.PASS, ev.summary
    assert ev.measured["opens"] == 3   # the same-version read, the writer and reader refusals
    assert any("40 queries' top-10 judged against exact search" in d for d in ev.details)


def test_a_store_that_ignores_versions_fails_the_gate(tmp_path: Path) -> None:
    ev = check_partner_gate(resolve(BLIND), partner="rvf-ruvector", version=1, newer=2, seed=5,
                            workdir=str(tmp_path))
    assert ev.verdict is Verdict.FAIL
    assert ev.summary.startswith("a v2 file written by rvf-ruvector (wire_version=2), opened by")
    assert "was opened (no VersionTooNew) and answered count() = 100" in ev.summary
    # the reader open fails too, and the same-version read was fine
    assert any("readonly=true was opened" in d for d in ev.details)
    assert any("reading a v1 file" in d and "judged against exact search" in d
               for d in ev.details)


def test_the_row_finds_the_partner_by_file_format_and_reproduces(tmp_path: Path) -> None:
    ctx = context(BLIND, tmp_path)
    checks, why = partner_gates(ctx)
    assert why is None
    [ev] = checks   # rvf-ruvector is the one built-in sharing rvf-ruvector/1 with a version
    assert "rvf-ruvector (wire_version=2)" in ev.summary
    assert_caught(ev)
    row = cross_platform_rule(ctx)
    assert row.verdict is Verdict.FAIL
    assert row.details[0] == ("within the implementation: ran; across implementations: ran")


def test_a_store_sharing_no_format_with_a_versioned_partner(tmp_path: Path) -> None:
    checks, why = partner_gates(context("rvf-ruvector", tmp_path))
    assert checks == [] and why is not None
    assert why.startswith("no partner sharing rvf-ruvector/1 writes other versions")


@requires_node
def test_the_real_runtime_through_the_process_driver(tmp_path: Path) -> None:
    """rvf-node 0.2.3 behind the driver: the within-implementation half is n/a (its version
    checks need the simulated disk and a version option), the gate across implementations
    runs. What it reports is asserted as it is: the pinned runtime never reads the header's
    version byte, so it opens the v2 file (the finding), and reads the v1 file correctly."""
    try:
        ctx = context("rvf-node", tmp_path)
    except BackendMissing as exc:   # offline: npm could not install the package
        pytest.skip(str(exc))
    ev = cross_platform_rule(ctx)
    assert ev.details[0].startswith("within the implementation: the backend declares no file "
                                    "or schema version")
    assert ev.details[0].endswith("across implementations: ran")
    text = "\n".join([ev.summary, *ev.details])
    assert "rvf-node reading a v1 file written by rvf-ruvector (wire_version=1): 40 queries'" \
        in text
    assert ev.verdict is Verdict.FAIL
    assert ev.summary.startswith("a v2 file written by rvf-ruvector (wire_version=2), opened by "
                                 "rvf-node as a writer was opened (no VersionTooNew)")
    assert ev.reproduce and Path(ev.reproduce.removeprefix("python ")).is_file()
