"""Row 7 and invariant 4's version gate: pass on the reference backends with versions, n/a
without, and a store that opens too-new files is caught."""

from __future__ import annotations

from pathlib import Path

import pytest
from procedure_helpers import assert_caught, context

from crashgate.harness.verdict import Verdict
from crashgate.scenarios.procedures_versions import (
    check_too_new,
    cross_platform_rule,
    mixed_versions,
)


@pytest.mark.parametrize("name", ["rvf", "rvlite", "sqlite", "sqlite?journal_mode=DELETE"])
@pytest.mark.parametrize("procedure", [mixed_versions, cross_platform_rule])
def test_passes_on_backends_with_a_version(name: str, procedure, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ev = procedure(context(name, tmp_path))
    assert ev.verdict is Verdict.PASS, ev.summary
    assert ev.measured["checks"] >= 2 and ev.measured["opens"] >= 2


@pytest.mark.parametrize("name", ["memory", "json"])
@pytest.mark.parametrize("procedure", [mixed_versions, cross_platform_rule])
def test_na_without_a_version(name: str, procedure, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ev = procedure(context(name, tmp_path))
    assert ev.verdict is Verdict.NA
    assert "declares no file or schema version" in ev.summary


def test_rvf_row7_reads_v1_with_v2_and_refuses_v1_with_v0(tmp_path: Path) -> None:
    ev = mixed_versions(context("rvf", tmp_path))
    text = "\n".join(ev.details)
    assert "a v1 file opened by a v2 reader read back" in text
    assert "a v1 file opened by a v0 writer was refused with the upgrade hint" in text
    assert "readonly=true" in text


def test_a_store_that_opens_newer_files_is_caught(tmp_path: Path) -> None:
    ev = mixed_versions(context("faulty_backends:open_accepts_newer", tmp_path))
    assert "was opened: a newer file must be refused" in ev.summary
    assert_caught(ev)


def test_a_refusal_that_leaves_a_sidecar_is_caught(tmp_path: Path) -> None:
    from crashgate.backends import resolve

    ev = check_too_new(resolve("faulty_backends:open_leaves_sidecar"), writer=2, reader=1,
                       seed=3)
    assert ev.verdict is Verdict.FAIL
    assert "the open changed the files: +file /data/store.opening" in ev.summary
    assert "upgrade hint" not in ev.summary  # the refusal itself was right
