"""ARCH-001's first rollback trigger, "SQLite corruption detected (PRAGMA integrity_check
fails)", with its risk table's "``PRAGMA integrity_check`` on boot": a closed store whose
``schema_file`` (``MissionSchema``) has a damaged b-tree page is opened, and the open must raise
``CorruptStore``, never open and never serve a document.

The damage is chosen so that SQLite itself reports it: a table's or index's root page (never
page 1, the file header's) gets its b-tree page header zeroed on a copy first, and the first
one, in a seeded order, that ``PRAGMA integrity_check`` on the copy reports is done to the
store's file. The evidence names the page, what it belongs to and SQLite's report. Real files
(apsw edits them), in a directory under the row's ``workdir``.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from crashgate.backends import BackendSpec, CorruptStore, os_env
from crashgate.harness.faults.repro import on_failure
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.scenarios.procedures_arch_common import (
    close_into,
    filled_store,
    first_line,
    read_missions,
)
from crashgate.scenarios.table import RowContext

__all__ = ["check_integrity", "integrity_check"]


# -- arch001-integrity-check ----------------------------------------------------------------


@dataclass(frozen=True)
class _PageDamage:
    page: int
    owner: str
    reported: str

    def describe(self, schema_file: str) -> str:
        return (f"page {self.page} of {os.path.basename(schema_file)} ({self.owner}), its "
                f"b-tree page header overwritten; PRAGMA integrity_check reports: "
                f"{self.reported}")


def _integrity(path: str) -> list[str]:
    db = apsw.Connection(path)
    try:
        return [str(r[0]) for r in db.execute("PRAGMA integrity_check")]
    except apsw.Error as exc:
        return [f"{type(exc).__name__}: {exc}"]
    finally:
        db.close()


def _damage_btree(schema_file: str, seed: int) -> _PageDamage | None:
    """Overwrite the b-tree page header of one table's or index's root page (never page 1, the
    file header's) with zeros: the first, in a seeded order, that ``PRAGMA integrity_check``
    reports on a copy. None when none is."""
    with tempfile.TemporaryDirectory(prefix="arch-damage-") as tmp:
        copy = os.path.join(tmp, "db")
        for suffix in ("", "-wal"):
            if os.path.exists(schema_file + suffix):
                shutil.copyfile(schema_file + suffix, copy + suffix)
        db = apsw.Connection(copy)
        try:
            size = int(db.execute("PRAGMA page_size").fetchall()[0][0])  # type: ignore[arg-type]
            roots = [(int(page), f"the root page of {kind} {name}")
                     for kind, name, page in db.execute(
                         "SELECT type, name, rootpage FROM sqlite_schema WHERE rootpage > 1 "
                         "ORDER BY rootpage")]
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")   # the copy's pages all in one file
        finally:
            db.close()
        random.Random(f"arch-damage:{seed}").shuffle(roots)
        pristine = Path(copy).read_bytes()
        for page, owner in roots:
            at = (page - 1) * size
            damaged = pristine[:at] + bytes(8) + pristine[at + 8:]
            Path(copy).write_bytes(damaged)
            reported = _integrity(copy)
            if reported != ["ok"]:
                _write_at(schema_file, at, bytes(8))
                said = (" ".join(line.split()) for line in reported[:3])
                return _PageDamage(page, owner, "; ".join(said))
    return None


def _write_at(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def check_integrity(spec: BackendSpec, *, seed: int, root: str) -> Evidence:
    """A closed store whose schema file has a damaged b-tree page: the open raises
    ``CorruptStore``; it never opens, let alone serves a document."""
    filled = filled_store(spec, root, "integrity-", seed=seed, count=6)
    if isinstance(filled, Evidence):
        return filled
    problems: list[str] = []
    path, schema = filled.path, filled.schema_file
    measured = {"missions": len(filled.docs), "opens": 1, "seed": seed}
    wal = schema + "-wal"
    if os.path.exists(wal) and os.path.getsize(wal):
        return Evidence(Verdict.UNKNOWN, f"{schema} left a WAL after a clean close: the damage "
                        "to the database file could be masked by it", measured)
    damage = _damage_btree(schema, seed)
    if damage is None:
        return Evidence(Verdict.UNKNOWN, f"no b-tree page of {schema} whose damage PRAGMA "
                        "integrity_check reports: nothing was tested", measured)
    what = f"damaged {damage.describe(schema)}"
    try:
        opened = spec.open(path, os_env())
    except CorruptStore as exc:
        return Evidence(Verdict.PASS, f"{what}: the open raised CorruptStore",
                        measured, (f"the refusal: {first_line(exc)}",))
    except Exception as exc:  # noqa: BLE001 - any other answer is the finding
        return Evidence(Verdict.FAIL, f"{what}: the open raised {first_line(exc)}, not "
                        "CorruptStore", measured, conclusive=True)
    served = read_missions(opened, filled.docs)
    close_into(opened, problems)
    return Evidence(Verdict.FAIL, f"{what}: the store opened instead of raising CorruptStore"
                    + (f", and {served}" if served else ""), measured, tuple(problems),
                    conclusive=True)


def integrity_check(ctx: RowContext) -> Evidence:
    kwargs: dict[str, Any] = {"seed": ctx.seed, "root": str(ctx.workdir / "integrity")}
    return on_failure(check_integrity(ctx.spec, **kwargs), workdir=ctx.workdir,
                      name="reproduce_integrity_check.py", spec=ctx.spec, check=check_integrity,
                      kwargs=kwargs)
