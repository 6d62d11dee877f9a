"""What the pattern migration rows share: a source AgentDB file on a simulated disk (with
commits still in its WAL), one run of a pattern migrator as its user runs it, and the checks
of a target and a source against the patterns they must hold.

The backend under certification is the migration's **target**; the source is always the
``agentdb`` store; the migrator is ``ctx.pattern_migrator`` (``--pattern-migrator``) or
crashgate's own ``agentdb-to-rvf``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crashgate.backends import (
    DEFAULT_PATTERN_MIGRATOR,
    Declaration,
    Env,
    LockHeld,
    PatternMigratorSpec,
    VectorRecord,
    resolve,
)
from crashgate.harness.clock import VirtualClock
from crashgate.harness.patterns import generate_patterns
from crashgate.harness.recovery import let_lease_go_stale
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.harness.unsupported import cannot_answer
from crashgate.scenarios.procedures_migration import _read_back
from crashgate.scenarios.table import RowContext

__all__ = ["DATA", "DIM", "SOURCE", "Outcome", "migrator_label",
           "run_step", "source_image", "source_problems", "target_files", "target_path",
           "target_problems"]

DATA = "/data"
SOURCE = f"{DATA}/agentic-qe.db"
DIM = 8
SOURCE_BACKEND = "agentdb"


def migrator_label(ctx: RowContext) -> str:
    return getattr(ctx, "pattern_migrator", None) or DEFAULT_PATTERN_MIGRATOR


def target_path(decl: Declaration) -> str:
    return f"{DATA}/patterns.rvf" if decl.file_format == "rvf" else f"{DATA}/patterns"


def source_image(seed: int, n: int, dim: int = DIM) -> tuple[DiskImage, list[VectorRecord]]:
    """An AgentDB file of ``n`` generated patterns written in three commits, taken while the
    store is open: the last commits are in its WAL, not yet in the database file. The patterns
    are returned as the store reads them back (its embeddings' precision)."""
    patterns = generate_patterns(n, dim, seed)
    disk = SimDisk(DiskImage.empty(DATA))
    env = sim_env(disk, VirtualClock())
    store = resolve(SOURCE_BACKEND).open(SOURCE, env)
    try:
        third = max(len(patterns) // 3, 1)
        for i in range(0, len(patterns), third):
            store.upsert(patterns[i:i + third])
        image = disk.cache_image()
        stored = store.fetch(sorted(r.id for r in patterns))
    finally:
        store.close()
    return image, sorted(stored, key=lambda r: r.id)


@dataclass(frozen=True)
class Outcome:
    """One call of a migrator: its result, or the exception it raised (as text);
    ``unsupported`` the ``unknown`` summary when that exception is the target store saying it
    lacks an op (``harness.unsupported``), which breaks no promise of the store or tool."""

    result: Any = None
    raised: str | None = None
    unsupported: str | None = None

    @property
    def ok(self) -> bool:
        return self.raised is None and bool(getattr(self.result, "ok", False))

    def why(self) -> str:
        if self.raised is not None:
            return f"raised {self.raised}"
        errors = getattr(self.result, "errors", ())
        return "; ".join(errors[:2]) or "not ok"


def run_step(named: PatternMigratorSpec, step: str, env: Env, target: str, backend: str,
             **kwargs: Any) -> Outcome:
    """``migrate``/``status``/``rollback`` as a user runs it: a dead run's lock still fresh
    (``LockHeld``) is waited out once on the virtual clock; an exception is an outcome."""
    def call() -> Any:
        return getattr(named.load(), step)(SOURCE, target, env, target_backend=backend,
                                           **kwargs)
    try:
        try:
            return Outcome(call())
        except LockHeld:
            if not let_lease_go_stale(env):
                raise
            return Outcome(call())
    except Exception as exc:  # noqa: BLE001 - a tool that raises has failed
        return Outcome(raised=f"{type(exc).__name__}: {exc}", unsupported=cannot_answer(exc))


def target_files(image: DiskImage, target: str) -> list[str]:
    """The target's files in ``image``: itself, what is under it, its side files."""
    return sorted(p for p in image.files
                  if p == target or p.startswith((target + ".", target + "-", target + "/")))


def target_problems(spec: Any, image: DiskImage, target: str,
                    want: Sequence[VectorRecord]) -> list[str]:
    """How the target in ``image``, opened by the backend under test (on a copy), differs from
    holding exactly ``want``."""
    return _read_back(spec, image, target, want, "target")


def source_problems(image: DiskImage, path: str, want: Sequence[VectorRecord]) -> list[str]:
    """How the AgentDB file ``path`` in ``image`` differs from holding exactly ``want``, byte
    for byte: the same ids, embeddings equal as floats, metadata equal."""
    env = sim_env(SimDisk(image), VirtualClock())
    try:
        store = resolve(SOURCE_BACKEND).open(path, env, readonly="true")
    except Exception as exc:  # noqa: BLE001 - an unopenable source is the finding
        return [f"{path} cannot be opened: {type(exc).__name__}: {exc}"]
    try:
        got = {r.id: r for r in store.fetch([r.id for r in want])}
        problems = []
        if store.count() != len(want):
            problems.append(f"{path} holds {store.count()} patterns, {len(want)} expected")
        lost = [r.id for r in want if r.id not in got]
        if lost:
            problems.append(f"{path} lacks {len(lost)} patterns (ids {lost[:5]})")
        changed = [r.id for r in want if r.id in got and (
            got[r.id].vector != r.vector or dict(got[r.id].metadata) != dict(r.metadata))]
        if changed:
            problems.append(f"{path}: {len(changed)} patterns differ from the original "
                            f"(ids {changed[:5]})")
        return problems
    finally:
        with contextlib.suppress(Exception):
            store.close()
