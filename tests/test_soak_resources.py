"""Resource sampling and leak flags: synthetic series (flat with noise, steady growth, a step
then flat) and real child processes sampled with psutil (one that allocates, one that opens
files without closing, one that does neither)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from crashgate.harness.soak.resources import ResourceSampler, Series, leaks


def synthetic(rss: np.ndarray, fds: np.ndarray | None = None) -> Series:
    n = len(rss)
    fds = np.full(n, 12) if fds is None else fds
    return Series("writer#1", 1234, tuple(np.arange(n) * 1.0), tuple(map(float, rss)),
                  tuple(int(f) for f in fds), (1.0,) * n)


rng = np.random.default_rng(12)


def test_flat_with_noise_is_no_leak() -> None:
    assert leaks([synthetic(200 + rng.normal(0, 3, 300))]) == []


def test_steady_growth_is_a_leak() -> None:
    found = leaks([synthetic(200 + 0.5 * np.arange(300) + rng.normal(0, 3, 300))])
    assert [(x.resource, x.label) for x in found] == [("memory", "writer#1")]
    assert found[0].growth == pytest.approx(0.5 * 239, rel=0.1)   # over the last 80%
    assert "kept growing" in found[0].describe()


def test_growing_open_files_are_a_leak() -> None:
    found = leaks([synthetic(np.full(100, 50.0), fds=12 + np.arange(100) // 3)])
    assert [x.resource for x in found] == ["open files"]


def test_a_step_then_flat_is_no_leak() -> None:
    for noise in (0.0, 2.0):
        rss = np.where(np.arange(300) < 150, 200.0, 320.0) + rng.normal(0, noise, 300)
        assert leaks([synthetic(rss)]) == [], noise


def test_small_growth_is_not_material() -> None:
    # monotone but 4 MB over the window: allocator noise, not a leak
    assert leaks([synthetic(200 + np.linspace(0, 4, 300))]) == []


def test_too_few_samples_are_not_judged() -> None:
    assert leaks([synthetic(200 + 5.0 * np.arange(20))]) == []


GROWS = """
import sys, time
keep = []
for _ in range(400):
    keep.append(b"\\x01" * (1 << 20))   # touched pages: resident
    time.sleep(0.02)
time.sleep(60)
"""
OPENS = """
import sys, time
keep = []
for _ in range(400):
    keep.append(open(sys.executable, "rb"))
    time.sleep(0.02)
time.sleep(60)
"""
STEADY = """
import time
data = b"\\x01" * (20 << 20)
while True:
    sum(range(1000))
    time.sleep(0.02)
"""


def sample_children(seconds: float, **programs: str) -> list[Series]:
    children = {label: subprocess.Popen([sys.executable, "-c", code])
                for label, code in programs.items()}
    sampler = ResourceSampler(interval=0.05)
    try:
        for label, child in children.items():
            sampler.watch(label, child.pid)
        time.sleep(seconds)
    finally:
        sampler.stop()
        for child in children.values():
            child.kill()
            child.wait()
    return sampler.series()


def test_real_children_growing_memory_and_files_are_flagged_a_steady_one_not() -> None:
    series = sample_children(4.0, grows=GROWS, opens=OPENS, steady=STEADY)
    assert [s.label for s in series] == ["grows", "opens", "steady"]
    assert all(len(s.t) >= 25 for s in series), [len(s.t) for s in series]
    flagged = {(x.label, x.resource) for x in leaks(series)}
    assert ("grows", "memory") in flagged and ("opens", "open files") in flagged
    assert not any(label == "steady" for label, _ in flagged), flagged
    assert ("opens", "memory") not in flagged and ("grows", "open files") not in flagged


def test_a_process_that_dies_stops_being_sampled() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    sampler = ResourceSampler(interval=0.05)
    sampler.watch("short", child.pid)
    child.wait()
    time.sleep(0.5)
    n = len(sampler.series()[0].t)
    time.sleep(0.3)
    assert len(sampler.series()[0].t) == n > 0      # kept, not grown after death
    sampler.watch("gone", child.pid)                # already dead: an empty series
    sampler.stop()
    sampler.stop()                                  # idempotent
    assert [(s.label, len(s.t)) for s in sampler.series()][1] == ("gone", 0)
