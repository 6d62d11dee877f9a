"""The file-system faults: IOErrors at exactly the n-th mutating op, transient or persistent;
ProcessCrash before the next sync; FailpointCrash through armed failpoints."""

from __future__ import annotations

import errno

import pytest

from crashgate.backends import SimulatedCrash
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.faults import FailpointCrash, IOErrors, ProcessCrash, count_mutating_ops
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env


def ten_ops(env) -> list[str]:  # type: ignore[no-untyped-def]
    """Run ten mutating ops (write, sync, truncate, rename, sync_dir, remove ...); the outcome
    of each: "ok" or the errno name."""
    fs = env.fs
    out: list[str] = []
    f = fs.open("/d/a", "w")
    steps = [lambda: f.write(0, b"x" * 10), f.sync, lambda: f.truncate(4),
             lambda: f.write(4, b"yy"), f.sync, lambda: fs.rename("/d/a", "/d/b"),
             lambda: fs.sync_dir("/d"), lambda: fs.open("/d/c", "w").write(0, b"c"),
             lambda: fs.remove("/d/c"), lambda: fs.sync_dir("/d")]
    for step in steps:
        try:
            step()
            out.append("ok")
        except OSError as exc:
            out.append(errno.errorcode[exc.errno or 0])
    return out


@pytest.mark.parametrize("at", [1, 4, 7, 10])
@pytest.mark.parametrize("kind", ["EIO", "ENOSPC"])
def test_transient_error_hits_exactly_the_nth_op_once(at: int, kind: str) -> None:
    fault = IOErrors(kind, at=at)  # type: ignore[arg-type]
    env = fault.install(sim_env(SimDisk(DiskImage.empty("/d"))))
    out = ten_ops(env)
    assert out == ["ok"] * (at - 1) + [kind] + ["ok"] * (10 - at)
    assert len(fault.fired) == 1 and f"op {at}:" in fault.fired[0]


@pytest.mark.parametrize("at", [1, 5, 10])
def test_persistent_error_hits_the_nth_op_and_every_one_after(at: int) -> None:
    fault = IOErrors("EIO", at=at, persistent=True)
    env = fault.install(sim_env(SimDisk(DiskImage.empty("/d"))))
    assert ten_ops(env) == ["ok"] * (at - 1) + ["EIO"] * (10 - at + 1)
    assert len(fault.fired_ops) == 10 - at + 1


def test_the_failed_op_never_reaches_the_disk_and_heal_stops_the_errors() -> None:
    disk = SimDisk(DiskImage.empty("/d"))
    fault = IOErrors("ENOSPC", at=2, persistent=True)
    fs = fault.install(sim_env(disk)).fs
    f = fs.open("/d/a", "w")
    f.write(0, b"kept")
    with pytest.raises(OSError) as info:
        f.write(4, b"lost")
    assert info.value.errno == errno.ENOSPC and "injected by crashgate" in str(info.value)
    assert disk.cache_image().files["/d/a"] == b"kept"
    fault.heal()
    f.write(4, b"back")
    assert disk.cache_image().files["/d/a"] == b"keptback"


def test_the_wrapper_hides_the_native_path_and_counts_only_mutating_ops() -> None:
    env, counter = count_mutating_ops(sim_env(SimDisk(DiskImage.empty("/d"))))
    assert env.fs.native_path("/d/a") is None
    f = env.fs.open("/d/a", "c")
    f.read(0, 10)
    f.size()
    env.fs.exists("/d/a")
    env.fs.listdir("/d")
    assert counter.count == 0
    ten_ops(env)
    assert counter.count == 10
    assert [op.kind for op in counter.ops[:3]] == ["write", "sync", "truncate"]


def test_process_crash_dies_just_before_the_next_sync_once_armed() -> None:
    disk = SimDisk(DiskImage.empty("/d"))
    crash = ProcessCrash(on="sync")
    fs = crash.install(sim_env(disk)).fs
    f = fs.open("/d/a", "w")
    f.write(0, b"one")
    f.sync()  # not armed: passes
    fs.sync_dir("/d")
    crash.arm()
    f.write(3, b"two")
    with pytest.raises(SimulatedCrash):
        f.sync()
    assert disk.cache_image().files["/d/a"] == b"onetwo"   # written, in the page cache
    assert disk.durable_image().files["/d/a"] == b"one"    # but never synced
    assert crash.fired and "sync /d/a" in crash.fired[0]
    f.sync()  # fires once


def test_failpoint_crash_arms_the_env_failpoints() -> None:
    fps = ArmedFailpoints()
    fault = FailpointCrash("after-write", after_hits=1)
    env = fault.install(sim_env(SimDisk(), failpoints=fps))
    assert env.failpoints is fps
    env.failpoints.hit("after-write")
    with pytest.raises(SimulatedCrash):
        env.failpoints.hit("after-write")
    assert fault.fired == ("crash at failpoint 'after-write'",)
    fault.arm()
    fault.heal()
    env.failpoints.hit("after-write")  # disarmed
