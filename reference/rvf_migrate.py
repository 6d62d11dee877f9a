"""ADR-032 Phase 2's tools: ``migrate`` vector data into an RVF file, and ``rebuild`` an rvlite
metadata cache from its RVF file.

Migration sources: an IndexedDB-model file with a ``vectors`` object store of
``{id, vector, metadata}`` values, or a JSON file in the ingest format (an array of
``{"id", "vector", "metadata"}``; a repeated id keeps its last record). The source is only ever
read (a readonly IndexedDB connection never writes, not even a torn tail's truncation).

Idempotence lives in the destination itself: records go in batches of ``batch_size`` (by id),
and each batch is ONE RVF commit that also writes the progress record
``crashgate.migrate/<source fingerprint>`` = ``{"done": batches committed, ...}``. A crash leaves
the progress record exactly in step with the batches; a rerun resumes after ``done``, and a rerun
of a finished migration writes nothing. Upserts are by id, so nothing can be duplicated.
The failpoint ``migrate.after-batch`` is hit after each batch's commit.

``migrator`` is the same tool behind the migrator contract (``backends.migrator``): crashgate's
default migrator, which ADR-032 row 4 certifies when no other is named.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from crashgate.backends import (
    BATCH_DONE,
    CorruptStore,
    CrashgateError,
    Env,
    MigrationResult,
    VectorRecord,
)
from crashgate.reference.indexeddb import IndexedDB, is_indexeddb_file
from crashgate.reference.rvf.store import RvfStore, open_rvf
from crashgate.reference.rvlite import cache_path, open_rvlite

__all__ = ["BATCH_SIZE", "FAILPOINT", "PROGRESS_PREFIX", "BadSource", "MigrationError",
           "MigrationReport", "RebuildReport", "Source", "migrate", "migrator", "read_source",
           "rebuild", "verify_records"]

BATCH_SIZE = 1000
FAILPOINT = BATCH_DONE
PROGRESS_PREFIX = "crashgate.migrate/"
TOLERANCE = 1e-6


class MigrationError(CrashgateError):
    """The migration cannot go ahead as asked; the message says why and what to do."""


class BadSource(MigrationError):
    """The source is missing or does not parse (a usage error: exit 3)."""


@dataclass(frozen=True)
class Source:
    """The records of a migration source, deduplicated by id and ordered by id."""

    path: str
    kind: str   # "indexeddb" or "json"
    records: tuple[VectorRecord, ...]
    fingerprint: str   # sha256 of the canonical records: names the source in the progress key

    @property
    def dimension(self) -> int | None:
        return len(self.records[0].vector) if self.records else None


def _record(raw: Any, where: str) -> VectorRecord:
    if not isinstance(raw, dict) or "id" not in raw or "vector" not in raw:
        raise BadSource(f"{where} is not an object with 'id' and 'vector'; the ingest "
                             'format is [{"id": 1, "vector": [0.1, ...], "metadata": {...}}]')
    try:
        rec = VectorRecord.of(raw["id"], raw["vector"], raw.get("metadata") or {})
    except (TypeError, ValueError, OverflowError) as exc:   # OverflowError: an id of Infinity
        raise BadSource(f"{where}: {exc}") from exc
    if not all(map(math.isfinite, rec.vector)):   # JSON sources may hold NaN and Infinity
        raise BadSource(f"{where}: the vector holds a value that is not a finite number")
    if not 0 <= rec.id < 2**64 or isinstance(raw["id"], bool) or raw["id"] != rec.id:
        raise BadSource(f"{where}: id {raw['id']!r} is not an integer in [0, 2**64)")
    if not rec.vector or not isinstance(raw.get("metadata") or {}, dict):
        raise BadSource(f"{where}: the vector is empty or the metadata not an object")
    return rec


def read_source(path: str, env: Env) -> Source:
    """Read a migration source (kind detected from its first bytes); ``MigrationError`` when it
    does not parse, with the record at fault."""
    if not env.fs.exists(path):
        raise BadSource(f"source {path} does not exist")
    f = env.fs.open(path, "r")
    try:
        head = f.read(0, 16)
        raw = b"" if is_indexeddb_file(head) else f.read(0, f.size())
    finally:
        f.close()
    if is_indexeddb_file(head):
        kind = "indexeddb"
        db = IndexedDB(path, env, readonly=True)
        try:
            if "vectors" not in db.object_store_names():
                raise BadSource(f"{path} has no 'vectors' object store (it has "
                                     f"{db.object_store_names()}); nothing to migrate")
            items: list[Any] = [v for _, v in db.items("vectors")]
        finally:
            db.close()
    else:
        kind = "json"
        try:
            items = json.loads(raw)
        except (ValueError, RecursionError) as exc:   # UnicodeDecodeError is a ValueError
            raise BadSource(f"{path} is neither an IndexedDB model file nor JSON: {exc}"
                                 ) from exc
        if not isinstance(items, list):
            raise BadSource(f"{path} holds JSON {type(items).__name__}, not an array")
    by_id = {}
    for n, item in enumerate(items):
        rec = _record(item, f"{path} record {n}")
        by_id[rec.id] = rec
    records = tuple(by_id[i] for i in sorted(by_id))
    dims = sorted({len(r.vector) for r in records})
    if len(dims) > 1:
        raise BadSource(f"{path} mixes vector dimensions {dims}; an RVF file has one")
    canon = json.dumps([[r.id, list(r.vector), dict(r.metadata)] for r in records],
                       sort_keys=True, separators=(",", ":"), allow_nan=False)
    return Source(path, kind, records, hashlib.sha256(canon.encode()).hexdigest())


@dataclass(frozen=True)
class MigrationReport:
    source: str
    dest: str
    kind: str
    records: int
    batches: int
    already_done: int
    """Batches the destination held before this run (all of them: the run was a no-op)."""
    written: int
    """Batches this run committed (0 on a dry run)."""
    dry_run: bool
    verified: bool | None = None
    problems: tuple[str, ...] = ()
    batch_size: int = BATCH_SIZE
    """The size the batches were cut at (a resumed migration keeps the size it began with)."""

    @property
    def ok(self) -> bool:
        return self.verified is not False

    def result(self) -> MigrationResult:
        """This report in the migrator contract's terms (records, not batches)."""
        skipped = min(self.records, self.already_done * self.batch_size)
        upto = min(self.records, (self.already_done + self.written) * self.batch_size)
        written = 0 if self.dry_run else max(0, upto - skipped)
        problems = "; ".join(self.problems[:3])
        return MigrationResult(self.records, written, skipped, 0 if self.ok else 1, problems)

    def lines(self) -> list[str]:
        verb = "would migrate" if self.dry_run else "migrated"
        left = self.batches - self.already_done
        out = [f"{self.source} ({self.kind}, {self.records} records) -> {self.dest}"]
        if left == 0:
            out.append("already migrated: nothing to do")
        else:
            out.append(f"{verb} batches {self.already_done + 1}..{self.batches} of "
                       f"{self.batches}" + ("" if self.dry_run else f" ({self.written} written)"))
        if self.verified is not None:
            out.append("verify: ok, both directions within 1e-6" if self.verified
                       else f"verify: FAILED ({len(self.problems)} problems)")
            out.extend(f"  {p}" for p in self.problems[:20])
        return out


def _progress(rvf: RvfStore, source: Source) -> tuple[dict[str, Any] | None, list[str]]:
    """This source's progress record in ``rvf``, and the fingerprints of any other sources."""
    mine, others = None, []
    for key, value in rvf.scan(PROGRESS_PREFIX):
        if key == PROGRESS_PREFIX + source.fingerprint:
            try:
                mine = json.loads(value)
                if not isinstance(mine, dict):
                    raise ValueError(f"it is JSON {type(mine).__name__}, not an object")
            except ValueError as exc:
                raise CorruptStore(rvf.path, f"the migration progress record {key!r} does not "
                                             f"parse: {exc}") from exc
        else:
            others.append(key[len(PROGRESS_PREFIX):])
    return mine, others


def _check_destination(rvf: RvfStore, source: Source, progress: dict[str, Any] | None,
                       others: list[str]) -> None:
    if progress is None and rvf.count() > 0:
        why = (f"it was migrated from a different source or an earlier version of it "
               f"(fingerprint {others[0][:12]})" if others else "they did not come from it")
        raise MigrationError(f"{rvf.path} already holds {rvf.count()} vectors and {why}; "
                             f"migrate {source.path} into a new file")
    if source.dimension is not None and rvf.dimension not in (None, source.dimension):
        raise MigrationError(f"{rvf.path} holds dimension {rvf.dimension}, {source.path} "
                             f"dimension {source.dimension}; migrate into a new file")


def verify_records(source: Source, rvf: RvfStore) -> list[str]:
    """Both directions: every source record is in ``rvf`` with its vector within 1e-6 and equal
    metadata, and ``rvf`` holds no record the source lacks. The problems found, first first."""
    problems: list[str] = []
    got = {r.id: r for r in rvf.fetch([r.id for r in source.records])}
    for want in source.records:
        have = got.get(want.id)
        if have is None:
            problems.append(f"id {want.id}: missing from {rvf.path}")
        elif len(have.vector) != len(want.vector) or any(
                abs(a - b) > TOLERANCE for a, b in zip(have.vector, want.vector, strict=True)):
            problems.append(f"id {want.id}: vector differs by more than {TOLERANCE}")
        elif dict(have.metadata) != dict(want.metadata):
            problems.append(f"id {want.id}: metadata {dict(have.metadata)} != "
                            f"{dict(want.metadata)}")
    wanted = {r.id for r in source.records}
    extra = [i for i in rvf.ids() if i not in wanted]
    if extra:
        problems.append(f"{rvf.path} holds {len(extra)} records the source lacks "
                        f"(ids {extra[:10]})")
    return problems


def migrate(src: str, dest: str, env: Env, *, dry_run: bool = False, verify: bool = False,
            batch_size: int = BATCH_SIZE, metric: str = "l2") -> MigrationReport:
    """Migrate ``src`` into the RVF file ``dest`` (created when missing). Idempotent and
    resumable; a dry run reads both and writes nothing. ``MigrationError`` when it cannot."""
    if batch_size < 1:
        raise MigrationError(f"batch size must be >= 1, got {batch_size}")
    if os.path.abspath(src) == os.path.abspath(dest):
        raise MigrationError(f"source and destination are the same file ({src})")
    source = read_source(src, env)
    exists = env.fs.exists(dest)
    if dry_run and not exists:
        batches = -(-len(source.records) // batch_size)
        return MigrationReport(src, dest, source.kind, len(source.records), batches, 0, 0, True,
                               batch_size=batch_size)
    options = {"readonly": "true", "lock": "false"} if dry_run else {}
    if not exists:   # an existing file keeps its metric and dimension
        options.update(metric=metric, dimension=str(source.dimension or 0))
    rvf = open_rvf(dest, env, **options)
    try:
        report = _run(source, rvf, env, dry_run=dry_run, verify=verify, batch_size=batch_size)
    except Exception:
        rvf.close()   # not on a SimulatedCrash: a dead process closes nothing
        raise
    rvf.close()
    return report


def _run(source: Source, rvf: RvfStore, env: Env, *, dry_run: bool, verify: bool,
         batch_size: int) -> MigrationReport:
    progress, others = _progress(rvf, source)
    _check_destination(rvf, source, progress, others)
    size = int(progress["batch_size"]) if progress else batch_size   # resume as it began
    batches = -(-len(source.records) // size)
    done = int(progress["done"]) if progress else 0
    written = 0
    if not dry_run and (progress is None or done < batches):
        key = PROGRESS_PREFIX + source.fingerprint
        for i in range(done, max(batches, 1)):   # an empty source still records its progress
            state = {"source": os.path.abspath(source.path), "kind": source.kind,
                     "records": len(source.records), "batch_size": size,
                     "batches": batches, "done": min(i + 1, batches)}
            rvf.commit(upserts=source.records[i * size:(i + 1) * size],
                       puts={key: json.dumps(state, sort_keys=True).encode()})
            written += 1
            env.failpoints.hit(FAILPOINT)
    problems = verify_records(source, rvf) if verify else []
    return MigrationReport(source.path, rvf.path, source.kind, len(source.records), batches,
                           done, written, dry_run, verified=(not problems) if verify else None,
                           problems=tuple(problems), batch_size=size)


def migrator(source: str, dest: str, env: Env, *, batch_size: int = BATCH_SIZE,
             metric: str = "l2") -> MigrationResult:
    """``migrate`` behind the migrator contract: a refusal is status 1 and a bad source status
    3, as ``crashgate rvf migrate`` exits; a crash (``SimulatedCrash``) goes through."""
    try:
        return migrate(source, dest, env, batch_size=batch_size, metric=metric).result()
    except BadSource as exc:
        return MigrationResult(0, 0, 0, 3, str(exc))
    except MigrationError as exc:
        return MigrationResult(0, 0, 0, 1, str(exc))


@dataclass(frozen=True)
class RebuildReport:
    path: str
    epoch: int
    records: int
    on_open: str
    """What the open's reconciliation did (``none``, ``rebuilt``, ...)."""
    moved_aside: str | None = None
    """Where a damaged cache was moved (it is never deleted)."""

    def lines(self) -> list[str]:
        out = [f"rebuilt {cache_path(self.path)} from {self.path}: {self.records} records, "
               f"epoch {self.epoch} (reconciliation on open: {self.on_open})"]
        if self.moved_aside:
            out.append(f"the damaged cache was kept at {self.moved_aside}")
        return out


def rebuild(path: str, env: Env) -> RebuildReport:
    """Rebuild the rvlite metadata cache of ``path`` from its RVF file (a damaged cache is moved
    aside first). Takes the writer lock and lease like any rvlite writer."""
    if not env.fs.exists(path):
        raise BadSource(f"{path} does not exist: there is no RVF file to rebuild from")
    events: list[tuple[str, dict[str, object]]] = []

    def observe(event: str, details: dict[str, object]) -> None:
        events.append((event, details))
        env.observe(event, details)

    watched = dataclasses.replace(env, observe=observe)
    cache, moved = cache_path(path), None
    try:
        store = open_rvlite(path, watched)
    except CorruptStore as exc:
        if exc.path != cache:
            raise
        moved = f"{cache}.damaged-{int(env.clock.time())}"
        env.fs.rename(cache, moved)
        env.fs.sync_dir(os.path.dirname(cache) or ".")
        store = open_rvlite(path, watched)
    try:
        records, epoch = store.rebuild(), store.epoch
    except Exception:
        store.close()
        raise
    store.close()
    on_open = next((str(d["action"]) for e, d in events if e == "epoch.reconciled"), "?")
    return RebuildReport(path, epoch, records, on_open, moved)
