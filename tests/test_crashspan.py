"""``harness/crashspan.py``: one recorded operation crashed throughout, each crash judged."""

from __future__ import annotations

from crashgate.harness.crashspan import crash_throughout
from crashgate.harness.crashstates import CrashModel
from crashgate.harness.powerloss import POWER_MODELS
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.verdict import Verdict

MODELS = [CrashModel.PROCESS, *POWER_MODELS]


def _recorded() -> tuple[SimDisk, tuple[int, int]]:
    disk = SimDisk(DiskImage.empty("/data"))
    fs = sim_env(disk).fs
    start = disk.position
    for name in ("a", "b"):
        f = fs.open(f"/data/{name}", "w")
        f.write(0, name.encode() * 600)
        f.sync()
        f.close()
    fs.sync_dir("/data")
    return disk, (start, disk.position)


def test_every_crash_is_judged_and_a_pass_says_how_many() -> None:
    disk, span = _recorded()
    seen = []
    ev = crash_throughout(disk.base, disk.trace, span, lambda c, _img: seen.append(c) or None,
                          what="two files", models=MODELS, budget=50, seed=1)
    assert ev.verdict is Verdict.PASS and ev.measured["crashes"] == len(seen) > 0
    assert all(span[0] < c.position < span[1] for c in seen)


def test_the_first_failure_names_a_state_that_replays() -> None:
    disk, span = _recorded()

    def judge(_crash: object, image: DiskImage) -> str | None:
        return None if "/data/b" in image.files else "b is missing"

    ev = crash_throughout(disk.base, disk.trace, span, judge, what="two files",
                          models=MODELS, budget=50, seed=1, upto_end=True)
    assert ev.verdict is Verdict.FAIL and "b is missing" in ev.summary
    [token] = [d.removeprefix("state ") for d in ev.details if d.startswith("state ")]
    again = crash_throughout(disk.base, disk.trace, span, judge, what="two files",
                             models=MODELS, budget=50, seed=1, state=token)
    assert again.verdict is Verdict.FAIL and again.measured["crashes"] == 1


def test_no_crash_placed_is_unknown_not_pass() -> None:
    disk, _ = _recorded()
    here = (disk.position, disk.position)
    ev = crash_throughout(disk.base, disk.trace, here, lambda _c, _i: None, what="nothing",
                          models=MODELS, budget=50, seed=1)
    assert ev.verdict is Verdict.UNKNOWN and ev.measured["crashes"] == 0
