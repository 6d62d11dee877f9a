"""The virtual clock and armed failpoints, and the env that carries them."""

from __future__ import annotations

import pytest

from crashgate.backends import Clock, Failpoints, SimulatedCrash
from crashgate.harness import ArmedFailpoints, SimDisk, VirtualClock, sim_env


def test_clock_starts_at_a_fixed_epoch_and_sleeps_without_waiting() -> None:
    clock = VirtualClock()
    assert isinstance(clock, Clock)
    t0, m0 = clock.time(), clock.monotonic()
    assert t0 == 1_700_000_000.0
    clock.sleep(30.5)  # a lease's lifetime passes at once
    assert clock.time() == t0 + 30.5 and clock.monotonic() == m0 + 30.5
    clock.advance(1)
    assert clock.time() == t0 + 31.5
    assert clock.sleeps == [30.5]


def test_wall_clock_jumps_but_monotonic_never_goes_back() -> None:
    clock = VirtualClock(start=100.0)
    m0 = clock.monotonic()
    clock.set(50.0)
    assert clock.time() == 50.0 and clock.monotonic() == m0
    clock.set(10_000.0)
    assert clock.time() == 10_000.0 and clock.monotonic() == m0


def test_clock_refuses_time_travel_with_a_fix() -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError, match="use set"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="non-negative"):
        clock.sleep(-0.1)
    with pytest.raises(ValueError, match="finite"):
        clock.set(float("nan"))


def test_unarmed_failpoints_only_count() -> None:
    fp = ArmedFailpoints()
    assert isinstance(fp, Failpoints)
    for name in ["a", "b", "a"]:
        fp.hit(name)
    assert fp.hits == {"a": 2, "b": 1}
    assert fp.trace == ["a", "b", "a"]
    assert fp.fired == []


def test_armed_failpoint_crashes_after_hits_then_disarms() -> None:
    fp = ArmedFailpoints()
    fp.hit("commit")
    fp.arm("commit", after_hits=1)  # counted from arming: the 2nd hit from now fires
    fp.hit("commit")
    with pytest.raises(SimulatedCrash) as info:
        fp.hit("commit")
    assert info.value.where == "commit"
    assert fp.fired == ["commit"] and fp.armed == frozenset()
    fp.hit("commit")  # one-shot by default
    assert fp.hits["commit"] == 4


def test_custom_action_repeat_and_disarm() -> None:
    fp = ArmedFailpoints()
    seen: list[str] = []
    fp.arm("x", action=seen.append, times=None)
    fp.arm("y")
    fp.hit("x")
    fp.hit("x")
    assert seen == ["x", "x"]
    fp.disarm("y")
    fp.hit("y")
    fp.disarm()
    fp.hit("x")
    assert seen == ["x", "x"] and fp.armed == frozenset()
    with pytest.raises(ValueError, match="after_hits"):
        fp.arm("z", after_hits=-1)
    with pytest.raises(ValueError, match="times"):
        fp.arm("z", times=0)


def test_simulated_crash_escapes_except_exception() -> None:
    fp = ArmedFailpoints()
    fp.arm("p")
    with pytest.raises(SimulatedCrash):
        try:
            fp.hit("p")
        except Exception:  # a store's broad handler must not swallow a crash
            pytest.fail("SimulatedCrash was caught as an Exception")


def test_sim_env_carries_the_given_pieces() -> None:
    disk, clock, fp = SimDisk(), VirtualClock(start=5.0), ArmedFailpoints()
    seen: list[str] = []
    env = sim_env(disk, clock, fp, observe=lambda event, details: seen.append(event))
    assert env.clock is clock and env.failpoints is fp
    env.observe("hello", {})
    assert seen == ["hello"]
    env.fs.makedirs("/a")
    disk.crash()
    with pytest.raises(OSError, match="crashed"):
        env.fs.exists("/a")
    assert sim_env(disk, clock, fp).fs.exists("/a")  # a new env after the crash
