"""Same seed, same draws, whatever the process imported before (``harness.seeded_search``).

Hypothesis mixes literals mined from every local module in ``sys.modules`` into its draws, so
the damage row counted 70 damages in a full ``certify json --seed 9`` and 71 with ``--scenario
damage``; a second certify in one process could disagree with the first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crashgate.harness.seeded_search import pinned_constants, seeded_find

# Each script runs in a fresh interpreter, so the literals it adds to Hypothesis's pool die
# with it. ``lib/`` holds a local module (not under tests/, which Hypothesis skips) of literals.
FIND_TWICE = """
import sys
from hypothesis import strategies as st
from crashgate.harness.seeded_search import seeded_find

TARGET = int("12_345_678")   # a string here: this script is a local module too

def draw():   # only the literal hits: no random draw from ten million values does in 300
    return seeded_find(st.integers(10**7, 2 * 10**7), lambda n: n == TARGET, budget=300,
                       seed=5)

before = draw()
sys.path.insert(0, sys.argv[1] + "/lib")
import literal  # noqa: F401 - only its literal matters
print(repr((before, draw())))
"""

CERTIFY_TWICE = """
import json, sys
from pathlib import Path
from crashgate.harness.cli import main

here = Path(sys.argv[1])

def rows(out):
    assert main(["certify", "json", "--budget", "quick", "--seed", "9", "--out",
                 str(here / out), "--quiet"]) == 0
    [path] = (here / out).glob("*/*/certificate.json")
    return [(r["key"], r["verdict"], r["summary"],
             {k: v for k, v in r["measured"].items() if k != "seconds"})
            for r in json.loads(path.read_text())["rows"]]

first = rows("first")
sys.path.insert(0, str(here / "lib"))
import literal  # noqa: F401 - as a later row's module, imported between the two runs
(here / "rows.json").write_text(json.dumps([first, rows("second")]))
"""


def _run(tmp_path: Path, script: str, literal: str) -> str:
    """Run ``script`` with ``tmp_path`` as its argument and ``lib/literal.py`` holding
    ``literal``; its standard output."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "literal.py").write_text(literal)
    path = tmp_path / "script.py"
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path), str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_module_imported_between_two_searches_changes_nothing(tmp_path: Path) -> None:
    # unpinned, the second search draws the imported literal within a few dozen tries
    assert _run(tmp_path, FIND_TWICE, "X = 12_345_678\n").strip() == "(None, None)"


def test_two_certify_runs_in_one_process_agree_row_for_row(tmp_path: Path) -> None:
    """The flaky ``test_same_seed_same_verdicts`` made certain: between its two runs the first
    imports the later rows' modules. Three literals in the damage row's ranges made its count
    70 in the first run and 71 in the second before the draws were pinned."""
    _run(tmp_path, CERTIFY_TWICE, "X = [25_347, 49_773, 55_440]\n")
    first, second = json.loads((tmp_path / "rows.json").read_text())
    [damage] = [r for r in first if r[0] == "damage"]
    assert damage[1] == "pass" and damage[3]["damages"] > 0
    assert first == second


def test_seeded_find_returns_the_same_shrunk_value_for_the_same_seed() -> None:
    from hypothesis import strategies as st

    def big(n: int) -> bool:
        return n > 1000

    runs = [seeded_find(st.integers(0, 10**6), big, budget=50, seed=3) for _ in range(2)]
    assert runs == [1001, 1001]
    assert seeded_find(st.integers(0, 10), big, budget=20, seed=3) is None


def test_seeded_find_refuses_a_budget_of_nothing() -> None:
    from hypothesis import strategies as st

    with pytest.raises(ValueError, match="budget=0"):
        seeded_find(st.integers(), bool, budget=0, seed=1)


def test_the_pool_is_restored_after_the_search() -> None:
    from hypothesis.internal.conjecture import providers

    before = providers._get_local_constants
    with pinned_constants():
        assert len(providers._get_local_constants()) == 0
    assert providers._get_local_constants is before
