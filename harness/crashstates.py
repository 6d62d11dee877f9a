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
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from crashgate.harness.content import EMPTY, ChunkedFile, Content
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

__all__ = ["CrashModel", "CrashState", "TraceWalk", "crash_state_strategy", "durable_image",
           "pending_at", "sectors_of", "sync_positions"]


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
        walk = TraceWalk(base, trace, self.sector_size)
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
        return walk.image_of(self)


class TraceWalk:
    """The durable state of a trace, advanced op by op in one pass.

    Bytes: per inode, the durable ops are a prefix of its ops (a sync covers all before it),
    so ``data`` (inode -> ``Content``) is replaced at each sync by a content that shares every
    chunk the sync's ops did not touch; an image's files are built the same way from it, so
    the images of one position share their untouched chunks with the durable files and with
    each other (nothing of a large file is copied but the chunks a kept write lands in).
    Entries: a rename may wait on two directories, so durability is not a prefix; ``settled``
    holds the base plus the longest all-durable prefix of entry ops, and the rest
    (``unsettled``) is replayed per state.
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
        self.data: dict[int, Content] = dict(data)
        self.pending_data: dict[int, list[int]] = {}
        self.unsettled: list[int] = []
        self._head = 0  # unsettled[:_head] are settled already
        self.needs: dict[int, set[int]] = {}  # pending entry op -> dirs whose sync it awaits
        self._waiting: dict[int, list[int]] = {}  # dir inode -> entry ops awaiting its sync
        self._trees: dict[tuple[int, ...], tuple[list[tuple[str, int]], frozenset[str]]] = {}
        # inode -> the last trace index of an entry op naming it: past it, an inode that no
        # settled directory links and no unsettled op names can never be reached again
        self._last_named: dict[int, int] = {op.ino: i for i, op in enumerate(trace)
                                            if op.kind in ENTRY_KINDS}

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
                    buf = self.data.get(op.ino, EMPTY).edit()
                    for j in ops:
                        _apply_data(buf, trace[j])
                    self.data[op.ino] = buf.freeze()
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
                self._forget_unreachable(i)
        self.pos = max(position, self.pos)

    def _forget_unreachable(self, at: int) -> None:
        """Drop the durable bytes of file inodes that no image from ``at`` on can show: not
        linked in the settled tree, named by no unsettled entry op and by no later one (a file
        replaced by a compaction's rename; without this, every old copy of it stays)."""
        linked = {ino for table in self.settled.entries.values() for ino in table.values()}
        linked.update(self.trace[j].ino for j in self.unsettled[self._head:])
        for ino in [i for i in self.data if i not in linked
                    and self._last_named.get(i, -1) <= at]:
            del self.data[ino]

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

    def durable(self, ino: int) -> Content:
        """The durable content of file ``ino`` at this walk's position."""
        return self.data.get(ino, EMPTY)

    def image_of(self, state: CrashState) -> DiskImage:
        """The image of ``state``, a state at this walk's position (``advance`` to it first):
        the one call the enumeration, ``CrashState.image`` and the workers make, so that an
        image rebuilt elsewhere is the image that was chosen."""
        if state.position != self.pos:
            raise ValueError(f"the walk is at position {self.pos}, the state at "
                             f"{state.position}: advance the walk first")
        return self.materialise(set(state.kept), dict(state.torn) or None, state.garbage_seed)

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
        for ino, pending in self.pending_data.items():
            ks = [j for j in pending if j in kept]
            if ks:
                touched[ino] = ks
        files: dict[str, Content] = {}
        data = self.data
        for path, ino in paths:
            mine = touched.get(ino)
            if mine is None:
                files[path] = data.get(ino, EMPTY)
                continue
            # a kept truncate to 0 leaves nothing of what came before it: replay from there
            # (a store that rewrites its file on every op would otherwise replay them all)
            cut = next((i for i in range(len(mine) - 1, -1, -1)
                        if self.trace[mine[i]].kind == "truncate"
                        and self.trace[mine[i]].size == 0), 0)
            # copy-on-write: only the chunks a kept op lands in are copied (appends to a log
            # copy its last chunk, not the file)
            buf = (data.get(ino, EMPTY) if cut == 0 else EMPTY).edit()
            for j in mine[cut:]:
                written = torn.get(j) if torn else None
                if written is None:
                    _apply_data(buf, self.trace[j])
                else:
                    _apply_torn(buf, self.trace[j], j, written, garbage_seed, self.sector_size)
            files[path] = buf.freeze()
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


def _apply_data(buf: ChunkedFile, op: DiskOp) -> None:
    if op.kind == "write":
        buf.write(op.offset, op.data)
    else:
        buf.truncate(op.size)


def sectors_of(op: DiskOp, sector_size: int = SECTOR_SIZE) -> range:
    """The absolute sector numbers a write touches."""
    if not op.length:
        return range(0)
    return range(op.offset // sector_size, (op.offset + op.length - 1) // sector_size + 1)


def _garbage(seed: int, index: int, size: int) -> bytes:
    """Garbage for a whole write (one generator per write, not per sector: a long write has
    thousands); a lost sector takes its own slice, whichever others were written. NumPy's
    PCG64 makes a MiB in a fraction of a millisecond, several times faster than ``random``."""
    return np.random.Generator(np.random.PCG64([seed, index])).bytes(size)


def _apply_torn(buf: ChunkedFile, op: DiskOp, index: int, written: Collection[int],
                garbage_seed: int | None, sector_size: int) -> None:
    # the bytes the write's range holds after the tear, built flat and written once (a torn
    # write has hundreds of runs; one file write each would cost more than the copy)
    size = op.length
    if garbage_seed is not None:   # every sector lost holds garbage
        region = bytearray(_garbage(garbage_seed, index, size))
    else:   # lost sectors keep their old bytes; past the old end, zeros (the size update
        # reached the disk, not all the data)
        old = buf.read(op.offset, size)
        region = bytearray(size)
        region[:len(old)] = old
    data = memoryview(op.data)
    # the written sectors, copied as runs of consecutive sectors
    for first, last in _runs(sorted(set(written) & set(sectors_of(op, sector_size)))):
        lo = max(0, first * sector_size - op.offset)
        hi = min(size, (last + 1) * sector_size - op.offset)
        region[lo:hi] = data[lo:hi]
    buf.write(op.offset, region)


def _runs(sectors: Sequence[int]) -> Iterator[tuple[int, int]]:
    """``[1, 2, 3, 7, 8]`` -> ``(1, 3), (7, 8)``: runs of consecutive numbers, ascending."""
    start = prev = None
    for s in sectors:
        if prev is not None and s == prev + 1:
            prev = s
            continue
        if start is not None and prev is not None:
            yield start, prev
        start = prev = s
    if start is not None and prev is not None:
        yield start, prev


def pending_at(base: DiskImage, trace: Sequence[DiskOp], position: int) -> list[int]:
    """The trace indices ``< position`` not yet durable at ``position``, ascending."""
    walk = TraceWalk(base, trace, SECTOR_SIZE)
    walk.advance(position)
    return walk.pending()


def durable_image(base: DiskImage, trace: Sequence[DiskOp], position: int,
                  sector_size: int = SECTOR_SIZE) -> DiskImage:
    """What survives power loss at ``position`` when no pending op reaches the disk."""
    walk = TraceWalk(base, trace, sector_size)
    walk.advance(position)
    return walk.materialise(())


def sync_positions(trace: Sequence[DiskOp]) -> list[int]:
    """Positions just before each ``sync``/``sync_dir``: where the most is pending."""
    return [i for i, op in enumerate(trace) if op.kind in ("sync", "sync_dir")]


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
    walk = TraceWalk(base, trace, sector_size)
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

