"""Power loss and process crash as fault objects: thin handles on the simulated disk's crash
states (``harness.crashstates``) and the batch runner (``harness.powerloss``), which do the
work. They exist so a schedule can name them, compose them and ask whether they apply."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from crashgate.backends import BackendSpec, Declaration
from crashgate.harness.crashenum import enumerate_crash_states
from crashgate.harness.crashstates import CrashModel, CrashState
from crashgate.harness.faults.base import Fault
from crashgate.harness.powerloss import POWER_MODELS, PowerLossReport, run_powerloss
from crashgate.harness.simdisk import DiskImage, DiskOp
from crashgate.harness.workload import PROFILES, Profile

__all__ = ["PowerLoss"]


class PowerLoss(Fault):
    """Lose power at every fsync window and op boundary of a run; what survives is drawn from
    ``models`` (prefix, subset, torn, garbage), up to ``budget`` crash states."""

    levers = frozenset({"fs"})

    def __init__(self, models: Sequence[CrashModel] = POWER_MODELS, *, budget: int = 300
                 ) -> None:
        if not models:
            raise ValueError("PowerLoss needs at least one crash model, e.g. CrashModel.PREFIX")
        if budget < 1:
            raise ValueError(f"PowerLoss budget={budget}: give at least 1 crash state")
        self.models = tuple(models)
        self.budget = budget
        self._report: PowerLossReport | None = None

    @property
    def name(self) -> str:
        return f"{type(self).__name__}({', '.join(m.value for m in self.models)}; " \
               f"{self.budget} states)"

    def needs(self, decl: Declaration) -> str | None:
        # Every store is held to atomicity and integrity after a crash; durability only moves
        # what must survive, so a crash always applies.
        return None

    def states(self, base: DiskImage, trace: Sequence[DiskOp], positions: Sequence[int],
               seed: int) -> Iterator[tuple[CrashState, DiskImage]]:
        """The crash states (and their images) at ``positions`` of ``trace``."""
        return iter(enumerate_crash_states(base, trace, positions, self.models, self.budget,
                                           seed))

    def run(self, spec: BackendSpec, *, seed: int, ops: int,
            profile: Profile = PROFILES["small"]) -> PowerLossReport:
        """Record a seeded workload, crash it everywhere, recover and judge each state."""
        self._report = run_powerloss(spec, seed=seed, ops=ops, budget=self.budget,
                                     profile=profile, models=self.models)
        return self._report

    @property
    def fired(self) -> tuple[str, ...]:
        r = self._report
        if r is None:
            return ()
        return (f"{r.states_checked} crash states at {r.positions} points",)
