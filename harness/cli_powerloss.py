"""``crashgate powerloss BACKEND``: a seeded workload, crash states at every fsync window and
(process crashes) after every file-system operation, the count per crash model, a table of
violations by class, and a command that reproduces the first one."""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
from collections.abc import Callable

from crashgate.backends import resolve
from crashgate.harness.certify import probe_declaration
from crashgate.harness.cli import JOBS_HELP, UsageError, jobs_option
from crashgate.harness.crashcheck import ViolationClass
from crashgate.harness.crashpool import CrashPoolError, available_cores
from crashgate.harness.crashstates import CrashModel, CrashState
from crashgate.harness.powerloss import POWER_MODELS, PowerLossReport, check_state, run_powerloss
from crashgate.harness.reproduce import pythonpath_for
from crashgate.harness.workload import PROFILES

__all__ = ["add_parser", "state_from_token", "state_token"]


def _encode_indices(indices: tuple[int, ...]) -> str:
    """Trace indices as ``first+hexmask`` (bit i: index first+i), short even for big sets."""
    if not indices:
        return ""
    first = min(indices)
    mask = sum(1 << (i - first) for i in indices)
    return f"{first}+{mask:x}"


def _decode_indices(text: str) -> tuple[int, ...]:
    if not text:
        return ()
    first, _, mask_hex = text.partition("+")
    base, mask = int(first), int(mask_hex, 16)
    return tuple(base + i for i in range(mask.bit_length()) if mask >> i & 1)


def state_token(state: CrashState) -> str:
    """A crash state as one shell-safe word: ``position:model:kept:torn:garbage_seed``."""
    kept = _encode_indices(state.kept)
    torn = ";".join(f"{i}-{','.join(map(str, secs))}" for i, secs in state.torn)
    seed = "" if state.garbage_seed is None else str(state.garbage_seed)
    return f"{state.position}:{state.model.value}:{kept}:{torn}:{seed}"


def state_from_token(token: str) -> CrashState:
    try:
        position, model, kept, torn, seed = token.split(":")
        torn_pairs = tuple(
            (int(i), tuple(int(s) for s in secs.split(",") if s))
            for i, secs in (t.split("-") for t in torn.split(";") if t)
        )
        return CrashState(
            position=int(position), model=CrashModel(model),
            kept=_decode_indices(kept), torn=torn_pairs,
            garbage_seed=int(seed) if seed else None,
        )
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--state {token!r} is not a crash-state token "
            "(position:model:kept:torn:garbage_seed, as printed by a failing run)"
        ) from exc


def _reproduce(args: argparse.Namespace, state: CrashState) -> str:
    """The command that checks ``state`` again, from a clean shell anywhere (a user's backend
    module gets its directory on PYTHONPATH)."""
    root = pythonpath_for(resolve(args.backend).target)
    parts = [f"PYTHONPATH={root}"] if root else []
    parts += ["crashgate", "powerloss", args.backend, "--seed", str(args.seed), "--ops",
              str(args.ops), "--profile", args.profile, "--state", state_token(state)]
    return shlex.join(parts)


def _print_report(args: argparse.Namespace, report: PowerLossReport) -> None:
    print(f"crashgate powerloss {report.spec}  (seed {report.seed}, {report.ops} ops, "
          f"profile {args.profile}, declared durability: {report.durability.value})")
    models = ", ".join(f"{m} {n}" for m, n in report.states_by_model.items())
    rate = report.states_checked / report.seconds if report.seconds else 0.0
    procs = f"{report.jobs} processes" if report.jobs > 1 else "1 process"
    print(f"crash states checked: {report.states_checked} at {report.positions} crash points "
          f"({models}) in {report.seconds:.1f} s, {rate:.0f} states/s ({procs})")
    for m, why in report.empty_models.items():
        print(f"  no {m} state: {why}")
    width = max(len(v.value) for v in ViolationClass)
    print(f"\n  {'violation':<{width}}  count")
    for v in ViolationClass:
        print(f"  {v.value:<{width}}  {report.violations.get(v, 0)}")
    if report.first:
        first = min(report.first.values(), key=lambda v: v.state.position)
        print(f"\nfirst violation: {first.kind.value}")
        print(f"  {first.state.describe()}")
        print(f"  {first.detail}")
        print(f"  reproduce: {_reproduce(args, first.state)}")


def run(args: argparse.Namespace) -> int:
    spec = resolve(args.backend)
    probe_declaration(spec)   # a name, factory or declaration that is not usable: exit 3 now
    profile = PROFILES[args.profile]
    if args.state is not None:
        verdict, lines = check_state(spec, seed=args.seed, ops=args.ops, profile=profile,
                                     state=args.state)
        print(f"replaying {args.state.describe()}\nlast ops before the crash:")
        print("\n".join(lines))
        if verdict.violation is None:
            print(f"no violation: {verdict.detail}")
            return 0
        print(f"VIOLATION: {verdict.violation.value}: {verdict.detail}")
        return 1
    models = [CrashModel.PROCESS, *POWER_MODELS] if args.models == "all" else [
        CrashModel(m) for m in args.models.split(",")]
    progress = _Progress(sys.stderr.isatty())
    try:
        report = run_powerloss(spec, seed=args.seed, ops=args.ops, budget=args.states,
                               profile=profile, models=models, progress=progress,
                               jobs=args.jobs)
    except CrashPoolError as exc:
        progress.done()
        print(f"crashgate powerloss: {exc}", file=sys.stderr)
        print("the run did not finish: nothing is proven (exit 2)")
        return 2
    progress.done()
    _print_report(args, report)
    if report.states_checked == 0:
        print("no crash state was checked: nothing is proven (exit 2)")
        return 2
    return 1 if report.violations else 0


class _Progress:
    """``progress(done, budget)`` for ``run_powerloss``: states done, states/s and the time
    left, on one line rewritten in place on a terminal (at most a few times a second), else a
    line every 10 s, so a log is not flooded."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.start = time.monotonic()
        self.first: tuple[float, int] | None = None   # (when, done) of the first report
        self.last = self.start
        self.shown = False

    def __call__(self, done: int, budget: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (now, done)
        if now - self.last < (0.3 if self.tty else 10.0):
            return
        self.last = now
        # the rate since the first report: recording the run and planning are not states
        since, done0 = self.first
        rate = (done - done0) / (now - since) if now > since and done > done0 else (
            done / (now - self.start) if now > self.start else 0.0)
        left = (f", about {_duration((budget - done) / rate)} left"
                if rate and budget > done else "")
        line = f"  ... {done} of up to {budget} crash states checked, {rate:.0f} states/s{left}"
        if self.tty:
            print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)
            self.shown = True
        else:
            print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.shown:
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)   # the report follows
            self.shown = False


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _models(text: str) -> str:
    if text == "all":
        return text
    for m in text.split(","):
        if m not in {c.value for c in CrashModel}:
            raise argparse.ArgumentTypeError(
                f"--models: {m!r} is not a crash model; choose from "
                f"{', '.join(c.value for c in CrashModel)} or 'all'")
    return text


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "powerloss", help="crash a backend at every fsync window on a simulated disk",
        description="Run a seeded random workload on BACKEND over the simulated disk, build "
        "crash states (process crashes after every file-system operation; power loss at every "
        "fsync window and op boundary with pending writes lost as a prefix, in any subset, "
        "torn at sector granularity, or torn with garbage), recover each and compare it with "
        "the model. The budget is shared evenly by the crash models. Exit 0 when no "
        "violation, 1 when any (with a command that reproduces the first), 2 when nothing "
        "could be checked, 3 on bad input.")
    p.add_argument("backend", help="backend name with options, e.g. json or "
                   "'sqlite?journal_mode=WAL&synchronous=FULL' (required)")
    p.add_argument("--seed", type=int, default=None, help="workload and crash-state seed "
                   "(default: random, printed)")
    p.add_argument("--ops", type=int, default=250, help="workload length (default 250)")
    p.add_argument("--states", type=int, default=1500,
                   help="crash-state budget, shared by the crash models and spread over their "
                   "crash points (default 1500)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="small",
                   help="workload shape: small, or large (MiB segments, many deletes) "
                   "(default small)")
    p.add_argument("--models", type=_models, default="all",
                   help="crash models, comma-separated: process,prefix,subset,torn,garbage "
                   "(default all)")
    p.add_argument("--jobs", type=jobs_option, default=None, metavar="N",
                   help=JOBS_HELP.format(cores=available_cores()) + "; any N gives the same "
                   "report")
    p.add_argument("--state", type=state_from_token, default=None,
                   help="check only this crash state (the token a failing run prints; "
                   "default: none, every state of the budget is checked)")
    p.set_defaults(func=_with_seed(run))


def _with_seed(func: Callable[[argparse.Namespace], int]
               ) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        if args.seed is None:
            args.seed = random.randrange(1 << 32)
        if args.ops < 1 or args.states < 1:
            raise UsageError(f"--ops {args.ops} and --states {args.states}: both must be at "
                             "least 1")
        result: int = func(args)
        return result
    return wrapped
