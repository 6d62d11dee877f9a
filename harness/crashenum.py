"""Enumerating crash states of a ``SimDisk`` trace within a budget, stratified by crash model.

``plan_crash_states`` shares a budget out before any image is built: each crash model gets an
equal share, spread over its own positions; what a model cannot use passes to the others.
``enumerate_crash_states`` then builds the images in one ascending walk over the trace
(``crashstates.TraceWalk``), each image at most once per position. What a crash state is and how
its image is replayed is in ``crashstates``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from crashgate.harness.crashstates import CrashModel, CrashState, TraceWalk, sectors_of
from crashgate.harness.simdisk import SECTOR_SIZE, DiskImage, DiskOp

__all__ = ["CrashPlan", "Positions", "enumerate_crash_states", "plan_crash_states"]

Positions = Iterable[int] | Mapping[CrashModel, Iterable[int]]
"""Crash positions for every model alike, or per model (e.g. every op boundary for process
crashes, the fsync windows for the power models)."""


@dataclass(frozen=True)
class CrashPlan:
    """How a budget of crash states is shared out, decided before any image is built.

    ``capacity[m]``: how many distinct states model ``m`` can give over its positions (an upper
    bound, capped at the budget); ``share[m]``: the part of the budget it was given;
    ``quotas[p]``: ``(model, quota, capacity)`` at position ``p``, models in the caller's order
    (positions with no quota are left out); ``reasons[m]``: why a model with no capacity has
    nothing to work with."""

    budget: int
    models: tuple[CrashModel, ...]
    capacity: Mapping[CrashModel, int]
    share: Mapping[CrashModel, int]
    quotas: Mapping[int, tuple[tuple[CrashModel, int, int], ...]]
    reasons: Mapping[CrashModel, str]


def _per_model(positions: Positions, models: Sequence[CrashModel], length: int
               ) -> dict[CrashModel, list[int]]:
    if isinstance(positions, Mapping):
        given = {CrashModel(m): sorted(set(ps)) for m, ps in positions.items()}
        out = {m: given.get(m, []) for m in models}
    else:
        shared = sorted(set(positions))
        out = {m: shared for m in models}
    for ps in out.values():
        if ps and (ps[0] < 0 or ps[-1] > length):
            raise ValueError(f"positions must lie in 0..{length} (the trace length), got "
                             f"{ps[0]}..{ps[-1]}")
    return out


def _capacity(model: CrashModel, n: int, tears: int, earlier: Collection[CrashModel]) -> int:
    """Distinct states ``model`` adds at a position with ``n`` pending ops, beyond those of the
    models before it there (a process crash is the prefix that keeps all; prefixes are
    subsets)."""
    if model is CrashModel.PROCESS:
        return 1
    if model is CrashModel.PREFIX:
        return n + 1 - (CrashModel.PROCESS in earlier)
    if model is CrashModel.SUBSET:
        covered = n + 1 if CrashModel.PREFIX in earlier else int(CrashModel.PROCESS in earlier)
        return (1 << min(n, 62)) - covered
    return tears


def _tears(pending: Sequence[int], trace: Sequence[DiskOp], sector_size: int) -> int:
    """How many torn states a position allows (as ``_candidates`` counts them), capped."""
    counts = [len(sectors_of(trace[j], sector_size)) for j in pending if trace[j].kind == "write"]
    per_kept_set = sum((1 << min(s, 62)) - 1 for s in counts if s >= 2)
    return (1 << min(len(pending) - 1, 62)) * per_kept_set if per_kept_set else 0


def _why_empty(model: CrashModel, has_positions: bool) -> str:
    if not has_positions:
        return "no crash position was given for this model"
    if model is CrashModel.PREFIX:
        return "no op was pending at its positions beyond what a process crash keeps"
    if model is CrashModel.SUBSET:
        return ("no position had two ops pending: nothing to reorder that the prefix model "
                "does not already cover")
    if model in (CrashModel.TORN, CrashModel.GARBAGE):
        return "no pending write spans two sectors: nothing to tear"
    return "no crash position"


def _share_out(total: int, caps: Sequence[int], offset: float) -> list[int]:
    """Split ``total`` evenly over slots of capacity ``caps``; what a full slot cannot take
    goes to the others (water-filling). Units that do not divide evenly go to evenly spaced
    slots, shifted by ``offset`` in [0, 1): a deterministic, even sample when there are fewer
    units than slots."""
    out = [0] * len(caps)
    left = total
    open_ = [i for i, c in enumerate(caps) if c > 0]
    while left > 0 and open_:
        per, extra = divmod(left, len(open_))
        bonus = {open_[int((j + offset) * len(open_) / extra)] for j in range(extra)}
        for i in open_:
            give = min(per + (i in bonus), caps[i] - out[i])
            out[i] += give
            left -= give
        open_ = [i for i in open_ if out[i] < caps[i]]
    return out


def plan_crash_states(
    base: DiskImage, trace: Sequence[DiskOp], positions: Positions,
    models: Iterable[CrashModel], budget: int, seed: int, *, sector_size: int = SECTOR_SIZE,
) -> CrashPlan:
    """Share ``budget`` out (see ``enumerate_crash_states``). Walks the trace once without
    building images: it only counts pending ops and tearable writes per position."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    model_list = list(dict.fromkeys(CrashModel(m) for m in models))
    per_model = _per_model(positions, model_list, len(trace))
    at = {m: set(ps) for m, ps in per_model.items()}
    caps: dict[CrashModel, list[int]] = {m: [] for m in model_list}
    walk = TraceWalk(base, trace, sector_size)
    for p in sorted(set().union(*at.values())) if at else []:
        here = [m for m in model_list if p in at[m]]
        walk.advance(p)
        n = tears = 0
        if any(m is not CrashModel.PROCESS for m in here):
            pending = walk.pending()
            n = len(pending)
            if CrashModel.TORN in here or CrashModel.GARBAGE in here:
                tears = _tears(pending, trace, sector_size)
        for k, m in enumerate(here):
            caps[m].append(min(_capacity(m, n, tears, here[:k]), budget))
    totals = [sum(caps[m]) for m in model_list]
    shares = _share_out(budget, totals, 0.0)
    quotas: dict[int, list[tuple[CrashModel, int, int]]] = {}
    for m, share in zip(model_list, shares, strict=True):
        offset = random.Random(f"{seed}:spread:{m.value}").random()
        for p, q, c in zip(per_model[m], _share_out(share, caps[m], offset), caps[m],
                           strict=True):
            if q:
                quotas.setdefault(p, []).append((m, q, c))
    order = {m: i for i, m in enumerate(model_list)}
    return CrashPlan(
        budget, tuple(model_list), dict(zip(model_list, totals, strict=True)),
        dict(zip(model_list, shares, strict=True)),
        {p: tuple(sorted(qs, key=lambda e: order[e[0]])) for p, qs in sorted(quotas.items())},
        {m: _why_empty(m, bool(per_model[m])) for m, t in zip(model_list, totals, strict=True)
         if t == 0})


def enumerate_crash_states(
    base: DiskImage, trace: Sequence[DiskOp], positions: Positions,
    models: Iterable[CrashModel], budget: int, seed: int, *, sector_size: int = SECTOR_SIZE,
    plan: CrashPlan | None = None, walk: TraceWalk | None = None,
) -> Iterator[tuple[CrashState, DiskImage]]:
    """Yield ``(state, image)`` pairs, at most ``budget`` in all, each image at most once per
    position. ``positions`` is one list for every model or a mapping model -> positions.

    The budget is stratified: each model gets an equal share, spread evenly over that model's
    own positions (an even, deterministic sample of them, shifted by ``seed``, when the share
    is smaller than their number). A share a model cannot use (few pending ops, no write to
    tear) goes to the other models, planned from each model's capacity (``plan_crash_states``,
    or ``plan`` when the caller made it with these same arguments); a quota a position leaves
    unused (images that turned out equal) passes on to the next quota with room. Within its
    quota a model is exhaustive when it fits (all prefixes, all subsets, all tears) and sampled
    otherwise, deterministically for ``seed``. Images are built in one pass over the trace,
    positions ascending, by ``walk`` (a fresh ``TraceWalk`` over ``trace``; made here unless
    given: a caller that forks a process mid-enumeration gives it, so that the child inherits
    the walk where the states still to come begin and can rebuild their images itself)."""
    model_list = list(dict.fromkeys(CrashModel(m) for m in models))
    if plan is None:
        plan = plan_crash_states(base, trace, positions, model_list, budget, seed,
                                 sector_size=sector_size)
    if walk is None:
        walk = TraceWalk(base, trace, sector_size)
    elif walk.pos != 0 or walk.trace is not trace or walk.sector_size != sector_size:
        raise ValueError(f"enumerate_crash_states(walk=...): give a fresh TraceWalk over this "
                         f"trace with sector_size {sector_size} (got one at position "
                         f"{walk.pos}, sector_size {walk.sector_size})")
    spare = 0   # quota left unused by earlier positions (equal images), passed on
    for position, entries in plan.quotas.items():
        walk.advance(position)
        pending = tuple(walk.pending())
        # images by hash, not the images themselves: a position's quota of multi-MiB images
        # would all stay alive (a collision of 64-bit hashes would skip a state, never judge one
        # wrongly). The hash is the contents' (``harness.content``): chunks an image shares
        # with the durable files were hashed once, so it costs what the image wrote
        seen: set[int] = set()
        covered: set[CrashModel] = set()
        for model, planned, cap in entries:
            extra = min(spare, max(cap - planned, 0))
            quota = planned + extra
            spare -= extra
            got = 0
            rng = random.Random(f"{seed}:{position}:{model.value}")
            for state in _candidates(model, position, pending, trace, quota, rng, sector_size,
                                     covered):
                if got >= quota:
                    break
                image = walk.image_of(state)
                key = hash(image)
                if key in seen:
                    continue
                seen.add(key)
                got += 1
                yield state, image
            spare += quota - got
            if got:
                covered.add(model)


def _candidates(model: CrashModel, position: int, pending: tuple[int, ...],
                trace: Sequence[DiskOp], quota: int, rng: random.Random,
                sector_size: int, covered: Collection[CrashModel] = ()) -> Iterator[CrashState]:
    """Candidate states of one model, exhaustive if they fit ``quota``, else a bounded sample
    (duplicates possible: the caller dedupes images). States that a model in ``covered``
    already gave at this position (the process crash's keep-all, the prefixes) are skipped, so
    that the exhaustive case is judged on the states this model adds."""
    n = len(pending)
    attempts = 4 * quota + 16

    def state(kept: Iterable[int], torn: tuple[tuple[int, tuple[int, ...]], ...] = (),
              garbage: int | None = None) -> CrashState:
        return CrashState(position, model, tuple(sorted(kept)), torn, garbage, pending,
                          sector_size)

    if quota <= 0:
        return
    if model is CrashModel.PROCESS:
        yield state(pending)
    elif model is CrashModel.PREFIX:
        cuts = range(n + (CrashModel.PROCESS not in covered))
        ks: Iterable[int] = cuts
        if len(cuts) > quota:  # evenly spaced cut points, both ends included
            ks = sorted({cuts[round(i * (len(cuts) - 1) / max(quota - 1, 1))]
                         for i in range(quota)})
        for k in ks:
            yield state(pending[:k])
    elif model is CrashModel.SUBSET:
        no_prefix = CrashModel.PREFIX in covered
        no_full = no_prefix or CrashModel.PROCESS in covered

        def fresh(kept: tuple[int, ...]) -> bool:
            if no_prefix and kept == pending[:len(kept)]:
                return False
            return not (no_full and len(kept) == n)

        if n < 63 and _capacity(model, n, 0, covered) <= quota:
            for r in range(n + 1):
                for kept in itertools.combinations(pending, r):
                    if fresh(kept):
                        yield state(kept)
            return
        for kept in ((), pending):
            if fresh(kept):
                yield state(kept)
        for _ in range(attempts):
            kept = tuple(j for j in pending if rng.random() < 0.5)
            if fresh(kept):
                yield state(kept)
    else:
        garbage = model is CrashModel.GARBAGE
        tearable = [j for j in pending
                    if trace[j].kind == "write" and len(sectors_of(trace[j], sector_size)) >= 2]
        if not tearable:
            return
        total = 2 ** (n - 1) * sum(2 ** len(sectors_of(trace[w], sector_size)) - 1
                                   for w in tearable)
        if total <= quota:
            for w in tearable:
                secs = list(sectors_of(trace[w], sector_size))
                others = [j for j in pending if j != w]
                for r in range(len(secs)):
                    for written in itertools.combinations(secs, r):
                        for q in range(len(others) + 1):
                            for kept in itertools.combinations(others, q):
                                yield state((*kept, w), ((w, written),),
                                            rng.getrandbits(32) if garbage else None)
            return
        for _ in range(attempts):
            w = rng.choice(tearable)
            secs = list(sectors_of(trace[w], sector_size))
            if rng.random() < 0.5:  # a sequential write torn part-way: a prefix of its sectors
                written = tuple(secs[:rng.randrange(len(secs))])
            else:
                chosen = [s for s in secs if rng.random() < 0.5]
                if len(chosen) == len(secs):
                    chosen.remove(rng.choice(secs))
                written = tuple(chosen)
            survivors = [j for j in pending if j == w or rng.random() < 0.5]
            yield state(survivors, ((w, written),), rng.getrandbits(32) if garbage else None)
