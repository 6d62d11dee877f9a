"""The issue's own acceptance lines for ``crashgate powerloss``."""

from __future__ import annotations

import dataclasses
import re

import pytest

from crashgate.backends import Durability, Env, resolve
from crashgate.harness.cli import main
from crashgate.harness.crashcheck import ViolationClass
from crashgate.harness.crashstates import CrashModel
from crashgate.harness.powerloss import crash_positions, record_run, run_powerloss
from crashgate.harness.workload import PROFILES
from crashgate.reference.memory import MemoryStore, open_memory


def open_claims_durable_memory(path: str, env: Env, **options: str) -> MemoryStore:
    """A deliberately defective backend: the memory store, declaring power-loss durability."""
    store = open_memory(path, env, **options)
    store.declaration = dataclasses.replace(store.declaration, durability=Durability.POWER_LOSS)
    return store


def _checked(out: str) -> int:
    m = re.search(r"crash states checked: (\d+)", out)
    assert m, out
    return int(m.group(1))


@pytest.mark.parametrize("backend", ["json", "sqlite?journal_mode=WAL&synchronous=FULL"])
def test_durable_backends_survive_a_thousand_crash_states(backend: str, capsys) -> None:
    code = main(["powerloss", backend, "--seed", "7"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert _checked(out) >= 1000
    assert "first violation" not in out


def test_sqlite_synchronous_off_is_caught_and_reproducible(capsys) -> None:
    code = main(["powerloss", "sqlite?synchronous=OFF", "--seed", "1"])
    out = capsys.readouterr().out
    assert code == 1, out
    command = re.search(r"reproduce: crashgate (.+)", out)
    assert command, out
    import shlex

    again = main(shlex.split(command.group(1)))
    replay = capsys.readouterr().out
    assert again == 1, replay
    assert "VIOLATION" in replay


def test_a_store_that_lies_about_durability_loses_acknowledged_writes() -> None:
    # memory declares nothing; held to power-loss durability it must be caught
    spec = resolve("test_powerloss:open_claims_durable_memory")
    report = run_powerloss(spec, seed=3, ops=30, budget=200, profile=PROFILES["small"])
    assert report.violations[ViolationClass.LOST] > 0


def test_bad_input_is_a_usage_error(capsys) -> None:
    assert main(["powerloss", "jsn"]) == 3
    assert "Did you mean 'json'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["powerloss", "json", "--models", "prefix,sideways"])
    assert exit_.value.code == 3


@pytest.mark.parametrize("jobs", ["0", "-1", "two"])
def test_jobs_below_one_is_a_usage_error_naming_the_option(jobs: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["powerloss", "json", "--jobs", jobs])
    assert exit_.value.code == 3
    assert f"argument --jobs: {jobs!r} is not a number of worker processes" in \
        capsys.readouterr().err


def test_help_states_every_default(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["powerloss", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--ops", "--states", "--profile", "--models", "--jobs", "--seed"):
        described = text.split(f"{option} ", 2)[-1]
        assert "default" in described.split(" --")[0], (option, described[:200])


def test_every_crash_model_is_counted_and_a_zero_says_why(capsys) -> None:
    pattern = (r"\(process (\d+), prefix (\d+), subset (\d+), torn (\d+), garbage (\d+)\)")
    code = main(["powerloss", "rvf", "--seed", "3", "--ops", "30", "--states", "300"])
    out = capsys.readouterr().out
    assert code == 0, out
    counts = re.search(pattern, out)
    assert counts, out
    assert all(int(n) > 0 for n in counts.groups()), out   # every model got its share
    assert sum(map(int, counts.groups())) == _checked(out)
    code = main(["powerloss", "rvf", "--seed", "3", "--ops", "30", "--states", "100",
                 "--models", "process,torn"])
    out = capsys.readouterr().out
    counts = re.search(pattern, out)
    assert code == 0 and counts, out
    assert [int(n) > 0 for n in counts.groups()] == [True, False, False, True, False]
    assert "no garbage state: not among the models selected" in out


def test_process_crashes_land_inside_ops_not_only_at_their_boundaries() -> None:
    spec = resolve("rvf")
    report = run_powerloss(spec, seed=2, ops=20, budget=5000, profile=PROFILES["small"],
                           models=[CrashModel.PROCESS])
    rec = record_run(spec, 20, 2, PROFILES["small"])
    ends = {end for _, end in rec.spans}
    inside = [p for p in crash_positions(rec)[CrashModel.PROCESS] if p not in ends]
    assert inside   # rvf writes, syncs and writes its manifest within one op
    # with budget to spare, every one of them is a checked state
    assert report.states_by_model == {"process": len(crash_positions(rec)[CrashModel.PROCESS]),
                                      "prefix": 0, "subset": 0, "torn": 0, "garbage": 0}
    assert report.empty_models["torn"] == "not among the models selected"
