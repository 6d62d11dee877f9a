"""One recorded operation crashed throughout: a crash state after each disk operation of its
span in the trace (within a budget, over the crash models given), each judged, the first
failure named by its state token so that a reproduction can replay exactly that state.

The rows that crash one part of a run (a stage move, a backup or a restore, a legacy import,
a rollback, a schema migration) differ in what they record and how they judge a reopen; the
crashing is this one loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from crashgate.harness.crashenum import enumerate_crash_states
from crashgate.harness.crashstates import CrashModel, CrashState
from crashgate.harness.diskimage import DiskImage
from crashgate.harness.diskop import DiskOp
from crashgate.harness.verdict import Evidence, Verdict

__all__ = ["Judge", "crash_throughout"]

Judge = Callable[[CrashState, DiskImage], "str | None"]
"""What is wrong with the store recovered from a crash state's image, or None."""


def crash_throughout(base: DiskImage, trace: Sequence[DiskOp], span: tuple[int, int],
                     judge: Judge, *, what: str, models: Sequence[CrashModel], budget: int,
                     seed: int, state: str | None = None, upto_end: bool = False,
                     passed: str = "reopened consistent",
                     notes: tuple[str, ...] = ()) -> Evidence:
    """Crash the operation whose disk operations are ``trace[start:end]`` (``span``) after
    each of them (``upto_end``: also after the last, once it returned), ``budget`` crash
    states of ``models``, and ``judge`` each; only the one ``state`` (a token) names, when
    given. ``passed`` says what each reopen did when all passed; ``notes`` go with the
    evidence. Unknown when no crash could be placed: zero crash states are no pass."""
    from crashgate.harness.cli_powerloss import state_from_token, state_token
    start, end = span
    inside = list(range(start + 1, end + 1 if upto_end else end))
    if not inside:
        return Evidence(Verdict.UNKNOWN, f"{what} did {end - start} disk operation(s) through "
                        "the env: no crash inside it can be placed", {"crashes": 0},
                        details=notes)
    if state is not None:
        crash = state_from_token(state)
        why = judge(crash, crash.image(base, trace))
        return Evidence(Verdict.FAIL if why else Verdict.PASS,
                        f"{what}, crash {state}: {why or passed}", {"crashes": 1},
                        conclusive=bool(why))
    checked = 0
    for crash, image in enumerate_crash_states(base, trace, {m: inside for m in models},
                                               models, budget, seed):
        checked += 1
        why = judge(crash, image)
        if why is not None:
            return Evidence(Verdict.FAIL, f"{what}: crash after disk op {crash.position - start}"
                            f" of {end - start} ({crash.model.value}): {why}",
                            {"crashes": checked}, details=(f"state {state_token(crash)}", *notes),
                            conclusive=True)
    if checked == 0:
        return Evidence(Verdict.UNKNOWN, f"{what}: no crash state could be built",
                        {"crashes": 0}, details=notes)
    return Evidence(Verdict.PASS, f"{what}: {checked} crashes after its {len(inside)} disk "
                    f"operations ({', '.join(m.value for m in models)}), each {passed}",
                    {"crashes": checked}, details=notes)
