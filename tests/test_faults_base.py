"""Faults as objects: levers, compose, needs."""

from __future__ import annotations

import pytest

from crashgate.backends import Capability, Declaration, Durability
from crashgate.harness.faults import (
    Composed,
    DuplicateWriter,
    FailpointCrash,
    Fault,
    IOErrors,
    LeaseExpiry,
    PowerLoss,
    ProcessCrash,
    compose,
    requires,
)


def decl(*caps: Capability, failpoints: tuple[str, ...] = ()) -> Declaration:
    return Declaration(Durability.POWER_LOSS, frozenset(caps), failpoints=failpoints)


def test_compose_refuses_two_faults_on_one_lever_naming_both_and_the_lever() -> None:
    a, b = IOErrors("EIO", at=2), ProcessCrash(on="sync")
    with pytest.raises(ValueError) as info:
        compose(a, b)
    msg = str(info.value)
    assert a.name in msg and b.name in msg and "'fs'" in msg


def test_compose_refuses_a_clash_hidden_in_a_nested_composition() -> None:
    inner = compose(IOErrors("ENOSPC", at=1), FailpointCrash("x"))
    with pytest.raises(ValueError, match="'failpoints'"):
        compose(inner, FailpointCrash("y"))


def test_compose_of_distinct_levers_unions_them_and_flattens() -> None:
    c = compose(IOErrors("EIO", at=1), compose(FailpointCrash("fp"),
                                              DuplicateWriter("rvf", "/tmp/x")))
    assert isinstance(c, Composed)
    assert len(c.faults) == 3
    assert c.levers == frozenset({"fs", "failpoints", "process"})


def test_compose_takes_only_faults() -> None:
    with pytest.raises(TypeError, match="takes faults"):
        compose(IOErrors("EIO", at=1), "power loss")  # type: ignore[arg-type]


def test_a_fault_on_an_unknown_lever_is_refused() -> None:
    class Odd(Fault):
        levers = frozenset({"network"})

    with pytest.raises(ValueError, match="unknown lever"):
        compose(Odd())


def test_lease_expiry_claims_the_clock_and_the_crash_lever_it_uses() -> None:
    assert LeaseExpiry().levers == frozenset({"clock", "process", "fs"})
    assert LeaseExpiry(crash_at="failpoint:a").levers == frozenset(
        {"clock", "process", "failpoints"})
    with pytest.raises(ValueError, match="'clock'|'process'"):
        compose(LeaseExpiry(crash_at="failpoint:a"), DuplicateWriter("rvf", "/x"))


def test_needs_says_why_a_fault_is_not_applicable() -> None:
    assert DuplicateWriter("rvf", "/x").needs(decl(Capability.KV)) == (
        "the backend declares no writer lock across processes (capability writer-lock)")
    assert DuplicateWriter("rvf", "/x").needs(decl(Capability.WRITER_LOCK)) is None
    assert LeaseExpiry().needs(decl(Capability.WRITER_LOCK)) is not None
    assert LeaseExpiry().needs(decl(Capability.LEASE)) is None
    fp = FailpointCrash("after-write")
    assert "declares no failpoints" in (fp.needs(decl()) or "")
    assert "declares no failpoint 'after-write'" in (
        fp.needs(decl(Capability.FAILPOINTS, failpoints=("other",))) or "")
    assert fp.needs(decl(Capability.FAILPOINTS, failpoints=("after-write",))) is None
    assert PowerLoss().needs(decl()) is None


def test_composed_needs_names_the_part_that_is_not_applicable() -> None:
    c = compose(IOErrors("EIO", at=1), DuplicateWriter("rvf", "/x"))
    reason = c.needs(decl(Capability.KV))
    assert reason is not None and reason.startswith("DuplicateWriter(rvf)")


def test_requires_lists_every_capability_it_would_accept() -> None:
    reason = requires(decl(), Capability.WIRE_VERSION, Capability.SCHEMA_VERSION,
                      what="file or schema version")
    assert reason == ("the backend declares no file or schema version "
                      "(capability wire-version or schema-version)")


def test_bad_configuration_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="at >= 1"):
        IOErrors("EIO", at=0)
    with pytest.raises(ValueError, match="EIO"):
        IOErrors("EPERM", at=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a mutating op"):
        ProcessCrash(on="read")
    with pytest.raises(ValueError, match="failpoint:NAME"):
        LeaseExpiry(crash_at="somewhere")
