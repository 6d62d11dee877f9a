"""Crash states: what a disk may hold after power fails at a point of a ``SimDisk`` trace.

At position ``p`` (ops ``0..p-1`` reached the page cache) an op is *durable* when a later sync
before ``p`` covered it: a write or truncate by a ``sync`` of its inode, an entry op (create,
mkdir, unlink, rename) by a ``sync_dir`` of its directory (a rename between two directories by
syncs of both). Every other op before ``p`` is *pending*. A crash state keeps the durable ops
and some pending ones, chosen by a ``CrashModel``.

The replay rule (ALICE's: each op is an atomic unit, except a torn write): the image is the
base with the durable and the kept ops applied in trace order, every op acting on inodes:

- a write/truncate changes its inode's bytes whether or not the inode's name survived; a file
  whose create was lost is unreachable, so the writes to it are lost with it;
- create/mkdir set ``dir[name] = inode``; unlink removes the entry only if it still names that
  inode; rename moves the entry only if the source still names the moved inode, so a rename of
  a file whose create was lost is lost too; a file in a directory whose mkdir was lost is lost;
- a torn write keeps only some of its sectors (absolute file sectors of ``sector_size``); the
  file size still grows to the write's end, so lost sectors past the old end read as zeros
  (TORN) or hold garbage (GARBAGE). Garbage only covers the write's own bytes in a lost sector,
  never its neighbours: SQLite's "powersafe overwrite" assumption.

So a crash state never holds bytes the program did not write, except zeros of a gap or an
extension (as a real file system shows) and GARBAGE's garbage.
"""

from __future__ import annotations

import enum
import itertools
import random
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from crashgate.harness.simdisk import (
    DATA_KINDS,
    ENTRY_KINDS,
    SECTOR_SIZE,
    DiskImage,
    DiskOp,
    layout,
    walk_tree,
)

if TYPE_CHECKING:  # Hypothesis is imported only when a strategy is built: keeps imports light
    from hypothesis.strategies import DrawFn, SearchStrategy

__all__ = ["CrashModel", "CrashPlan", "CrashState", "crash_state_strategy", "durable_image",
           "enumerate_crash_states", "pending_at", "plan_crash_states", "sectors_of",
           "sync_positions"]


class CrashModel(enum.StrEnum):
    PROCESS = "process"  # page cache survives: the image at the crash position, nothing lost
    PREFIX = "prefix"  # pending ops survive as a prefix, in order
    SUBSET = "subset"  # any subset of pending ops survives (reordering)
    TORN = "torn"  # a subset, and one kept write may be torn at sector granularity
    GARBAGE = "garbage"  # like TORN, but a torn write's lost sectors hold random garbage


# Hypothesis shrinks a sampled_from toward its first element: the simplest power loss first.
_SHRINK_ORDER = (CrashModel.PREFIX, CrashModel.SUBSET, CrashModel.TORN, CrashModel.GARBAGE,
                 CrashModel.PROCESS)


@dataclass(frozen=True)
class CrashState:
    """Which pending ops survived a crash at ``position``. ``torn`` pairs a kept write's trace
    index with the (absolute) sector numbers of it that were written; ``pending`` (optional)
    lists every pending op so ``describe`` can say what was lost."""

    position: int
    model: CrashModel
    kept: tuple[int, ...]
    torn: tuple[tuple[int, tuple[int, ...]], ...] = ()
    garbage_seed: int | None = None
    pending: tuple[int, ...] = ()
    sector_size: int = SECTOR_SIZE

    def describe(self, trace: Sequence[DiskOp] | None = None) -> str:
        """One line for a human; names the ops when given the trace."""
        def name(j: int) -> str:
            return f"#{j} {trace[j].describe()}" if trace is not None else f"#{j}"

        def listing(ids: Iterable[int]) -> str:
            ids = list(ids)
            shown = ", ".join(name(j) for j in ids[:8])
            return f"[{shown}{f', ... {len(ids) - 8} more' if len(ids) > 8 else ''}]"

        if self.model is CrashModel.PROCESS:
            return (f"process crash at op {self.position}: the page cache survives "
                    f"({len(self.kept)} pending ops kept)")
        text = f"power loss at op {self.position} ({self.model.value} model): kept "
        if self.pending:
            lost = [j for j in self.pending if j not in set(self.kept)]
            text += f"{len(self.kept)} of {len(self.pending)} pending ops {listing(self.kept)}"
            text += f", lost {listing(lost)}" if lost else ""
        else:
            text += f"{len(self.kept)} pending ops {listing(self.kept)}"
        for j, sectors in self.torn:
            rest = ("hold garbage (seed " + str(self.garbage_seed) + ")"
                    if self.garbage_seed is not None else "keep their old bytes")
            text += (f"; {name(j)} torn: only sectors {list(sectors)} written "
                     f"({self.sector_size}-byte sectors), the others {rest}")
        return text

    def image(self, base: DiskImage, trace: Sequence[DiskOp]) -> DiskImage:
        """Materialise this state by replaying ``trace`` (whole) from ``base``."""
        if not 0 <= self.position <= len(trace):
            raise ValueError(f"CrashState.position {self.position} is outside the trace "
                             f"(0..{len(trace)}); was the state drawn from another trace?")
        walk = _Walk(base, trace, self.sector_size)
        walk.advance(self.position)
        pending = walk.pending()
        if self.model is CrashModel.PROCESS:
            return walk.materialise(set(pending))
        stray = sorted(set(self.kept) - set(pending))
        if stray:
            raise ValueError(f"CrashState.kept holds {stray}, which are not pending at "
                             f"position {self.position} (pending: {pending})")
        for j, _ in self.torn:
            if j not in self.kept or trace[j].kind != "write":
                raise ValueError(f"CrashState.torn names op {j}, which is not a kept write")
        return walk.materialise(set(self.kept), dict(self.torn), self.garbage_seed)


class _Walk:
    """The durable state of a trace, advanced op by op in one pass.

    Bytes: per inode, the durable ops are a prefix of its ops (a sync covers all before it),
    so ``data`` is updated in place at each sync. Entries: a rename may wait on two
    directories, so durability is not a prefix; ``settled`` holds the base plus the longest
    all-durable prefix of entry ops, and the rest (``unsettled``) is replayed per state.
    """

    def __init__(self, base: DiskImage, trace: Sequence[DiskOp], sector_size: int) -> None:
        entries, data, self._base_next = layout(base)
        # Trace inode numbers are relative to the base the SimDisk started from; kept to catch
        # a trace replayed against another image.
        self._base_names = {(d, name): ino for d, table in entries.items()
                            for name, ino in table.items()}
        self.trace = trace
        self.sector_size = sector_size
        self.pos = 0
        self.settled = _Tree(entries)
        self.data: dict[int, bytes | bytearray] = dict(data)
        self._bytes: dict[int, bytes] = {}
        self.pending_data: dict[int, list[int]] = {}
        self.unsettled: list[int] = []
        self._head = 0  # unsettled[:_head] are settled already
        self.needs: dict[int, set[int]] = {}  # pending entry op -> dirs whose sync it awaits
        self._waiting: dict[int, list[int]] = {}  # dir inode -> entry ops awaiting its sync
        self._trees: dict[tuple[int, ...], tuple[list[tuple[str, int]], frozenset[str]]] = {}

    def advance(self, position: int) -> None:
        if position < self.pos:
            raise ValueError(f"positions must not go back: {position} after {self.pos}")
        trace = self.trace
        for i in range(self.pos, position):
            op = trace[i]
            kind = op.kind
            if op.ino <= 0 or (kind in ENTRY_KINDS and op.parent <= 0):
                raise ValueError(f"trace op {i} ({op.describe()}) carries no inode numbers; "
                                 "replay needs a trace recorded by SimDisk")
            if kind in DATA_KINDS:
                self.pending_data.setdefault(op.ino, []).append(i)
            elif kind == "sync":
                ops = self.pending_data.pop(op.ino, None)
                if ops:
                    buf = self.data.get(op.ino, b"")
                    if not isinstance(buf, bytearray):
                        buf = self.data[op.ino] = bytearray(buf)
                    for j in ops:
                        _apply_data(buf, trace[j])
                    self._bytes.pop(op.ino, None)
            elif kind in ENTRY_KINDS:
                if kind in ("create", "mkdir") and op.ino < self._base_next:
                    self._check_base(i, op)
                dirs = {op.parent, op.dst_parent} if kind == "rename" else {op.parent}
                self.unsettled.append(i)
                self.needs[i] = dirs
                for d in dirs:
                    self._waiting.setdefault(d, []).append(i)
                self._trees.clear()
            elif kind == "sync_dir":
                for j in self._waiting.pop(op.ino, ()):
                    waits = self.needs.get(j)
                    if waits is not None:
                        waits.discard(op.ino)
                        if not waits:
                            del self.needs[j]
                self._settle()
                self._trees.clear()
        self.pos = max(position, self.pos)

    def _check_base(self, i: int, op: DiskOp) -> None:
        # A create of an inode the base already has is harmless only when the base has it
        # at that very place (the base is a later, durable snapshot of the same setup).
        if self._base_names.get((op.parent, _basename(op.path))) != op.ino:
            raise ValueError(
                f"trace op {i} ({op.describe()}) creates inode {op.ino}, which the base image "
                "holds elsewhere: a trace replays only against the image its SimDisk started "
                "from (pass disk.base)")

    def _settle(self) -> None:
        while self._head < len(self.unsettled) and self.unsettled[self._head] not in self.needs:
            _apply_entry(self.settled, self.trace[self.unsettled[self._head]])
            self._head += 1
        if self._head > 64 and self._head * 2 > len(self.unsettled):
            del self.unsettled[:self._head]
            self._head = 0

    def pending(self) -> list[int]:
        out = [j for ops in self.pending_data.values() for j in ops]
        out += [j for j in self.unsettled[self._head:] if j in self.needs]
        out.sort()
        return out

    def durable_bytes(self, ino: int) -> bytes:
        got = self._bytes.get(ino)
        if got is None:
            raw = self.data.get(ino, b"")
            got = raw if isinstance(raw, bytes) else bytes(raw)
            self._bytes[ino] = got
        return got

    def materialise(self, kept: Collection[int], torn: Mapping[int, Collection[int]] | None = None,
                    garbage_seed: int | None = None) -> DiskImage:
        """The image with the durable ops and ``kept`` applied (``torn``: index -> sectors)."""
        key = tuple(j for j in self.unsettled[self._head:] if j not in self.needs or j in kept)
        tree = self._trees.get(key)
        if tree is None:
            overlay = _Tree(self.settled.entries, copy_on_write=True)
            for j in key:
                _apply_entry(overlay, self.trace[j])
            tree = walk_tree(overlay.merged())
            if len(self._trees) > 4096:
                self._trees.clear()
            self._trees[key] = tree
        paths, dirs = tree
        touched = {}
        for ino, ops in self.pending_data.items():
            ks = [j for j in ops if j in kept]
            if ks:
                touched[ino] = ks
        files: dict[str, bytes] = {}
        for path, ino in paths:
            mine = touched.get(ino)
            if mine is None:
                files[path] = self.durable_bytes(ino)
                continue
            # a kept truncate to 0 leaves nothing of what came before it: replay from there
            # (a store that rewrites its file on every op would otherwise replay them all)
            cut = next((i for i in range(len(mine) - 1, -1, -1)
                        if self.trace[mine[i]].kind == "truncate"
                        and self.trace[mine[i]].size == 0), None)
            buf = bytearray(self.data.get(ino, b"")) if cut is None else bytearray()
            for j in mine[cut or 0:]:
                written = torn.get(j) if torn else None
                if written is None:
                    _apply_data(buf, self.trace[j])
                else:
                    _apply_torn(buf, self.trace[j], j, written, garbage_seed, self.sector_size)
            files[path] = bytes(buf)
        return DiskImage._trusted(files, dirs)


_NO_ENTRIES: Mapping[str, int] = MappingProxyType({})


class _Tree:
    """Directory tables, edited in place or copy-on-write over shared ones."""

    def __init__(self, entries: dict[int, dict[str, int]], copy_on_write: bool = False) -> None:
        self.entries = entries
        self.own: dict[int, dict[str, int]] | None = {} if copy_on_write else None

    def get(self, d: int) -> Mapping[str, int]:
        if self.own is not None and d in self.own:
            return self.own[d]
        return self.entries.get(d, _NO_ENTRIES)

    def edit(self, d: int) -> dict[str, int]:
        if self.own is None:
            return self.entries.setdefault(d, {})
        table = self.own.get(d)
        if table is None:
            table = self.own[d] = dict(self.entries.get(d, _NO_ENTRIES))
        return table

    def merged(self) -> Mapping[int, Mapping[str, int]]:
        return {**self.entries, **self.own} if self.own else self.entries


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _apply_entry(tree: _Tree, op: DiskOp) -> None:
    kind = op.kind
    if kind == "create":
        tree.edit(op.parent)[_basename(op.path)] = op.ino
    elif kind == "mkdir":
        tree.edit(op.parent)[_basename(op.path)] = op.ino
        tree.edit(op.ino)  # an entry table is what makes an inode a directory
    elif kind == "unlink":
        name = _basename(op.path)
        if tree.get(op.parent).get(name) == op.ino:
            del tree.edit(op.parent)[name]
    elif kind == "rename":
        name = _basename(op.path)
        if tree.get(op.parent).get(name) == op.ino:
            del tree.edit(op.parent)[name]
            tree.edit(op.dst_parent)[_basename(op.dst)] = op.ino


def _apply_data(buf: bytearray, op: DiskOp) -> None:
    if op.kind == "write":
        if op.offset > len(buf):
            buf.extend(bytes(op.offset - len(buf)))
        buf[op.offset:op.offset + len(op.data)] = op.data
    elif op.size < len(buf):
        del buf[op.size:]
    else:
        buf.extend(bytes(op.size - len(buf)))


def sectors_of(op: DiskOp, sector_size: int = SECTOR_SIZE) -> range:
    """The absolute sector numbers a write touches."""
    if not op.data:
        return range(0)
    return range(op.offset // sector_size, (op.offset + len(op.data) - 1) // sector_size + 1)


def _garbage(seed: int, index: int, size: int) -> bytes:
    """Garbage for a whole write (one generator per write, not per sector: a long write has
    thousands); a lost sector takes its own slice, whichever others were written."""
    return random.Random(f"garbage:{seed}:{index}").randbytes(size)


def _apply_torn(buf: bytearray, op: DiskOp, index: int, written: Collection[int],
                garbage_seed: int | None, sector_size: int) -> None:
    end = op.offset + len(op.data)
    if end > len(buf):
        buf.extend(bytes(end - len(buf)))  # the size update reached the disk, not all the data
    written = set(written)   # a long write has hundreds of sectors
    junk = _garbage(garbage_seed, index, len(op.data)) if garbage_seed is not None else b""
    for s in sectors_of(op, sector_size):
        lo, hi = max(op.offset, s * sector_size), min(end, (s + 1) * sector_size)
        if s in written:
            buf[lo:hi] = op.data[lo - op.offset:hi - op.offset]
        elif junk:
            buf[lo:hi] = junk[lo - op.offset:hi - op.offset]


def pending_at(base: DiskImage, trace: Sequence[DiskOp], position: int) -> list[int]:
    """The trace indices ``< position`` not yet durable at ``position``, ascending."""
    walk = _Walk(base, trace, SECTOR_SIZE)
    walk.advance(position)
    return walk.pending()


def durable_image(base: DiskImage, trace: Sequence[DiskOp], position: int,
                  sector_size: int = SECTOR_SIZE) -> DiskImage:
    """What survives power loss at ``position`` when no pending op reaches the disk."""
    walk = _Walk(base, trace, sector_size)
    walk.advance(position)
    return walk.materialise(())


def sync_positions(trace: Sequence[DiskOp]) -> list[int]:
    """Positions just before each ``sync``/``sync_dir``: where the most is pending."""
    return [i for i, op in enumerate(trace) if op.kind in ("sync", "sync_dir")]


# -- enumeration ----------------------------------------------------------------------------

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
    walk = _Walk(base, trace, sector_size)
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
    plan: CrashPlan | None = None,
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
    positions ascending."""
    model_list = list(dict.fromkeys(CrashModel(m) for m in models))
    if plan is None:
        plan = plan_crash_states(base, trace, positions, model_list, budget, seed,
                                 sector_size=sector_size)
    walk = _Walk(base, trace, sector_size)
    spare = 0   # quota left unused by earlier positions (equal images), passed on
    for position, entries in plan.quotas.items():
        walk.advance(position)
        pending = tuple(walk.pending())
        seen: set[DiskImage] = set()
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
                torn = dict(state.torn) if state.torn else None
                image = walk.materialise(set(state.kept), torn, state.garbage_seed)
                if image in seen:
                    continue
                seen.add(image)
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


# -- Hypothesis -----------------------------------------------------------------------------


def crash_state_strategy(
    base: DiskImage, trace: Sequence[DiskOp], positions: Sequence[int],
    models: Sequence[CrashModel] = tuple(CrashModel), *, sector_size: int = SECTOR_SIZE,
) -> SearchStrategy[CrashState]:
    """Draw a crash state; failures shrink toward earlier positions, the prefix model, fewer
    kept ops and fewer written sectors of a torn write."""
    from hypothesis import strategies as st

    pos_list = sorted(set(positions))
    if not pos_list:
        raise ValueError("crash_state_strategy needs at least one position "
                         "(e.g. sync_positions(trace) + [len(trace)])")
    if pos_list[0] < 0 or pos_list[-1] > len(trace):
        raise ValueError(f"positions must lie in 0..{len(trace)}, got {pos_list}")
    wanted = {CrashModel(m) for m in models}
    if not wanted:
        raise ValueError("crash_state_strategy needs at least one model, e.g. CrashModel.SUBSET")
    model_list = [m for m in _SHRINK_ORDER if m in wanted]
    walk = _Walk(base, trace, sector_size)
    pending: dict[int, tuple[int, ...]] = {}
    for p in pos_list:
        walk.advance(p)
        pending[p] = tuple(walk.pending())

    @st.composite
    def draw_state(draw: DrawFn) -> CrashState:
        position = draw(st.sampled_from(pos_list))
        model = draw(st.sampled_from(model_list))
        pend = pending[position]
        kept: tuple[int, ...]
        if model in (CrashModel.PREFIX, CrashModel.PROCESS):
            # PROCESS draws a cut too, pinned to "keep all": the shrinker prefers shorter choice
            # sequences, so PROCESS must not look simpler than PREFIX; and when it tries PREFIX
            # in its place, the replayed cut keeps all, the same image, so it can go on from there.
            low = len(pend) if model is CrashModel.PROCESS else 0
            kept = pend[:draw(st.integers(low, len(pend)))]
            if model is CrashModel.PROCESS:
                return CrashState(position, model, pend, pending=pend, sector_size=sector_size)
        else:
            # 0/1 integers rather than booleans: the first lines up with PREFIX's cut, so the
            # shrinker can turn a SUBSET state into the PREFIX state that keeps the same ops.
            flags = draw(st.lists(st.integers(0, 1), min_size=len(pend), max_size=len(pend)))
            kept = tuple(j for j, f in zip(pend, flags, strict=True) if f)
        torn: tuple[tuple[int, tuple[int, ...]], ...] = ()
        garbage = None
        tearable = [j for j in kept
                    if trace[j].kind == "write" and len(sectors_of(trace[j], sector_size)) >= 2]
        if model in (CrashModel.TORN, CrashModel.GARBAGE) and tearable:
            w = draw(st.sampled_from(tearable))
            secs = sectors_of(trace[w], sector_size)
            written = draw(st.sets(st.sampled_from(secs), max_size=len(secs) - 1))
            torn = ((w, tuple(sorted(written))),)
            if model is CrashModel.GARBAGE:
                garbage = draw(st.integers(0, 2**32 - 1))
        return CrashState(position, model, kept, torn, garbage, pend, sector_size)

    return draw_state()

